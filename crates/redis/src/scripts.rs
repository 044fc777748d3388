//! Every Lua script wxlogin runs in Redis. Each receives whole keys in
//! `KEYS` (built by [`crate::keys::Keyspace`]) and never builds one, so
//! that Redis Cluster routes it by the keys it declares, and the key
//! formats have one owner. The keys of one script share one hash slot,
//! except where a script's doc says that the caller passes the others only
//! on one Redis.
//!
//! Their effects are what replicas of different versions rely on during a
//! rolling upgrade: change one only in a way that old and new callers
//! agree on.

use std::sync::LazyLock;

use redis::Script;

use crate::keys::journal_field;

/// A script and its source (kept for the tests that read every script).
pub struct Lua {
    source: String,
    script: Script,
}

impl Lua {
    fn new(source: String) -> Lua {
        Lua {
            script: Script::new(&source),
            source,
        }
    }

    /// The script's Lua.
    pub fn source(&self) -> &str {
        &self.source
    }
}

impl std::ops::Deref for Lua {
    type Target = Script;

    fn deref(&self) -> &Script {
        &self.script
    }
}

/// The clear header of a user copy (`user:{u…}:<appid>:<openid>`), which the
/// scripts read without the data keys: a version byte, then a flags byte.
/// The sealed body follows (see the `wxlogin-userdata` crate).
pub mod copy_header {
    /// The copies this build writes and reads (1 was the protobuf in the
    /// clear).
    pub const VERSION: u8 = 2;
    /// Flag: the user has a unionid, so no login can backfill one.
    pub const HAS_UNIONID: u8 = 1;
    /// Flag: the user is blocked, so the copy answers no login.
    pub const BLOCKED: u8 = 2;
}

/// `answers_login(copy, unionid)`: whether a copy read under the key of the
/// login's (appid, openid) answers a login with `unionid` ('' for none):
/// a copy of this build's version, not blocked, and with a unionid when the
/// login brings one (a login changes a user only by backfilling a missing
/// unionid). The Rust twin is `wxlogin_userdata::copy::answers_login`.
const ANSWERS_LOGIN_LUA: &str = r"
local function answers_login(copy, unionid)
  if string.byte(copy, 1) ~= 2 then return false end
  local flags = string.byte(copy, 2) or 0
  if math.floor(flags / 2) % 2 == 1 then return false end
  return unionid == '' or flags % 2 == 1
end
";

/// Opens a session: KEYS are the user's session_key, the session, the
/// user's copy, the user's index of sessions, then, on one Redis only, the
/// code's slot and the login journal. ARGV: session_key, its TTL (s), the
/// session (JSON), its TTL (s), the code's sealed outcome ('' for none),
/// its TTL (ms), the login's unionid ('' for none), appid, openid, the
/// login's Unix ms (for the journal), the session's digest (the index's
/// member), now (Unix ms, its score), how long the index keeps entries
/// (ms). Answers `{}` without a copy, else `{copy}`, or `{copy, '1'}` when
/// the copy answers the login and the script journaled it, or
/// `{copy, '2'}` when it answers the login and the caller journals it (no
/// journal key: on a Redis Cluster).
pub static OPEN_SESSION: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(format!(
        r"{ANSWERS_LOGIN_LUA}
          redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
          redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
          redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', tonumber(ARGV[12]) - tonumber(ARGV[13]))
          redis.call('ZADD', KEYS[4], ARGV[12], ARGV[11])
          redis.call('PEXPIRE', KEYS[4], ARGV[13])
          if KEYS[5] and ARGV[5] ~= '' then redis.call('SET', KEYS[5], ARGV[5], 'PX', ARGV[6]) end
          local copy = redis.call('GET', KEYS[3])
          if not copy then return {{}} end
          if not answers_login(copy, ARGV[7]) then return {{copy}} end
          if not KEYS[6] then return {{copy, '2'}} end
          redis.call('XADD', KEYS[6], '*', '{}', ARGV[8], '{}', ARGV[9], '{}', ARGV[10])
          return {{copy, '1'}}",
        journal_field::APPID,
        journal_field::OPENID,
        journal_field::AT_MS,
    ))
});

/// Uses a session whose user is known: GETEX the session (KEYS[1]) for
/// ARGV[1] seconds; then, if it is there, records its use (ARGV[3], Unix
/// ms) in the user's index (KEYS[2], member ARGV[2]) unless the recorded
/// one is less than ARGV[4] ms old, dropping entries older than ARGV[5] ms,
/// and GETs the user's copy (KEYS[3]). Answers `{}`, or
/// `{session, last used[, copy]}`.
pub static TOUCH_SESSION: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"local body = redis.call('GETEX', KEYS[1], 'EX', ARGV[1])
          if not body then return {} end
          local now = tonumber(ARGV[3])
          local seen = tonumber(redis.call('ZSCORE', KEYS[2], ARGV[2]) or '0')
          if seen < now - tonumber(ARGV[4]) then
            redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - tonumber(ARGV[5]))
            redis.call('ZADD', KEYS[2], 'GT', ARGV[3], ARGV[2])
            redis.call('PEXPIRE', KEYS[2], ARGV[5])
            seen = now
          end
          local user = redis.call('GET', KEYS[3])
          if user then return {body, string.format('%d', seen), user} end
          return {body, string.format('%d', seen)}"
            .to_owned(),
    )
});

/// Reads the sessions (KEYS[2..]) of a user's index (KEYS[1]) whose
/// members are ARGV (in the same order), dropping from the index the
/// members whose session is gone: `{member, session, …}` of those found.
pub static READ_SESSIONS: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"local found = {}
          for i = 2, #KEYS do
            local body = redis.call('GET', KEYS[i])
            if body then
              found[#found + 1] = ARGV[i - 1]
              found[#found + 1] = body
            else
              redis.call('ZREM', KEYS[1], ARGV[i - 1])
            end
          end
          return found"
            .to_owned(),
    )
});

/// Ends sessions (KEYS[2..]) of a user's index (KEYS[1]) and drops their
/// members (ARGV, in the same order) from it: answers how many were live.
pub static END_SESSIONS: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"local ended = 0
          for i = 2, #KEYS do
            ended = ended + redis.call('DEL', KEYS[i])
            redis.call('ZREM', KEYS[1], ARGV[i - 1])
          end
          return ended"
            .to_owned(),
    )
});

/// Forgets a user who is being deleted: ends the sessions KEYS[5..] (the
/// index's members ARGV[3..], in the same order) and drops them from the
/// index (KEYS[1]), which goes when nothing else is in it (a session a
/// login opened meanwhile stays listed, for the deletion's last step to
/// end); deletes their session_key (KEYS[2]) and copy (KEYS[3]); and writes
/// the tombstone (KEYS[4]) that keeps user ARGV[1]'s copy from being
/// written again, for ARGV[2] seconds (none for id 0: a deletion completed
/// after its row was gone leaves the tombstone it wrote first). Answers how
/// many sessions were live.
pub static FORGET_USER: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"local ended = 0
          for i = 5, #KEYS do
            ended = ended + redis.call('DEL', KEYS[i])
            redis.call('ZREM', KEYS[1], ARGV[i - 2])
          end
          if redis.call('ZCARD', KEYS[1]) == 0 then redis.call('DEL', KEYS[1]) end
          redis.call('DEL', KEYS[2], KEYS[3])
          if ARGV[1] ~= '0' then redis.call('SET', KEYS[4], ARGV[1], 'EX', ARGV[2]) end
          return ended"
            .to_owned(),
    )
});

/// GCRA in Lua, one key per budget: `gcra(keys, args, mode)` checks every
/// key's timestamp (`args` holds each budget's emission interval and
/// period, in µs, in turn) and charges all of them only if none refuses;
/// answers `{0, 0}`, or the microseconds until the budget that refuses
/// longest has room and that budget's position. `mode` is `charge`,
/// `check` (charges nothing) or `force` (charges whatever the budgets
/// say). Time is Redis's, so instances whose clocks disagree agree here.
const GCRA_LUA: &str = r"
local function gcra(keys, args, mode)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local wait, refusing = 0, 0
  local tats = {}
  for i, key in ipairs(keys) do
    local emission = tonumber(args[2 * i - 1])
    local period = tonumber(args[2 * i])
    local tat = tonumber(redis.call('GET', key)) or now
    if tat < now then tat = now end
    local allow_at = tat + emission - period
    if allow_at - now > wait then wait, refusing = allow_at - now, i end
    tats[i] = tat + emission
  end
  if mode == 'force' then wait = 0 end
  if wait > 0 or mode == 'check' then return {wait, refusing} end
  for i, key in ipairs(keys) do
    redis.call('SET', key, string.format('%d', tats[i]), 'PX',
      math.ceil((tats[i] - now) / 1000))
  end
  return {0, 0}
end
";

/// Charges budgets: KEYS are the budgets, ARGV each one's emission
/// interval and period (µs) in turn, then the mode (see [`GCRA_LUA`]).
/// Answers `{wait µs, position from 1}`, `{0, 0}` when every budget had
/// room.
pub static CHARGE_BUDGETS: LazyLock<Lua> =
    LazyLock::new(|| Lua::new(format!("{GCRA_LUA}\nreturn gcra(KEYS, ARGV, ARGV[#ARGV])")));

/// Checks the login budgets (KEYS[2..], their arguments after ARGV[3], how
/// many in ARGV[3]), then takes the code's slot (KEYS[1]) with ARGV[1] for
/// ARGV[2] ms unless it holds something: answers
/// `{'refused', wait µs, position}`, `{'held', value}` or `{'claimed'}`.
pub static CLAIM_CODE: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(format!(
        r"{GCRA_LUA}
          local n = tonumber(ARGV[3])
          if n > 0 then
            local keys, args = {{}}, {{}}
            for i = 1, n do
              keys[i] = KEYS[1 + i]
              args[2 * i - 1] = ARGV[2 + 2 * i]
              args[2 * i] = ARGV[3 + 2 * i]
            end
            local verdict = gcra(keys, args, 'check')
            if verdict[1] > 0 then return {{'refused', verdict[1], verdict[2]}} end
          end
          local current = redis.call('GET', KEYS[1])
          if current then return {{'held', current}} end
          redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
          return {{'claimed'}}"
    ))
});

/// Records a code's refusal (ARGV[1]) in its slot (KEYS[1]) for ARGV[2] ms,
/// unless the slot holds a value starting with ARGV[3] (an outcome already
/// sealed, by an instance whose exchange outlived its claim): that one is
/// answered instead, so every submission keeps getting the same answer.
/// Answers false when it recorded.
pub static RECORD_REFUSAL: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"local current = redis.call('GET', KEYS[1])
          if current and string.sub(current, 1, string.len(ARGV[3])) == ARGV[3] then
            return current
          end
          redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
          return false"
            .to_owned(),
    )
});

/// Deletes KEYS[1] if it still holds ARGV[1]: a lock's holder, a claim's
/// marker.
pub static DELETE_IF_EQUAL: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
          end
          return 0"
            .to_owned(),
    )
});

/// Deletes the cached access_token (KEYS[1], JSON) if its token is still
/// ARGV[1]: a newer one that another instance cached meanwhile stays.
pub static DROP_ACCESS_TOKEN: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"local body = redis.call('GET', KEYS[1])
          if body and cjson.decode(body).token == ARGV[1] then
            return redis.call('DEL', KEYS[1])
          end
          return 0"
            .to_owned(),
    )
});

/// Writes a user copy (KEYS[1]) unless the tombstone (KEYS[2]) names its
/// user (ARGV[1], the id): `SET KEYS[1] ARGV[2] EX ARGV[3]`, with `NX` when
/// ARGV[4] is '1'. Answers 1 when written, 0 when the copy was there
/// already (NX), -1 when the user is deleted.
pub static WRITE_COPY: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(
        r"
if redis.call('GET', KEYS[2]) == ARGV[1] then return -1 end
if ARGV[4] == '1' then
  if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'EX', ARGV[3]) then return 1 end
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
"
        .to_owned(),
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_check_reads_this_builds_copy_header() {
        use copy_header::*;
        assert!(ANSWERS_LOGIN_LUA.contains(&format!("string.byte(copy, 1) ~= {VERSION} then")));
        // Bit 0: unionid; bit 1: blocked.
        assert_eq!((HAS_UNIONID, BLOCKED), (1, 2));
        assert!(ANSWERS_LOGIN_LUA.contains("math.floor(flags / 2) % 2 == 1 then return false"));
        assert!(ANSWERS_LOGIN_LUA.contains("flags % 2 == 1"));
    }

    /// No script builds a key: keys come only from `KEYS`, and nothing
    /// else needs Lua's string concatenation.
    #[test]
    fn scripts_build_no_keys() {
        for script in [
            &OPEN_SESSION,
            &TOUCH_SESSION,
            &READ_SESSIONS,
            &END_SESSIONS,
            &FORGET_USER,
            &CHARGE_BUDGETS,
            &CLAIM_CODE,
            &RECORD_REFUSAL,
            &DELETE_IF_EQUAL,
            &DROP_ACCESS_TOKEN,
            &WRITE_COPY,
        ] {
            assert!(!script.source.contains(".."), "{}", script.source);
            assert!(script.source.contains("KEYS"), "{}", script.source);
        }
    }
}

//! What the simulator remembers between calls: minted login and phone
//! codes, the current session_key of each user, each app's access_tokens,
//! and the queue of scripted faults.
//!
//! Everything here is synchronous and cheap: callers hold the lock for a
//! hash-map operation or two and never across an await.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

/// A request to mint a login code, as `wx.login` would obtain one. Every
/// field is optional; empty strings count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MintCode {
    /// The app the code is for; the first configured app when absent.
    pub appid: Option<String>,
    /// The user; a fresh random openid when absent.
    pub openid: Option<String>,
    /// Returned by code2Session only when present.
    pub unionid: Option<String>,
    /// The session_key code2Session will return; a fresh random one when
    /// absent (WeChat rotates the key on every `wx.login`).
    pub session_key: Option<String>,
}

/// A minted code and the identity code2Session will return for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Minted {
    pub code: String,
    pub appid: String,
    pub openid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unionid: Option<String>,
    pub session_key: String,
}

/// A request to mint a phone code, as the `getPhoneNumber` button would
/// obtain one. Every field is optional; empty strings count as absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MintPhoneCode {
    /// The app the code is for; the first configured app when absent.
    pub appid: Option<String>,
    /// `phoneNumber`; when absent, the pure number for country code 86 and
    /// `+{country_code} {pure_phone_number}` otherwise.
    pub phone_number: Option<String>,
    /// `purePhoneNumber`; a fresh random mainland mobile number when absent.
    pub pure_phone_number: Option<String>,
    /// `countryCode`; `"86"` when absent.
    pub country_code: Option<String>,
    /// Send `countryCode` as a JSON number, as WeChat sometimes does. A
    /// country code that is not all digits is sent as a string anyway.
    pub country_code_as_number: bool,
}

/// A minted phone code and the phone_info getuserphonenumber will return
/// for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintedPhoneCode {
    pub code: String,
    pub appid: String,
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: String,
}

/// The WeChat endpoints, by the names a [`Fault`] is scoped with.
pub mod endpoint {
    /// `GET /sns/jscode2session`.
    pub const JSCODE2SESSION: &str = "jscode2session";
    /// `POST /cgi-bin/stable_token`.
    pub const STABLE_TOKEN: &str = "stable_token";
    /// `GET /cgi-bin/token`.
    pub const TOKEN: &str = "token";
    /// `POST /wxa/business/getuserphonenumber`.
    pub const GET_USER_PHONE_NUMBER: &str = "getuserphonenumber";
    /// `GET /wxa/checksession`.
    pub const CHECK_SESSION: &str = "checksession";
    /// All of them.
    pub const ALL: [&str; 5] = [
        JSCODE2SESSION,
        STABLE_TOKEN,
        TOKEN,
        GET_USER_PHONE_NUMBER,
        CHECK_SESSION,
    ];
}

/// A scripted misbehaviour of WeChat, answered by the next calls (of its
/// endpoint, or of any endpoint) instead of the normal answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Fault {
    /// The errcode to answer with; 0 answers normally (after the delay).
    pub errcode: i64,
    /// The errmsg to answer with; WeChat's usual text when absent.
    pub errmsg: Option<String>,
    /// How long to wait before answering.
    pub delay_ms: Option<u64>,
    /// How many calls this fault answers.
    pub times: u32,
    /// Whether the code (the login code, or the phone code for
    /// getuserphonenumber) is used up anyway, as when WeChat consumed it and
    /// then failed or answered too late. Other endpoints ignore it.
    pub consume_code: bool,
    /// The endpoint whose calls this fault answers (one of
    /// [`endpoint::ALL`]); `None`: whichever WeChat endpoint is called
    /// next. A scoped fault never answers another endpoint's call, so faults
    /// for different endpoints can be queued side by side.
    pub endpoint: Option<String>,
}

impl Default for Fault {
    fn default() -> Self {
        Fault {
            errcode: 0,
            errmsg: None,
            delay_ms: None,
            times: 1,
            consume_code: false,
            endpoint: None,
        }
    }
}

impl Fault {
    /// Answer the next call with `errcode`.
    pub fn errcode(errcode: i64) -> Self {
        Fault {
            errcode,
            ..Fault::default()
        }
    }

    /// Answer the next call normally, but only after `delay`.
    pub fn delay(delay: Duration) -> Self {
        Fault::default().with_delay(delay)
    }

    /// Wait `delay` before answering.
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay_ms = Some(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
        self
    }

    /// Answer `times` calls instead of one.
    pub fn times(mut self, times: u32) -> Self {
        self.times = times;
        self
    }

    /// Use the code up, even though the answer is not a success.
    pub fn consuming_code(mut self) -> Self {
        self.consume_code = true;
        self
    }

    /// Answer only calls of `endpoint` (one of [`endpoint::ALL`]).
    pub fn for_endpoint(mut self, endpoint: &str) -> Self {
        self.endpoint = Some(endpoint.to_owned());
        self
    }

    fn answers(&self, endpoint: &str) -> bool {
        self.endpoint
            .as_deref()
            .is_none_or(|scope| scope == endpoint)
    }

    pub(crate) fn delay_duration(&self) -> Option<Duration> {
        self.delay_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }
}

/// Counters for tests and benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// jscode2session calls received, faulted or not.
    pub code2session_calls: u64,
    /// stable_token calls received, faulted or not.
    #[serde(default)]
    pub stable_token_calls: u64,
    /// Classic token calls received, faulted or not.
    #[serde(default)]
    pub token_calls: u64,
    /// getuserphonenumber calls received, faulted or not.
    #[serde(default)]
    pub phone_number_calls: u64,
    /// checksession calls received, faulted or not.
    #[serde(default)]
    pub check_session_calls: u64,
    /// Calls the queued faults will still answer.
    pub pending_faults: u64,
    /// The latency added to every WeChat-endpoint call.
    pub latency_ms: u64,
}

/// The identity behind a code, handed out once.
#[derive(Debug)]
pub(crate) struct Identity {
    pub openid: String,
    pub unionid: Option<String>,
    pub session_key: String,
}

/// How a phone code's `countryCode` goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum CountryCode {
    Text(String),
    Number(u64),
}

/// The phone_info behind a phone code, handed out once.
#[derive(Debug)]
pub(crate) struct PhoneRecord {
    pub phone_number: String,
    pub pure_phone_number: String,
    pub country_code: CountryCode,
    /// When the user tapped the button (Unix seconds): the watermark's.
    pub timestamp: i64,
}

/// What presenting a single-use code gave.
#[derive(Debug)]
pub(crate) enum Taken<T> {
    Ok(T),
    /// Unknown, expired, or minted for another app: 40029.
    Invalid,
    /// Presented before: 40163.
    Used,
}

/// What exchanging a login code gave.
pub(crate) type Exchange = Taken<Identity>;

struct OneTimeCode<T> {
    appid: String,
    /// Taken by the one successful use; `None` marks the code used. A used
    /// code keeps only what 40163 needs, so long benchmarks stay small.
    value: Option<T>,
    /// `None`: the TTL is too large to represent, the code never expires.
    expires_at: Option<Instant>,
}

impl<T> OneTimeCode<T> {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// Single-use codes bound to an app, with a lifetime.
struct OneTimeCodes<T> {
    codes: HashMap<String, OneTimeCode<T>>,
    /// Sweep expired codes once the map grows to this size, so that a long
    /// benchmark does not grow memory without bound. Doubling keeps the
    /// sweeps amortised O(1) per mint.
    sweep_at: usize,
}

const MIN_SWEEP_AT: usize = 1024;

impl<T> OneTimeCodes<T> {
    fn new() -> Self {
        OneTimeCodes {
            codes: HashMap::new(),
            sweep_at: MIN_SWEEP_AT,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.codes.len()
    }

    fn insert(
        &mut self,
        code: String,
        appid: String,
        value: T,
        expires_at: Option<Instant>,
        now: Instant,
    ) {
        if self.codes.len() >= self.sweep_at {
            self.codes.retain(|_, code| code.is_live(now));
            self.sweep_at = (self.codes.len() * 2).max(MIN_SWEEP_AT);
        }
        self.codes.insert(
            code,
            OneTimeCode {
                appid,
                value: Some(value),
                expires_at,
            },
        );
    }

    /// Takes the value behind `code`, once. An expired code is invalid
    /// whether or not it was used, so the answer does not depend on when
    /// expired codes are swept.
    fn take(&mut self, appid: &str, code: &str, now: Instant) -> Taken<T> {
        match self.codes.get_mut(code) {
            Some(entry) if entry.appid == appid && entry.is_live(now) => match entry.value.take() {
                Some(value) => Taken::Ok(value),
                None => Taken::Used,
            },
            _ => Taken::Invalid,
        }
    }
}

/// Which API issued an access_token. WeChat keeps the two apart: fetching
/// one kind never retires a token of the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// `POST /cgi-bin/stable_token`.
    Stable,
    /// `GET /cgi-bin/token`.
    Classic,
}

struct AccessToken {
    appid: String,
    /// `None`: the TTL is too large to represent, it never expires.
    expires_at: Option<Instant>,
    /// A newer token of the same kind replaced it: it lives out its grace,
    /// then is "not latest" (40001) rather than expired (42001).
    superseded: bool,
}

impl AccessToken {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|expires_at| now < expires_at)
    }
}

/// The current token of each kind, per app.
#[derive(Default)]
struct AppTokens {
    stable: Option<String>,
    classic: Option<String>,
}

impl AppTokens {
    fn current(&mut self, kind: TokenKind) -> &mut Option<String> {
        match kind {
            TokenKind::Stable => &mut self.stable,
            TokenKind::Classic => &mut self.classic,
        }
    }
}

/// How long tokens live.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenLifetimes {
    /// From issue to expiry.
    pub ttl: Duration,
    /// How long a replaced token stays valid.
    pub grace: Duration,
}

/// An access_token as handed out, with its remaining lifetime in whole
/// seconds (rounded up, so a live token never claims 0).
#[derive(Debug)]
pub(crate) struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
}

/// Why an access_token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenRefusal {
    /// Never issued, invalidated, or replaced and past its grace: 40001.
    Invalid,
    /// Lived out its TTL: 42001.
    Expired,
}

/// The mutable state behind the simulator's lock.
pub(crate) struct State {
    codes: OneTimeCodes<Identity>,
    phone_codes: OneTimeCodes<PhoneRecord>,
    /// appid → openid → current session_key.
    session_keys: HashMap<String, HashMap<String, String>>,
    /// token → what it is; every token of every app.
    tokens: HashMap<String, AccessToken>,
    /// appid → its current tokens.
    app_tokens: HashMap<String, AppTokens>,
    /// Sweep dead tokens at this size (see [`OneTimeCodes::sweep_at`]).
    token_sweep_at: usize,
    faults: VecDeque<Fault>,
}

impl State {
    pub(crate) fn new() -> Self {
        State {
            codes: OneTimeCodes::new(),
            phone_codes: OneTimeCodes::new(),
            session_keys: HashMap::new(),
            tokens: HashMap::new(),
            app_tokens: HashMap::new(),
            token_sweep_at: MIN_SWEEP_AT,
            faults: VecDeque::new(),
        }
    }

    pub(crate) fn insert_code(
        &mut self,
        minted: &Minted,
        expires_at: Option<Instant>,
        now: Instant,
    ) {
        self.codes.insert(
            minted.code.clone(),
            minted.appid.clone(),
            Identity {
                openid: minted.openid.clone(),
                unionid: minted.unionid.clone(),
                session_key: minted.session_key.clone(),
            },
            expires_at,
            now,
        );
        self.session_keys
            .entry(minted.appid.clone())
            .or_default()
            .insert(minted.openid.clone(), minted.session_key.clone());
    }

    /// Exchanges `code` for its identity, once.
    pub(crate) fn exchange(&mut self, appid: &str, code: &str, now: Instant) -> Exchange {
        self.codes.take(appid, code, now)
    }

    pub(crate) fn session_key(&self, appid: &str, openid: &str) -> Option<String> {
        self.session_keys.get(appid)?.get(openid).cloned()
    }

    pub(crate) fn insert_phone_code(
        &mut self,
        code: String,
        appid: String,
        record: PhoneRecord,
        expires_at: Option<Instant>,
        now: Instant,
    ) {
        self.phone_codes
            .insert(code, appid, record, expires_at, now);
    }

    /// Exchanges a phone code for its phone_info, once.
    pub(crate) fn exchange_phone_code(
        &mut self,
        appid: &str,
        code: &str,
        now: Instant,
    ) -> Taken<PhoneRecord> {
        self.phone_codes.take(appid, code, now)
    }

    /// A token of `kind` for `appid`. A stable token is handed out again
    /// while it is live unless `force_refresh`; a classic one is new on
    /// every call. A new token retires the app's previous one of its kind,
    /// which stays valid for `lifetimes.grace` more.
    pub(crate) fn issue_token(
        &mut self,
        appid: &str,
        kind: TokenKind,
        force_refresh: bool,
        lifetimes: TokenLifetimes,
        new_token: impl FnOnce() -> String,
        now: Instant,
    ) -> IssuedToken {
        let app = self.app_tokens.entry(appid.to_owned()).or_default();
        let current = app.current(kind);
        if kind == TokenKind::Stable
            && !force_refresh
            && let Some(token) = current.as_ref()
            && let Some(entry) = self.tokens.get(token)
            && entry.is_live(now)
        {
            return IssuedToken {
                access_token: token.clone(),
                expires_in: remaining_secs(entry.expires_at, lifetimes.ttl, now),
            };
        }

        let token = new_token();
        if let Some(previous) = current.replace(token.clone())
            && let Some(entry) = self.tokens.get_mut(&previous)
        {
            entry.superseded = true;
            if let Some(end_of_grace) = now.checked_add(lifetimes.grace) {
                entry.expires_at = Some(
                    entry
                        .expires_at
                        .map_or(end_of_grace, |expires_at| expires_at.min(end_of_grace)),
                );
            }
        }
        if self.tokens.len() >= self.token_sweep_at {
            // A token that is neither live nor an app's current one answers
            // 40001 whether it is kept or not.
            self.tokens
                .retain(|_, entry| entry.is_live(now) || !entry.superseded);
            self.token_sweep_at = (self.tokens.len() * 2).max(MIN_SWEEP_AT);
        }
        let expires_at = now.checked_add(lifetimes.ttl);
        self.tokens.insert(
            token.clone(),
            AccessToken {
                appid: appid.to_owned(),
                expires_at,
                superseded: false,
            },
        );
        IssuedToken {
            access_token: token,
            expires_in: remaining_secs(expires_at, lifetimes.ttl, now),
        }
    }

    /// The appid `token` was issued to, if it is still valid.
    pub(crate) fn check_token(&self, token: &str, now: Instant) -> Result<String, TokenRefusal> {
        match self.tokens.get(token) {
            Some(entry) if entry.is_live(now) => Ok(entry.appid.clone()),
            Some(entry) if !entry.superseded => Err(TokenRefusal::Expired),
            _ => Err(TokenRefusal::Invalid),
        }
    }

    /// Makes every token of `appid` invalid at once; answers how many were
    /// live.
    pub(crate) fn invalidate_tokens(&mut self, appid: &str, now: Instant) -> usize {
        let mut live = 0;
        self.tokens.retain(|_, entry| {
            let keep = entry.appid != appid;
            if !keep && entry.is_live(now) {
                live += 1;
            }
            keep
        });
        self.app_tokens.remove(appid);
        live
    }

    pub(crate) fn push_fault(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.faults.push_back(fault);
        }
    }

    /// Takes one use of the first queued fault that answers `endpoint`.
    pub(crate) fn next_fault(&mut self, endpoint: &str) -> Option<Fault> {
        let index = self
            .faults
            .iter()
            .position(|fault| fault.answers(endpoint))?;
        let fault = self.faults.get_mut(index)?;
        if fault.times > 1 {
            fault.times -= 1;
            let mut one = fault.clone();
            one.times = 1;
            Some(one)
        } else {
            self.faults.remove(index)
        }
    }

    pub(crate) fn pending_faults(&self) -> u64 {
        self.faults.iter().map(|fault| u64::from(fault.times)).sum()
    }
}

/// Whole seconds until `expires_at`, rounded up; `ttl` for a token that
/// never expires.
fn remaining_secs(expires_at: Option<Instant>, ttl: Duration, now: Instant) -> u64 {
    let remaining = expires_at.map_or(ttl, |expires_at| expires_at.saturating_duration_since(now));
    remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minted(code: &str, appid: &str, openid: &str, key: &str) -> Minted {
        Minted {
            code: code.to_owned(),
            appid: appid.to_owned(),
            openid: openid.to_owned(),
            unionid: None,
            session_key: key.to_owned(),
        }
    }

    #[test]
    fn a_code_is_exchanged_once_for_its_app_only() {
        let now = Instant::now();
        let mut state = State::new();
        state.insert_code(&minted("c1", "wxa", "o1", "k1"), None, now);

        assert!(matches!(
            state.exchange("wxb", "c1", now),
            Exchange::Invalid
        ));
        assert!(matches!(state.exchange("wxa", "c1", now), Exchange::Ok(id) if id.openid == "o1"));
        assert!(matches!(state.exchange("wxa", "c1", now), Exchange::Used));
        assert!(matches!(
            state.exchange("wxa", "nope", now),
            Exchange::Invalid
        ));
    }

    #[test]
    fn an_expired_code_is_invalid_even_when_used() {
        let now = Instant::now();
        let later = now + Duration::from_secs(2);
        let mut state = State::new();
        state.insert_code(
            &minted("c1", "wxa", "o1", "k1"),
            Some(now + Duration::from_secs(1)),
            now,
        );
        assert!(matches!(state.exchange("wxa", "c1", now), Exchange::Ok(_)));
        assert!(matches!(
            state.exchange("wxa", "c1", later),
            Exchange::Invalid
        ));
    }

    #[test]
    fn expired_codes_are_swept_as_the_map_grows() {
        let now = Instant::now();
        let expired = Some(now);
        let mut state = State::new();
        for i in 0..(MIN_SWEEP_AT * 3) {
            state.insert_code(&minted(&format!("c{i}"), "wxa", "o1", "k"), expired, now);
        }
        assert!(
            state.codes.len() <= MIN_SWEEP_AT + 1,
            "{}",
            state.codes.len()
        );
    }

    #[test]
    fn the_latest_mint_sets_the_current_session_key() {
        let now = Instant::now();
        let mut state = State::new();
        state.insert_code(&minted("c1", "wxa", "o1", "k1"), None, now);
        state.insert_code(&minted("c2", "wxa", "o1", "k2"), None, now);
        assert_eq!(state.session_key("wxa", "o1").as_deref(), Some("k2"));
        assert_eq!(state.session_key("wxb", "o1"), None);
        assert_eq!(state.session_key("wxa", "o2"), None);
    }

    #[test]
    fn faults_come_out_in_order_each_as_often_as_asked() {
        let mut state = State::new();
        state.push_fault(Fault::errcode(-1).times(2));
        state.push_fault(Fault::errcode(45011).times(0));
        state.push_fault(Fault::errcode(40226));
        assert_eq!(state.pending_faults(), 3);

        let codes: Vec<i64> = std::iter::from_fn(|| state.next_fault(endpoint::JSCODE2SESSION))
            .map(|fault| {
                assert_eq!(fault.times, 1);
                fault.errcode
            })
            .collect();
        assert_eq!(codes, vec![-1, -1, 40226]);
        assert_eq!(state.pending_faults(), 0);
    }

    #[test]
    fn a_fault_needs_only_the_fields_it_changes() {
        let fault: Fault = serde_json::from_str(r#"{"errcode":-1}"#).unwrap();
        assert_eq!(fault, Fault::errcode(-1));
        let fault: Fault = serde_json::from_str(r#"{"delay_ms":50,"times":3}"#).unwrap();
        assert_eq!(fault, Fault::delay(Duration::from_millis(50)).times(3));
        assert!(serde_json::from_str::<Fault>(r#"{"delay":50}"#).is_err());
    }

    const LIFETIMES: TokenLifetimes = TokenLifetimes {
        ttl: Duration::from_secs(7200),
        grace: Duration::from_secs(300),
    };

    fn counter() -> impl FnMut() -> String {
        let mut next = 0;
        move || {
            next += 1;
            format!("t{next}")
        }
    }

    #[test]
    fn a_stable_token_is_handed_out_again_until_forced() {
        let now = Instant::now();
        let mut state = State::new();
        let mut tokens = counter();
        let mut issue = |state: &mut State, force, at| {
            state.issue_token("wxa", TokenKind::Stable, force, LIFETIMES, &mut tokens, at)
        };

        let first = issue(&mut state, false, now);
        let again = issue(&mut state, false, now + Duration::from_millis(1500));
        let forced = issue(&mut state, true, now + Duration::from_secs(2));

        assert_eq!(first.access_token, "t1");
        assert_eq!(first.expires_in, 7200);
        assert_eq!(again.access_token, "t1");
        assert_eq!(again.expires_in, 7199);
        assert_eq!(forced.access_token, "t2");
        assert_eq!(forced.expires_in, 7200);
        // The replaced token lives out its grace, then is "not latest".
        let in_grace = now + Duration::from_secs(200);
        let after_grace = now + Duration::from_secs(303);
        assert_eq!(state.check_token("t1", in_grace).as_deref(), Ok("wxa"));
        assert_eq!(
            state.check_token("t1", after_grace),
            Err(TokenRefusal::Invalid)
        );
        assert_eq!(state.check_token("t2", after_grace).as_deref(), Ok("wxa"));
    }

    #[test]
    fn a_classic_token_is_new_each_time_and_leaves_stable_ones_alone() {
        let now = Instant::now();
        let mut state = State::new();
        let mut tokens = counter();
        let stable =
            state.issue_token("wxa", TokenKind::Stable, false, LIFETIMES, &mut tokens, now);
        let one = state.issue_token(
            "wxa",
            TokenKind::Classic,
            false,
            LIFETIMES,
            &mut tokens,
            now,
        );
        let two = state.issue_token(
            "wxa",
            TokenKind::Classic,
            false,
            LIFETIMES,
            &mut tokens,
            now,
        );

        assert_ne!(one.access_token, two.access_token);
        let later = now + Duration::from_secs(301);
        assert_eq!(
            state.check_token(&one.access_token, later),
            Err(TokenRefusal::Invalid)
        );
        assert!(state.check_token(&two.access_token, later).is_ok());
        assert!(state.check_token(&stable.access_token, later).is_ok());
    }

    #[test]
    fn tokens_expire_invalidate_and_belong_to_their_app() {
        let now = Instant::now();
        let short = TokenLifetimes {
            ttl: Duration::from_secs(10),
            grace: Duration::ZERO,
        };
        let mut state = State::new();
        let mut tokens = counter();
        let a = state.issue_token("wxa", TokenKind::Stable, false, short, &mut tokens, now);
        let b = state.issue_token("wxb", TokenKind::Stable, false, short, &mut tokens, now);

        assert_eq!(
            state.check_token(&b.access_token, now).as_deref(),
            Ok("wxb")
        );
        assert_eq!(
            state.check_token(&a.access_token, now + Duration::from_secs(10)),
            Err(TokenRefusal::Expired)
        );
        // An expired stable token is replaced by a new one.
        let renewed = state.issue_token(
            "wxa",
            TokenKind::Stable,
            false,
            short,
            &mut tokens,
            now + Duration::from_secs(11),
        );
        assert_ne!(renewed.access_token, a.access_token);

        let later = now + Duration::from_secs(12);
        assert_eq!(state.invalidate_tokens("wxa", later), 1);
        assert_eq!(
            state.check_token(&renewed.access_token, later),
            Err(TokenRefusal::Invalid)
        );
        assert!(state.check_token(&b.access_token, now).is_ok());
        assert_eq!(state.check_token("nope", now), Err(TokenRefusal::Invalid));
    }

    #[test]
    fn replaced_tokens_are_swept_as_the_map_grows() {
        let now = Instant::now();
        let no_grace = TokenLifetimes {
            ttl: Duration::from_secs(7200),
            grace: Duration::ZERO,
        };
        let mut state = State::new();
        let mut tokens = counter();
        for _ in 0..(MIN_SWEEP_AT * 3) {
            state.issue_token("wxa", TokenKind::Classic, false, no_grace, &mut tokens, now);
        }
        assert!(
            state.tokens.len() <= MIN_SWEEP_AT + 1,
            "{}",
            state.tokens.len()
        );
    }

    fn record() -> PhoneRecord {
        PhoneRecord {
            phone_number: "13800138000".to_owned(),
            pure_phone_number: "13800138000".to_owned(),
            country_code: CountryCode::Text("86".to_owned()),
            timestamp: 1,
        }
    }

    #[test]
    fn a_phone_code_is_exchanged_once_for_its_app_only() {
        let now = Instant::now();
        let mut state = State::new();
        state.insert_phone_code("p1".to_owned(), "wxa".to_owned(), record(), None, now);

        assert!(matches!(
            state.exchange_phone_code("wxb", "p1", now),
            Taken::Invalid
        ));
        assert!(matches!(
            state.exchange_phone_code("wxa", "p1", now),
            Taken::Ok(record) if record.pure_phone_number == "13800138000"
        ));
        assert!(matches!(
            state.exchange_phone_code("wxa", "p1", now),
            Taken::Used
        ));
        // Login codes and phone codes are different things.
        assert!(matches!(
            state.exchange("wxa", "p1", now),
            Exchange::Invalid
        ));
    }

    #[test]
    fn scoped_faults_wait_for_their_endpoint() {
        let mut state = State::new();
        state.push_fault(Fault::errcode(40001).for_endpoint(endpoint::CHECK_SESSION));
        state.push_fault(Fault::errcode(-1).for_endpoint(endpoint::JSCODE2SESSION));
        state.push_fault(Fault::errcode(45009).times(2));

        let take = |state: &mut State, endpoint| state.next_fault(endpoint).map(|f| f.errcode);
        assert_eq!(take(&mut state, endpoint::STABLE_TOKEN), Some(45009));
        assert_eq!(take(&mut state, endpoint::JSCODE2SESSION), Some(-1));
        assert_eq!(take(&mut state, endpoint::JSCODE2SESSION), Some(45009));
        assert_eq!(take(&mut state, endpoint::JSCODE2SESSION), None);
        assert_eq!(state.pending_faults(), 1);
        assert_eq!(take(&mut state, endpoint::CHECK_SESSION), Some(40001));
        assert_eq!(state.pending_faults(), 0);
    }

    #[test]
    fn a_fault_endpoint_round_trips_through_json() {
        let fault: Fault =
            serde_json::from_str(r#"{"errcode":40001,"endpoint":"checksession"}"#).unwrap();
        assert_eq!(
            fault,
            Fault::errcode(40001).for_endpoint(endpoint::CHECK_SESSION)
        );
    }
}

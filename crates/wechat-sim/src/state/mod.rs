//! What the simulator remembers between calls: minted login and phone
//! codes, the current session_key of each user, each app's access_tokens,
//! and the queue of scripted faults.
//!
//! Everything here is synchronous and cheap: callers hold the lock for a
//! hash-map operation or two and never across an await. Each kind of
//! memory has its module (`codes`, `tokens`, `fault`, with `sweep` keeping
//! the growing maps small); this one puts them behind the one lock's
//! [`State`], and `messages` holds what the control API exchanges.

use std::{collections::HashMap, time::Instant};

mod codes;
mod fault;
mod messages;
mod sweep;
mod tokens;

pub(crate) use codes::{CountryCode, Exchange, PhoneRecord, Taken};
pub use fault::{Fault, endpoint};
pub use messages::{MintCode, MintPhoneCode, Minted, MintedPhoneCode, Stats};
pub(crate) use tokens::{TokenKind, TokenLifetimes, TokenRefusal};

use codes::{Identity, OneTimeCodes};
use fault::Faults;
use tokens::Tokens;

/// The mutable state behind the simulator's lock.
pub(crate) struct State {
    codes: OneTimeCodes<Identity>,
    phone_codes: OneTimeCodes<PhoneRecord>,
    /// appid → openid → current session_key.
    session_keys: HashMap<String, HashMap<String, String>>,
    pub(crate) tokens: Tokens,
    pub(crate) faults: Faults,
}

impl State {
    pub(crate) fn new() -> Self {
        State {
            codes: OneTimeCodes::new(),
            phone_codes: OneTimeCodes::new(),
            session_keys: HashMap::new(),
            tokens: Tokens::new(),
            faults: Faults::default(),
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
}

#[cfg(test)]
mod tests;

//! Scripted misbehaviours of WeChat: a [`Fault`], the endpoints one can be
//! scoped to, and the queue the next calls take them from.

use std::{collections::VecDeque, time::Duration};

use serde::{Deserialize, Serialize};

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

/// The queued faults, first in first out.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    queue: VecDeque<Fault>,
}

impl Faults {
    pub(crate) fn push(&mut self, fault: Fault) {
        if fault.times > 0 {
            self.queue.push_back(fault);
        }
    }

    /// Takes one use of the first queued fault that answers `endpoint`.
    pub(crate) fn next(&mut self, endpoint: &str) -> Option<Fault> {
        let index = self
            .queue
            .iter()
            .position(|fault| fault.answers(endpoint))?;
        let fault = self.queue.get_mut(index)?;
        if fault.times > 1 {
            fault.times -= 1;
            let mut one = fault.clone();
            one.times = 1;
            Some(one)
        } else {
            self.queue.remove(index)
        }
    }

    pub(crate) fn pending(&self) -> u64 {
        self.queue.iter().map(|fault| u64::from(fault.times)).sum()
    }
}

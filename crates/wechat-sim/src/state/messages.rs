//! The control API's messages that the state keeps or answers with: the
//! requests to mint login and phone codes, what was minted, and the
//! counters. Data only: how codes are kept is `codes`'.

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

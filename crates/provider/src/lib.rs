//! The login-provider interface: what a door that logs people in (WeChat's
//! mini-program today; Official Account pages, website QR, apps, Douyin and
//! Alipay mini-programs next) must do for wxlogin, in types that name no
//! provider: exchange what the client hands over for who the user is,
//! open the user data the provider sealed, check its signatures, read a
//! phone number, and say whether a stored session secret is still valid.
//!
//! It is its own crate because two services use it: auth exchanges codes
//! and checks session secrets through it, the user service opens sealed
//! data through it. Each door is one implementation in its own crate
//! (`wxlogin_wechat::MiniProgram` is the first), added without touching
//! auth or the user service, whose cores call only [`LoginProvider`].
//!
//! It owns the interface, its neutral types and [`ProviderError`], which
//! says only what the core must know to answer. It must not do any I/O,
//! hold or store anything, or know any provider's wire format.

mod error;
mod types;

use async_trait::async_trait;

pub use error::{ErrorKind, ProviderError};
pub use types::{
    Exchanged, Expectations, LoginCode, OpenedData, PhoneNumber, Profile, Sealed, SessionSecret,
    Signed, Subject, SubjectKind,
};

/// A door that logs people in. Object-safe: the services hold an
/// `Arc<dyn LoginProvider>` (one per app, or one serving every app).
/// `Debug` output must never show a secret.
///
/// An implementation that lacks a capability answers
/// [`ErrorKind::Unsupported`] rather than pretend.
#[async_trait]
pub trait LoginProvider: Send + Sync + std::fmt::Debug {
    /// The provider's name, as log lines and errors say it (`"WeChat"`).
    fn name(&self) -> &'static str;

    /// Exchanges what the client of `appid` handed over for who it is.
    /// A code is single-use: the implementation must not retry a request
    /// that may have reached the provider.
    async fn exchange(&self, appid: &str, login: &LoginCode) -> Result<Exchanged, ProviderError>;

    /// Opens user data the provider sealed: with the session secret of the
    /// user's session where the provider has them (`secret`), else with the
    /// provider's own per-app content key; then checks it against `expect`.
    /// What the client can see without a key is wrong is
    /// [`ErrorKind::DataMalformed`]; everything else one
    /// [`ErrorKind::DataInvalid`], so that answers form no oracle.
    fn open(
        &self,
        sealed: &Sealed<'_>,
        secret: Option<&SessionSecret>,
        expect: &Expectations<'_>,
    ) -> Result<OpenedData, ProviderError>;

    /// Whether `signed` carries the provider's signature for the user of
    /// `appid` (made with the session secret, or with the per-app key).
    fn verify(&self, appid: &str, signed: &Signed<'_>, secret: Option<&SessionSecret>) -> bool;

    /// The profile in opened data; the provider's placeholders are absent.
    fn profile(&self, opened: &OpenedData) -> Profile;

    /// The phone number in opened data ([`ErrorKind::DataInvalid`] when it
    /// has none).
    fn phone_in(&self, opened: &OpenedData) -> Result<PhoneNumber, ProviderError>;

    /// Whether a nickname says nothing of the user (the provider's stand-in
    /// for a hidden one).
    fn is_placeholder_nickname(&self, nickname: &str) -> bool {
        nickname.trim().is_empty()
    }

    /// Whether an avatar URL says nothing of the user.
    fn is_placeholder_avatar(&self, url: &str) -> bool {
        url.trim().is_empty()
    }

    /// The phone number a phone `code` (not a login code) of `subject`, a
    /// user of `appid`, stands for.
    async fn phone_number(
        &self,
        appid: &str,
        subject: &str,
        code: &str,
    ) -> Result<PhoneNumber, ProviderError>;

    /// Whether `secret` is still the current session secret of `subject`,
    /// a user of `appid`.
    async fn session_secret_valid(
        &self,
        appid: &str,
        subject: &str,
        secret: &SessionSecret,
    ) -> Result<bool, ProviderError>;
}

//! What a provider's failure means for the core, whatever the provider: the
//! core answers by [`ErrorKind`] alone and logs the provider's own words.

use std::{borrow::Cow, error::Error, fmt};

/// What the core must know of a failure to answer it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The provider does not know the client's code (unknown, expired, of
    /// another app).
    CodeRefused,
    /// The code was used before.
    CodeSpent,
    /// The provider blocked the user (as high-risk).
    SubjectBlocked,
    /// The provider rate-limited the call.
    RateLimited,
    /// The provider said it is busy: nothing was spent, a retry may work.
    Busy,
    /// The provider could not be asked (not reached, or it refused our own
    /// access): nothing was spent.
    Unavailable,
    /// The request was sent but no answer came in time: a code in it may
    /// be spent.
    TimedOut,
    /// The provider answered, but not as its contract promises: a code in
    /// the request is spent.
    Failed,
    /// The provider refused our app's credentials: our configuration is
    /// wrong. [`ProviderError::code`] is the provider's code for it.
    CredentialsRefused,
    /// The provider's client cannot work as configured.
    Misconfigured,
    /// Sealed data or its iv is malformed in a way the client can see
    /// without any key; the message says how.
    DataMalformed,
    /// Sealed data does not open, or says what it must not.
    DataInvalid,
    /// This provider cannot do what was asked.
    Unsupported,
    /// A service the core lent the provider (an access_token cache) failed;
    /// the core knows what its own error means ([`ProviderError::into_host`]).
    Host,
}

/// A provider's failure: its kind, and the provider's own description,
/// which never carries a secret, a token or a request URL, so that it can
/// be logged. `Display` is that description.
#[derive(Debug)]
pub struct ProviderError {
    provider: &'static str,
    kind: ErrorKind,
    code: Option<i64>,
    detail: Detail,
}

#[derive(Debug)]
enum Detail {
    Text(Cow<'static, str>),
    Host(Box<dyn Error + Send + Sync>),
}

impl ProviderError {
    /// A failure of `provider` (its [`name`](crate::LoginProvider::name)).
    pub fn new(
        provider: &'static str,
        kind: ErrorKind,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        ProviderError {
            provider,
            kind,
            code: None,
            detail: Detail::Text(detail.into()),
        }
    }

    /// The same, with the provider's numeric code for it.
    pub fn with_code(mut self, code: i64) -> Self {
        self.code = Some(code);
        self
    }

    /// The core's own `error`, passed back through the provider.
    pub fn host(provider: &'static str, error: impl Error + Send + Sync + 'static) -> Self {
        ProviderError {
            provider,
            kind: ErrorKind::Host,
            code: None,
            detail: Detail::Host(Box::new(error)),
        }
    }

    /// The core's own error this carries, or the error itself.
    pub fn into_host(self) -> Result<Box<dyn Error + Send + Sync>, ProviderError> {
        match self.detail {
            Detail::Host(error) => Ok(error),
            Detail::Text(_) => Err(self),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Which provider failed.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The provider's numeric code for the failure, where it has one.
    pub fn code(&self) -> Option<i64> {
        self.code
    }

    /// Whether the provider refused the client's code itself (unknown, of
    /// another app, or used): what a client spends the app's quota with
    /// when it sends codes that are not real.
    pub fn is_code_refused(&self) -> bool {
        matches!(self.kind, ErrorKind::CodeRefused | ErrorKind::CodeSpent)
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.detail {
            Detail::Text(text) => f.write_str(text),
            Detail::Host(error) => fmt::Display::fmt(error, f),
        }
    }
}

impl Error for ProviderError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.detail {
            Detail::Host(error) => Some(&**error),
            Detail::Text(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_error_comes_back_as_it_went_in() {
        let error = ProviderError::host("WeChat", std::io::Error::other("store down"));
        assert_eq!(error.kind(), ErrorKind::Host);
        assert_eq!(error.to_string(), "store down");
        let back = error
            .into_host()
            .unwrap_or_else(|_| panic!("not a host error"));
        assert!(back.downcast::<std::io::Error>().is_ok());
    }

    #[test]
    fn a_provider_error_shows_its_own_words() {
        let error = ProviderError::new("WeChat", ErrorKind::CodeSpent, "the code was used")
            .with_code(40163);
        assert_eq!(error.to_string(), "the code was used");
        assert_eq!((error.provider(), error.code()), ("WeChat", Some(40163)));
        assert!(error.is_code_refused());
        assert!(error.into_host().is_err());
    }
}

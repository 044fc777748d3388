//! Which internal caller made a gRPC call: every call's credential is
//! checked before it reaches a handler (constant-time, against each
//! configured secret), and a handler can require one caller. The refusals
//! carry this crate's reasons.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use tonic::Status;
use wxlogin_common::grpc::CREDENTIAL_HEADER;

use crate::reason::Reason;

/// Who called: the credential the caller presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// The gateway or another internal consumer ([`INTERNAL_SECRET`](wxlogin_common::grpc::INTERNAL_SECRET)).
    Internal,
    /// The user service ([`INTERNAL_USER_SECRET`](wxlogin_common::grpc::INTERNAL_USER_SECRET)).
    UserService,
}

/// Checks every call's credential before it reaches a handler, and records
/// the [`Caller`] in the request's extensions. The health service is not
/// behind it: probes carry no credential.
#[derive(Clone)]
pub struct Authenticator {
    known: Arc<[(Vec<u8>, Caller)]>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(known: &[(&SecretString, Caller)]) -> Authenticator {
        Authenticator {
            known: known
                .iter()
                .map(|(secret, caller)| (secret.expose_secret().as_bytes().to_vec(), *caller))
                .collect(),
        }
    }

    fn caller(&self, presented: &[u8]) -> Option<Caller> {
        // Every secret is compared, in constant time, whatever matched.
        let mut found = None;
        for (secret, caller) in self.known.iter() {
            if bool::from(secret.as_slice().ct_eq(presented)) {
                found = Some(*caller);
            }
        }
        found
    }
}

impl tonic::service::Interceptor for Authenticator {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        let presented = request
            .metadata()
            .get(CREDENTIAL_HEADER)
            .and_then(|value| value.as_bytes().strip_prefix(b"Bearer "));
        match presented.and_then(|presented| self.caller(presented)) {
            Some(caller) => {
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            None => {
                tracing::warn!("refused a call without a valid internal credential");
                Err(Reason::CallerUnauthenticated.status("a valid internal credential is required"))
            }
        }
    }
}

/// Refuses a call unless its caller is `wanted`.
pub fn require_caller<T>(request: &tonic::Request<T>, wanted: Caller) -> Result<(), Status> {
    match request.extensions().get::<Caller>() {
        Some(caller) if *caller == wanted => Ok(()),
        _ => {
            tracing::warn!(
                ?wanted,
                "refused a call from a caller not allowed to make it"
            );
            Err(Reason::CallerForbidden.status("this caller may not make this call"))
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::service::Interceptor;

    use super::*;

    fn secret_of(text: &str) -> SecretString {
        SecretString::from(text.to_owned())
    }

    #[test]
    fn the_authenticator_tells_callers_apart_and_refuses_strangers() {
        let internal = secret_of(&"i".repeat(32));
        let user = secret_of(&"u".repeat(32));
        let mut check =
            Authenticator::new(&[(&internal, Caller::Internal), (&user, Caller::UserService)]);
        let with = |value: &str| {
            let mut request = tonic::Request::new(());
            request
                .metadata_mut()
                .insert(CREDENTIAL_HEADER, value.parse().unwrap());
            request
        };
        let accepted = check
            .call(with(&format!("Bearer {}", "u".repeat(32))))
            .unwrap();
        assert_eq!(
            accepted.extensions().get::<Caller>(),
            Some(&Caller::UserService)
        );
        assert!(require_caller(&accepted, Caller::UserService).is_ok());
        let gateway = check
            .call(with(&format!("Bearer {}", "i".repeat(32))))
            .unwrap();
        let refused = require_caller(&gateway, Caller::UserService).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::PermissionDenied);
        for bad in [
            "Bearer ".to_owned(),
            format!("Bearer {}", "i".repeat(31)),
            format!("Bearer {}x", "i".repeat(32)),
            "i".repeat(32),
            format!("Basic {}", "i".repeat(32)),
        ] {
            let status = check.call(with(&bad)).unwrap_err();
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{bad}");
        }
        assert!(check.call(tonic::Request::new(())).is_err());
    }
}

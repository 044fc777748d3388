//! The internal credentials tests configure the services with, and a client
//! interceptor that presents one, as the gateway and the user service do.

use tonic::{
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// `INTERNAL_SECRET` of every test deployment.
pub const INTERNAL_SECRET: &str = "test-internal-secret-0123456789abcdef";
/// `INTERNAL_USER_SECRET` of every test deployment.
pub const INTERNAL_USER_SECRET: &str = "test-user-secret-0123456789abcdef0123";

/// `DATA_ENCRYPTION_KEYS` of every test deployment: two keys, so that every
/// test runs with a key to rotate from (`test-b` seals).
pub const DATA_ENCRYPTION_KEYS: &str = "test-b:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=,\
     test-a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// `DATA_INDEX_KEY` of every test deployment.
pub const DATA_INDEX_KEY: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

/// [`DATA_ENCRYPTION_KEYS`], parsed.
pub fn data_keys() -> wxlogin_userdata::sealing::DataKeys {
    wxlogin_userdata::sealing::DataKeys::parse(DATA_ENCRYPTION_KEYS)
        .unwrap_or_else(|error| panic!("the test keys: {error}"))
}

/// [`DATA_INDEX_KEY`], parsed.
pub fn index_key() -> wxlogin_userdata::sealing::IndexKey {
    wxlogin_userdata::sealing::IndexKey::parse(DATA_INDEX_KEY)
        .unwrap_or_else(|error| panic!("the test index key: {error}"))
}

/// Presents a credential on every call.
#[derive(Clone)]
pub struct Credential(AsciiMetadataValue);

impl Credential {
    /// The gateway's (and any internal consumer's) credential.
    pub fn internal() -> Credential {
        Credential::of(INTERNAL_SECRET)
    }

    /// The user service's credential.
    pub fn user_service() -> Credential {
        Credential::of(INTERNAL_USER_SECRET)
    }

    /// Any credential, right or wrong.
    pub fn of(secret: &str) -> Credential {
        Credential(
            AsciiMetadataValue::try_from(format!("Bearer {secret}"))
                .unwrap_or_else(|_| AsciiMetadataValue::from_static("Bearer -")),
        )
    }
}

impl Interceptor for Credential {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel that presents a credential.
pub type Authed = InterceptedService<Channel, Credential>;

/// A channel to `http://{addr}` presenting `credential` (connects lazily).
pub fn channel(addr: std::net::SocketAddr, credential: Credential) -> Authed {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map(|endpoint| endpoint.connect_lazy())
        .unwrap_or_else(|error| panic!("http://{addr} is not an endpoint: {error}"));
    InterceptedService::new(channel, credential)
}

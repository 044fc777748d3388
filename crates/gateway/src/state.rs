//! `AppState`, what every handler shares: the two upstreams and how a call
//! to them is built (deadline, credential, request id), their readiness,
//! and the one session resolver: the only way a bearer token becomes a
//! session, and a session its user (the routes, `/v1/verify` and proxy mode
//! all go through it).
//!
//! It holds the data keys that open the user copies sessions come with; it
//! must not hold anything a request changes, nor know any route.

use std::{sync::Arc, time::Duration};

use axum::extract::FromRef;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use wxlogin_common::grpc::{Upstream, UpstreamChannel};
use wxlogin_proto::{
    auth::v1::{
        Session, ValidateSessionRequest, ValidateSessionResponse,
        auth_service_client::AuthServiceClient, auth_service_server,
    },
    reason::Reason,
    user::v1::{
        self as user, GetUserRequest, get_user_request::Key,
        user_service_client::UserServiceClient, user_service_server,
    },
};
use wxlogin_userdata::{copy as user_copy, sealing::DataKeys};

use crate::{
    client_ip::TrustedProxies,
    error::{ApiError, Missing},
    extract::RequestId,
    proxy::Proxy,
};

/// How long `/readyz` waits for each service.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// What every handler shares. The upstreams hold multiplexed HTTP/2
/// connections, cloned per call, never re-created.
#[derive(Clone)]
pub struct AppState {
    auth: Upstream,
    user: Upstream,
    trusted_proxies: Arc<TrustedProxies>,
    /// Proxy mode, when `PROXY_ROUTES` names any route.
    proxy: Option<Arc<Proxy>>,
    /// What the user copies that come with sessions are sealed with.
    keys: DataKeys,
}

impl AppState {
    pub(crate) fn new(
        auth: Upstream,
        user: Upstream,
        trusted_proxies: TrustedProxies,
        proxy: Option<Proxy>,
        keys: DataKeys,
    ) -> AppState {
        AppState {
            auth,
            user,
            trusted_proxies: Arc::new(trusted_proxies),
            proxy: proxy.map(Arc::new),
            keys,
        }
    }

    /// Proxy mode's routes and client, when it is on.
    pub(crate) fn proxy(&self) -> Option<Arc<Proxy>> {
        self.proxy.clone()
    }

    pub(crate) fn auth(&self) -> AuthServiceClient<UpstreamChannel> {
        AuthServiceClient::new(self.auth.channel())
    }

    pub(crate) fn user(&self) -> UserServiceClient<UpstreamChannel> {
        UserServiceClient::new(self.user.channel())
    }

    /// A gRPC request with the call's deadline, our credential and the
    /// HTTP request's id (the same for both upstreams).
    pub(crate) fn request<T>(&self, request_id: &RequestId, message: T) -> tonic::Request<T> {
        let id = request_id.as_str();
        self.auth.call(message, id)
    }
}

/// For [`crate::client_ip::ClientIp`], which reads only these.
impl FromRef<AppState> for Arc<TrustedProxies> {
    fn from_ref(state: &AppState) -> Self {
        state.trusted_proxies.clone()
    }
}

/// The result of one readiness check, as `/readyz` shows it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) enum Readiness {
    #[serde(rename = "ok")]
    Ready,
    #[serde(rename = "not_serving")]
    NotServing,
    #[serde(rename = "unreachable")]
    Unreachable,
}

impl Readiness {
    pub(crate) fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready)
    }
}

async fn check(mut client: HealthClient<UpstreamChannel>, service: &str) -> Readiness {
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_owned(),
    });
    request.set_timeout(READY_TIMEOUT);
    match tokio::time::timeout(READY_TIMEOUT, client.check(request)).await {
        Ok(Ok(response)) if response.get_ref().status() == ServingStatus::Serving => {
            Readiness::Ready
        }
        Ok(Ok(_)) => Readiness::NotServing,
        Ok(Err(_)) | Err(_) => Readiness::Unreachable,
    }
}

impl AppState {
    pub(crate) async fn check_auth(&self) -> Readiness {
        check(
            HealthClient::new(self.auth.channel()),
            auth_service_server::SERVICE_NAME,
        )
        .await
    }

    pub(crate) async fn check_user(&self) -> Readiness {
        check(
            HealthClient::new(self.user.channel()),
            user_service_server::SERVICE_NAME,
        )
        .await
    }
}

/// A live session, as auth vouches for it.
pub(crate) struct ValidSession {
    /// Its app and user.
    pub(crate) session: Session,
    /// Its public id (as `X-Wx-Session-Id`): never the token.
    pub(crate) id: String,
    /// The user service's sealed copy of its user; empty without one.
    copy: Vec<u8>,
}

impl TryFrom<ValidateSessionResponse> for ValidSession {
    type Error = Missing;

    fn try_from(answer: ValidateSessionResponse) -> Result<Self, Missing> {
        Ok(ValidSession {
            session: answer.session.ok_or(Missing("session"))?,
            id: answer.session_id,
            copy: answer.user_copy,
        })
    }
}

/// The session resolver.
impl AppState {
    /// The live session `token` names (auth restarts its idle period).
    pub(crate) async fn session(
        &self,
        request_id: &RequestId,
        token: String,
    ) -> Result<ValidSession, ApiError> {
        let request = self.request(request_id, ValidateSessionRequest { token });
        let answer = self.auth().validate_session(request).await?.into_inner();
        Ok(ValidSession::try_from(answer)?)
    }

    /// The user of a live session: the copy that came with it, else the
    /// user service's row.
    pub(crate) async fn user_of(
        &self,
        request_id: &RequestId,
        mut valid: ValidSession,
    ) -> Result<user::User, ApiError> {
        // The session usually comes with the user service's copy of its
        // user: then neither the user service nor MySQL is asked.
        if !valid.copy.is_empty()
            && let Some(user) = self.open_copy(&mut valid.copy, &valid.session)
        {
            return Ok(user);
        }
        let key = Key::Openid(user::OpenId {
            appid: valid.session.appid,
            openid: valid.session.openid,
        });
        let found = self
            .user()
            .get_user(self.request(request_id, GetUserRequest { key: Some(key) }))
            .await;
        match found {
            Ok(response) => Ok(response.into_inner().user.ok_or(Missing("user"))?),
            // A live session whose user is gone (the row was deleted): the
            // client must log in again, which registers the user anew.
            Err(status) if wxlogin_proto::reason::of(&status) == Some(Reason::UserNotFound) => {
                Err(ApiError::invalid_token())
            }
            Err(status) => Err(status.into()),
        }
    }

    /// The id of a live session's user, when the session came with the
    /// user's copy (for audit events; `None` otherwise). Opens the copy in
    /// place.
    pub(crate) fn user_id_of(&self, valid: &mut ValidSession) -> Option<u64> {
        self.open_copy(&mut valid.copy, &valid.session)
            .map(|user| user.id)
    }

    /// The user in the copy that came with `session` (opened in place);
    /// `None` when there is none this build can open.
    pub(crate) fn open_copy(&self, copy: &mut [u8], session: &Session) -> Option<user::User> {
        user_copy::decode(&self.keys, copy, &session.appid, &session.openid)
    }
}

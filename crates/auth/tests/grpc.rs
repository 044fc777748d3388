//! The auth service over real gRPC, with the WeChat simulator and Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, net::SocketAddr};

use prost::Message;
use tonic::Code;
use wxlogin_auth::{Application, Config};
use wxlogin_common::user_copy;
use wxlogin_proto::{
    auth::v1::{
        GetPhoneNumberRequest, GetSessionKeyRequest, LoginRequest, LogoutRequest,
        ValidateSessionRequest, auth_service_client::AuthServiceClient,
    },
    reason::{self, Reason},
    user::v1::User,
};
use wxlogin_testkit::{
    TestRedisPrefix,
    credential::{Authed, Credential, INTERNAL_SECRET, INTERNAL_USER_SECRET, channel},
};
use wxlogin_wechat_sim::{
    DEFAULT_APPID, DEFAULT_SECRET, MintCode, MintPhoneCode, RunningSimulator, SimConfig, Simulator,
};

struct Harness {
    /// A client with the gateway's credential.
    client: AuthServiceClient<Authed>,
    addr: SocketAddr,
    sim: RunningSimulator,
    _redis: TestRedisPrefix,
}

impl Harness {
    /// A client presenting `credential`.
    fn client_as(&self, credential: Credential) -> AuthServiceClient<Authed> {
        AuthServiceClient::new(channel(self.addr, credential))
    }
}

async fn start() -> Harness {
    let sim = Simulator::new(SimConfig::default())
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let redis = TestRedisPrefix::new();
    let addr = spawn_instance(&sim, &redis).await;
    Harness {
        client: AuthServiceClient::new(channel(addr, Credential::internal())),
        addr,
        sim,
        _redis: redis,
    }
}

/// One more auth instance, sharing the simulator and the Redis prefix, and
/// a client of it with the gateway's credential.
async fn instance(sim: &RunningSimulator, redis: &TestRedisPrefix) -> AuthServiceClient<Authed> {
    let addr = spawn_instance(sim, redis).await;
    AuthServiceClient::new(channel(addr, Credential::internal()))
}

async fn spawn_instance(sim: &RunningSimulator, redis: &TestRedisPrefix) -> SocketAddr {
    let env: HashMap<&str, String> = HashMap::from([
        ("AUTH_ADDR", "127.0.0.1:0".to_owned()),
        ("REDIS_URL", redis.url().to_owned()),
        ("REDIS_KEY_PREFIX", redis.prefix().to_owned()),
        ("WECHAT_API_BASE", sim.base_url()),
        ("WECHAT_APPID", DEFAULT_APPID.to_owned()),
        ("WECHAT_SECRET", DEFAULT_SECRET.to_owned()),
        ("INTERNAL_SECRET", INTERNAL_SECRET.to_owned()),
        ("INTERNAL_USER_SECRET", INTERNAL_USER_SECRET.to_owned()),
    ]);
    let config = Config::from_source(&move |name: &str| env.get(name).cloned()).unwrap();
    let app = Application::build(config).await.unwrap();
    let addr = app.local_addr();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    addr
}

#[tokio::test]
async fn login_validate_logout() {
    let mut h = start().await;
    let minted = h.sim.sim.mint_code(MintCode {
        unionid: Some("oUnion_grpc".into()),
        ..MintCode::default()
    });

    let login = h
        .client
        .login(LoginRequest {
            appid: String::new(),
            code: minted.code.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let session = login.session.unwrap();
    assert_eq!(session.appid, DEFAULT_APPID);
    assert_eq!(session.openid, minted.openid);
    assert_eq!(session.unionid.as_deref(), Some("oUnion_grpc"));
    assert_eq!(login.token.len(), 43);

    let valid = h
        .client
        .validate_session(ValidateSessionRequest {
            token: login.token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(valid.session.unwrap().openid, minted.openid);
    assert!(valid.expires_in > 0);

    let ended = h
        .client
        .logout(LogoutRequest {
            token: login.token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(ended.ended);
    let status = h
        .client
        .validate_session(ValidateSessionRequest { token: login.token })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(reason::of(&status), Some(Reason::InvalidToken));
}

#[tokio::test]
async fn a_login_brings_the_user_services_cached_copy_of_the_user() {
    let h = start().await;
    let openid = h.sim.sim.mint_code(MintCode::default()).openid;
    // A login of that user with a fresh code: its answer's `user`.
    let login = || {
        let code = h
            .sim
            .sim
            .mint_code(MintCode {
                openid: Some(openid.clone()),
                ..MintCode::default()
            })
            .code;
        let mut client = h.client.clone();
        async move {
            let request = LoginRequest {
                appid: String::new(),
                code,
            };
            client.login(request).await.unwrap().into_inner().user
        }
    };
    let key = user_copy::key(h._redis.prefix(), DEFAULT_APPID, &openid);
    let mut conn = redis::Client::open(h._redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut put_copy = async |bytes: Vec<u8>| {
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(bytes)
            .query_async(&mut conn)
            .await
            .unwrap();
    };

    // No copy yet: a new user.
    assert_eq!(login().await, None);

    // The user service's copy, where it writes it.
    let copy = User {
        id: 7,
        appid: DEFAULT_APPID.into(),
        openid: openid.clone(),
        nickname: Some("Ann".into()),
        ..User::default()
    };
    put_copy(copy.encode_to_vec()).await;
    assert_eq!(login().await, Some(copy));

    // A copy that does not decode is no copy.
    put_copy(b"not a user".to_vec()).await;
    assert_eq!(login().await, None);
}

#[tokio::test]
async fn failures_carry_their_reason() {
    let mut h = start().await;
    let cases = [
        (
            "",
            "0a3Kx7000Gj5oS1e2x300E0uXd2Kx70f",
            Code::Unauthenticated,
            Reason::InvalidCode,
        ),
        (
            "",
            "has spaces",
            Code::InvalidArgument,
            Reason::InvalidArgument,
        ),
        ("", "", Code::InvalidArgument, Reason::InvalidArgument),
        (
            "wxunknown",
            "abc",
            Code::InvalidArgument,
            Reason::UnknownApp,
        ),
    ];
    for (appid, code, expected_code, expected_reason) in cases {
        let status = h
            .client
            .login(LoginRequest {
                appid: appid.into(),
                code: code.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), expected_code, "{code:?}");
        assert_eq!(reason::of(&status), Some(expected_reason), "{code:?}");
    }
    let status = h
        .client
        .validate_session(ValidateSessionRequest { token: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(reason::of(&status), Some(Reason::InvalidToken));
    // Logging out an unknown token is not an error: it just ended nothing.
    let ended = h
        .client
        .logout(LogoutRequest { token: "x".into() })
        .await
        .unwrap()
        .into_inner();
    assert!(!ended.ended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_phone_requests_on_two_instances_fetch_one_access_token() {
    // Arrange: two auth instances sharing Redis, a cold token cache, and a
    // WeChat slow enough that the requests overlap.
    let h = start().await;
    let second = instance(&h.sim, &h._redis).await;
    let minted = h.sim.sim.mint_code(MintCode::default());
    let token = h
        .client
        .clone()
        .login(LoginRequest {
            appid: String::new(),
            code: minted.code,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    h.sim.sim.set_latency(std::time::Duration::from_millis(150));
    let calls = (0..20).map(|i| {
        let mut client = if i % 2 == 0 {
            h.client.clone()
        } else {
            second.clone()
        };
        let code = h.sim.sim.mint_phone_code(MintPhoneCode::default()).code;
        let token = token.clone();
        async move {
            client
                .get_phone_number(GetPhoneNumberRequest { token, code })
                .await
        }
    });

    // Act
    let answers = futures::future::join_all(calls).await;

    // Assert
    for answer in &answers {
        let phone = answer.as_ref().unwrap().get_ref().phone.clone().unwrap();
        assert!(!phone.pure_phone_number.is_empty());
    }
    assert_eq!(h.sim.sim.stable_token_calls(), 1);
}

#[tokio::test]
async fn the_session_key_is_for_the_user_service_and_stale_after_a_newer_login() {
    let mut h = start().await;
    let first = h.sim.sim.mint_code(MintCode::default());
    let token = h
        .client
        .login(LoginRequest {
            appid: String::new(),
            code: first.code,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut user_service = h.client_as(Credential::user_service());
    let key = user_service
        .get_session_key(GetSessionKeyRequest {
            token: token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(key.session_key, first.session_key);

    // The gateway's credential, a wrong one, or none: no session key.
    let refused = h
        .client
        .get_session_key(GetSessionKeyRequest {
            token: token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(reason::of(&refused), Some(Reason::CallerForbidden));
    for credential in [
        Credential::of("not-the-secret-0123456789abcdef0123456"),
        Credential::of(""),
    ] {
        let refused = h
            .client_as(credential)
            .get_session_key(GetSessionKeyRequest {
                token: token.clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert_eq!(reason::of(&refused), Some(Reason::CallerUnauthenticated));
    }
    let mut bare = AuthServiceClient::connect(format!("http://{}", h.addr))
        .await
        .unwrap();
    let refused = bare
        .validate_session(ValidateSessionRequest {
            token: token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason::of(&refused), Some(Reason::CallerUnauthenticated));

    let again = h.sim.sim.mint_code(MintCode {
        openid: Some(first.openid),
        ..MintCode::default()
    });
    h.client
        .login(LoginRequest {
            appid: String::new(),
            code: again.code,
        })
        .await
        .unwrap();
    let status = user_service
        .get_session_key(GetSessionKeyRequest { token })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(reason::of(&status), Some(Reason::SessionKeyStale));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_refreshes_the_access_token_ahead_of_expiry() {
    // Arrange: tokens live 2 s, so the cache asks for a refresh after 1 s.
    let h = start().await;
    let second = instance(&h.sim, &h._redis).await;
    h.sim
        .sim
        .set_access_token_ttl(std::time::Duration::from_secs(2));
    let minted = h.sim.sim.mint_code(MintCode::default());
    let token = h
        .client
        .clone()
        .login(LoginRequest {
            appid: String::new(),
            code: minted.code,
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let phone = |mut client: AuthServiceClient<Authed>| {
        let code = h.sim.sim.mint_phone_code(MintPhoneCode::default()).code;
        let token = token.clone();
        async move {
            client
                .get_phone_number(GetPhoneNumberRequest { token, code })
                .await
        }
    };
    phone(h.client.clone()).await.unwrap();
    assert_eq!(h.sim.sim.stable_token_calls(), 1);

    // Act: ten calls on two instances inside the refresh window.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let calls = (0..10).map(|i| {
        phone(if i % 2 == 0 {
            h.client.clone()
        } else {
            second.clone()
        })
    });
    let answers = futures::future::join_all(calls).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Assert: all served with the current token; one refresh in all.
    assert!(answers.iter().all(Result::is_ok));
    assert_eq!(h.sim.sim.stable_token_calls(), 2);
}

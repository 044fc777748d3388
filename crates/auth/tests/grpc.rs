//! The auth service over real gRPC, with the WeChat simulator and Redis.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, net::SocketAddr};

use prost::Message;
use tonic::Code;
use wxlogin_auth::{Application, Config};
use wxlogin_proto::{
    auth::v1::{
        GetPhoneNumberRequest, GetSessionKeyRequest, LoginRequest, LogoutRequest,
        ValidateSessionRequest, auth_service_client::AuthServiceClient,
    },
    reason::{self, Reason},
    user::v1::User,
};
use wxlogin_testkit::{
    PrivateRedis, TestRedisPrefix,
    credential::{Authed, Credential, INTERNAL_SECRET, INTERNAL_USER_SECRET, channel},
};
use wxlogin_userdata::copy as user_copy;
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

    /// Logs in with `code` at the default app and answers the session token.
    async fn log_in(&self, code: String) -> String {
        self.client
            .clone()
            .login(LoginRequest {
                appid: String::new(),
                code,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .token
    }
}

async fn start() -> Harness {
    let sim = Simulator::new(SimConfig::default())
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let redis = TestRedisPrefix::new();
    let addr = spawn_instance(&sim, &redis, &[]).await;
    Harness {
        client: AuthServiceClient::new(channel(addr, Credential::internal())),
        addr,
        sim,
        _redis: redis,
    }
}

/// One more auth instance, sharing the simulator and the Redis prefix, with
/// budgets no test here spends unless it means to, and a client of it with
/// the gateway's credential.
async fn instance(sim: &RunningSimulator, redis: &TestRedisPrefix) -> AuthServiceClient<Authed> {
    instance_with(sim, redis, &[]).await
}

/// One more auth instance, with `settings` over the defaults.
async fn instance_with(
    sim: &RunningSimulator,
    redis: &TestRedisPrefix,
    settings: &[(&'static str, &str)],
) -> AuthServiceClient<Authed> {
    let addr = spawn_instance(sim, redis, settings).await;
    AuthServiceClient::new(channel(addr, Credential::internal()))
}

async fn spawn_instance(
    sim: &RunningSimulator,
    redis: &TestRedisPrefix,
    settings: &[(&'static str, &str)],
) -> SocketAddr {
    let mut env: HashMap<&str, String> = HashMap::from([
        ("AUTH_ADDR", "127.0.0.1:0".to_owned()),
        ("REDIS_URL", redis.url().to_owned()),
        ("REDIS_KEY_PREFIX", redis.prefix().to_owned()),
        ("WECHAT_API_BASE", sim.base_url()),
        ("WECHAT_APPID", DEFAULT_APPID.to_owned()),
        ("WECHAT_SECRET", DEFAULT_SECRET.to_owned()),
        ("INTERNAL_SECRET", INTERNAL_SECRET.to_owned()),
        ("INTERNAL_USER_SECRET", INTERNAL_USER_SECRET.to_owned()),
        ("RATE_LIMIT_LOGIN_PER_IP", "10000".to_owned()),
        ("RATE_LIMIT_LOGIN_PER_APP", "10000".to_owned()),
        ("RATE_LIMIT_CHECK_SESSION_PER_USER", "10000".to_owned()),
        ("RATE_LIMIT_PHONE_PER_USER", "10000".to_owned()),
    ]);
    env.extend(settings.iter().map(|(k, v)| (*k, (*v).to_owned())));
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
            ..Default::default()
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
async fn a_login_brings_the_users_copy_and_journals_the_logins_it_answers() {
    let h = start().await;
    let openid = h.sim.sim.mint_code(MintCode::default()).openid;
    // A login of that user with a fresh code (and maybe a unionid): its
    // answer's copy and whether the copy answered it.
    let login = |unionid: Option<&str>| {
        let code = h
            .sim
            .sim
            .mint_code(MintCode {
                openid: Some(openid.clone()),
                unionid: unionid.map(str::to_owned),
                ..MintCode::default()
            })
            .code;
        let mut client = h.client.clone();
        async move {
            let request = LoginRequest {
                appid: String::new(),
                code,
                ..Default::default()
            };
            let login = client.login(request).await.unwrap().into_inner();
            (login.user_copy, login.login_recorded)
        }
    };
    let key = wxlogin_redis::Keyspace::new(h._redis.prefix()).user_copy(DEFAULT_APPID, &openid);
    let journal = wxlogin_redis::Keyspace::new(h._redis.prefix()).journal();
    let mut conn = redis::Client::open(h._redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut redis = async |command: &mut redis::Cmd| -> redis::Value {
        command.query_async(&mut conn).await.unwrap()
    };

    // No copy yet: a new user, nothing journaled.
    assert_eq!(login(None).await, (Vec::new(), false));
    assert_eq!(
        redis(redis::cmd("XLEN").arg(&journal)).await,
        redis::Value::Int(0)
    );

    // The user service's copy, where it writes it. The script's rule and
    // `user_copy::answers_login` agree on every case.
    let without = User {
        id: 7,
        appid: DEFAULT_APPID.into(),
        openid: openid.clone(),
        nickname: Some("Ann".into()),
        ..User::default()
    };
    let with = User {
        unionid: Some("u-1".into()),
        ..without.clone()
    };
    let mut expected_journal = 0;
    for (copy, unionid, answers) in [
        (&without, None, true),
        (&without, Some("u-1"), false),
        (&with, Some("u-1"), true),
        (&with, None, true),
    ] {
        let bytes = user_copy::encode(&wxlogin_testkit::credential::data_keys(), copy).unwrap();
        redis(redis::cmd("SET").arg(&key).arg(&bytes)).await;
        assert_eq!(
            user_copy::answers_login(copy, DEFAULT_APPID, &openid, unionid),
            answers
        );
        assert_eq!(
            login(unionid).await,
            (bytes, answers),
            "{copy:?} {unionid:?}"
        );
        expected_journal += i64::from(answers);
        assert_eq!(
            redis(redis::cmd("XLEN").arg(&journal)).await,
            redis::Value::Int(expected_journal)
        );
    }
    let redis::Value::Array(entries) =
        redis(redis::cmd("XRANGE").arg(&journal).arg("-").arg("+")).await
    else {
        panic!("XRANGE answers entries");
    };
    let entry = format!("{:?}", entries[0]);
    assert!(
        entry.contains(&openid) && entry.contains(DEFAULT_APPID),
        "{entry}"
    );

    // Bytes that are not a copy of this build's format answer nothing.
    redis(
        redis::cmd("SET")
            .arg(&key)
            .arg(User::default().encode_to_vec()),
    )
    .await;
    assert!(!login(None).await.1);
    assert_eq!(
        redis(redis::cmd("XLEN").arg(&journal)).await,
        redis::Value::Int(expected_journal)
    );
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
                ..Default::default()
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
    let token = h
        .log_in(h.sim.sim.mint_code(MintCode::default()).code)
        .await;
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
    let token = h.log_in(first.code).await;
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
            ..Default::default()
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
    // Arrange: tokens live 6 s, so the cache asks for a refresh after 3 s
    // (and for the next one 3 s after that: time enough for the calls on a
    // busy machine).
    let h = start().await;
    let second = instance(&h.sim, &h._redis).await;
    h.sim
        .sim
        .set_access_token_ttl(std::time::Duration::from_secs(6));
    let token = h
        .log_in(h.sim.sim.mint_code(MintCode::default()).code)
        .await;
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
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
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

/// A login of a code WeChat does not know, from `client` (as the gateway
/// names it) or, with `None`, from whoever the test process is.
async fn bogus_login(
    mut client: AuthServiceClient<Authed>,
    from: Option<&str>,
    code: String,
) -> tonic::Status {
    let mut request = tonic::Request::new(LoginRequest {
        appid: String::new(),
        code,
        ..Default::default()
    });
    if let Some(ip) = from {
        wxlogin_common::grpc::set_client_ip(&mut request, ip.parse().unwrap());
    }
    client.login(request).await.unwrap_err()
}

/// How many of `answers` reached WeChat (and were refused as bogus codes),
/// and how many our budget refused; every budget refusal says when to retry.
fn tally(answers: &[tonic::Status]) -> (usize, usize) {
    let mut reached = 0;
    let mut limited = 0;
    for status in answers {
        match reason::of(status) {
            Some(Reason::InvalidCode) => reached += 1,
            Some(Reason::RateLimited) => {
                assert_eq!(status.code(), Code::ResourceExhausted);
                let after = reason::retry_after(status).expect("a RetryInfo");
                assert!(after > std::time::Duration::ZERO, "{after:?}");
                assert!(after <= std::time::Duration::from_secs(60), "{after:?}");
                limited += 1;
            }
            other => panic!("unexpected {other:?}: {status:?}"),
        }
    }
    (reached, limited)
}

const BUDGET: usize = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_login_budget_holds_across_instances() {
    // Arrange: two instances sharing one Redis prefix, four logins a minute
    // per address.
    let h = start().await;
    let budget = BUDGET.to_string();
    let settings = [
        ("RATE_LIMIT_LOGIN_PER_IP", budget.as_str()),
        ("RATE_LIMIT_LOGIN_PER_APP", "0"),
    ];
    let first = instance_with(&h.sim, &h._redis, &settings).await;
    let second = instance_with(&h.sim, &h._redis, &settings).await;

    // Real logins from that address first: never counted, however many.
    for i in 0..2 * BUDGET {
        let mut client = if i % 2 == 0 { &first } else { &second }.clone();
        let mut request = tonic::Request::new(LoginRequest {
            appid: String::new(),
            code: h.sim.sim.mint_code(MintCode::default()).code,
            ..Default::default()
        });
        wxlogin_common::grpc::set_client_ip(&mut request, "198.51.100.7".parse().unwrap());
        client.login(request).await.unwrap();
    }
    let real = 2 * BUDGET as u64;

    // Act: twice the budget of bogus codes from one address, one after the
    // other, alternating between the instances. (Refused codes are what is
    // counted, after WeChat refused them: bogus codes sent all at once may
    // overshoot once, see `Limiter::login`.)
    let mut answers = Vec::new();
    for i in 0..2 * BUDGET {
        let client = if i % 2 == 0 { &first } else { &second }.clone();
        answers.push(bogus_login(client, Some("198.51.100.7"), format!("bogus{i:04}")).await);
    }

    // Assert: exactly the budget reached WeChat.
    assert_eq!(tally(&answers), (BUDGET, BUDGET));
    assert_eq!(h.sim.sim.code2session_calls(), real + BUDGET as u64);
    // Another address, and a caller that names none, have budgets of their own.
    let other = bogus_login(second.clone(), Some("198.51.100.8"), "other".into()).await;
    assert_eq!(reason::of(&other), Some(Reason::InvalidCode));
    let internal = bogus_login(first.clone(), None, "internal".into()).await;
    assert_eq!(reason::of(&internal), Some(Reason::InvalidCode));
    // Malformed codes and unknown apps never reach WeChat and cost nothing.
    let malformed = bogus_login(first.clone(), Some("198.51.100.7"), "no way".into()).await;
    assert_eq!(reason::of(&malformed), Some(Reason::InvalidArgument));
    assert_eq!(h.sim.sim.code2session_calls(), real + BUDGET as u64 + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_app_login_budget_holds_across_instances() {
    // Arrange
    let h = start().await;
    let budget = BUDGET.to_string();
    let settings = [
        ("RATE_LIMIT_LOGIN_PER_IP", "1"),
        ("RATE_LIMIT_LOGIN_PER_APP", budget.as_str()),
    ];
    let first = instance_with(&h.sim, &h._redis, &settings).await;
    let second = instance_with(&h.sim, &h._redis, &settings).await;

    // Act: twice the app's budget, each from an address of its own, one
    // after the other, alternating between the instances.
    let mut answers = Vec::new();
    for i in 0..2 * BUDGET {
        let client = if i % 2 == 0 { &first } else { &second }.clone();
        let from = format!("203.0.113.{}", i + 1);
        answers.push(bogus_login(client, Some(&from), format!("bogus{i:04}")).await);
    }

    // Assert
    assert_eq!(tally(&answers), (BUDGET, BUDGET));
    assert_eq!(h.sim.sim.code2session_calls(), BUDGET as u64);
    for status in &answers {
        if reason::of(status) == Some(Reason::RateLimited) {
            assert!(status.message().contains("mini-program"), "{status:?}");
        }
    }
}

#[tokio::test]
async fn the_phone_number_budget_is_per_user() {
    // Arrange: two phone numbers a minute per user.
    let h = start().await;
    let mut client = instance_with(&h.sim, &h._redis, &[("RATE_LIMIT_PHONE_PER_USER", "2")]).await;
    let login = async || {
        let code = h.sim.sim.mint_code(MintCode::default()).code;
        let request = LoginRequest {
            appid: String::new(),
            code,
            ..Default::default()
        };
        client
            .clone()
            .login(request)
            .await
            .unwrap()
            .into_inner()
            .token
    };
    let (alice, bob) = (login().await, login().await);
    let mut phone = async |token: &str| {
        let code = h.sim.sim.mint_phone_code(MintPhoneCode::default()).code;
        let token = token.to_owned();
        client
            .get_phone_number(GetPhoneNumberRequest { token, code })
            .await
    };

    // Act
    let answers = [
        phone(&alice).await,
        phone(&alice).await,
        phone(&alice).await,
    ];
    let bobs = phone(&bob).await;

    // Assert
    assert!(answers[0].is_ok() && answers[1].is_ok());
    let refused = answers[2].as_ref().unwrap_err();
    assert_eq!(reason::of(refused), Some(Reason::RateLimited));
    assert!(reason::retry_after(refused).is_some());
    assert!(bobs.is_ok(), "{bobs:?}");
    assert_eq!(h.sim.sim.phone_number_calls(), 3);
}

#[tokio::test]
async fn without_redis_a_login_is_refused_as_unavailable_before_wechat() {
    // Arrange: an instance on a Redis that then goes away.
    let sim = Simulator::new(SimConfig::default())
        .spawn(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let mut redis = PrivateRedis::start();
    let env: HashMap<&str, String> = HashMap::from([
        ("AUTH_ADDR", "127.0.0.1:0".to_owned()),
        ("REDIS_URL", redis.url()),
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
    let client = AuthServiceClient::new(channel(addr, Credential::internal()));
    redis.stop();

    // Act
    let status = bogus_login(client, Some("198.51.100.7"), "bogus".into()).await;

    // Assert: the budget could not be checked, so WeChat was not asked.
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason::of(&status), Some(Reason::DependencyUnavailable));
    assert_eq!(sim.sim.code2session_calls(), 0);
}

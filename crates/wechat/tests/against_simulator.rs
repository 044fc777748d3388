//! The client against our WeChat simulator over a real socket: WeChat's
//! answers as they arrive on the wire (`text/plain` JSON, errcodes on HTTP
//! 200), real timeouts and real refused connections.

// Test code: a failed unwrap is a failed test, and helpers sit outside #[test].
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use wxlogin_wechat::{
    AccessToken, AppCredentials, Client, ClientConfig, Error, SessionKey, Watermark,
};
use wxlogin_wechat_sim::{
    DEFAULT_APPID, DEFAULT_SECRET, Fault, MintCode, MintPhoneCode, RunningSimulator, SimConfig,
    Simulator, endpoint,
};

const WRONG_SECRET: &str = "wrong0secret0that0must0not0leak";

struct TestApp {
    server: RunningSimulator,
    client: Client,
    app: AppCredentials,
}

impl TestApp {
    async fn spawn() -> Self {
        Self::spawn_with_timeout(Duration::from_secs(5)).await
    }

    async fn spawn_with_timeout(timeout: Duration) -> Self {
        let server = Simulator::new(SimConfig::default())
            .spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client = Client::new(ClientConfig {
            base_url: server.base_url(),
            timeout,
            connect_timeout: Duration::from_secs(2),
        })
        .unwrap();
        TestApp {
            server,
            client,
            app: AppCredentials::new(DEFAULT_APPID, DEFAULT_SECRET),
        }
    }

    fn mint(&self) -> String {
        self.server.sim.mint_code(MintCode::default()).code
    }

    async fn exchange(&self, code: &str) -> Result<wxlogin_wechat::Code2Session, Error> {
        self.client.code2session(&self.app, code).await
    }

    async fn token(&self) -> AccessToken {
        self.client
            .stable_token(&self.app, false)
            .await
            .unwrap()
            .token
    }

    fn mint_phone(&self, request: MintPhoneCode) -> String {
        self.server.sim.mint_phone_code(request).code
    }
}

/// Neither the secret nor the URL may show in what an error prints.
fn assert_leaks_nothing(error: &Error) {
    for text in [error.to_string(), format!("{error:?}")] {
        for secret in [DEFAULT_SECRET, WRONG_SECRET, "secret=", "jscode2session"] {
            assert!(!text.contains(secret), "{text:?} contains {secret:?}");
        }
    }
}

#[tokio::test]
async fn a_minted_code_gives_its_identity() {
    let test = TestApp::spawn().await;
    let minted = test.server.sim.mint_code(MintCode {
        unionid: Some("u_union".to_owned()),
        ..MintCode::default()
    });

    let session = test.exchange(&minted.code).await.unwrap();

    assert_eq!(session.openid, minted.openid);
    assert_eq!(session.unionid.as_deref(), Some("u_union"));
    assert_eq!(session.session_key.expose(), minted.session_key);
    assert!(!format!("{session:?}").contains(&minted.session_key));
}

#[tokio::test]
async fn no_unionid_is_none() {
    let test = TestApp::spawn().await;
    let code = test.mint();

    let session = test.exchange(&code).await.unwrap();

    assert_eq!(session.unionid, None);
}

#[tokio::test]
async fn a_second_exchange_of_a_code_is_code_used() {
    let test = TestApp::spawn().await;
    let code = test.mint();

    test.exchange(&code).await.unwrap();
    let error = test.exchange(&code).await.unwrap_err();

    assert!(matches!(error, Error::CodeUsed), "{error:?}");
    assert_leaks_nothing(&error);
}

#[tokio::test]
async fn an_unknown_code_is_invalid() {
    let test = TestApp::spawn().await;

    let error = test
        .exchange("0123456789abcdefABCDEF0123456789")
        .await
        .unwrap_err();

    assert!(matches!(error, Error::InvalidCode), "{error:?}");
    assert_leaks_nothing(&error);
}

#[tokio::test]
async fn an_empty_code_is_invalid_without_a_call() {
    let test = TestApp::spawn().await;

    let error = test.exchange("").await.unwrap_err();

    assert!(matches!(error, Error::InvalidCode), "{error:?}");
    assert_eq!(test.server.sim.code2session_calls(), 0);
}

#[tokio::test]
async fn scripted_wechat_errors_map_to_their_variants() {
    let test = TestApp::spawn().await;
    let code = test.mint();
    for errcode in [-1, 45011, 40226, 40001] {
        test.server.sim.push_fault(Fault::errcode(errcode));
    }

    let mut errors = Vec::new();
    for _ in 0..4 {
        errors.push(test.exchange(&code).await.unwrap_err());
    }

    assert!(matches!(errors[0], Error::Busy), "{:?}", errors[0]);
    assert!(matches!(errors[1], Error::RateLimited), "{:?}", errors[1]);
    assert!(matches!(errors[2], Error::UserBlocked), "{:?}", errors[2]);
    assert!(
        matches!(errors[3], Error::Api { errcode: 40001, .. }),
        "{:?}",
        errors[3]
    );
    errors.iter().for_each(assert_leaks_nothing);
    // Faults that did not consume the code leave it usable.
    assert!(test.exchange(&code).await.is_ok());
}

#[tokio::test]
async fn a_wrong_secret_is_invalid_credentials_and_is_not_shown() {
    let test = TestApp::spawn().await;
    let code = test.mint();
    let wrong = AppCredentials::new(DEFAULT_APPID, WRONG_SECRET);

    let error = test.client.code2session(&wrong, &code).await.unwrap_err();

    assert!(
        matches!(error, Error::InvalidCredentials { errcode: 40125 }),
        "{error:?}"
    );
    assert_leaks_nothing(&error);
}

#[tokio::test]
async fn an_unknown_appid_is_invalid_credentials() {
    let test = TestApp::spawn().await;
    let code = test.mint();
    let unknown = AppCredentials::new("wx_not_registered", DEFAULT_SECRET);

    let error = test.client.code2session(&unknown, &code).await.unwrap_err();

    assert!(
        matches!(error, Error::InvalidCredentials { errcode: 40013 }),
        "{error:?}"
    );
    assert_leaks_nothing(&error);
}

#[tokio::test]
async fn a_late_answer_is_a_timeout_and_is_not_retried() {
    let test = TestApp::spawn_with_timeout(Duration::from_millis(300)).await;
    let code = test.mint();
    test.server
        .sim
        .push_fault(Fault::delay(Duration::from_secs(2)).consuming_code());

    let error = test.exchange(&code).await.unwrap_err();

    assert!(matches!(error, Error::Timeout), "{error:?}");
    assert_leaks_nothing(&error);
    // One call only: a retry would have burnt the code WeChat may have used.
    assert_eq!(test.server.sim.code2session_calls(), 1);
    // And it was burnt: asking again (the caller's choice) gives 40163.
    let again = test.exchange(&code).await.unwrap_err();
    assert!(matches!(again, Error::CodeUsed), "{again:?}");
}

#[tokio::test]
async fn clones_share_the_client_and_work_concurrently() {
    let test = TestApp::spawn().await;
    let codes: Vec<String> = (0..8).map(|_| test.mint()).collect();

    let tasks: Vec<_> = codes
        .into_iter()
        .map(|code| {
            let client = test.client.clone();
            let app = test.app.clone();
            tokio::spawn(async move { client.code2session(&app, &code).await })
        })
        .collect();

    for task in tasks {
        assert!(task.await.unwrap().is_ok());
    }
    assert_eq!(test.server.sim.code2session_calls(), 8);
}

// ---- access_token, phone number, checkSessionKey ----

/// Neither the secret, the token nor the URL may show in what an error
/// prints.
fn assert_leaks_no_token(error: &Error, token: &str) {
    assert_leaks_nothing(error);
    for text in [error.to_string(), format!("{error:?}")] {
        for secret in [token, "access_token=", "getuserphonenumber", "checksession"] {
            assert!(!text.contains(secret), "{text:?} contains {secret:?}");
        }
    }
}

#[tokio::test]
async fn stable_token_is_the_same_until_forced() {
    let test = TestApp::spawn().await;

    let first = test.client.stable_token(&test.app, false).await.unwrap();
    let second = test.client.stable_token(&test.app, false).await.unwrap();
    let forced = test.client.stable_token(&test.app, true).await.unwrap();

    assert_eq!(first.token.expose(), second.token.expose());
    assert_ne!(forced.token.expose(), first.token.expose());
    assert_eq!(first.expires_in, Duration::from_secs(7200));
    assert!(second.expires_in <= first.expires_in);
    assert_eq!(forced.expires_in, Duration::from_secs(7200));
    assert_eq!(test.server.sim.stable_token_calls(), 3);
    assert!(!format!("{first:?}").contains(first.token.expose()));
}

#[tokio::test]
async fn stable_token_with_a_wrong_secret_is_invalid_credentials() {
    let test = TestApp::spawn().await;
    let wrong = AppCredentials::new(DEFAULT_APPID, WRONG_SECRET);

    let error = test.client.stable_token(&wrong, false).await.unwrap_err();

    assert!(
        matches!(error, Error::InvalidCredentials { errcode: 40125 }),
        "{error:?}"
    );
    assert_leaks_nothing(&error);
}

#[tokio::test]
async fn a_phone_code_gives_the_number_with_a_string_country_code() {
    let test = TestApp::spawn().await;
    let token = test.token().await;
    let code = test.mint_phone(MintPhoneCode {
        pure_phone_number: Some("13800138000".to_owned()),
        ..MintPhoneCode::default()
    });

    let info = test
        .client
        .phone_number(&token, &code, Some("o_alice"))
        .await
        .unwrap();

    let Some(Watermark { appid, timestamp }) = info.watermark.clone() else {
        panic!("no watermark: {info:?}");
    };
    assert_eq!(appid, DEFAULT_APPID);
    assert!(timestamp > 1_600_000_000, "{timestamp}");
    let number = (
        info.phone_number.as_str(),
        info.pure_phone_number.as_str(),
        info.country_code.as_str(),
    );
    assert_eq!(number, ("13800138000", "13800138000", "86"));
}

#[tokio::test]
async fn a_numeric_country_code_is_read() {
    let test = TestApp::spawn().await;
    let token = test.token().await;
    let minted = test.server.sim.mint_phone_code(MintPhoneCode {
        pure_phone_number: Some("61234567".to_owned()),
        country_code: Some("852".to_owned()),
        country_code_as_number: true,
        ..MintPhoneCode::default()
    });

    let info = test
        .client
        .phone_number(&token, &minted.code, None)
        .await
        .unwrap();

    assert_eq!(info.country_code, "852");
    assert_eq!(info.phone_number, "+852 61234567");
    assert_eq!(info.pure_phone_number, "61234567");
}

#[tokio::test]
async fn a_used_or_unknown_phone_code_is_refused() {
    let test = TestApp::spawn().await;
    let token = test.token().await;
    let code = test.mint_phone(MintPhoneCode::default());

    test.client.phone_number(&token, &code, None).await.unwrap();
    let used = test
        .client
        .phone_number(&token, &code, None)
        .await
        .unwrap_err();
    let unknown = test
        .client
        .phone_number(&token, "0123456789abcdef", None)
        .await
        .unwrap_err();
    let empty = test
        .client
        .phone_number(&token, "", None)
        .await
        .unwrap_err();

    assert!(matches!(used, Error::CodeUsed), "{used:?}");
    assert!(matches!(unknown, Error::InvalidCode), "{unknown:?}");
    assert!(matches!(empty, Error::InvalidCode), "{empty:?}");
    assert_eq!(test.server.sim.phone_number_calls(), 3);
}

#[tokio::test]
async fn an_invalid_token_is_access_token_invalid_and_is_not_shown() {
    let test = TestApp::spawn().await;
    let code = test.mint_phone(MintPhoneCode::default());
    let bogus = "bogus0token0that0must0not0leak";

    let error = test
        .client
        .phone_number(&AccessToken::new(bogus.to_owned()), &code, None)
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::AccessTokenInvalid { errcode: 40001 }),
        "{error:?}"
    );
    assert!(error.is_access_token_invalid());
    assert_leaks_no_token(&error, bogus);
}

#[tokio::test]
async fn after_invalidation_one_forced_refresh_and_one_retry_succeed() {
    let test = TestApp::spawn().await;
    let token = test.token().await;
    let code = test.mint_phone(MintPhoneCode::default());
    assert_eq!(test.server.sim.invalidate_access_tokens(DEFAULT_APPID), 1);

    let error = test
        .client
        .phone_number(&token, &code, None)
        .await
        .unwrap_err();
    // What a caller does: refresh once, retry once.
    let fresh = test
        .client
        .stable_token(&test.app, true)
        .await
        .unwrap()
        .token;
    let info = test.client.phone_number(&fresh, &code, None).await;

    assert!(
        matches!(error, Error::AccessTokenInvalid { errcode: 40001 }),
        "{error:?}"
    );
    assert_leaks_no_token(&error, token.expose());
    assert!(info.is_ok(), "{info:?}");
}

#[tokio::test]
async fn an_expired_token_is_access_token_invalid() {
    let test = TestApp::spawn().await;
    test.server
        .sim
        .set_access_token_ttl(Duration::from_millis(100));
    let token = test.token().await;
    tokio::time::sleep(Duration::from_millis(250)).await;

    let error = test
        .client
        .check_session(&token, "o_alice", &SessionKey::new("k".to_owned()))
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::AccessTokenInvalid { errcode: 42001 }),
        "{error:?}"
    );
}

#[tokio::test]
async fn check_session_knows_the_current_key_from_a_rotated_one() {
    let test = TestApp::spawn().await;
    let token = test.token().await;
    let old = test.server.sim.mint_code(MintCode {
        openid: Some("o_alice".to_owned()),
        ..MintCode::default()
    });
    let current = test.server.sim.mint_code(MintCode {
        openid: Some("o_alice".to_owned()),
        ..MintCode::default()
    });

    let with_current = test
        .client
        .check_session(
            &token,
            "o_alice",
            &SessionKey::new(current.session_key.clone()),
        )
        .await;
    let with_old = test
        .client
        .check_session(&token, "o_alice", &SessionKey::new(old.session_key.clone()))
        .await;

    assert!(with_current.unwrap());
    assert!(!with_old.unwrap());
    assert_eq!(test.server.sim.check_session_calls(), 2);
}

#[tokio::test]
async fn check_session_with_an_invalid_token_is_access_token_invalid() {
    let test = TestApp::spawn().await;
    let minted = test.server.sim.mint_code(MintCode::default());
    let stale = test.token().await;
    test.server.sim.invalidate_access_tokens(DEFAULT_APPID);

    let error = test
        .client
        .check_session(
            &stale,
            &minted.openid,
            &SessionKey::new(minted.session_key.clone()),
        )
        .await
        .unwrap_err();

    assert!(
        matches!(error, Error::AccessTokenInvalid { errcode: 40001 }),
        "{error:?}"
    );
    assert_leaks_no_token(&error, stale.expose());
    assert!(!error.to_string().contains(&minted.session_key));
}

#[tokio::test]
async fn faults_scoped_to_an_endpoint_reach_only_that_endpoint() {
    let test = TestApp::spawn().await;
    let token = test.token().await;
    let login = test.mint();
    let phone_code = test.mint_phone(MintPhoneCode::default());
    let sim = &test.server.sim;
    sim.push_fault(Fault::errcode(45009).for_endpoint(endpoint::GET_USER_PHONE_NUMBER));
    sim.push_fault(Fault::errcode(45009).for_endpoint(endpoint::STABLE_TOKEN));
    sim.push_fault(Fault::errcode(-1).for_endpoint(endpoint::CHECK_SESSION));
    sim.push_fault(Fault::errcode(40001).for_endpoint(endpoint::JSCODE2SESSION));

    let session_error = test.exchange(&login).await.unwrap_err();
    let check_error = test
        .client
        .check_session(&token, "o_x", &SessionKey::new("k".to_owned()))
        .await
        .unwrap_err();
    let token_error = test
        .client
        .stable_token(&test.app, false)
        .await
        .unwrap_err();
    let phone_error = test
        .client
        .phone_number(&token, &phone_code, None)
        .await
        .unwrap_err();

    // code2Session takes no token: 40001 there is not a token problem.
    assert!(
        matches!(session_error, Error::Api { errcode: 40001, .. }),
        "{session_error:?}"
    );
    assert!(matches!(check_error, Error::Busy), "{check_error:?}");
    assert!(matches!(token_error, Error::RateLimited), "{token_error:?}");
    assert!(matches!(phone_error, Error::RateLimited), "{phone_error:?}");
    assert_eq!(sim.stats().pending_faults, 0);
    // None of the faults used a code up.
    assert!(test.exchange(&login).await.is_ok());
    assert!(
        test.client
            .phone_number(&token, &phone_code, None)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn a_late_phone_answer_is_a_timeout_and_is_not_retried() {
    let test = TestApp::spawn_with_timeout(Duration::from_millis(300)).await;
    let token = test.token().await;
    let code = test.mint_phone(MintPhoneCode::default());
    test.server.sim.push_fault(
        Fault::delay(Duration::from_secs(2))
            .consuming_code()
            .for_endpoint(endpoint::GET_USER_PHONE_NUMBER),
    );

    let error = test
        .client
        .phone_number(&token, &code, None)
        .await
        .unwrap_err();

    assert!(matches!(error, Error::Timeout), "{error:?}");
    assert_leaks_no_token(&error, token.expose());
    assert_eq!(test.server.sim.phone_number_calls(), 1);
    let again = test
        .client
        .phone_number(&token, &code, None)
        .await
        .unwrap_err();
    assert!(matches!(again, Error::CodeUsed), "{again:?}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable_for_every_endpoint() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let client = Client::new(ClientConfig {
        base_url: format!("http://127.0.0.1:{port}"),
        timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
    })
    .unwrap();
    let app = AppCredentials::new(DEFAULT_APPID, DEFAULT_SECRET);
    let token = AccessToken::new("closed0port0token".to_owned());

    let errors = [
        client
            .code2session(&app, "0123456789abcdefABCDEF0123456789")
            .await
            .unwrap_err(),
        client.stable_token(&app, false).await.unwrap_err(),
        client
            .phone_number(&token, "0123456789abcdef", None)
            .await
            .unwrap_err(),
        client
            .check_session(&token, "o_x", &SessionKey::new("k".to_owned()))
            .await
            .unwrap_err(),
    ];

    for error in &errors {
        assert!(matches!(error, Error::Unreachable), "{error:?}");
        assert_leaks_no_token(error, token.expose());
    }
}

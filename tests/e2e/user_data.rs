//! Encrypted user data, profile and phone number, end to end.

use reqwest::Method;
use serde_json::{Value, json};
use wxlogin_proto::user::v1::{ListUsersByUnionidRequest, user_service_client::UserServiceClient};
use wxlogin_tests::{OTHER_APPID, Options, TestApp, assert_error};
use wxlogin_wechat_sim::{MintCode, MintPhoneCode, Minted, Sealed, raw_data_signature, seal};

/// A logged-in user: what the simulator minted and the login's answer.
async fn logged_in(app: &TestApp) -> (Minted, String) {
    let minted = app.mint();
    let login = app.login_ok(&minted.code).await;
    (minted, login["token"].as_str().unwrap().to_owned())
}

fn profile() -> Value {
    json!({
        "nickName": "Band",
        "gender": 1,
        "language": "zh_CN",
        "city": "Guangzhou",
        "province": "Guangdong",
        "country": "CN",
        "avatarUrl": "https://thirdwx.qlogo.cn/mmopen/vi_32/real-avatar/132",
        "unionId": "oUnion_from_profile",
    })
}

/// `data` sealed as WeChat would for the user's current session_key.
fn sealed_for(app: &TestApp, appid: &str, openid: &str, data: Value) -> Sealed {
    app.simulator()
        .seal_user_data(appid, openid, data)
        .expect("the user has a session_key")
}

fn sealed_body(sealed: &Sealed) -> Value {
    json!({ "encryptedData": sealed.encrypted_data, "iv": sealed.iv })
}

async fn post(app: &TestApp, path: &str, token: &str, body: &Value) -> reqwest::Response {
    app.json_with_token(Method::POST, path, token, body).await
}

#[tokio::test]
async fn decrypted_profile_data_is_stored() {
    // Arrange
    let app = TestApp::spawn().await;
    let (minted, token) = logged_in(&app).await;
    let mut data = profile();
    data["openId"] = json!(minted.openid);
    let sealed = sealed_for(&app, &minted.appid, &minted.openid, data);

    // Act
    let response = post(&app, "/v1/me/profile", &token, &sealed_body(&sealed)).await;

    // Assert
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let user = &body["user"];
    assert_eq!(user["nickname"], "Band");
    assert_eq!(user["gender"], 1);
    assert_eq!(user["city"], "Guangzhou");
    assert_eq!(user["province"], "Guangdong");
    assert_eq!(user["country"], "CN");
    assert_eq!(user["language"], "zh_CN");
    assert_eq!(
        user["avatar_url"],
        "https://thirdwx.qlogo.cn/mmopen/vi_32/real-avatar/132"
    );
    assert_eq!(user["unionid"], "oUnion_from_profile");
    let me: Value = app
        .get_with_token("/v1/me", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], *user);
    let text = serde_json::to_string(&body).unwrap();
    assert!(!text.contains(&minted.session_key));
}

#[tokio::test]
async fn the_raw_data_signature_is_checked() {
    let app = TestApp::spawn().await;
    let (minted, token) = logged_in(&app).await;
    let raw_data = r#"{"nickName":"Band","gender":1}"#;
    let sealed = sealed_for(&app, &minted.appid, &minted.openid, profile());
    let signature = raw_data_signature(raw_data, &minted.session_key);
    let mut body = sealed_body(&sealed);
    body["rawData"] = json!(raw_data);

    body["signature"] = json!("0".repeat(40));
    assert_error(
        post(&app, "/v1/me/profile", &token, &body).await,
        422,
        "invalid_signature",
    )
    .await;
    let mut off_by_one = signature.clone();
    let last = if off_by_one.ends_with('0') { "1" } else { "0" };
    off_by_one.replace_range(39.., last);
    body["signature"] = json!(off_by_one);
    assert_error(
        post(&app, "/v1/me/profile", &token, &body).await,
        422,
        "invalid_signature",
    )
    .await;

    body["signature"] = json!(signature);
    let response = post(&app, "/v1/me/profile", &token, &body).await;
    assert_eq!(response.status(), 200);

    body.as_object_mut().unwrap().remove("signature");
    assert_error(
        post(&app, "/v1/me/profile", &token, &body).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn anonymised_data_never_overwrites_real_values() {
    let app = TestApp::spawn().await;
    let (minted, token) = logged_in(&app).await;
    let real = sealed_for(&app, &minted.appid, &minted.openid, profile());
    assert_eq!(
        post(&app, "/v1/me/profile", &token, &sealed_body(&real))
            .await
            .status(),
        200
    );

    // What getUserInfo answers since 2021.
    let anonymous = json!({
        "nickName": "微信用户",
        "gender": 0,
        "language": "",
        "city": "",
        "province": "",
        "country": "",
        "avatarUrl": "https://thirdwx.qlogo.cn/mmopen/vi_32/POgEwh4mIHO4nibH0KlMECNjjGxQUq24ZEaGT4poC6icRiccVGKSyXwibcPq4BWmiaIGuG1icwxaQX6grC9VemZoJ8rg/132",
    });
    let sealed = sealed_for(&app, &minted.appid, &minted.openid, anonymous);
    let body: Value = post(&app, "/v1/me/profile", &token, &sealed_body(&sealed))
        .await
        .json()
        .await
        .unwrap();

    assert_eq!(body["user"]["nickname"], "Band");
    assert_eq!(body["user"]["gender"], 1);
    assert_eq!(body["user"]["city"], "Guangzhou");
    assert_eq!(
        body["user"]["avatar_url"],
        "https://thirdwx.qlogo.cn/mmopen/vi_32/real-avatar/132"
    );
}

#[tokio::test]
async fn bad_encrypted_data_is_400_or_one_single_422() {
    let app = TestApp::spawn_with(Options {
        watermark_max_age_secs: 600,
        ..Options::default()
    })
    .await;
    let (minted, token) = logged_in(&app).await;
    let good = sealed_for(&app, &minted.appid, &minted.openid, profile());

    // Malformed: visible without any key.
    for (encrypted_data, iv) in [
        ("not base64!", good.iv.as_str()),
        (good.encrypted_data.as_str(), "AAAA"),
        ("", good.iv.as_str()),
        ("AAAAAAAAAAAAAAAAAAAA", good.iv.as_str()), // 15 bytes: not a whole block
    ] {
        let body = json!({ "encryptedData": encrypted_data, "iv": iv });
        assert_error(
            post(&app, "/v1/me/profile", &token, &body).await,
            400,
            "invalid_request",
        )
        .await;
    }
    assert_error(
        post(&app, "/v1/me/profile", &token, &json!({ "iv": good.iv })).await,
        400,
        "invalid_request",
    )
    .await;

    // Everything that needs the key: one answer.
    let mut tampered = good.encrypted_data.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] = if tampered[middle] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let other_app = seal(
        &minted.session_key,
        serde_json::to_vec(
            &json!({ "nickName": "x", "watermark": { "appid": OTHER_APPID, "timestamp": now() } }),
        )
        .unwrap()
        .as_slice(),
    )
    .unwrap();
    let stale = seal(
        &minted.session_key,
        serde_json::to_vec(&json!({ "nickName": "x", "watermark": { "appid": minted.appid, "timestamp": now() - 3600 } }))
            .unwrap()
            .as_slice(),
    )
    .unwrap();
    let not_json = seal(&minted.session_key, b"not json at all").unwrap();
    let mut messages = Vec::new();
    for body in [
        json!({ "encryptedData": tampered, "iv": good.iv }),
        json!({ "encryptedData": good.encrypted_data, "iv": "AAAAAAAAAAAAAAAAAAAAAA==" }),
        sealed_body(&other_app),
        sealed_body(&stale),
        sealed_body(&not_json),
    ] {
        let response = post(&app, "/v1/me/profile", &token, &body).await;
        messages.push(assert_error(response, 422, "invalid_encrypted_data").await);
    }
    assert!(
        messages.windows(2).all(|pair| pair[0] == pair[1]),
        "one message for every cause: {messages:?}"
    );
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .try_into()
        .unwrap()
}

#[tokio::test]
async fn a_session_whose_key_a_newer_login_replaced_is_told_to_log_in_again() {
    let app = TestApp::spawn().await;
    let (first, first_token) = logged_in(&app).await;
    let again = app.mint_for(MintCode {
        openid: Some(first.openid.clone()),
        ..MintCode::default()
    });
    let second_token = app.login_ok(&again.code).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let with_first_key = seal(
        &first.session_key,
        serde_json::to_vec(
            &json!({ "nickName": "x", "watermark": { "appid": first.appid, "timestamp": now() } }),
        )
        .unwrap()
        .as_slice(),
    )
    .unwrap();

    // The first session's key was replaced by the second login.
    let response = post(
        &app,
        "/v1/me/profile",
        &first_token,
        &sealed_body(&with_first_key),
    )
    .await;
    assert_error(response, 409, "session_key_stale").await;
    // The second session is current: data sealed with the old key is bad data.
    let response = post(
        &app,
        "/v1/me/profile",
        &second_token,
        &sealed_body(&with_first_key),
    )
    .await;
    assert_error(response, 422, "invalid_encrypted_data").await;
    let current = sealed_for(&app, &first.appid, &first.openid, profile());
    assert_eq!(
        post(
            &app,
            "/v1/me/profile",
            &second_token,
            &sealed_body(&current)
        )
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn a_key_wechat_replaced_behind_our_back_is_stale_too() {
    let app = TestApp::spawn().await;
    let (minted, token) = logged_in(&app).await;
    // wx.login ran again, but the mini-program never sent us the code:
    // WeChat now has a key we don't.
    app.mint_for(MintCode {
        openid: Some(minted.openid.clone()),
        ..MintCode::default()
    });
    let sealed = sealed_for(&app, &minted.appid, &minted.openid, profile());
    let checks = app.simulator().stats().check_session_calls;

    let response = post(&app, "/v1/me/profile", &token, &sealed_body(&sealed)).await;

    assert_error(response, 409, "session_key_stale").await;
    assert_eq!(
        app.simulator().stats().check_session_calls,
        checks + 1,
        "asked WeChat"
    );
}

#[tokio::test]
async fn users_fill_in_their_own_profile() {
    let app = TestApp::spawn().await;
    let (minted, token) = logged_in(&app).await;
    let put = async |body: Value| {
        app.json_with_token(Method::PUT, "/v1/me/profile", &token, &body)
            .await
    };

    let body: Value = put(json!({ "nickname": "小明", "avatar_url": "https://example.com/a.png" }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["user"]["nickname"], "小明");
    assert_eq!(body["user"]["avatar_url"], "https://example.com/a.png");

    // Placeholders and empty values change nothing.
    let body: Value = put(json!({ "nickname": "微信用户", "avatar_url": "" }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["user"]["nickname"], "小明");
    assert_eq!(body["user"]["avatar_url"], "https://example.com/a.png");

    // A later login answers with what the user filled in.
    let again = app.mint_for(MintCode {
        openid: Some(minted.openid.clone()),
        ..MintCode::default()
    });
    let login = app.login_ok(&again.code).await;
    assert_eq!(login["user"]["nickname"], "小明");

    assert_error(
        put(json!({ "avatar_url": "javascript:alert(1)" })).await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        put(json!({ "nickname": "x".repeat(129) })).await,
        400,
        "invalid_request",
    )
    .await;
    // The limits apply to what was sent, whitespace included, as the
    // OpenAPI document states them (schemathesis found the difference).
    assert_error(
        put(json!({ "nickname": format!("\r{}", "x".repeat(128)) })).await,
        400,
        "invalid_request",
    )
    .await;
    assert_error(
        put(json!({ "avatar_url": " https://example.com/a.png" })).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn a_phone_code_gives_the_phone_number() {
    let app = TestApp::spawn().await;
    let (_, token) = logged_in(&app).await;
    let phone = app.simulator().mint_phone_code(MintPhoneCode {
        pure_phone_number: Some("13800138000".into()),
        country_code_as_number: true,
        ..MintPhoneCode::default()
    });

    let response = post(&app, "/v1/me/phone", &token, &json!({ "code": phone.code })).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["phone"]["pure_phone_number"], "13800138000");
    assert_eq!(body["phone"]["country_code"], "86");
    assert_eq!(body["user"]["pure_phone_number"], "13800138000");
    let me: Value = app
        .get_with_token("/v1/me", &token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"]["phone_country_code"], "86");

    let again = post(&app, "/v1/me/phone", &token, &json!({ "code": phone.code })).await;
    assert_error(again, 400, "phone_code_used").await;
    let unknown = post(
        &app,
        "/v1/me/phone",
        &token,
        &json!({ "code": "0a3Kx7000Gj5oS1e2x300E0uXd2Kx70f" }),
    )
    .await;
    assert_error(unknown, 400, "invalid_phone_code").await;
    assert_error(
        post(&app, "/v1/me/phone", &token, &json!({})).await,
        400,
        "invalid_request",
    )
    .await;
}

#[tokio::test]
async fn a_refused_access_token_is_renewed_once_and_the_call_retried() {
    let app = TestApp::spawn().await;
    let (minted, token) = logged_in(&app).await;
    let first = app.simulator().mint_phone_code(MintPhoneCode::default());
    assert_eq!(
        post(&app, "/v1/me/phone", &token, &json!({ "code": first.code }))
            .await
            .status(),
        200
    );
    assert_eq!(app.simulator().stable_token_calls(), 1);

    app.simulator().invalidate_access_tokens(&minted.appid);
    let second = app.simulator().mint_phone_code(MintPhoneCode::default());
    let response = post(
        &app,
        "/v1/me/phone",
        &token,
        &json!({ "code": second.code }),
    )
    .await;

    assert_eq!(response.status(), 200);
    assert!(
        app.simulator().stable_token_calls() <= 3,
        "renewed, not looped"
    );
}

#[tokio::test]
async fn legacy_encrypted_phone_data_is_stored() {
    let app = TestApp::spawn().await;
    let (minted, token) = logged_in(&app).await;
    let data = json!({ "phoneNumber": "+1 2025550123", "purePhoneNumber": "2025550123", "countryCode": 1 });
    let sealed = sealed_for(&app, &minted.appid, &minted.openid, data);

    let response = post(&app, "/v1/me/phone", &token, &sealed_body(&sealed)).await;

    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["phone"]["phone_number"], "+1 2025550123");
    assert_eq!(body["phone"]["country_code"], "1");
}

#[tokio::test]
async fn user_data_endpoints_need_a_valid_token() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        ("POST", "/v1/me/profile"),
        ("PUT", "/v1/me/profile"),
        ("POST", "/v1/me/phone"),
    ] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let bare = app
            .http
            .request(method.clone(), app.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_error(bare, 401, "missing_token").await;
        let unknown = app
            .http
            .request(method, app.url(path))
            .bearer_auth("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            .json(&json!({ "encryptedData": "AAAA", "iv": "AAAA", "code": "abc", "nickname": "x" }))
            .send()
            .await
            .unwrap();
        assert_error(unknown, 401, "invalid_token").await;
    }
}

#[tokio::test]
async fn one_unionid_links_a_person_across_mini_programs() {
    let app = TestApp::spawn().await;
    // App A: unionid straight from code2Session.
    let a = app.mint_for(MintCode {
        unionid: Some("oUnion_shared_person".into()),
        ..MintCode::default()
    });
    app.login_ok(&a.code).await;
    // App B: no unionid at login; it arrives in the decrypted profile.
    let b = app.mint_for(MintCode {
        appid: Some(OTHER_APPID.into()),
        ..MintCode::default()
    });
    let login: Value = app
        .post_json(
            "/v1/login",
            &json!({ "code": b.code, "appid": OTHER_APPID }),
        )
        .await
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap();
    let mut data = profile();
    data["unionId"] = json!("oUnion_shared_person");
    let sealed = sealed_for(&app, OTHER_APPID, &b.openid, data);
    assert_eq!(
        post(&app, "/v1/me/profile", token, &sealed_body(&sealed))
            .await
            .status(),
        200
    );

    let mut users = UserServiceClient::new(wxlogin_testkit::credential::channel(
        app.user_addr,
        wxlogin_testkit::credential::Credential::internal(),
    ));
    let linked = users
        .list_users_by_unionid(ListUsersByUnionidRequest {
            unionid: "oUnion_shared_person".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .users;

    let apps: Vec<&str> = linked.iter().map(|user| user.appid.as_str()).collect();
    assert_eq!(apps.len(), 2, "{apps:?}");
    assert!(apps.contains(&OTHER_APPID));
}

/// The user's row as the database holds it, its sealed values opened.
async fn row_of(app: &TestApp, appid: &str, openid: &str) -> wxlogin_user::entity::user::Model {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use wxlogin_user::entity::user;
    let db = app.database().await;
    let row = user::Entity::find()
        .filter(user::Column::Appid.eq(appid))
        .filter(user::Column::Openid.eq(openid))
        .one(&db)
        .await
        .expect("read the user")
        .expect("the user exists");
    drop(db.close().await);
    wxlogin_user::personal::Sealer::new(
        wxlogin_testkit::credential::data_keys(),
        wxlogin_testkit::credential::index_key(),
    )
    .reveal(row)
    .expect("the row opens")
}

#[tokio::test]
async fn sealed_values_too_long_for_their_column_or_unsafe_are_refused_and_nothing_is_stored() {
    // Arrange: a user with a stored profile and phone number.
    let app = TestApp::spawn().await;
    let (minted, token) = logged_in(&app).await;
    let real = sealed_for(&app, &minted.appid, &minted.openid, profile());
    let stored = post(&app, "/v1/me/profile", &token, &sealed_body(&real)).await;
    assert_eq!(stored.status(), 200);
    let phone = json!({ "phoneNumber": "+86 13800138000", "purePhoneNumber": "13800138000", "countryCode": "86" });
    let sealed = sealed_for(&app, &minted.appid, &minted.openid, phone.clone());
    let stored = post(&app, "/v1/me/phone", &token, &sealed_body(&sealed)).await;
    assert_eq!(stored.status(), 200);
    let before = row_of(&app, &minted.appid, &minted.openid).await;
    // Characters, not bytes: '字' is three bytes in UTF-8.
    let chars = |n: usize| "字".repeat(n);
    let cases = [
        (
            "/v1/me/profile",
            "nickName",
            json!(chars(129)),
            "nickName is longer than 128 characters",
        ),
        (
            "/v1/me/profile",
            "avatarUrl",
            json!(format!("https://thirdwx.qlogo.cn/{}", "a".repeat(1000))),
            "avatarUrl is longer than 1024 characters",
        ),
        (
            "/v1/me/profile",
            "country",
            json!(chars(65)),
            "country is longer than 64 characters",
        ),
        (
            "/v1/me/profile",
            "province",
            json!(chars(65)),
            "province is longer than 64 characters",
        ),
        (
            "/v1/me/profile",
            "city",
            json!(chars(65)),
            "city is longer than 64 characters",
        ),
        (
            "/v1/me/profile",
            "language",
            json!(chars(17)),
            "language is longer than 16 characters",
        ),
        (
            "/v1/me/profile",
            "unionId",
            json!(chars(129)),
            "unionId is longer than 128 characters",
        ),
        (
            "/v1/me/profile",
            "avatarUrl",
            json!("javascript:alert(1)"),
            "avatarUrl must be an http(s) URL",
        ),
        (
            "/v1/me/profile",
            "avatarUrl",
            json!("data:text/html,<script>alert(1)</script>"),
            "avatarUrl must be an http(s) URL",
        ),
        (
            "/v1/me/phone",
            "phoneNumber",
            json!("1".repeat(33)),
            "phoneNumber is longer than 32 characters",
        ),
        (
            "/v1/me/phone",
            "purePhoneNumber",
            json!("1".repeat(33)),
            "purePhoneNumber is longer than 32 characters",
        ),
        (
            "/v1/me/phone",
            "countryCode",
            json!("1".repeat(9)),
            "countryCode is longer than 8 characters",
        ),
        (
            "/v1/me/phone",
            "countryCode",
            json!(123_456_789),
            "countryCode is longer than 8 characters",
        ),
    ];

    for (path, field, value, expected) in cases {
        let mut data = if path == "/v1/me/phone" {
            phone.clone()
        } else {
            profile()
        };
        data[field] = value;
        let sealed = sealed_for(&app, &minted.appid, &minted.openid, data);

        // Act
        let response = post(&app, path, &token, &sealed_body(&sealed)).await;

        // Assert
        let message = assert_error(response, 400, "invalid_request").await;
        assert_eq!(message, expected, "{path} {field}");
        assert_eq!(
            row_of(&app, &minted.appid, &minted.openid).await,
            before,
            "{path} {field}: the row changed"
        );
    }
    // The self-service path refuses the same avatar.
    let put = app
        .json_with_token(
            Method::PUT,
            "/v1/me/profile",
            &token,
            &json!({ "avatar_url": "javascript:alert(1)" }),
        )
        .await;
    assert_error(put, 400, "invalid_request").await;
    assert_eq!(row_of(&app, &minted.appid, &minted.openid).await, before);
}

#[tokio::test]
async fn sealed_values_exactly_as_long_as_their_column_are_stored() {
    // Arrange
    let app = TestApp::spawn().await;
    let (minted, token) = logged_in(&app).await;
    let mut data = profile();
    data["nickName"] = json!("字".repeat(128));
    data["city"] = json!("字".repeat(64));
    data["language"] = json!("字".repeat(16));
    let sealed = sealed_for(&app, &minted.appid, &minted.openid, data);

    // Act
    let response = post(&app, "/v1/me/profile", &token, &sealed_body(&sealed)).await;

    // Assert
    assert_eq!(response.status(), 200);
    let row = row_of(&app, &minted.appid, &minted.openid).await;
    assert_eq!(row.nickname, Some("字".repeat(128)));
    assert_eq!(row.city, Some("字".repeat(64)));
    assert_eq!(row.language, Some("字".repeat(16)));
}

//! Personal data at rest: what a user stores through the API is found in
//! the clear nowhere the system keeps it (the users table, the SQLite file,
//! the Redis copy), yet `GET /v1/me` answers it and the back office finds
//! the user by phone number.

use sea_orm::{ConnectionTrait, Iterable, Statement};
use serde_json::{Value, json};
use wxlogin_proto::user::v1::{ListUsersByPhoneRequest, user_service_client::UserServiceClient};
use wxlogin_tests::{TestApp, TestDb};
use wxlogin_user::entity::user;

/// Strings random ciphertext cannot contain by chance.
const NICKNAME: &str = "Nickname-Of-Zhang-At-Rest";
const CITY: &str = "Cityname-Of-Zhang-At-Rest";
const PURE_NUMBER: &str = "13912345678";
const PHONE: &str = "+86 13912345678";

/// Every value of every text or binary column of the users table, as raw
/// bytes (`HEX()` reads either the same way in MySQL and SQLite).
async fn users_table_bytes(app: &TestApp) -> Vec<Vec<u8>> {
    use sea_orm::{ColumnTrait, ColumnType};
    let columns: Vec<String> = user::Column::iter()
        .filter(|column| {
            matches!(
                column.def().get_column_type(),
                ColumnType::String(_) | ColumnType::VarBinary(_) | ColumnType::Binary(_)
            )
        })
        .map(|column| format!("HEX({})", sea_orm::IdenStatic::as_str(&column)))
        .collect();
    let db = app.database().await;
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            format!("SELECT {} FROM users", columns.join(", ")),
        ))
        .await
        .unwrap();
    drop(db.close().await);
    let mut values = Vec::new();
    for row in rows {
        for n in 0..columns.len() {
            let value: Option<String> = row.try_get_by_index(n).unwrap();
            values.push(hex::decode(value.unwrap_or_default()).unwrap());
        }
    }
    values
}

fn holds(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

#[tokio::test]
async fn personal_data_is_stored_sealed_and_still_answered() {
    // Arrange
    let app = TestApp::spawn().await;
    let minted = app.mint();
    let login = app.login_ok(&minted.code).await;
    let token = login["token"].as_str().unwrap();
    let seal = |data: Value| {
        let sealed = app
            .simulator()
            .seal_user_data(&minted.appid, &minted.openid, data)
            .expect("the user has a session_key");
        json!({ "encryptedData": sealed.encrypted_data, "iv": sealed.iv })
    };

    // Act: a profile and a phone number, through the API.
    let profile = seal(json!({ "nickName": NICKNAME, "city": CITY, "gender": 1 }));
    let phone = seal(json!({
        "phoneNumber": PHONE, "purePhoneNumber": PURE_NUMBER, "countryCode": "86"
    }));
    for (path, body) in [("/v1/me/profile", profile), ("/v1/me/phone", phone)] {
        let response = app
            .json_with_token(reqwest::Method::POST, path, token, &body)
            .await;
        assert_eq!(response.status(), 200, "{path}");
    }
    let me: Value = app
        .get_with_token("/v1/me", token)
        .await
        .json()
        .await
        .unwrap();

    // Assert: answered in the clear...
    assert_eq!(me["user"]["nickname"], NICKNAME, "{me}");
    assert_eq!(me["user"]["city"], CITY);
    assert_eq!(me["user"]["phone_number"], PHONE);
    assert_eq!(me["user"]["pure_phone_number"], PURE_NUMBER);

    // ...stored in the clear nowhere: not in any column of the table,
    let values = users_table_bytes(&app).await;
    assert!(values.iter().any(|value| holds(value, &minted.openid)));
    for secret in [NICKNAME, CITY, PURE_NUMBER] {
        assert!(
            !values.iter().any(|value| holds(value, secret)),
            "{secret} in the users table"
        );
    }
    // not in the SQLite files (free pages and the WAL included),
    if let TestDb::Sqlite(sqlite) = &app.db {
        let mut files = 0;
        for suffix in ["", "-wal"] {
            let mut path = sqlite.path().as_os_str().to_owned();
            path.push(suffix);
            if let Ok(bytes) = std::fs::read(&path) {
                files += 1;
                for secret in [NICKNAME, CITY, PURE_NUMBER] {
                    assert!(!holds(&bytes, secret), "{secret} in {path:?}");
                }
            }
        }
        assert!(files > 0, "the SQLite file was read");
    }
    // and not in Redis (the user copy, nor any other key).
    if let Some(redis) = &app.redis {
        let key =
            wxlogin_redis::Keyspace::new(redis.prefix()).user_copy(&minted.appid, &minted.openid);
        let copy = redis
            .get(&key)
            .await
            .expect("the user service wrote the user's copy");
        assert_eq!(copy[0], 2, "the copy's version");
        for (key, value) in redis.dump().await {
            let value = value.unwrap_or_default();
            for secret in [NICKNAME, CITY, PURE_NUMBER] {
                assert!(!value.contains(secret), "{secret} in Redis at {key}");
            }
        }
        for secret in [NICKNAME, CITY, PURE_NUMBER] {
            assert!(!holds(&copy, secret), "{secret} in the user copy");
        }
    }

    // The back office finds the user by phone number, however written.
    let mut users = UserServiceClient::new(wxlogin_testkit::credential::channel(
        app.user_addr,
        wxlogin_testkit::credential::Credential::internal(),
    ));
    for code in ["86", "+86"] {
        let found = users
            .list_users_by_phone(ListUsersByPhoneRequest {
                country_code: code.into(),
                pure_phone_number: PURE_NUMBER.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .users;
        let openids: Vec<&str> = found.iter().map(|user| user.openid.as_str()).collect();
        assert_eq!(openids, [minted.openid.as_str()], "{code}");
        assert_eq!(found[0].nickname.as_deref(), Some(NICKNAME));
    }
    let nobody = users
        .list_users_by_phone(ListUsersByPhoneRequest {
            country_code: "86".into(),
            pure_phone_number: "13900000000".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert!(nobody.is_empty());
}

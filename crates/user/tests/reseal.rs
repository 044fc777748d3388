//! Personal data at rest on a database the previous version wrote: rows
//! with plaintext are sealed (by the service at start-up, or by
//! `encrypt-existing`), resumably; `rewrap` moves every row to the newest
//! key. Against a real MariaDB, and SQLite.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, EntityTrait, QueryOrder, Statement};
use sea_orm_migration::MigratorTrait;
use support::{TestApp, run_binary};
use wxlogin_proto::user::v1::{GetUserRequest, ListUsersByPhoneRequest, get_user_request::Key};
use wxlogin_testkit::TestDatabase;
use wxlogin_user::{
    entity::user,
    migration::Migrator,
    personal::Sealer,
    reseal::{self, Limit, Report},
};
use wxlogin_userdata::sealing::{DataKeys, IndexKey};

const KEY_A: &str = "a:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const KEY_B: &str = "b:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";
const INDEX: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";
/// The migrations of the version before encryption.
const BEFORE_ENCRYPTION: u32 = 2;
const ROWS: usize = 5;

fn sealer(keys: &str) -> Sealer {
    Sealer::new(
        DataKeys::parse(keys).unwrap(),
        IndexKey::parse(INDEX).unwrap(),
    )
}

/// What the previous version stored for user `n`.
fn plaintext(n: usize) -> [String; 5] {
    [
        format!("o-{n}"),
        format!("Nick {n} 微信"),
        format!("Shen{n}zhen"),
        format!("1380013800{n}"),
        format!("+86 1380013800{n}"),
    ]
}

/// A database as the previous version left it: its schema, and rows with
/// personal data in the clear, written with SQL.
async fn previous_version(url: &str) -> DatabaseConnection {
    let db = Database::connect(url).await.unwrap();
    Migrator::up(&db, Some(BEFORE_ENCRYPTION)).await.unwrap();
    for n in 0..ROWS {
        let [openid, nickname, city, pure, phone] = plaintext(n);
        let now = chrono::Utc::now();
        db.execute_raw(Statement::from_sql_and_values(
            db.get_database_backend(),
            "INSERT INTO users (appid, openid, nickname, city, language, gender, \
             phone_number, pure_phone_number, phone_country_code, \
             created_at, updated_at, last_login_at, login_count) \
             VALUES ('wxapp', ?, ?, ?, 'zh_CN', 1, ?, ?, '86', ?, ?, ?, 1)",
            [
                openid.into(),
                nickname.into(),
                city.into(),
                phone.into(),
                pure.into(),
                now.into(),
                now.into(),
                now.into(),
            ],
        ))
        .await
        .unwrap();
    }
    db
}

async fn rows(db: &DatabaseConnection) -> Vec<user::Model> {
    user::Entity::find()
        .order_by_asc(user::Column::Id)
        .all(db)
        .await
        .unwrap()
}

async fn still_plain(db: &DatabaseConnection) -> usize {
    rows(db)
        .await
        .iter()
        .filter(|row| row.nickname.is_some() || row.phone_number.is_some())
        .count()
}

/// Every row is sealed under `key_id`, its plaintext columns NULL, no
/// plaintext in its sealed bytes, and it opens to what was written.
async fn assert_sealed(db: &DatabaseConnection, sealer: &Sealer, key_id: &str) {
    let rows = rows(db).await;
    assert_eq!(rows.len(), ROWS);
    for (n, row) in rows.into_iter().enumerate() {
        let [openid, nickname, city, pure, phone] = plaintext(n);
        assert_eq!(
            (&row.nickname, &row.city, &row.phone_number),
            (&None, &None, &None)
        );
        assert_eq!(
            (&row.pure_phone_number, &row.phone_country_code),
            (&None, &None)
        );
        assert_eq!(row.data_key_id.as_deref(), Some(key_id));
        let sealed = row.pure_phone_number_enc.clone().unwrap();
        assert!(!sealed.windows(pure.len()).any(|w| w == pure.as_bytes()));
        let row = sealer.reveal(row).unwrap();
        assert_eq!(row.openid, openid);
        assert_eq!(row.nickname, Some(nickname));
        assert_eq!(row.city, Some(city));
        assert_eq!(row.phone_number, Some(phone));
        assert_eq!(row.pure_phone_number, Some(pure));
        assert_eq!(row.phone_country_code.as_deref(), Some("86"));
        assert_eq!(row.language.as_deref(), Some("zh_CN"), "kept plain");
    }
}

async fn encrypt_existing_resumes_where_it_stopped(url: &str) {
    // Arrange
    let db = previous_version(url).await;
    Migrator::up(&db, None).await.unwrap();
    let sealer = sealer(KEY_A);

    // Act: a run that stops after one batch of two, then a full run.
    let stopped = reseal::encrypt_existing(
        &db,
        &sealer,
        Limit {
            batch: 2,
            max_batches: Some(1),
        },
    )
    .await
    .unwrap();
    let left = still_plain(&db).await;
    let resumed = reseal::encrypt_existing(&db, &sealer, Limit::default())
        .await
        .unwrap();
    let again = reseal::encrypt_existing(&db, &sealer, Limit::default())
        .await
        .unwrap();

    // Assert
    assert_eq!((stopped.sealed, stopped.batches), (2, 1));
    assert_eq!(left, ROWS - 2);
    assert_eq!(resumed.sealed, 3);
    assert_eq!(again, Report::default(), "nothing left to do");
    assert_sealed(&db, &sealer, "a").await;
}

#[tokio::test]
async fn encrypt_existing_resumes_where_it_stopped_on_mysql() {
    let database = TestDatabase::create().await;
    encrypt_existing_resumes_where_it_stopped(&database.url()).await;
}

#[tokio::test]
async fn encrypt_existing_resumes_where_it_stopped_on_sqlite() {
    let path = std::env::temp_dir().join(format!(
        "{}.sqlite3",
        wxlogin_testkit::unique_name("wxlogin_reseal")
    ));
    encrypt_existing_resumes_where_it_stopped(&format!("sqlite://{}?mode=rwc", path.display()))
        .await;
    drop(std::fs::remove_file(path));
}

#[tokio::test]
async fn the_service_seals_older_rows_at_start_up_and_finds_them_by_phone() {
    // Arrange
    let database = TestDatabase::create().await;
    let url = database.url();
    let db = previous_version(&url).await;

    // Act: the new version starts on the old rows.
    let app = TestApp::spawn_with(database, url, Duration::from_secs(5)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while still_plain(&db).await > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Assert
    let sealer = Sealer::new(
        wxlogin_testkit::credential::data_keys(),
        wxlogin_testkit::credential::index_key(),
    );
    assert_sealed(&db, &sealer, sealer.keys().current_id()).await;
    let [openid, nickname, _, pure, _] = plaintext(3);
    let found = app
        .client
        .clone()
        .get_user(GetUserRequest {
            key: Some(Key::Openid(wxlogin_proto::user::v1::OpenId {
                appid: "wxapp".into(),
                openid: openid.clone(),
            })),
        })
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert_eq!(found.nickname, Some(nickname));
    let by_phone = app
        .client
        .clone()
        .list_users_by_phone(ListUsersByPhoneRequest {
            country_code: "+86".into(),
            pure_phone_number: pure,
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    assert_eq!(
        by_phone
            .iter()
            .map(|u| u.openid.as_str())
            .collect::<Vec<_>>(),
        [openid.as_str()]
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn rewrap_moves_every_row_to_the_newest_key() {
    // Arrange: rows sealed under key A.
    let database = TestDatabase::create().await;
    let db = previous_version(&database.url()).await;
    Migrator::up(&db, None).await.unwrap();
    reseal::encrypt_existing(&db, &sealer(KEY_A), Limit::default())
        .await
        .unwrap();
    let rotated = sealer(&format!("{KEY_B},{KEY_A}"));
    let only_b = sealer(KEY_B);
    let before = rows(&db).await;
    assert!(before.iter().all(|row| rotated.reveal(row.clone()).is_ok()));
    let error = only_b.reveal(before[0].clone()).unwrap_err();
    assert!(
        wxlogin_user::error::report(&error).contains("\"a\""),
        "{}",
        wxlogin_user::error::report(&error)
    );

    // Act
    let rewrapped = reseal::rewrap(
        &db,
        &rotated,
        Limit {
            batch: 2,
            max_batches: None,
        },
    )
    .await
    .unwrap();
    let again = reseal::rewrap(&db, &rotated, Limit::default())
        .await
        .unwrap();

    // Assert: key A can go.
    assert_eq!((rewrapped.sealed, rewrapped.batches), (ROWS as u64, 3));
    assert_eq!(again, Report::default());
    assert_sealed(&db, &only_b, "b").await;
}

#[tokio::test]
async fn the_commands_seal_and_rewrap_and_say_how_many() {
    // Arrange
    let database = TestDatabase::create().await;
    let url = database.url();
    drop(previous_version(&url).await);
    let both = format!("{KEY_B},{KEY_A}");

    // Act
    let missing = run_binary(&["encrypt-existing"], &[("DATABASE_URL", &url)]);
    let sealed = run_binary(
        &["encrypt-existing"],
        &[
            ("DATABASE_URL", &url),
            ("DATA_ENCRYPTION_KEYS", KEY_A),
            ("DATA_INDEX_KEY", INDEX),
        ],
    );
    let rewrapped = run_binary(
        &["rewrap"],
        &[
            ("DATABASE_URL", &url),
            ("DATA_ENCRYPTION_KEYS", &both),
            ("DATA_INDEX_KEY", INDEX),
        ],
    );

    // Assert
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("DATA_ENCRYPTION_KEYS"));
    let said = |output: &std::process::Output| String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(sealed.status.success(), "{sealed:?}");
    assert!(said(&sealed).contains("5 rows sealed"), "{}", said(&sealed));
    assert!(rewrapped.status.success(), "{rewrapped:?}");
    assert!(
        said(&rewrapped).contains("5 rows sealed"),
        "{}",
        said(&rewrapped)
    );
    let db = Database::connect(&url).await.unwrap();
    assert_sealed(&db, &sealer(KEY_B), "b").await;
}

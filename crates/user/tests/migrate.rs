//! Schema migrations, through the library and the `migrate` subcommand.

mod support;

use std::time::Duration;

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use support::run_binary;
use wxlogin_common::SecretString;
use wxlogin_testkit::TestDatabase;
use wxlogin_user::fields::Field;

const TIMEOUT: Duration = Duration::from_secs(5);

/// `(column, column_type, is_nullable)` of `users`, in table order.
async fn users_columns(database: &TestDatabase) -> Vec<(String, String, String)> {
    let db = Database::connect(database.url())
        .await
        .expect("connect to the test database");
    let rows = db
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::MySql,
            "SELECT COLUMN_NAME, COLUMN_TYPE, IS_NULLABLE FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'users' ORDER BY ORDINAL_POSITION",
            [database.name().into()],
        ))
        .await
        .expect("read the columns");
    drop(db.close().await);
    rows.iter()
        .map(|row| {
            (
                row.try_get_by_index(0).expect("name"),
                row.try_get_by_index(1).expect("type"),
                row.try_get_by_index(2).expect("nullability"),
            )
        })
        .collect()
}

async fn scalar(database: &TestDatabase, sql: &str) -> i64 {
    let db = Database::connect(database.url())
        .await
        .expect("connect to the test database");
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::MySql, sql))
        .await
        .expect("the query runs")
        .expect("a row");
    drop(db.close().await);
    row.try_get_by_index(0).expect("a number")
}

/// How many migrations the service has.
const MIGRATIONS: i64 = 4;

#[tokio::test]
async fn migrating_twice_is_a_no_op() {
    // Arrange
    let database = TestDatabase::create().await;
    let url = SecretString::from(database.url());
    wxlogin_user::migrate(&url, TIMEOUT)
        .await
        .expect("first migration");

    // Act
    let again = wxlogin_user::migrate(&url, TIMEOUT).await;

    // Assert
    again.expect("second migration");
    assert_eq!(
        scalar(&database, "SELECT COUNT(*) FROM seaql_migrations").await,
        MIGRATIONS
    );
    assert_eq!(scalar(&database, "SELECT COUNT(*) FROM users").await, 0);
}

#[tokio::test]
async fn the_users_table_has_the_documented_schema() {
    // Arrange
    let database = TestDatabase::create().await;

    // Act
    wxlogin_user::migrate(&SecretString::from(database.url()), TIMEOUT)
        .await
        .expect("migration");

    // Assert
    let columns = users_columns(&database).await;
    let expected = [
        ("id", "bigint(20)", "NO"),
        ("appid", "varchar(64)", "NO"),
        ("openid", "varchar(128)", "NO"),
        ("unionid", "varchar(128)", "YES"),
        ("nickname", "varchar(128)", "YES"),
        ("avatar_url", "varchar(1024)", "YES"),
        ("gender", "tinyint(4)", "NO"),
        ("created_at", "datetime(6)", "NO"),
        ("updated_at", "datetime(6)", "NO"),
        ("last_login_at", "datetime(6)", "NO"),
        ("login_count", "bigint(20)", "NO"),
        ("country", "varchar(64)", "YES"),
        ("province", "varchar(64)", "YES"),
        ("city", "varchar(64)", "YES"),
        ("language", "varchar(16)", "YES"),
        ("phone_number", "varchar(32)", "YES"),
        ("pure_phone_number", "varchar(32)", "YES"),
        ("phone_country_code", "varchar(8)", "YES"),
        ("blocked_at", "datetime(6)", "YES"),
        ("nickname_enc", "varbinary(558)", "YES"),
        ("avatar_url_enc", "varbinary(4142)", "YES"),
        ("country_enc", "varbinary(302)", "YES"),
        ("province_enc", "varbinary(302)", "YES"),
        ("city_enc", "varbinary(302)", "YES"),
        ("phone_number_enc", "varbinary(174)", "YES"),
        ("pure_phone_number_enc", "varbinary(174)", "YES"),
        ("phone_country_code_enc", "varbinary(78)", "YES"),
        ("data_key_id", "varchar(16)", "YES"),
        ("phone_index", "binary(32)", "YES"),
    ];
    let columns: Vec<(&str, &str, &str)> = columns
        .iter()
        .map(|(name, ty, null)| (name.as_str(), ty.as_str(), null.as_str()))
        .collect();
    assert_eq!(columns, expected);
    let unique_key_columns = scalar(
        &database,
        "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = 'users' AND INDEX_NAME = 'uk_users_appid_openid' AND NON_UNIQUE = 0",
    )
    .await;
    assert_eq!(unique_key_columns, 2);
    let unionid_index = scalar(
        &database,
        "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = 'users' AND INDEX_NAME = 'idx_users_unionid' AND NON_UNIQUE = 1",
    )
    .await;
    assert_eq!(unionid_index, 1);
    for index in ["idx_users_phone_index", "idx_users_data_key_id"] {
        let columns = scalar(
            &database,
            &format!(
                "SELECT COUNT(*) FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
                 AND TABLE_NAME = 'users' AND INDEX_NAME = '{index}' AND NON_UNIQUE = 1"
            ),
        )
        .await;
        assert_eq!(columns, 1, "{index}");
    }
}

#[tokio::test]
async fn the_migrate_subcommand_migrates_and_exits() {
    // Arrange
    let database = TestDatabase::create().await;
    let url = database.url();

    // Act
    let first = tokio::task::spawn_blocking({
        let url = url.clone();
        move || run_binary(&["migrate"], &[("DATABASE_URL", &url)])
    })
    .await
    .expect("first run");
    let second =
        tokio::task::spawn_blocking(move || run_binary(&["migrate"], &[("DATABASE_URL", &url)]))
            .await
            .expect("second run");

    // Assert
    assert!(first.status.success(), "{first:?}");
    assert!(second.status.success(), "{second:?}");
    assert_eq!(
        scalar(&database, "SELECT COUNT(*) FROM seaql_migrations").await,
        MIGRATIONS
    );
}

#[test]
fn a_bad_setting_exits_with_status_2_and_names_the_variable() {
    // Act
    let output = run_binary(&["migrate"], &[("DB_CONNECT_TIMEOUT_SECS", "soon")]);

    // Assert
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DB_CONNECT_TIMEOUT_SECS"));
}

#[test]
fn an_unknown_subcommand_exits_with_status_2() {
    // Act
    let output = run_binary(&["frobnicate"], &[]);

    // Assert
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn a_failed_connection_does_not_print_the_password() {
    // Act
    let output = run_binary(
        &["migrate"],
        &[
            ("DATABASE_URL", "mysql://root:hunter2@127.0.0.1:1/wxlogin"),
            ("DB_CONNECT_TIMEOUT_SECS", "1"),
        ],
    );

    // Assert
    assert_eq!(output.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("cannot connect to the database"), "{all}");
    assert!(!all.contains("hunter2"), "{all}");
}

#[tokio::test]
async fn every_text_column_is_as_wide_as_its_field_says() {
    // Arrange
    let database = TestDatabase::create().await;

    // Act
    wxlogin_user::migrate(&SecretString::from(database.url()), TIMEOUT)
        .await
        .expect("migrate");

    // Assert: the migrations (history, with their own literals) and the
    // one table of widths the service checks against agree.
    let columns = users_columns(&database).await;
    for field in Field::ALL {
        let expected = format!("varchar({})", field.max_chars());
        let found = columns
            .iter()
            .find(|(name, _, _)| name == field.column())
            .map(|(_, column_type, _)| column_type.as_str());
        assert_eq!(found, Some(expected.as_str()), "{field:?}");
    }
    for which in wxlogin_user::personal::Personal::ALL {
        let expected = format!(
            "varbinary({})",
            wxlogin_user::personal::sealed_width(which.field())
        );
        let name = format!("{}_enc", which.field().column());
        let found = columns
            .iter()
            .find(|(column, _, _)| *column == name)
            .map(|(_, column_type, _)| column_type.as_str());
        assert_eq!(found, Some(expected.as_str()), "{name}");
    }
}

//! The statements of the repository that are written by hand or must be
//! run as they are by others: the login's upsert on MySQL, its multi-row
//! form and read-back, and the recording of journalled logins.
//!
//! Pure: it builds statements and runs none (the benchmark's floor runs
//! [`upsert_statement`] itself, so that it measures what the service runs).

use chrono::{DateTime, SubsecRound};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, DbBackend, EntityTrait, ExprTrait, QueryFilter, QueryTrait, Statement,
    sea_query::{Expr, OnConflict},
};

use super::gather::LoginOf;
use crate::entity::user;

/// The user service's upsert of a login: `INSERT ... ON DUPLICATE KEY
/// UPDATE` with bound values. Public for the benchmark's floor, which must
/// run the very statement the service runs.
pub fn upsert_statement(
    backend: DbBackend,
    appid: &str,
    openid: &str,
    unionid: Option<&str>,
    now: DateTime<chrono::Utc>,
) -> Statement {
    user::Entity::insert(login_row(
        appid.to_owned(),
        openid.to_owned(),
        unionid.map(str::to_owned),
        now,
    ))
    .on_conflict(on_duplicate(true))
    .build(backend)
}

/// The row a first login inserts.
fn login_row(
    appid: String,
    openid: String,
    unionid: Option<String>,
    now: DateTime<chrono::Utc>,
) -> user::ActiveModel {
    user::ActiveModel {
        appid: Set(appid),
        openid: Set(openid),
        unionid: Set(unionid),
        created_at: Set(now),
        updated_at: Set(now),
        last_login_at: Set(now),
        login_count: Set(1),
        ..Default::default()
    }
}

/// What a login does to the row it finds on (appid, openid). MySQL applies
/// the assignments left to right; `VALUES(col)` is the value the statement
/// tried to insert. A login is no change of the user's data: `updated_at`
/// moves only when the statement backfills the unionid (so it is set before
/// `unionid`). With `insert_id`, `id = LAST_INSERT_ID(id)` makes an
/// existing row's id the statement's insert id (one row per statement).
fn on_duplicate(insert_id: bool) -> OnConflict {
    let mut on_duplicate = OnConflict::columns([user::Column::Appid, user::Column::Openid]);
    if insert_id {
        on_duplicate.value(user::Column::Id, Expr::cust("LAST_INSERT_ID(`id`)"));
    }
    on_duplicate
        .value(
            user::Column::UpdatedAt,
            Expr::cust(
                "IF(`users`.`unionid` IS NULL AND VALUES(`unionid`) IS NOT NULL, \
                 VALUES(`updated_at`), `users`.`updated_at`)",
            ),
        )
        .value(
            user::Column::Unionid,
            Expr::cust("COALESCE(`users`.`unionid`, VALUES(`unionid`))"),
        )
        .update_columns([user::Column::LastLoginAt])
        .value(
            user::Column::LoginCount,
            Expr::col(user::Column::LoginCount).add(1),
        )
        .to_owned()
}

/// [`upsert_statement`] for several users at once (distinct (appid,
/// openid) pairs), without the insert id: the rows are read back after.
pub(super) fn upsert_many_statement(
    backend: DbBackend,
    logins: &[LoginOf],
    now: DateTime<chrono::Utc>,
) -> Statement {
    let rows = logins.iter().map(|login| {
        login_row(
            login.appid.clone(),
            login.openid.clone(),
            login.unionid.clone(),
            now,
        )
    });
    user::Entity::insert_many(rows)
        .on_conflict(on_duplicate(false))
        .build(backend)
}

/// The rows of `logins`, on the unique key.
pub(super) fn rows_of_statement(backend: DbBackend, logins: &[LoginOf]) -> Statement {
    let mut any = Condition::any();
    for login in logins {
        any = any.add(
            Condition::all()
                .add(user::Column::Appid.eq(login.appid.as_str()))
                .add(user::Column::Openid.eq(login.openid.as_str())),
        );
    }
    user::Entity::find().filter(any).build(backend)
}

/// Logins of one user to record (see [`super::UserRepo::record_logins`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTally {
    pub appid: String,
    pub openid: String,
    /// How many logins.
    pub count: u32,
    /// When the latest was.
    pub last_at: DateTime<chrono::Utc>,
}

/// The most users one statement of [`super::UserRepo::record_logins`]
/// updates.
pub const TALLIES_PER_STATEMENT: usize = 500;

/// One `UPDATE` of every tally's row, joined on the unique key (appid,
/// openid) with the tallies as a derived table, with bound values.
pub(super) fn record_logins_statement(backend: DbBackend, tallies: &[LoginTally]) -> Statement {
    let rows =
        vec!["SELECT ? AS appid, ? AS openid, ? AS at, ? AS n"; tallies.len()].join(" UNION ALL ");
    let sql = match backend {
        DbBackend::Sqlite => format!(
            "WITH t AS ({rows}) UPDATE users SET \
               last_login_at = MAX(last_login_at, (SELECT at FROM t WHERE t.appid = users.appid AND t.openid = users.openid)), \
               login_count = login_count + (SELECT n FROM t WHERE t.appid = users.appid AND t.openid = users.openid) \
             WHERE (appid, openid) IN (SELECT appid, openid FROM t)"
        ),
        _ => format!(
            "UPDATE `users` JOIN ({rows}) AS t \
               ON `users`.`appid` = t.appid AND `users`.`openid` = t.openid \
             SET `users`.`last_login_at` = GREATEST(`users`.`last_login_at`, t.at), \
               `users`.`login_count` = `users`.`login_count` + t.n"
        ),
    };
    let values = tallies.iter().flat_map(|tally| {
        [
            tally.appid.clone().into(),
            tally.openid.clone().into(),
            tally.last_at.trunc_subsecs(6).into(),
            i64::from(tally.count).into(),
        ]
    });
    Statement::from_sql_and_values(backend, sql, values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upsert_is_one_statement_on_the_unique_key_with_bound_values() {
        let statement = upsert_statement(
            DbBackend::MySql,
            "wx-app",
            "o-open",
            Some("u-union"),
            chrono::Utc::now(),
        );

        assert_eq!(
            statement.sql,
            "INSERT INTO `users` (`appid`, `openid`, `unionid`, `created_at`, `updated_at`, \
             `last_login_at`, `login_count`) VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE `id` = LAST_INSERT_ID(`id`), \
             `updated_at` = IF(`users`.`unionid` IS NULL AND VALUES(`unionid`) IS NOT NULL, \
             VALUES(`updated_at`), `users`.`updated_at`), \
             `unionid` = COALESCE(`users`.`unionid`, VALUES(`unionid`)), \
             `last_login_at` = VALUES(`last_login_at`), \
             `login_count` = `login_count` + ?"
        );
        assert_eq!(statement.values.map(|values| values.0.len()), Some(8));
    }
}

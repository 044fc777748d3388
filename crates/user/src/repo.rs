//! The users table: registering a user and looking one up.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, ExecResult,
    ExprTrait, QueryFilter, QueryOrder, QueryTrait, Statement,
    sea_query::{Expr, Func, OnConflict},
};

use crate::{
    availability::Availability,
    entity::user,
    error::{Error, mysql_error_number},
    fields::Validated,
};

/// How many times the upsert is tried when InnoDB gives up on a lock.
const UPSERT_ATTEMPTS: u32 = 5;
/// MySQL's "lock wait timeout exceeded" and "deadlock found".
const LOCK_CONFLICTS: [u16; 2] = [1205, 1213];

/// The users table, through a connection pool. Cheap to clone.
///
/// Every statement goes through [`Availability::guard`]: while the database
/// is known down, none is tried.
#[derive(Debug, Clone)]
pub struct UserRepo {
    db: DatabaseConnection,
    availability: Availability,
}

impl UserRepo {
    pub fn new(db: DatabaseConnection, availability: Availability) -> Self {
        UserRepo { db, availability }
    }

    /// Registers (appid, openid), or records another login of the user who
    /// already has it, in one statement on the unique key; `created` says
    /// which. The statement is atomic, so concurrent first logins of one
    /// user make exactly one row and exactly one of them sees `created`.
    ///
    /// A unionid is stored the first time one is given. After that it is
    /// kept, both when a later call has none and when it has a different one:
    /// WeChat never changes a user's unionid, so a different value is a
    /// caller's bug, and the first value is the one other records point to.
    pub async fn upsert(
        &self,
        appid: &str,
        openid: &str,
        unionid: Option<&str>,
    ) -> Result<Upserted, Error> {
        self.availability
            .guard(self.upsert_now(appid, openid, unionid))
            .await
    }

    async fn upsert_now(
        &self,
        appid: &str,
        openid: &str,
        unionid: Option<&str>,
    ) -> Result<Upserted, Error> {
        let backend = self.db.get_database_backend();
        if backend == DbBackend::Sqlite {
            let (user, created) = self.upsert_sqlite(appid, openid, unionid).await?;
            return Ok(Upserted::Row {
                user: Box::new(user),
                created,
            });
        }
        let now = now();
        let statement = upsert_statement(backend, appid, openid, unionid, now);

        let result = self.execute_retrying(statement).await?;

        // MySQL counts 1 for a row inserted and 2 for a row updated (sqlx
        // sets CLIENT_FOUND_ROWS, and the login_count increment always
        // changes the row, so an update never counts 1).
        let created = result.rows_affected() == 1;
        // On update, `id = LAST_INSERT_ID(id)` made the existing row's id the
        // statement's insert id.
        let id = i64::try_from(result.last_insert_id())
            .map_err(|_| Error::Database(DbErr::Custom("insert id out of range".into())))?;
        if created {
            // The row is exactly what the statement inserted: no need to
            // read it back.
            return Ok(Upserted::Row {
                user: Box::new(user::Model {
                    id,
                    appid: appid.to_owned(),
                    openid: openid.to_owned(),
                    unionid: unionid.map(str::to_owned),
                    nickname: None,
                    avatar_url: None,
                    gender: 0,
                    created_at: now,
                    updated_at: now,
                    last_login_at: now,
                    login_count: 1,
                    country: None,
                    province: None,
                    city: None,
                    language: None,
                    phone_number: None,
                    pure_phone_number: None,
                    phone_country_code: None,
                }),
                created: true,
            });
        }
        Ok(Upserted::Existing { id })
    }

    /// Runs `statement`, again when InnoDB rolled it back for a lock
    /// conflict: a rolled-back attempt left nothing behind.
    async fn execute_retrying(&self, statement: Statement) -> Result<ExecResult, Error> {
        let mut attempt = 1;
        loop {
            match self.db.execute_raw(statement.clone()).await {
                Ok(result) => return Ok(result),
                Err(error) if attempt < UPSERT_ATTEMPTS && is_lock_conflict(&error) => {
                    tracing::debug!(attempt, %error, "a statement hit a lock conflict, retrying");
                    tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Records logins that were answered without a statement of their own
    /// (see [`crate::journal`]): each user's `last_login_at` becomes the
    /// latest of its own and the tally's, and its `login_count` grows by
    /// the tally's count. One statement per [`TALLIES_PER_STATEMENT`]
    /// users; tallies of users who have no row are dropped.
    pub async fn record_logins(&self, tallies: &[LoginTally]) -> Result<(), Error> {
        self.availability
            .guard(async {
                for chunk in tallies.chunks(TALLIES_PER_STATEMENT) {
                    self.execute_retrying(record_logins_statement(
                        self.db.get_database_backend(),
                        chunk,
                    ))
                    .await?;
                }
                Ok(())
            })
            .await
    }

    /// The row with this id, which must exist.
    pub async fn row(&self, id: i64) -> Result<user::Model, Error> {
        self.availability.guard(self.row_now(id)).await
    }

    async fn row_now(&self, id: i64) -> Result<user::Model, Error> {
        self.get_by_id_now(id).await?.ok_or_else(|| {
            Error::Database(DbErr::RecordNotFound(format!(
                "user {id} vanished right after its upsert"
            )))
        })
    }

    /// The same upsert for SQLite, which has `ON CONFLICT … DO UPDATE` and
    /// `RETURNING` instead of MySQL's affected-rows convention: the login
    /// count after the statement says whether it inserted.
    async fn upsert_sqlite(
        &self,
        appid: &str,
        openid: &str,
        unionid: Option<&str>,
    ) -> Result<(user::Model, bool), Error> {
        let now = now();
        let statement = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            "INSERT INTO users (appid, openid, unionid, gender, created_at, updated_at, last_login_at, login_count) \
             VALUES (?, ?, ?, 0, ?, ?, ?, 1) \
             ON CONFLICT (appid, openid) DO UPDATE SET \
               unionid = COALESCE(users.unionid, excluded.unionid), \
               updated_at = CASE WHEN users.unionid IS NULL AND excluded.unionid IS NOT NULL \
                 THEN excluded.updated_at ELSE users.updated_at END, \
               last_login_at = excluded.last_login_at, \
               login_count = users.login_count + 1 \
             RETURNING id, login_count",
            [
                appid.into(),
                openid.into(),
                unionid.map(str::to_owned).into(),
                now.into(),
                now.into(),
                now.into(),
            ],
        );
        let row = self.db.query_one_raw(statement).await?.ok_or_else(|| {
            Error::Database(DbErr::RecordNotFound("the upsert returned no row".into()))
        })?;
        let id: i64 = row.try_get("", "id")?;
        let login_count: i64 = row.try_get("", "login_count")?;
        let user = self.get_by_id_now(id).await?.ok_or_else(|| {
            Error::Database(DbErr::RecordNotFound(format!(
                "user {id} vanished right after its upsert"
            )))
        })?;
        Ok((user, login_count == 1))
    }

    pub async fn get_by_id(&self, id: i64) -> Result<Option<user::Model>, Error> {
        self.availability.guard(self.get_by_id_now(id)).await
    }

    async fn get_by_id_now(&self, id: i64) -> Result<Option<user::Model>, Error> {
        Ok(user::Entity::find_by_id(id).one(&self.db).await?)
    }

    pub async fn get_by_openid(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<user::Model>, Error> {
        self.availability
            .guard(self.get_by_openid_now(appid, openid))
            .await
    }

    async fn get_by_openid_now(
        &self,
        appid: &str,
        openid: &str,
    ) -> Result<Option<user::Model>, Error> {
        Ok(user::Entity::find()
            .filter(user::Column::Appid.eq(appid))
            .filter(user::Column::Openid.eq(openid))
            .one(&self.db)
            .await?)
    }

    /// Every user with this unionid, oldest first.
    pub async fn list_by_unionid(&self, unionid: &str) -> Result<Vec<user::Model>, Error> {
        self.availability
            .guard(self.list_by_unionid_now(unionid))
            .await
    }

    async fn list_by_unionid_now(&self, unionid: &str) -> Result<Vec<user::Model>, Error> {
        Ok(user::Entity::find()
            .filter(user::Column::Unionid.eq(unionid))
            .order_by_asc(user::Column::Id)
            .all(&self.db)
            .await?)
    }

    /// Stores the fields of `update` that are set, in one statement; a
    /// unionid only when the user has none yet. `None` when there is no
    /// such user.
    pub async fn update_profile(
        &self,
        appid: &str,
        openid: &str,
        update: &Validated,
    ) -> Result<Option<user::Model>, Error> {
        self.availability
            .guard(self.update_profile_now(appid, openid, update))
            .await
    }

    async fn update_profile_now(
        &self,
        appid: &str,
        openid: &str,
        update: &Validated,
    ) -> Result<Option<user::Model>, Error> {
        use user::Column;
        let mut statement = user::Entity::update_many()
            .filter(Column::Appid.eq(appid))
            .filter(Column::Openid.eq(openid))
            .col_expr(Column::UpdatedAt, Expr::value(now()));
        let texts = [
            (Column::Nickname, &update.nickname),
            (Column::AvatarUrl, &update.avatar_url),
            (Column::Country, &update.country),
            (Column::Province, &update.province),
            (Column::City, &update.city),
            (Column::Language, &update.language),
            (Column::PhoneNumber, &update.phone_number),
            (Column::PurePhoneNumber, &update.pure_phone_number),
            (Column::PhoneCountryCode, &update.phone_country_code),
        ];
        for (column, value) in texts {
            if let Some(value) = value {
                statement = statement.col_expr(column, Expr::value(value.clone()));
            }
        }
        if let Some(gender) = update.gender {
            statement = statement.col_expr(Column::Gender, Expr::value(gender));
        }
        if let Some(unionid) = &update.unionid {
            statement = statement.col_expr(
                Column::Unionid,
                Func::coalesce([Expr::col(Column::Unionid), Expr::value(unionid.clone())]).into(),
            );
        }
        let result = statement.exec(&self.db).await?;
        if result.rows_affected == 0 {
            return Ok(None);
        }
        self.get_by_openid_now(appid, openid).await
    }
}

/// What an upsert did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upserted {
    /// The row as it now is.
    Row {
        user: Box<user::Model>,
        created: bool,
    },
    /// A returning user: the login was recorded; the rest of the row is as
    /// it was (but a unionid the call brought, when it had none).
    Existing { id: i64 },
}

/// Logins of one user to record (see [`UserRepo::record_logins`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginTally {
    pub appid: String,
    pub openid: String,
    /// How many logins.
    pub count: u32,
    /// When the latest was.
    pub last_at: DateTime<Utc>,
}

/// The most users one statement of [`UserRepo::record_logins`] updates.
pub const TALLIES_PER_STATEMENT: usize = 500;

/// One `UPDATE` of every tally's row, joined on the unique key (appid,
/// openid) with the tallies as a derived table, with bound values.
fn record_logins_statement(backend: DbBackend, tallies: &[LoginTally]) -> Statement {
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

/// The user service's upsert of a login: `INSERT ... ON DUPLICATE KEY
/// UPDATE` with bound values. Public for the benchmark's floor, which must
/// run the very statement the service runs.
pub fn upsert_statement(
    backend: DbBackend,
    appid: &str,
    openid: &str,
    unionid: Option<&str>,
    now: DateTime<Utc>,
) -> Statement {
    let row = user::ActiveModel {
        appid: Set(appid.to_owned()),
        openid: Set(openid.to_owned()),
        unionid: Set(unionid.map(str::to_owned)),
        created_at: Set(now),
        updated_at: Set(now),
        last_login_at: Set(now),
        login_count: Set(1),
        ..Default::default()
    };
    // MySQL applies the assignments left to right. `VALUES(col)` is the
    // value this statement tried to insert.
    // A login is no change of the user's data: `updated_at` moves only when
    // the statement backfills the unionid (so it is set before `unionid`).
    let on_duplicate = OnConflict::columns([user::Column::Appid, user::Column::Openid])
        .value(user::Column::Id, Expr::cust("LAST_INSERT_ID(`id`)"))
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
        .to_owned();
    user::Entity::insert(row)
        .on_conflict(on_duplicate)
        .build(backend)
}

/// Now, at the precision `DATETIME(6)` stores, so that what is written is
/// what is read back.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn is_lock_conflict(error: &DbErr) -> bool {
    mysql_error_number(error).is_some_and(|number| LOCK_CONFLICTS.contains(&number))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::{Database, DatabaseTransaction, TransactionTrait};
    use wxlogin_testkit::TestDatabase;

    /// Two rows to lock, on a connection pool of the test's own.
    async fn lockable_rows() -> (TestDatabase, DatabaseConnection) {
        let database = TestDatabase::create().await;
        let db = Database::connect(database.url()).await.unwrap();
        db.execute_unprepared("CREATE TABLE locks (id INT PRIMARY KEY) ENGINE=InnoDB")
            .await
            .unwrap();
        db.execute_unprepared("INSERT INTO locks VALUES (1), (2)")
            .await
            .unwrap();
        (database, db)
    }

    /// A transaction whose connection the server closes after 10 idle
    /// seconds, so that a test failing while it holds locks cannot leave them
    /// blocking the drop of its database forever.
    async fn begin(db: &DatabaseConnection) -> DatabaseTransaction {
        let tx = db.begin().await.unwrap();
        tx.execute_unprepared("SET SESSION wait_timeout = 10")
            .await
            .unwrap();
        tx
    }

    async fn lock(tx: &DatabaseTransaction, id: u32) -> Result<(), DbErr> {
        tx.execute_unprepared(&format!("SELECT id FROM locks WHERE id = {id} FOR UPDATE"))
            .await
            .map(drop)
    }

    #[tokio::test]
    async fn a_lock_wait_timeout_is_retried_and_otherwise_unavailable() {
        // Arrange
        let (_database, db) = lockable_rows().await;
        let holder = begin(&db).await;
        lock(&holder, 1).await.unwrap();
        let waiter = begin(&db).await;
        waiter
            .execute_unprepared("SET SESSION innodb_lock_wait_timeout = 1")
            .await
            .unwrap();

        // Act
        let error = lock(&waiter, 1).await.unwrap_err();

        // Rolled back explicitly: a dropped transaction would keep its locks
        // until its connection's next use, and block dropping the database.
        waiter.rollback().await.unwrap();
        holder.rollback().await.unwrap();
        db.close().await.unwrap();

        // Assert
        assert_eq!(mysql_error_number(&error), Some(1205));
        assert!(is_lock_conflict(&error));
        assert!(matches!(Error::from(error), Error::DatabaseUnavailable(_)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deadlock_is_retried_and_otherwise_unavailable() {
        // Arrange: each transaction holds the row the other one wants.
        let (_database, db) = lockable_rows().await;
        let first = begin(&db).await;
        let second = begin(&db).await;
        lock(&first, 1).await.unwrap();
        lock(&second, 2).await.unwrap();

        // Act
        let first_waits = tokio::spawn(async move {
            let result = lock(&first, 2).await;
            (first, result)
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let second_result = lock(&second, 1).await;
        second.rollback().await.unwrap();
        let (first, first_result) = first_waits.await.unwrap();
        first.rollback().await.unwrap();
        db.close().await.unwrap();

        // Assert: InnoDB rolls one of them back.
        let errors: Vec<DbErr> = [first_result, second_result]
            .into_iter()
            .filter_map(Result::err)
            .collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(mysql_error_number(&errors[0]), Some(1213));
        assert!(is_lock_conflict(&errors[0]));
        assert!(matches!(
            Error::from(errors[0].clone()),
            Error::DatabaseUnavailable(_)
        ));
    }

    #[test]
    fn other_errors_are_not_lock_conflicts() {
        assert!(!is_lock_conflict(&DbErr::Custom("boom".into())));
    }

    #[test]
    fn the_upsert_is_one_statement_on_the_unique_key_with_bound_values() {
        let statement =
            upsert_statement(DbBackend::MySql, "wx-app", "o-open", Some("u-union"), now());

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

//! The users table: every statement the user service runs on it, each
//! through [`Availability::guard`] (none is tried while the database is
//! known down), and every row it returns revealed (personal columns
//! opened).
//!
//! Split by concern: this module holds the repository and its reads;
//! `upsert` registers logins (gathered by `gather` on MySQL), `write`
//! changes rows (reading each back on its write's connection, see
//! `one_connection`), and `statements` builds the hand-written SQL. It must not
//! know about gRPC or the cache: the service decides what a row becomes.

use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, ExecResult,
    QueryFilter, QueryOrder, Statement,
};

use crate::{
    availability::Availability,
    entity::user,
    error::{Error, mysql_error_number},
    personal::Sealer,
};

mod gather;
mod one_connection;
mod statements;
mod upsert;
mod write;

pub use statements::{LoginTally, TALLIES_PER_STATEMENT, upsert_statement};

/// How many times a statement is tried when InnoDB gives up on a lock.
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
    /// Seals personal columns on the way in, opens them on the way out:
    /// every row the repository returns reads in the clear.
    sealer: Sealer,
    /// Gathers concurrent upserts into multi-row statements (MySQL only).
    gatherer: Option<gather::Queue<Upserted>>,
}

impl UserRepo {
    /// The repository on `db`. On MySQL it starts the task that gathers
    /// concurrent upserts (so it must be called inside a tokio runtime);
    /// the task ends with the last clone.
    pub fn new(db: DatabaseConnection, availability: Availability, sealer: Sealer) -> Self {
        let mut repo = UserRepo {
            db,
            availability,
            sealer,
            gatherer: None,
        };
        if repo.db.get_database_backend() == DbBackend::MySql {
            // The task's own clone holds no sender: it ends when the last
            // clone of the repo (but its own) is gone.
            let runner = repo.clone();
            repo.gatherer = Some(gather::start(move |logins| {
                let repo = runner.clone();
                async move { repo.upsert_gathered(&logins).await }
            }));
        }
        repo
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

    /// The row with this id, which must exist: [`Error::Vanished`] when it
    /// is gone (the user was deleted meanwhile).
    pub async fn row(&self, id: i64) -> Result<user::Model, Error> {
        self.availability.guard(self.row_now(id)).await
    }

    async fn row_now(&self, id: i64) -> Result<user::Model, Error> {
        self.get_by_id_now(id).await?.ok_or(Error::Vanished)
    }

    pub async fn get_by_id(&self, id: i64) -> Result<Option<user::Model>, Error> {
        self.availability.guard(self.get_by_id_now(id)).await
    }

    async fn get_by_id_now(&self, id: i64) -> Result<Option<user::Model>, Error> {
        self.revealed(user::Entity::find_by_id(id).one(&self.db).await?)
    }

    fn revealed(&self, row: Option<user::Model>) -> Result<Option<user::Model>, Error> {
        row.map(|row| self.sealer.reveal(row)).transpose()
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
        self.revealed(
            user::Entity::find()
                .filter(user::Column::Appid.eq(appid))
                .filter(user::Column::Openid.eq(openid))
                .one(&self.db)
                .await?,
        )
    }

    /// Every user with this unionid, oldest first.
    pub async fn list_by_unionid(&self, unionid: &str) -> Result<Vec<user::Model>, Error> {
        self.availability
            .guard(self.list_by_unionid_now(unionid))
            .await
    }

    async fn list_by_unionid_now(&self, unionid: &str) -> Result<Vec<user::Model>, Error> {
        user::Entity::find()
            .filter(user::Column::Unionid.eq(unionid))
            .order_by_asc(user::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|row| self.sealer.reveal(row))
            .collect()
    }

    /// Every user with this phone number, oldest first: found by the
    /// number's blind index, then checked against the opened number.
    pub async fn list_by_phone(
        &self,
        country_code: &str,
        pure_number: &str,
    ) -> Result<Vec<user::Model>, Error> {
        self.availability
            .guard(async {
                let index = self.sealer.phone_index(country_code, pure_number);
                let rows = user::Entity::find()
                    .filter(user::Column::PhoneIndex.eq(index))
                    .order_by_asc(user::Column::Id)
                    .all(&self.db)
                    .await?;
                let mut found = Vec::with_capacity(rows.len());
                for row in rows {
                    let row = self.sealer.reveal(row)?;
                    if self.sealer.holds_phone(&row, country_code, pure_number) {
                        found.push(row);
                    }
                }
                Ok(found)
            })
            .await
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
}

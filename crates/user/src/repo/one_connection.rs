//! A write and the read of what it wrote, on one pooled connection.
//!
//! sqlx pings every connection when it goes back to the pool (see
//! `pool_options` in the crate root), so each statement run through the
//! pool costs two round trips to MySQL. A write followed by the read of its
//! row, run on one connection taken once, costs three instead of four.

use sea_orm::{
    ConnAcquireErr, DbBackend, DbErr, QueryResult, RuntimeErr, Statement, sea_query::Values, sqlx,
};
use sea_query_sqlx::SqlxValues;

use super::UserRepo;

impl UserRepo {
    /// Runs `write`, then (when it matched a row) `read`, on one connection:
    /// the read's row, `None` when the write matched none. SQLite, a file
    /// with no round trips, runs them through the pool.
    pub(super) async fn write_then_read(
        &self,
        write: Statement,
        read: Statement,
    ) -> Result<Option<QueryResult>, DbErr> {
        use sea_orm::ConnectionTrait;
        if self.db.get_database_backend() != DbBackend::MySql {
            if self.db.execute_raw(write).await?.rows_affected() == 0 {
                return Ok(None);
            }
            return self.db.query_one_raw(read).await;
        }
        // The errors are sea-orm's for the same failures (its driver's
        // mapping), so that `crate::error` tells an outage from a refusal as
        // for any other statement.
        let mut connection = self
            .db
            .get_mysql_connection_pool()
            .acquire()
            .await
            .map_err(|error| match error {
                sqlx::Error::PoolTimedOut => DbErr::ConnectionAcquire(ConnAcquireErr::Timeout),
                sqlx::Error::PoolClosed => {
                    DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed)
                }
                error => DbErr::Conn(RuntimeErr::SqlxError(error.into())),
            })?;
        let written = query(&write)
            .execute(&mut *connection)
            .await
            .map_err(|error| DbErr::Exec(RuntimeErr::SqlxError(error.into())))?;
        if written.rows_affected() == 0 {
            return Ok(None);
        }
        let row = query(&read)
            .fetch_optional(&mut *connection)
            .await
            .map_err(|error| DbErr::Query(RuntimeErr::SqlxError(error.into())))?;
        Ok(row.map(QueryResult::from))
    }
}

/// `statement` as sqlx runs it (a prepared statement, cached on the
/// connection), as sea-orm does.
fn query(statement: &Statement) -> sqlx::query::Query<'_, sqlx::MySql, SqlxValues> {
    let values = statement.values.clone().unwrap_or(Values(Vec::new()));
    sqlx::query_with(
        sqlx::AssertSqlSafe(statement.sql.as_str()),
        SqlxValues(values),
    )
}

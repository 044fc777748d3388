//! The user service's errors and their one mapping to a gRPC status.

use std::net::SocketAddr;

use sea_orm::{DbErr, RuntimeErr, error::SqlxMySqlError, sqlx};
use tonic::Status;
use wxlogin_proto::reason::Reason;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    // The caller's side: they become statuses as they are.
    /// The request is malformed; the message says which field and why.
    #[error("{0}")]
    InvalidArgument(String),
    #[error("user not found")]
    UserNotFound,
    /// Any decryption, padding, UTF-8, JSON or watermark failure: one
    /// variant, so that answers form no padding oracle.
    #[error("the encrypted data is not valid")]
    InvalidEncryptedData,
    #[error("the rawData signature does not match")]
    InvalidSignature,
    /// The row an upsert wrote was gone when read back: the user was
    /// deleted meanwhile. The upsert is tried again (and registers the user
    /// anew).
    #[error("the user was deleted during the login")]
    Vanished,
    /// The team blocked the user (`BlockUser`).
    #[error("this account is blocked")]
    UserBlocked,

    // Our side: logged where they are mapped, masked for the caller.
    /// The database cannot be reached now, or is too busy to answer; asking
    /// again later may succeed.
    #[error("the database is unavailable")]
    DatabaseUnavailable(#[source] DbErr),
    /// The database is known to be down (see `availability`): the request
    /// did not try it.
    #[error("the database is down")]
    DatabaseDown,
    #[error("database error")]
    Database(#[source] DbErr),
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    #[error("cannot migrate the database")]
    Migrate(#[source] DbErr),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
    #[error("AUTH_URL is not a valid gRPC endpoint")]
    InvalidAuthUrl,
    #[error("REDIS_URL is not a valid Redis URL")]
    InvalidRedisUrl,
    /// A sealed value of `users` does not open: a key missing from
    /// `DATA_ENCRYPTION_KEYS`, or a value tampered with or moved.
    #[error("cannot open users.{column}")]
    Open {
        column: &'static str,
        #[source]
        source: wxlogin_userdata::sealing::OpenError,
    },
    #[error("cannot seal personal data")]
    Seal(#[source] wxlogin_userdata::sealing::SealError),
}

impl Error {
    /// This error again, for another caller of the statement that failed
    /// (gathered upserts share one).
    pub(crate) fn for_another(&self) -> Error {
        match self {
            Error::DatabaseDown => Error::DatabaseDown,
            Error::DatabaseUnavailable(error) => Error::DatabaseUnavailable(error.clone()),
            Error::Database(error) => Error::Database(error.clone()),
            Error::Vanished => Error::Vanished,
            other => Error::Database(DbErr::Custom(other.to_string())),
        }
    }
}

impl From<DbErr> for Error {
    fn from(error: DbErr) -> Self {
        if is_unavailable(&error) {
            Error::DatabaseUnavailable(error)
        } else {
            Error::Database(error)
        }
    }
}

/// MySQL server errors that say "not now" rather than "never":
/// too many connections, server shutting down, lock wait timeout, deadlock.
const TRANSIENT_SERVER_ERRORS: [u16; 4] = [1040, SERVER_SHUTDOWN, 1205, 1213];

fn is_unavailable(error: &DbErr) -> bool {
    match error {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(cause)) | DbErr::Query(RuntimeErr::SqlxError(cause)) => {
            match &**cause {
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed => true,
                sqlx::Error::Database(db) => db
                    .try_downcast_ref::<SqlxMySqlError>()
                    .is_some_and(|mysql| TRANSIENT_SERVER_ERRORS.contains(&mysql.number())),
                _ => false,
            }
        }
        _ => false,
    }
}

/// Whether `error` says the connection to the database failed (refused,
/// reset, closed, TLS), as opposed to the database refusing one statement,
/// or a pool too busy to hand out a connection in time.
pub(crate) fn is_connection_failure(error: &DbErr) -> bool {
    match error {
        DbErr::Conn(_) => true,
        DbErr::ConnectionAcquire(acquire) => {
            matches!(acquire, sea_orm::ConnAcquireErr::ConnectionClosed)
        }
        DbErr::Exec(RuntimeErr::SqlxError(cause)) | DbErr::Query(RuntimeErr::SqlxError(cause)) => {
            matches!(
                &**cause,
                sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed
            ) || mysql_error_number(error) == Some(SERVER_SHUTDOWN)
        }
        _ => false,
    }
}

/// MySQL's "server shutdown in progress".
const SERVER_SHUTDOWN: u16 = 1053;

/// The MySQL error number of `error`, if the server sent one.
pub(crate) fn mysql_error_number(error: &DbErr) -> Option<u16> {
    match error {
        DbErr::Exec(RuntimeErr::SqlxError(cause)) | DbErr::Query(RuntimeErr::SqlxError(cause)) => {
            match &**cause {
                sqlx::Error::Database(db) => db
                    .try_downcast_ref::<SqlxMySqlError>()
                    .map(SqlxMySqlError::number),
                _ => None,
            }
        }
        _ => None,
    }
}

pub use wxlogin_common::error_report as report;

impl From<Error> for Status {
    fn from(error: Error) -> Self {
        match error {
            Error::InvalidArgument(message) => Reason::InvalidArgument.status(message),
            Error::UserNotFound => Reason::UserNotFound.status("user not found"),
            Error::InvalidEncryptedData => {
                Reason::InvalidEncryptedData.status("the encrypted data is not valid")
            }
            Error::InvalidSignature => {
                Reason::InvalidSignature.status("the rawData signature does not match")
            }
            Error::UserBlocked => Reason::UserBlocked.status("this account is blocked"),
            Error::DatabaseUnavailable(_) | Error::DatabaseDown => {
                // While the database is known down, the outage was logged
                // once when it began.
                if !matches!(error, Error::DatabaseDown) {
                    tracing::warn!(error = %report(&error), "database unavailable");
                }
                Reason::DependencyUnavailable
                    .status("the user store is unavailable, try again later")
            }
            Error::Database(_)
            | Error::Vanished
            | Error::Connect(_)
            | Error::Migrate(_)
            | Error::Bind { .. }
            | Error::Serve(_)
            | Error::InvalidAuthUrl
            | Error::InvalidRedisUrl
            | Error::Open { .. }
            | Error::Seal(_) => {
                tracing::error!(error = %report(&error), "request failed");
                Reason::Internal.status("internal error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::ConnAcquireErr;
    use tonic::Code;
    use wxlogin_proto::reason;

    #[test]
    fn a_pool_timeout_is_unavailable() {
        let error = Error::from(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout));

        let status = Status::from(error);

        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(reason::of(&status), Some(Reason::DependencyUnavailable));
    }

    #[test]
    fn other_database_errors_are_internal_and_masked() {
        let error = Error::from(DbErr::Custom("secret table layout".into()));

        let status = Status::from(error);

        assert_eq!(status.code(), Code::Internal);
        assert!(!status.message().contains("secret"));
    }

    #[test]
    fn not_found_carries_its_reason() {
        let status = Status::from(Error::UserNotFound);

        assert_eq!(status.code(), Code::NotFound);
        assert_eq!(reason::of(&status), Some(Reason::UserNotFound));
    }

    #[test]
    fn a_report_has_every_cause() {
        let error = Error::Migrate(DbErr::Custom("no such table".into()));

        assert_eq!(
            report(&error),
            "cannot migrate the database: Custom Error: no such table"
        );
    }
}

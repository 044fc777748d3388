//! A login's upsert: registering (appid, openid) or recording the return
//! of the user who has it, alone or gathered with concurrent logins into
//! one statement (MySQL), or with SQLite's own statement.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicI64, Ordering},
};

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DbBackend, DbErr, EntityTrait, Statement};
use tokio::sync::oneshot;

use super::{
    Upserted, UserRepo,
    gather::{LoginOf, Waiting},
    now,
    statements::{rows_of_statement, upsert_many_statement, upsert_statement},
};
use crate::{entity::user, error::Error};

impl UserRepo {
    /// Registers (appid, openid), or records another login of the user who
    /// already has it, in one statement on the unique key; `created` says
    /// which. The statement is atomic, so concurrent first logins of one
    /// user make exactly one row and exactly one of them sees `created`.
    ///
    /// A unionid is stored the first time one is given. After that it is
    /// kept, both when a later call has none and when it has a different one:
    /// WeChat never changes a user's unionid, so a different value is a
    /// caller's bug, and the first value is the one other records point to.
    ///
    /// On MySQL, upserts that arrive while earlier ones run are gathered
    /// into one multi-row statement (then the rows are read back in one
    /// more), which keeps the promises above: a batch never holds one user
    /// twice.
    pub async fn upsert(
        &self,
        appid: &str,
        openid: &str,
        unionid: Option<&str>,
    ) -> Result<Upserted, Error> {
        if let Some(gatherer) = &self.gatherer {
            let (answer, answered) = oneshot::channel();
            let login = LoginOf {
                appid: appid.to_owned(),
                openid: openid.to_owned(),
                unionid: unionid.map(str::to_owned),
            };
            if gatherer.send(Waiting { login, answer }).is_ok()
                && let Ok(upserted) = answered.await
            {
                return upserted;
            }
        }
        self.availability
            .guard(self.upsert_now(appid, openid, unionid))
            .await
    }

    /// Runs one gathered batch: alone, a login's own statement; else one
    /// statement for all.
    pub(super) async fn upsert_gathered(&self, logins: &[LoginOf]) -> Result<Vec<Upserted>, Error> {
        if let [login] = logins {
            let upserted = self
                .availability
                .guard(self.upsert_now(&login.appid, &login.openid, login.unionid.as_deref()))
                .await?;
            return Ok(vec![upserted]);
        }
        tracing::debug!(users = logins.len(), "one statement for gathered upserts");
        self.availability.guard(self.upsert_many(logins)).await
    }

    /// Upserts several distinct users in two statements: the multi-row
    /// upsert, then a read of their rows. A row is new when its
    /// `created_at` is this statement's own `now` (unique in this process).
    async fn upsert_many(&self, logins: &[LoginOf]) -> Result<Vec<Upserted>, Error> {
        let backend = self.db.get_database_backend();
        let now = unique_now();
        self.execute_retrying(upsert_many_statement(backend, logins, now))
            .await?;
        let rows = user::Entity::find()
            .from_raw_sql(rows_of_statement(backend, logins))
            .all(&self.db)
            .await?;
        let mut rows: HashMap<(String, String), user::Model> = rows
            .into_iter()
            .map(|row| ((row.appid.clone(), row.openid.clone()), row))
            .collect();
        logins
            .iter()
            .map(|login| {
                let row = rows
                    .remove(&(login.appid.clone(), login.openid.clone()))
                    .ok_or(Error::Vanished)?;
                let created = row.created_at == now;
                Ok(Upserted::Row {
                    user: Box::new(self.sealer.reveal(row)?),
                    created,
                })
            })
            .collect()
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
                    blocked_at: None,
                    nickname_enc: None,
                    avatar_url_enc: None,
                    country_enc: None,
                    province_enc: None,
                    city_enc: None,
                    phone_number_enc: None,
                    pure_phone_number_enc: None,
                    phone_country_code_enc: None,
                    data_key_id: None,
                    phone_index: None,
                }),
                created: true,
            });
        }
        Ok(Upserted::Existing { id })
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
        let user = self.get_by_id_now(id).await?.ok_or(Error::Vanished)?;
        Ok((user, login_count == 1))
    }
}

/// [`now`], but never the same value twice in this process: a gathered
/// upsert tells the rows it inserted by their `created_at`.
fn unique_now() -> DateTime<Utc> {
    static LAST_MICROS: AtomicI64 = AtomicI64::new(0);
    let micros = now().timestamp_micros();
    let previous = LAST_MICROS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(Ord::max(micros, last + 1))
        })
        .unwrap_or(micros);
    DateTime::from_timestamp_micros(Ord::max(micros, previous + 1)).unwrap_or_else(now)
}

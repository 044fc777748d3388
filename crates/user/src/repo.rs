//! The users table: registering a user and looking one up.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait,
    ExecResult, ExprTrait, QueryFilter, QueryOrder, QueryTrait, Statement,
    sea_query::{Expr, Func, OnConflict},
};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{
    availability::Availability,
    entity::user,
    error::{Error, mysql_error_number},
    fields::Validated,
    personal::{Personal, Sealer},
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
    /// Seals personal columns on the way in, opens them on the way out:
    /// every row the repository returns reads in the clear.
    sealer: Sealer,
    /// Gathers concurrent upserts into multi-row statements (MySQL only).
    gatherer: Option<mpsc::UnboundedSender<Waiting>>,
}

/// The most logins one gathered statement carries.
const MAX_GATHERED: usize = 64;
/// How many gathered statements run at once. While they all run, new
/// logins wait and are gathered: the busier the database, the larger the
/// statements, and the fewer commits per login.
const GATHERED_AT_ONCE: usize = 2;

/// One login's upsert.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LoginOf {
    appid: String,
    openid: String,
    unionid: Option<String>,
}

/// An upsert waiting to be gathered, and where its answer goes.
#[derive(Debug)]
struct Waiting {
    login: LoginOf,
    answer: oneshot::Sender<Result<Upserted, Error>>,
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
            let (queue, waiting) = mpsc::unbounded_channel();
            tokio::spawn(gather(repo.clone(), waiting));
            repo.gatherer = Some(queue);
        }
        repo
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

    /// The row with this id, which must exist: [`Error::Vanished`] when it
    /// is gone (the user was deleted meanwhile).
    pub async fn row(&self, id: i64) -> Result<user::Model, Error> {
        self.availability.guard(self.row_now(id)).await
    }

    async fn row_now(&self, id: i64) -> Result<user::Model, Error> {
        self.get_by_id_now(id).await?.ok_or(Error::Vanished)
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
        // Personal values are stored sealed, and their plaintext column
        // (of rows written before encryption) emptied.
        let mut sealed_any = false;
        for which in Personal::ALL {
            if let Some(value) = which.in_update(update) {
                let sealed = self.sealer.seal(appid, openid, which, value)?;
                statement = statement
                    .col_expr(which.sealed(), Expr::value(sealed))
                    .col_expr(which.plain(), Expr::value(Option::<String>::None));
                sealed_any = true;
            }
        }
        if sealed_any {
            statement = statement.col_expr(Column::DataKeyId, self.sealer.key_id_after_write());
        }
        if let (Some(code), Some(number)) = (&update.phone_country_code, &update.pure_phone_number)
        {
            statement = statement.col_expr(
                Column::PhoneIndex,
                Expr::value(self.sealer.phone_index(code, number)),
            );
        }
        if let Some(language) = &update.language {
            statement = statement.col_expr(Column::Language, Expr::value(language.clone()));
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

impl UserRepo {
    /// Blocks (`Some(at)`) or unblocks (`None`) the user with this id: the
    /// row as it now is, `None` when there is none. Blocking a blocked user
    /// keeps the first instant.
    pub async fn set_blocked(
        &self,
        id: i64,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<user::Model>, Error> {
        self.availability
            .guard(async {
                use user::Column;
                let blocked = match at {
                    Some(at) => {
                        Func::coalesce([Expr::col(Column::BlockedAt), Expr::value(at)]).into()
                    }
                    None => Expr::value(Option::<DateTime<Utc>>::None),
                };
                user::Entity::update_many()
                    .filter(Column::Id.eq(id))
                    .col_expr(Column::BlockedAt, blocked)
                    .col_expr(Column::UpdatedAt, Expr::value(now()))
                    .exec(&self.db)
                    .await?;
                self.get_by_id_now(id).await
            })
            .await
    }

    /// Deletes the row with this id: false when there was none.
    pub async fn delete(&self, id: i64) -> Result<bool, Error> {
        self.availability
            .guard(async {
                let result = user::Entity::delete_by_id(id).exec(&self.db).await?;
                Ok(result.rows_affected > 0)
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

/// Takes waiting upserts and runs them, [`GATHERED_AT_ONCE`] statements at
/// a time, each with every upsert that waited (up to [`MAX_GATHERED`], one
/// per user: a second login of a user waits for the next statement).
async fn gather(repo: UserRepo, mut waiting: mpsc::UnboundedReceiver<Waiting>) {
    // The task holds no sender: it ends when the last clone of the repo
    // (but its own) is gone.
    let repo = UserRepo {
        gatherer: None,
        ..repo
    };
    let slots = Arc::new(Semaphore::new(GATHERED_AT_ONCE));
    let mut later: VecDeque<Waiting> = VecDeque::new();
    loop {
        let first = match later.pop_front() {
            Some(first) => first,
            None => match waiting.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut users = HashSet::from([(first.login.appid.clone(), first.login.openid.clone())]);
        let mut batch = vec![first];
        let mut add = |next: Waiting, batch: &mut Vec<Waiting>, later: &mut VecDeque<Waiting>| {
            if users.insert((next.login.appid.clone(), next.login.openid.clone())) {
                batch.push(next);
            } else {
                later.push_back(next);
            }
        };
        for _ in 0..later.len() {
            if batch.len() == MAX_GATHERED {
                break;
            }
            if let Some(next) = later.pop_front() {
                add(next, &mut batch, &mut later);
            }
        }
        while batch.len() < MAX_GATHERED
            && let Ok(next) = waiting.try_recv()
        {
            add(next, &mut batch, &mut later);
        }
        let repo = repo.clone();
        tokio::spawn(async move {
            run_gathered(&repo, batch).await;
            drop(slot);
        });
    }
}

/// Runs one gathered batch and answers each of its upserts.
async fn run_gathered(repo: &UserRepo, batch: Vec<Waiting>) {
    if let [only] = &batch[..] {
        let login = &only.login;
        let upserted = repo
            .availability
            .guard(repo.upsert_now(&login.appid, &login.openid, login.unionid.as_deref()))
            .await;
        if let Some(only) = batch.into_iter().next() {
            let _ = only.answer.send(upserted);
        }
        return;
    }
    let logins: Vec<LoginOf> = batch.iter().map(|waiting| waiting.login.clone()).collect();
    tracing::debug!(users = logins.len(), "one statement for gathered upserts");
    match repo.availability.guard(repo.upsert_many(&logins)).await {
        Ok(upserted) => {
            for (waiting, upserted) in batch.into_iter().zip(upserted) {
                let _ = waiting.answer.send(Ok(upserted));
            }
        }
        Err(error) => {
            for waiting in batch {
                let _ = waiting.answer.send(Err(error.for_another()));
            }
        }
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
    user::Entity::insert(row)
        .on_conflict(on_duplicate(true))
        .build(backend)
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
fn upsert_many_statement(backend: DbBackend, logins: &[LoginOf], now: DateTime<Utc>) -> Statement {
    let rows = logins.iter().map(|login| user::ActiveModel {
        appid: Set(login.appid.clone()),
        openid: Set(login.openid.clone()),
        unionid: Set(login.unionid.clone()),
        created_at: Set(now),
        updated_at: Set(now),
        last_login_at: Set(now),
        login_count: Set(1),
        ..Default::default()
    });
    user::Entity::insert_many(rows)
        .on_conflict(on_duplicate(false))
        .build(backend)
}

/// The rows of `logins`, on the unique key.
fn rows_of_statement(backend: DbBackend, logins: &[LoginOf]) -> Statement {
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

//! Sealing the rows that are not sealed yet, and sealing again under the
//! newest key: batch by batch, each batch its own transaction.
//!
//! A row is chosen by what it still needs (a plaintext personal column, or
//! a `data_key_id` other than the newest key's), never by a position kept
//! elsewhere: a run that stops, crashes or is killed is resumed by the
//! next, and a finished run finds nothing to do. Each row is written only
//! if it still holds what was read (the statement's condition), so a
//! concurrent write is never overwritten: the row is counted as skipped and
//! taken again by the next run.

use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
    sea_query::{Expr, IntoCondition},
};

use crate::{
    entity::user::{self, Column},
    error::Error,
    personal::{Personal, Sealer, slots},
};

/// Rows per batch (and per transaction).
pub const BATCH: u64 = 200;

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Rows written.
    pub sealed: u64,
    /// Rows that changed while the batch ran: the next run takes them.
    pub skipped: u64,
    pub batches: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rows sealed in {} batches, {} skipped (changed meanwhile: run again)",
            self.sealed, self.batches, self.skipped
        )
    }
}

/// How far a run goes: every batch, or (to test a run that stops) a few.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub batch: u64,
    pub max_batches: Option<u64>,
}

impl Default for Limit {
    fn default() -> Self {
        Limit {
            batch: BATCH,
            max_batches: None,
        }
    }
}

/// Seals the plaintext personal columns of rows written before encryption,
/// and empties them.
pub async fn encrypt_existing(
    db: &DatabaseConnection,
    sealer: &Sealer,
    limit: Limit,
) -> Result<Report, Error> {
    let mut has_plaintext = Condition::any();
    for which in Personal::ALL {
        has_plaintext = has_plaintext.add(which.plain().is_not_null());
    }
    run(db, limit, has_plaintext, |row| seal_plaintext(sealer, row)).await
}

/// Seals again, under the newest key, every row whose values are under
/// another (or several).
pub async fn rewrap(
    db: &DatabaseConnection,
    sealer: &Sealer,
    limit: Limit,
) -> Result<Report, Error> {
    let current = sealer.keys().current_id();
    let elsewhere = Condition::all()
        .add(Column::DataKeyId.is_not_null())
        .add(Column::DataKeyId.ne(current));
    run(db, limit, elsewhere, |row| reseal(sealer, row)).await
}

/// The update of one row, and the condition that it still is as read.
type RowUpdate = sea_orm::UpdateMany<user::Entity>;

async fn run(
    db: &DatabaseConnection,
    limit: Limit,
    needs: Condition,
    update_of: impl Fn(user::Model) -> Result<RowUpdate, Error>,
) -> Result<Report, Error> {
    let mut report = Report::default();
    let mut after = 0;
    while limit.max_batches.is_none_or(|max| report.batches < max) {
        let rows = user::Entity::find()
            .filter(needs.clone())
            .filter(Column::Id.gt(after))
            .order_by_asc(Column::Id)
            .limit(limit.batch)
            .all(db)
            .await?;
        let Some(last) = rows.last() else { break };
        after = last.id;
        let tx = db.begin().await?;
        for row in rows {
            let written = update_of(row)?.exec(&tx).await?.rows_affected;
            if written == 1 {
                report.sealed += 1;
            } else {
                report.skipped += 1;
            }
        }
        tx.commit().await?;
        report.batches += 1;
        tracing::debug!(?report, "a batch of users sealed");
    }
    Ok(report)
}

/// Whether `column` still holds `value` (NULL included).
fn still<V>(column: Column, value: Option<V>) -> Condition
where
    V: Into<sea_orm::Value>,
{
    match value {
        Some(value) => column.eq(value).into_condition(),
        None => column.is_null().into_condition(),
    }
}

fn seal_plaintext(sealer: &Sealer, mut row: user::Model) -> Result<RowUpdate, Error> {
    let mut update = user::Entity::update_many().filter(Column::Id.eq(row.id));
    let (appid, openid) = (row.appid.clone(), row.openid.clone());
    for (which, plain, _) in slots(&mut row) {
        update = update.filter(still(which.plain(), plain.clone()));
        if let Some(value) = plain {
            update = update
                .col_expr(
                    which.sealed(),
                    Expr::value(sealer.seal(&appid, &openid, which, value.as_str())?),
                )
                .col_expr(which.plain(), Expr::value(Option::<String>::None));
        }
    }
    let row = sealer.reveal(row)?;
    if let (Some(code), Some(number)) = (&row.phone_country_code, &row.pure_phone_number) {
        update = update.col_expr(
            Column::PhoneIndex,
            Expr::value(sealer.phone_index(code, number)),
        );
    }
    Ok(update.col_expr(Column::DataKeyId, sealer.key_id_after_write()))
}

fn reseal(sealer: &Sealer, mut row: user::Model) -> Result<RowUpdate, Error> {
    let mut update = user::Entity::update_many().filter(Column::Id.eq(row.id));
    let (appid, openid) = (row.appid.clone(), row.openid.clone());
    for (which, _, sealed) in slots(&mut row) {
        update = update.filter(still(which.sealed(), sealed.clone()));
        if let Some(value) = sealed {
            let opened = sealer.open(&appid, &openid, which, value)?;
            update = update.col_expr(
                which.sealed(),
                Expr::value(sealer.seal(&appid, &openid, which, &opened)?),
            );
        }
    }
    Ok(update.col_expr(
        Column::DataKeyId,
        Expr::value(sealer.keys().current_id().to_owned()),
    ))
}

/// [`encrypt_existing`] in the background of a starting service: logs
/// what it did; a failure is logged too, and the next start resumes.
pub async fn encrypt_existing_in_background(db: DatabaseConnection, sealer: Sealer) {
    match encrypt_existing(&db, &sealer, Limit::default()).await {
        Ok(report) if report == Report::default() => {}
        Ok(report) => tracing::info!(
            sealed = report.sealed,
            skipped = report.skipped,
            "sealed the personal data of users written before encryption"
        ),
        Err(error) => tracing::warn!(
            error = %crate::error::report(&error),
            "sealing the personal data of older users stopped; the next start resumes"
        ),
    }
}

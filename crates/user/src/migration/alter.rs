//! What the migrations share: adding and dropping columns one statement at
//! a time (SQLite alters one thing at a time), and the column type of an
//! instant. Each migration's schema stays its own; only how it is written
//! is shared, and every statement is the one the migration wrote before.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

/// Adds each of `columns` to `table`, one statement each.
pub(super) async fn add_columns<T: IntoIden + Copy>(
    manager: &SchemaManager<'_>,
    table: T,
    columns: impl IntoIterator<Item = ColumnDef>,
) -> Result<(), DbErr> {
    for mut column in columns {
        manager
            .alter_table(
                Table::alter()
                    .table(table)
                    .add_column(&mut column)
                    .to_owned(),
            )
            .await?;
    }
    Ok(())
}

/// Drops each of `columns` from `table`, one statement each.
pub(super) async fn drop_columns<T: IntoIden + Copy, C: IntoIden>(
    manager: &SchemaManager<'_>,
    table: T,
    columns: impl IntoIterator<Item = C>,
) -> Result<(), DbErr> {
    for column in columns {
        manager
            .alter_table(Table::alter().table(table).drop_column(column).to_owned())
            .await?;
    }
    Ok(())
}

/// A UTC instant with microseconds. MySQL's `DATETIME` keeps whole seconds
/// unless given a precision, which sea-query cannot express portably.
pub(super) fn instant(backend: DbBackend, column: impl IntoIden) -> ColumnDef {
    let mut def = ColumnDef::new(column);
    match backend {
        DbBackend::MySql => def.custom("DATETIME(6)"),
        _ => def.timestamp_with_time_zone(),
    };
    def
}

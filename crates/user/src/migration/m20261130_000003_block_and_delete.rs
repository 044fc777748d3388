//! Adds `blocked_at`: when the team blocked the user (`BlockUser`), NULL
//! while they are not blocked.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    BlockedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut column = ColumnDef::new(Users::BlockedAt);
        match manager.get_database_backend() {
            // As the other instants: microseconds, UTC.
            DbBackend::MySql => column.custom("DATETIME(6)"),
            _ => column.timestamp_with_time_zone(),
        };
        column.null();
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(&mut column)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .drop_column(Users::BlockedAt)
                    .to_owned(),
            )
            .await
    }
}

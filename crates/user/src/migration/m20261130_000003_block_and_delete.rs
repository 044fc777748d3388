//! Adds `blocked_at`: when the team blocked the user (`BlockUser`), NULL
//! while they are not blocked.

use sea_orm_migration::prelude::*;

use super::alter::{add_columns, drop_columns, instant};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    BlockedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // As the other instants: microseconds, UTC.
        let column = instant(manager.get_database_backend(), Users::BlockedAt)
            .null()
            .to_owned();
        add_columns(manager, Users::Table, [column]).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_columns(manager, Users::Table, [Users::BlockedAt]).await
    }
}

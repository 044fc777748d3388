//! Adds the profile fields of `getUserInfo` and the phone number.

use sea_orm_migration::prelude::*;

use super::alter::{add_columns, drop_columns};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    Country,
    Province,
    City,
    Language,
    PhoneNumber,
    PurePhoneNumber,
    PhoneCountryCode,
}

const COLUMNS: [(Users, u32); 7] = [
    (Users::Country, 64),
    (Users::Province, 64),
    (Users::City, 64),
    (Users::Language, 16),
    (Users::PhoneNumber, 32),
    (Users::PurePhoneNumber, 32),
    (Users::PhoneCountryCode, 8),
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let columns =
            COLUMNS.map(|(column, len)| ColumnDef::new(column).string_len(len).null().to_owned());
        add_columns(manager, Users::Table, columns).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_columns(manager, Users::Table, COLUMNS.map(|(column, _)| column)).await
    }
}

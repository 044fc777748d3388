//! Adds the profile fields of `getUserInfo` and the phone number.

use sea_orm_migration::prelude::*;

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
        // One column per statement: SQLite alters one thing at a time.
        for (column, len) in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .add_column(ColumnDef::new(column).string_len(len).null())
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (column, _) in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Users::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

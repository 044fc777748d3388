//! Adds the sealed personal columns (see `crate::personal`), the id of the
//! key a row's values are sealed under, and the phone number's blind index.
//! The plaintext columns stay, nullable, for rows written before: the user
//! service seals them in the background (`crate::reseal`), and a later
//! release drops them.
//!
//! The widths are literals, as history: each is its field's width in
//! characters times 4 (UTF-8), plus what sealing adds (46 bytes).

use sea_orm_migration::prelude::*;

use super::alter::{add_columns, drop_columns};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Users {
    Table,
    NicknameEnc,
    AvatarUrlEnc,
    CountryEnc,
    ProvinceEnc,
    CityEnc,
    PhoneNumberEnc,
    PurePhoneNumberEnc,
    PhoneCountryCodeEnc,
    DataKeyId,
    PhoneIndex,
}

const SEALED: [(Users, u32); 8] = [
    (Users::NicknameEnc, 558),
    (Users::AvatarUrlEnc, 4142),
    (Users::CountryEnc, 302),
    (Users::ProvinceEnc, 302),
    (Users::CityEnc, 302),
    (Users::PhoneNumberEnc, 174),
    (Users::PurePhoneNumberEnc, 174),
    (Users::PhoneCountryCodeEnc, 78),
];

const INDEX_PHONE: &str = "idx_users_phone_index";
const INDEX_KEY_ID: &str = "idx_users_data_key_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut columns: Vec<ColumnDef> = SEALED
            .iter()
            .map(|&(column, len)| ColumnDef::new(column).var_binary(len).null().to_owned())
            .collect();
        columns.push(
            ColumnDef::new(Users::DataKeyId)
                .string_len(16)
                .null()
                .to_owned(),
        );
        columns.push(
            ColumnDef::new(Users::PhoneIndex)
                .binary_len(32)
                .null()
                .to_owned(),
        );
        add_columns(manager, Users::Table, columns).await?;
        for (name, column) in [
            (INDEX_PHONE, Users::PhoneIndex),
            (INDEX_KEY_ID, Users::DataKeyId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(Users::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in [INDEX_PHONE, INDEX_KEY_ID] {
            manager
                .drop_index(Index::drop().name(name).table(Users::Table).to_owned())
                .await?;
        }
        let columns = SEALED
            .map(|(column, _)| column)
            .into_iter()
            .chain([Users::DataKeyId, Users::PhoneIndex]);
        drop_columns(manager, Users::Table, columns).await
    }
}

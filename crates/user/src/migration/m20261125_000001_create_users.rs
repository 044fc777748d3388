//! Creates `users`, keyed by the unique (appid, openid) pair.

use sea_orm::DbBackend;
use sea_orm_migration::prelude::*;

use super::alter::instant;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Appid,
    Openid,
    Unionid,
    Nickname,
    AvatarUrl,
    Gender,
    CreatedAt,
    UpdatedAt,
    LastLoginAt,
    LoginCount,
}

const UNIQUE_APPID_OPENID: &str = "uk_users_appid_openid";
const INDEX_UNIONID: &str = "idx_users_unionid";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let backend = manager.get_database_backend();
        let mut table = Table::create();
        table
            .table(Users::Table)
            .col(
                ColumnDef::new(Users::Id)
                    .big_integer()
                    .not_null()
                    .auto_increment()
                    .primary_key(),
            )
            .col(ColumnDef::new(Users::Appid).string_len(64).not_null())
            .col(ColumnDef::new(Users::Openid).string_len(128).not_null())
            .col(ColumnDef::new(Users::Unionid).string_len(128).null())
            .col(ColumnDef::new(Users::Nickname).string_len(128).null())
            .col(ColumnDef::new(Users::AvatarUrl).string_len(1024).null())
            .col(
                ColumnDef::new(Users::Gender)
                    .tiny_integer()
                    .not_null()
                    .default(0),
            )
            .col(instant(backend, Users::CreatedAt).not_null())
            .col(instant(backend, Users::UpdatedAt).not_null())
            .col(instant(backend, Users::LastLoginAt).not_null())
            .col(
                ColumnDef::new(Users::LoginCount)
                    .big_integer()
                    .not_null()
                    .default(1),
            );
        if backend == DbBackend::MySql {
            // Binary collation: openids are case-sensitive, and a
            // case-insensitive unique key would merge two different users.
            table
                .engine("InnoDB")
                .character_set("utf8mb4")
                .collate("utf8mb4_bin");
        }
        manager.create_table(table).await?;

        manager
            .create_index(
                Index::create()
                    .name(UNIQUE_APPID_OPENID)
                    .table(Users::Table)
                    .col(Users::Appid)
                    .col(Users::Openid)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX_UNIONID)
                    .table(Users::Table)
                    .col(Users::Unionid)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Users::Table).to_owned())
            .await
    }
}

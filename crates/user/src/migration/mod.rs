//! Schema migrations, embedded in the binary and applied at start-up and by
//! `wxlogin-user migrate`. Applied migrations are recorded in
//! `seaql_migrations`, so running them again is a no-op.
//!
//! Schemas are written with sea-query rather than SQL text, so that another
//! backend (SQLite, for the single-process setup) can reuse them; the few MySQL-only details are
//! chosen by backend inside the migration.

use sea_orm_migration::prelude::*;

mod alter;
mod m20261125_000001_create_users;
mod m20261125_000002_profile_and_phone;
mod m20261130_000003_block_and_delete;
mod m20261130_000004_personal_data_encrypted;

/// Every migration of the user service, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_users::Migration),
            Box::new(m20261125_000002_profile_and_phone::Migration),
            Box::new(m20261130_000003_block_and_delete::Migration),
            Box::new(m20261130_000004_personal_data_encrypted::Migration),
        ]
    }
}

//! The tables this service owns, as sea-orm entities. The schema itself is
//! created by the migrations in [`crate::migration`]; these types only read
//! and write rows.

pub mod user;

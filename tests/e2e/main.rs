//! End-to-end tests: the gateway over HTTP, with the auth and user services,
//! MariaDB, Redis and the WeChat simulator running on real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod account;
mod at_rest;
mod compose;
mod errors;
mod faults;
mod limits;
mod login;
mod metrics;
mod nginx;
mod openapi;
mod outage;
mod proxy;
mod redis_outage;
mod replicas;
mod secrets;
mod sessions;
mod standalone;
mod topologies;
mod traces;
mod user_data;

//! The whole of wxlogin in one process: the gateway, the auth and user
//! services (the production code, still speaking gRPC to each other over
//! loopback) and, when no `WECHAT_SECRET` is configured, the WeChat
//! simulator. With nothing configured it keeps users in an embedded SQLite
//! file and sessions in memory, so it runs on a machine with nothing
//! installed; given `DATABASE_URL=mysql://…` and `REDIS_URL=redis://…` it
//! uses them instead.
//!
//! Personal data is sealed as in production. Without `DATA_ENCRYPTION_KEYS`
//! and `DATA_INDEX_KEY`, and only on SQLite, it makes the keys once, in a
//! file beside the database (`<database>.keys`, mode 0600), and reuses them
//! at every start: the file and the database go together. On MySQL the
//! keys must be configured, as for the split services.
//!
//! It adds no behaviour of its own: only defaults and wiring. The wiring is
//! [`SystemBuilder`]'s, which also starts the services as processes, for
//! the tests and the benchmark: the one place where the system's settings
//! become each service's.

mod builder;
mod error;
mod in_process;
mod local_keys;
pub mod process;
mod service;
mod system;

pub use builder::{ProcessOptions, Services, SystemBuilder};
pub use error::Error;
pub use service::Service;
pub use system::{Addresses, DEFAULT_DATABASE_URL, System, banner};

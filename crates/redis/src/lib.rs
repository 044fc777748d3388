//! wxlogin's Redis: the one owner of what the services keep there.
//!
//! - [`guard`]: the process's one connection to whichever topology
//!   `REDIS_URL` names ([`topology`]: one Redis, a Cluster, a
//!   Sentinel-managed primary), behind the circuit breaker;
//! - [`keys`]: every key format, the `REDIS_KEY_PREFIX` they start with and
//!   the hash tags (users' shards, apps) that keep each script in one slot;
//! - [`scripts`]: every Lua script, each given whole keys;
//! - [`config`]: the two settings, `REDIS_URL` and `REDIS_KEY_PREFIX`.
//!
//! It knows the shapes of keys and the effects of scripts, not what the
//! values mean: sessions are the auth service's, user copies the user
//! service's. It must not grow business rules, and nothing else in the
//! workspace may format a key or hold Lua.

pub mod config;
pub mod guard;
pub mod keys;
pub mod scripts;
pub mod topology;

pub use guard::{RedisConn, RedisGuard, WeakRedisGuard, is_unavailable};
pub use keys::Keyspace;

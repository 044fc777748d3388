//! Users' personal data wherever it leaves the clear: sealed at rest
//! ([`sealing`]: AES-256-GCM under `DATA_ENCRYPTION_KEYS`, each value bound
//! to its row and column, and the phone's blind index under
//! `DATA_INDEX_KEY`), and the user copy that travels through Redis and
//! gRPC ([`copy`]).
//!
//! Used by the user service (which seals columns and writes copies) and the
//! gateway (which opens the copies that come with sessions). It holds no
//! storage and no policy: what is sealed, and when, is the user service's.

pub mod copy;
pub mod sealing;

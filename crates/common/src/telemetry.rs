//! Tracing set up once per process.
//!
//! `RUST_LOG` filters (default `info`), `LOG_FORMAT=json` switches to JSON
//! lines for log shippers. Secrets never reach a log line because the types
//! that hold them redact themselves; nothing here filters text.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. A second call (tests that start several
/// services in one process) keeps the first one and does nothing.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format.eq_ignore_ascii_case("json"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(fmt::layer().json().with_current_span(true))
            .try_init()
    } else {
        // Colour only on a terminal: a file or a log shipper gets plain text.
        let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        registry.with(fmt::layer().with_ansi(ansi)).try_init()
    };
    // Already installed: the first subscriber stays.
    drop(result);
}

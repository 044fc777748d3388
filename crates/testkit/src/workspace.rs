//! The workspace's own binaries, where cargo put them: one rule for every
//! harness (tests/common.sh and the mini-program client's test harness
//! follow it too).

use std::path::{Path, PathBuf};

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("testkit sits in <workspace>/crates/testkit")
        .to_owned()
}

/// Where cargo puts the workspace's builds: `CARGO_TARGET_DIR` when set
/// (relative to the workspace root when relative), else `<workspace>/target`.
/// tests/common.sh and the mini-program client's test harness follow the
/// same rule.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// The workspace's binary `name` (`wxlogin-auth`), of this build's profile:
/// in `WXLOGIN_BIN_DIR` when set, else in [`target_dir`]. Panics (failing
/// the test) when it is missing: `cargo test` builds no binary of another
/// package, `cargo build --workspace --bins` (which tests/run.sh does) does.
pub fn binary(name: &str) -> PathBuf {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let dir = std::env::var_os("WXLOGIN_BIN_DIR")
        .map_or_else(|| target_dir().join(profile), PathBuf::from);
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --workspace --bins; tests/run.sh does)",
        path.display()
    );
    path
}

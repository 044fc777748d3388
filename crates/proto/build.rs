//! Compiles `proto/` with protox (pure Rust), so no machine needs `protoc`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not baked in with env!: the same compiled build
    // script may serve checkouts at other paths sharing a target dir.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        root.join("wxlogin/auth/v1/auth.proto"),
        root.join("wxlogin/user/v1/user.proto"),
    ];
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let fds = protox::compile(&files, [&root])?;
    // Every service's calls use our codec: prost's, with buffers sized for
    // our messages (see `src/codec.rs`).
    tonic_prost_build::configure()
        .codec_path("crate::codec::Codec")
        .compile_fds(fds)?;
    Ok(())
}

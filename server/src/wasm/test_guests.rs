//! Builds the guests in `guests/` for tests and benchmarks (no `.wasm` is committed): one
//! `cargo build --target wasm32-wasip2 --release` per process, into its own target directory
//! (`$SLUICE_GUESTS_TARGET`, else `~/.cache/sluice/guests-target`); cargo's lock serialises
//! concurrent test binaries and its fingerprints make later runs instant.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Where the guests' workspace is.
pub const MANIFEST: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../guests/Cargo.toml");

fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SLUICE_GUESTS_TARGET") {
        return dir.into();
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("sluice").join("guests-target")
}

/// The folder holding `<guest>.wasm` for every guest, built on first use.
pub fn dir() -> Result<&'static PathBuf, String> {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let target = target_dir();
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let out = Command::new(cargo)
                .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
                .arg(MANIFEST)
                .arg("--target-dir")
                .arg(&target)
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("RUSTFLAGS")
                .env_remove("CARGO_ENCODED_RUSTFLAGS")
                .output()
                .map_err(|e| format!("cannot run cargo to build the guests: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "building the guests failed (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(target.join("wasm32-wasip2").join("release"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The path of one guest's component, e.g. `path("awsflowlogs")`.
pub fn path(name: &str) -> PathBuf {
    match dir() {
        Ok(d) => d.join(format!("{name}.wasm")),
        Err(e) => panic!("{e}"),
    }
}

//! Compiled components on disk, keyed by module digest, wasmtime version and the engine's
//! compatibility hash, so a restart or a second pipeline doesn't compile again.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// The wasmtime release (pinned `=48.0.8` in the workspace `Cargo.toml`). The compatibility
/// hash covers it as well; the name keeps cache files readable.
const WASMTIME: &str = "48.0.8";

/// The cache file of a module for this engine.
pub fn path(dir: &Path, engine: &Engine, digest: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    dir.join(format!(
        "{digest}-wasmtime{WASMTIME}-{:016x}.cwasm",
        h.finish()
    ))
}

/// Loads a compiled component written by [`store`]; `None` when absent or unusable (a
/// different engine build), in which case the caller compiles again.
pub fn load(engine: &Engine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: `deserialize_file` trusts the machine code in the file. Only this module writes
    // these files, from components compiled by this process's engine, under the server's cache
    // directory, which tenants cannot write (they upload `.wasm` bytes, never artifacts); the
    // name carries the wasmtime version and the engine's compatibility hash, and wasmtime
    // itself rejects an artifact from another version or configuration with an error.
    #[allow(unsafe_code)]
    let loaded = unsafe { Component::deserialize_file(engine, path) };
    match loaded {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled module");
            None
        }
    }
}

/// Writes a compiled component (atomically: a temporary file renamed into place).
pub fn store(path: &Path, component: &Component) {
    let write = || -> anyhow::Result<()> {
        let bytes = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}.tmp",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("module"),
            std::process::id()
        ));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled module");
    }
}

//! The WebAssembly host: tenant transform and mangle stages as components of the
//! `sluice:guest` worlds (`guest-sdk/wit/guest.wit`), under fuel, deadline and memory limits.
//!
//! This is the only module that imports `wasmtime`. Its façade:
//! - [`WasmHost`]: the process-wide engine (Cranelift, fuel, epoch interruption with a ticker
//!   thread, pooling allocator, no component-model concurrency), the server's limits, the
//!   compiled-module cache (in memory by digest, on disk by digest and engine version);
//! - [`validate_component`] / [`WasmHost::precompile`]: what an upload route needs;
//! - [`WasmStage`]: one pipeline's wasm transform or mangle: a fresh `Store` and instance per
//!   batch, failures counted by reason, quarantine with backoff after repeated failures.
//!
//! Guests get WASI 0.2 with no capability ([`wasi`]: no files, network, environment or
//! arguments; random numbers, millisecond clocks, and stdout/stderr into the pipeline's guest
//! log) and the host's rate-limited `log`.

mod bindings;
mod cache;
pub mod encoding;
mod engine;
pub mod json;
mod pool;
pub mod record;
mod stage;
#[doc(hidden)]
pub mod test_guests;
mod wasi;

use std::path::PathBuf;
use std::time::Duration;

pub use engine::WasmHost;
pub use pool::{GuestPool, PoolClosed};
pub use stage::{BatchFailure, GuestRunner, StageOptions, WasmStage};

/// The world a component implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// `sluice:guest/transformer`: `init` and `transform`.
    Transformer,
    /// `sluice:guest/mangler`: `init` and `mangle`.
    Mangler,
}

impl World {
    /// `transformer` or `mangler`.
    pub fn as_str(self) -> &'static str {
        match self {
            World::Transformer => "transformer",
            World::Mangler => "mangler",
        }
    }

    /// The function a guest of this world defines besides `init`: `transform` or `mangle`.
    pub fn function(self) -> &'static str {
        match self {
            World::Transformer => "transform",
            World::Mangler => "mangle",
        }
    }
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a module was refused or a wasm stage could not be built. The messages are meant for the
/// tenant (an upload route can return them as they are).
#[derive(Debug, thiserror::Error)]
pub enum WasmError {
    /// More bytes than the server accepts.
    #[error("module is {size} bytes, more than the {limit} accepted")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The server's limit.
        limit: usize,
    },
    /// Not a WebAssembly binary at all.
    #[error("not a WebAssembly binary (no \\0asm header)")]
    NotWasm,
    /// A core module where a component is needed.
    #[error(
        "a core WebAssembly module, not a component: build the guest with `--target wasm32-wasip2` (guest-sdk/README.md)"
    )]
    CoreModule,
    /// The component does not validate or compile.
    #[error("invalid component: {0}")]
    Invalid(String),
    /// The component implements neither world, or the wrong one.
    #[error("component does not implement the sluice:guest {expected} world: {detail}")]
    WrongWorld {
        /// What was needed (`transformer`, `mangler` or either).
        expected: &'static str,
        /// What is missing or different.
        detail: String,
    },
    /// An import the host does not provide.
    #[error("component imports {0}, which sluice does not provide")]
    Import(String),
    /// A per-pipeline limit above the server's.
    #[error("{what} {value} is above the server's maximum {max}")]
    AboveServerLimit {
        /// The limit's key.
        what: &'static str,
        /// Asked for.
        value: u64,
        /// Allowed.
        max: u64,
    },
    /// The module file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The guest's `init` refused its config.
    #[error("guest init failed: {0}")]
    Init(String),
    /// The first instantiation failed.
    #[error("cannot instantiate the component: {0}")]
    Instantiate(String),
}

/// Limits on one batch. The server's are maxima; a pipeline may ask for less.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WasmLimits {
    /// Fuel for one batch (instantiation, `init` and the call).
    pub fuel: u64,
    /// Wall-clock time for one batch.
    pub deadline: Duration,
    /// Linear memory of one instance, all memories together.
    pub memory_bytes: usize,
    /// Bytes a guest may return for one batch.
    pub output_bytes: usize,
}

impl Default for WasmLimits {
    /// The server defaults: 1e9 fuel (the Rust awsflowlogs guest uses ~4k per flow), 1 s,
    /// 64 MiB, 16 MiB.
    fn default() -> Self {
        WasmLimits {
            fuel: 1_000_000_000,
            deadline: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            output_bytes: 16 << 20,
        }
    }
}

/// Process-wide wasm settings (the server's limits and where compiled modules are cached).
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// The most any pipeline gets, and what it gets when it asks for nothing.
    pub limits: WasmLimits,
    /// Largest accepted `.wasm`.
    pub max_module_bytes: usize,
    /// Where compiled modules are kept; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Epoch tick: the deadline's granularity.
    pub epoch_tick: Duration,
    /// Consecutive failed batches before a stage is quarantined.
    pub quarantine_after: u32,
    /// First quarantine; doubles on each failed retry up to `quarantine_max`.
    pub quarantine_backoff: Duration,
    /// Longest quarantine.
    pub quarantine_max: Duration,
    /// Log lines a guest may write per batch.
    pub log_lines_per_batch: u32,
}

impl Default for HostSettings {
    fn default() -> Self {
        HostSettings {
            limits: WasmLimits::default(),
            max_module_bytes: 32 << 20,
            cache_dir: default_cache_dir(),
            epoch_tick: Duration::from_millis(10),
            quarantine_after: 5,
            quarantine_backoff: Duration::from_secs(10),
            quarantine_max: Duration::from_secs(300),
            log_lines_per_batch: 20,
        }
    }
}

/// `$SLUICE_WASM_CACHE`, else `$XDG_CACHE_HOME/sluice/wasm` or `~/.cache/sluice/wasm`.
fn default_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_WASM_CACHE") {
        return Some(dir.into());
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("sluice").join("wasm"))
}

/// What an upload needs to know about a component: checks the size, that it is a component and
/// not a core module, and which world it implements (compiling it on the process-wide engine).
pub fn validate_component(bytes: &[u8]) -> Result<World, WasmError> {
    WasmHost::global().validate(bytes).map(|m| m.world)
}

/// A module digest: lowercase hex SHA-256 of the `.wasm` bytes.
pub fn digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;

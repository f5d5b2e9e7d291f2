//! The process-wide engine, its epoch ticker and the compiled-module registry.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, InstancePre, Linker, Type};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig,
};

use super::stage::StoreState;
use super::{HostSettings, WasmError, World, bindings, cache};

/// Linear memory kept resident per pooled instance slot between batches (only its dirty pages
/// are reset).
const KEEP_RESIDENT: usize = 2 << 20;
/// Component instances the pooling allocator holds at once.
pub(super) const POOL_COMPONENT_INSTANCES: u32 = 256;

/// The interface name of the host import.
const HOST_INTERFACE: &str = "sluice:guest/host@0.1.0";

/// A compiled, checked module ready to instantiate.
pub struct LoadedModule {
    /// SHA-256 of the `.wasm`.
    pub digest: String,
    /// The world it implements.
    pub world: World,
    /// Imports resolved and type-checked once.
    pub(crate) pre: InstancePre<StoreState>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("digest", &self.digest)
            .field("world", &self.world)
            .finish_non_exhaustive()
    }
}

/// The wasm host: one per process ([`WasmHost::global`]).
pub struct WasmHost {
    engine: Engine,
    settings: HostSettings,
    modules: Mutex<HashMap<String, Arc<LoadedModule>>>,
}

impl std::fmt::Debug for WasmHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmHost")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

static GLOBAL: OnceLock<WasmHost> = OnceLock::new();

impl WasmHost {
    /// Sets the process-wide host up with `settings`; call it once at start, before any
    /// pipeline is built (`sluice serve` with its config; `sluice run` uses the defaults).
    /// Returns `false` when a host already exists (its settings stay).
    pub fn install(settings: HostSettings) -> bool {
        let mut installed = false;
        GLOBAL.get_or_init(|| {
            installed = true;
            WasmHost::new(settings)
        });
        installed
    }

    /// The process-wide host, with the default settings unless [`WasmHost::install`] ran.
    pub fn global() -> &'static WasmHost {
        GLOBAL.get_or_init(|| WasmHost::new(HostSettings::default()))
    }

    fn new(settings: HostSettings) -> Self {
        let engine = build_engine(&settings).unwrap_or_else(|e| {
            // The pooling allocator can fail where virtual memory is scarce: fall back to
            // on-demand allocation rather than refusing every wasm stage.
            tracing::warn!(error = %e, "pooling allocator unavailable; using on-demand allocation");
            let mut cfg = base_config(&settings);
            cfg.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&cfg).expect("the on-demand wasm engine configuration is valid")
        });
        spawn_ticker(&engine, settings.epoch_tick);
        WasmHost {
            engine,
            settings,
            modules: Mutex::new(HashMap::new()),
        }
    }

    /// The server's settings.
    pub fn settings(&self) -> &HostSettings {
        &self.settings
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Loads a module file for a stage of `world` (`sluice run`: the module is a path).
    pub fn load_file(&self, path: &Path, world: World) -> Result<Arc<LoadedModule>, WasmError> {
        let meta = std::fs::metadata(path).map_err(|source| WasmError::Read {
            path: path.into(),
            source,
        })?;
        if meta.len() > self.settings.max_module_bytes as u64 {
            return Err(WasmError::TooLarge {
                size: meta.len() as usize,
                limit: self.settings.max_module_bytes,
            });
        }
        let bytes = std::fs::read(path).map_err(|source| WasmError::Read {
            path: path.into(),
            source,
        })?;
        self.load(&bytes, Some(world))
    }

    /// Checks and compiles an uploaded module, caching the compiled form on disk: what
    /// `POST /v1/modules` does before storing the bytes under their digest.
    pub fn precompile(&self, bytes: &[u8]) -> Result<Arc<LoadedModule>, WasmError> {
        self.load(bytes, None)
    }

    /// As [`WasmHost::precompile`]; kept separate for the upload route's reading.
    pub fn validate(&self, bytes: &[u8]) -> Result<Arc<LoadedModule>, WasmError> {
        self.load(bytes, None)
    }

    /// Drops a module from the in-memory registry (a deleted upload).
    pub fn forget(&self, digest: &str) {
        self.lock().remove(digest);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<LoadedModule>>> {
        self.modules.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Size, header, compile (or the cached compile), world, imports, `InstancePre`.
    pub fn load(&self, bytes: &[u8], want: Option<World>) -> Result<Arc<LoadedModule>, WasmError> {
        if bytes.len() > self.settings.max_module_bytes {
            return Err(WasmError::TooLarge {
                size: bytes.len(),
                limit: self.settings.max_module_bytes,
            });
        }
        check_header(bytes)?;
        let digest = super::digest(bytes);
        let known = self.lock().get(&digest).cloned();
        let module = match known {
            Some(m) => m,
            None => {
                let m = Arc::new(self.compile(bytes, digest.clone())?);
                self.lock().entry(digest).or_insert(m).clone()
            }
        };
        if let Some(want) = want
            && module.world != want
        {
            return Err(WasmError::WrongWorld {
                expected: want.as_str(),
                detail: format!("it implements {}", module.world),
            });
        }
        Ok(module)
    }

    fn compile(&self, bytes: &[u8], digest: String) -> Result<LoadedModule, WasmError> {
        let cached = self
            .settings
            .cache_dir
            .as_deref()
            .map(|dir| cache::path(dir, &self.engine, &digest));
        let (component, fresh) = match cached.as_deref().and_then(|p| cache::load(&self.engine, p))
        {
            Some(c) => (c, false),
            None => {
                let started = std::time::Instant::now();
                let c = Component::new(&self.engine, bytes)
                    .map_err(|e| WasmError::Invalid(format!("{e:#}")))?;
                tracing::info!(digest = %digest, ms = started.elapsed().as_millis() as u64, "wasm module compiled");
                (c, true)
            }
        };
        let world = world_of(&self.engine, &component)?;
        // Only what passes the checks is cached.
        if fresh && let Some(p) = &cached {
            cache::store(p, &component);
        }
        let mut linker: Linker<StoreState> = Linker::new(&self.engine);
        bindings::add_to_linker::<StoreState, wasmtime::component::HasSelf<StoreState>>(
            &mut linker,
            |s| s,
        )
        .map_err(|e| WasmError::Instantiate(format!("{e:#}")))?;
        // WASI 0.2, with nothing granted (wasi.rs decides what each call gets). Its
        // interfaces match any 0.2.x a component imports; one it doesn't have (`wasi:http`,
        // say) makes the component fail to load, named in the error. (Traps for unknown imports
        // would also shadow those version matches.)
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| WasmError::Instantiate(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| WasmError::Instantiate(format!("{e:#}")))?;
        Ok(LoadedModule { digest, world, pre })
    }
}

/// Garbage, core module or component, from the preamble.
fn check_header(bytes: &[u8]) -> Result<(), WasmError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(WasmError::NotWasm);
    }
    // The preamble's version and layer: 1.0 for a core module, 0x0d with layer 1 for a
    // component.
    match &bytes[4..8] {
        [1, 0, 0, 0] => Err(WasmError::CoreModule),
        [0x0d, 0, 1, 0] => Ok(()),
        other => Err(WasmError::Invalid(format!(
            "unknown WebAssembly binary version {other:02x?}"
        ))),
    }
}

/// Which world the component's exports implement; imports other than the host interface and
/// WASI are refused.
fn world_of(engine: &Engine, component: &Component) -> Result<World, WasmError> {
    let ty = component.component_type();
    for (name, _) in ty.imports(engine) {
        if name != HOST_INTERFACE && !name.starts_with("wasi:") {
            return Err(WasmError::Import(name.to_string()));
        }
    }
    let mut exports: HashMap<&str, Vec<String>> = HashMap::new();
    for (name, item) in ty.exports(engine) {
        if let ComponentItem::ComponentFunc(f) = item.ty {
            let mut sig: Vec<String> = f.params().map(|(_, t)| type_name(&t)).collect();
            sig.push("->".into());
            sig.extend(f.results().map(|t| type_name(&t)));
            exports.insert(name, sig);
        }
    }
    let sig = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let init = sig(&["string", "->", "result"]);
    let transform = sig(&["list<u8>", "->", "result"]);
    let mangle = sig(&["string", "list<u8>", "->", "result"]);
    let check = |name: &str, want: &[String]| -> Result<(), String> {
        match exports.get(name) {
            None => Err(format!("no `{name}` export")),
            Some(got) if got != want => Err(format!(
                "`{name}` has the signature ({}) instead of ({})",
                got.join(" "),
                want.join(" ")
            )),
            Some(_) => Ok(()),
        }
    };
    let world = if exports.contains_key("transform") {
        World::Transformer
    } else if exports.contains_key("mangle") {
        World::Mangler
    } else {
        return Err(WasmError::WrongWorld {
            expected: "transformer or mangler",
            detail: "it exports neither `transform` nor `mangle`".into(),
        });
    };
    let detail = check("init", &init).and_then(|()| match world {
        World::Transformer => check("transform", &transform),
        World::Mangler => check("mangle", &mangle),
    });
    match detail {
        Ok(()) => Ok(world),
        Err(detail) => Err(WasmError::WrongWorld {
            expected: world.as_str(),
            detail,
        }),
    }
}

fn type_name(t: &Type) -> String {
    match t {
        Type::String => "string".into(),
        Type::U8 => "u8".into(),
        Type::List(l) => format!("list<{}>", type_name(&l.ty())),
        Type::Result(_) => "result".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

fn base_config(settings: &HostSettings) -> Config {
    let mut cfg = Config::new();
    cfg.consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        .cranelift_opt_level(OptLevel::Speed)
        .cranelift_nan_canonicalization(true)
        // No component-model async: 3× cheaper export calls (wasm-host.md §6.2).
        .concurrency_support(false)
        .wasm_component_model(true);
    let _ = settings;
    cfg
}

fn build_engine(settings: &HostSettings) -> Result<Engine, wasmtime::Error> {
    let mut cfg = base_config(settings);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_COMPONENT_INSTANCES)
        .total_core_instances(2_048)
        .total_memories(512)
        .total_tables(1_024)
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(8)
        .max_memory_size(settings.limits.memory_bytes)
        .max_component_instance_size(1 << 20)
        // A batch touches a few dozen pages (a Rust guest's stack top, data and heap sit just
        // above 1 MiB). Keeping them resident and resetting only the dirty ones (found with
        // the PAGEMAP_SCAN ioctl, Linux 6.7+) saves a page fault per page per batch; without
        // the ioctl only the first bytes would be reset by memset, so nothing is kept then.
        .pagemap_scan(Enabled::Auto);
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10);
    }
    cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&cfg)
}

/// Advances the engine's epoch every `tick` from a plain thread (not a tokio task, so a busy
/// runtime can't delay deadlines). It holds a weak handle and ends with the engine.
fn spawn_ticker(engine: &Engine, tick: std::time::Duration) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the wasm epoch ticker: deadlines won't fire");
    }
}

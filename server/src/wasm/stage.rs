//! One pipeline's wasm stage: a message's batches in one fresh `Store` and instance (a failed
//! call drops it), each call under the stage's fuel, deadline and output limits, the instance
//! under its memory cap; failures counted by reason; quarantine with backoff after repeated
//! failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::{Instance, ResourceTable};
use wasmtime::{ResourceLimiter, Store, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::encoding::{self, SchemaCache};
use super::engine::{LoadedModule, WasmHost};
use super::pool::GuestPool;
use super::record::WasmRecord;
use super::wasi::BatchLog;
use super::{WasmError, WasmLimits, World, bindings};
use crate::config::WasmOptions;
use crate::guest_log::{GuestLog, Level};
use crate::log_throttle::truncate;
use crate::metrics::{DropReason, PipelineStats};

/// A memory grow past the stage's cap: the typed error the limiter raises (the call fails right
/// at the grow instead of the guest's allocator aborting into an `unreachable` trap).
#[derive(Debug, thiserror::Error)]
#[error("memory limit of {cap} bytes exceeded (asked for {asked} in total)")]
pub struct MemoryLimitExceeded {
    cap: usize,
    asked: usize,
}

/// Counts the linear memory of all the instance's memories together.
#[derive(Debug)]
struct Limiter {
    cap: usize,
    used: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let asked = self.used.saturating_add(desired.saturating_sub(current));
        if asked > self.cap {
            return Err(wasmtime::Error::new(MemoryLimitExceeded {
                cap: self.cap,
                asked,
            }));
        }
        self.used = asked;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }

    fn tables(&self) -> usize {
        64
    }

    fn memories(&self) -> usize {
        8
    }
}

/// What a `Store` holds for one batch.
pub struct StoreState {
    limiter: Limiter,
    batch_log: Arc<BatchLog>,
    wasi: WasiCtx,
    table: ResourceTable,
}

impl std::fmt::Debug for StoreState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreState")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl bindings::Host for StoreState {
    fn log(&mut self, level: bindings::Level, message: String) {
        let level = match level {
            bindings::Level::Error => Level::Error,
            bindings::Level::Warn => Level::Warn,
            bindings::Level::Info => Level::Info,
            bindings::Level::Debug => Level::Debug,
        };
        self.batch_log.line(level, &message);
    }
}

/// Why one batch failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchFailure {
    /// The guest trapped (a panic is `unreachable`), or failed to instantiate.
    #[error("trap: {0}")]
    Trap(String),
    /// Out of fuel.
    #[error("out of fuel ({0} units)")]
    Fuel(u64),
    /// Past the wall-clock deadline.
    #[error("deadline of {0:?} passed")]
    Deadline(Duration),
    /// Past the memory cap.
    #[error("{0}")]
    Memory(String),
    /// More output than allowed.
    #[error("output of {bytes} bytes is over the {limit}-byte limit")]
    OutputLimit {
        /// Returned.
        bytes: usize,
        /// Allowed.
        limit: usize,
    },
    /// The guest returned an error, or output that doesn't decode.
    #[error("guest error: {0}")]
    Guest(String),
    /// The stage is quarantined.
    #[error("quarantined for {0:?} after repeated failures")]
    Quarantined(Duration),
}

impl BatchFailure {
    /// The drop reason it is counted under.
    pub fn reason(&self) -> DropReason {
        match self {
            BatchFailure::Trap(_) => DropReason::Trap,
            BatchFailure::Fuel(_) => DropReason::Fuel,
            BatchFailure::Deadline(_) => DropReason::Deadline,
            BatchFailure::Memory(_) => DropReason::Memory,
            BatchFailure::OutputLimit { .. } => DropReason::OutputLimit,
            BatchFailure::Guest(_) => DropReason::GuestError,
            BatchFailure::Quarantined(_) => DropReason::Quarantined,
        }
    }
}

/// A stage's effective settings: the pipeline's limits within the server's, and quarantine.
#[derive(Debug, Clone)]
pub struct StageOptions {
    /// Limits for each batch.
    pub limits: WasmLimits,
    /// Consecutive failures before quarantine.
    pub quarantine_after: u32,
    /// First quarantine, doubled on each failed retry.
    pub quarantine_backoff: Duration,
    /// Longest quarantine.
    pub quarantine_max: Duration,
    /// Guest log lines per batch.
    pub log_lines_per_batch: u32,
}

impl StageOptions {
    /// The server's settings with the pipeline's `fuel` (and other overrides) applied; an
    /// override above the server's maximum is an error.
    pub fn resolve(host: &WasmHost, options: &WasmOptions) -> Result<Self, WasmError> {
        let s = host.settings();
        let max = s.limits;
        let mut limits = max;
        let check = |what, value: u64, max: u64| {
            if value > max {
                Err(WasmError::AboveServerLimit { what, value, max })
            } else {
                Ok(value)
            }
        };
        if let Some(fuel) = options.fuel {
            limits.fuel = check("fuel", fuel, max.fuel)?;
        }
        if let Some(ms) = options.deadline_ms {
            limits.deadline =
                Duration::from_millis(check("deadline_ms", ms, max.deadline.as_millis() as u64)?);
        }
        if let Some(bytes) = options.memory_bytes {
            limits.memory_bytes = check("memory_bytes", bytes, max.memory_bytes as u64)? as usize;
        }
        if let Some(bytes) = options.output_bytes {
            limits.output_bytes = check("output_bytes", bytes, max.output_bytes as u64)? as usize;
        }
        Ok(StageOptions {
            limits,
            quarantine_after: s.quarantine_after,
            quarantine_backoff: s.quarantine_backoff,
            quarantine_max: s.quarantine_max,
            log_lines_per_batch: s.log_lines_per_batch,
        })
    }
}

/// Consecutive failures and quarantine.
#[derive(Debug, Default)]
struct Health {
    consecutive: u32,
    until: Option<Instant>,
    backoff: Option<Duration>,
    /// When a failure was last logged, and how many were not since.
    last_logged: Option<Instant>,
    unlogged: u64,
}

/// Longest guest error text kept (the rest is cut): it is logged and shown to the tenant.
pub const GUEST_ERROR_BYTES: usize = 512;
/// Failures of one stage are logged at most this often (the others are counted).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Where a stage's guests run.
#[derive(Debug, Clone, Default)]
pub enum GuestRunner {
    /// On the calling thread (`sluice run`, tests): `block_in_place` on a multi-thread runtime,
    /// else the blocking pool.
    #[default]
    InPlace,
    /// On the guest pool, within the tenant's share (`sluice serve`).
    Pool {
        /// The pool.
        pool: Arc<GuestPool>,
        /// Whose share the batches use.
        tenant: Arc<str>,
    },
}

/// What every call of a stage needs, shared with the thread that runs it.
#[derive(Debug)]
struct Guest {
    module: Arc<LoadedModule>,
    config: String,
    options: StageOptions,
    /// `transform` or `mangle`.
    stage: &'static str,
    log: Arc<GuestLog>,
}

/// One pipeline's wasm transform or mangle stage.
#[derive(Debug)]
pub struct WasmStage {
    guest: Arc<Guest>,
    runner: GuestRunner,
    /// The guest takes and gives JSON batches (it says so through `batch-encoding`).
    json: bool,
    health: Health,
    input: Vec<u8>,
    schemas: SchemaCache,
    /// Between [`WasmStage::begin_message`] and [`WasmStage::end_message`]: the instance the
    /// message's batches so far ran in, kept while they succeed.
    live: Option<Live>,
    in_message: bool,
}

/// What one call returns.
struct CallResult {
    /// The guest's records, decoded (none for a check).
    outcome: Result<Vec<WasmRecord>, BatchFailure>,
    /// For a check: whether the guest takes JSON batches.
    json: bool,
    fuel_used: u64,
    logs_dropped: u64,
}

impl WasmStage {
    /// Loads the module file named by `options.module` for the `stage` (`transform` or
    /// `mangle`) of `world`, resolves the limits and checks the guest's `init` accepts its
    /// config (once, now, so a bad config fails the build rather than every batch). The guest
    /// runs where `runner` says, the check included, and writes to `log`.
    pub async fn build(
        options: &WasmOptions,
        world: World,
        stage: &'static str,
        runner: GuestRunner,
        log: Arc<GuestLog>,
    ) -> Result<Self, WasmError> {
        let host = WasmHost::global();
        let module = host.load_file(std::path::Path::new(&options.module), world)?;
        let stage_options = StageOptions::resolve(host, options)?;
        let mut built = Self::unchecked(module, options.config.as_ref(), stage_options, stage, log);
        built.runner = runner;
        let check = built.execute(Input::Check).await;
        built.checked(check)
    }

    /// A stage over an already loaded module, its guest run in place; `init` is checked now.
    pub fn new(
        module: Arc<LoadedModule>,
        config: Option<&serde_json::Value>,
        options: StageOptions,
        stage: &'static str,
        log: Arc<GuestLog>,
    ) -> Result<Self, WasmError> {
        let mut built = Self::unchecked(module, config, options, stage, log);
        let check = execute(
            &built.guest,
            &Input::Check,
            false,
            &mut built.schemas,
            &mut None,
            false,
        );
        built.checked(check)
    }

    fn unchecked(
        module: Arc<LoadedModule>,
        config: Option<&serde_json::Value>,
        options: StageOptions,
        stage: &'static str,
        log: Arc<GuestLog>,
    ) -> Self {
        WasmStage {
            guest: Arc::new(Guest {
                module,
                config: config.map_or_else(|| "null".to_string(), |c| c.to_string()),
                options,
                stage,
                log,
            }),
            runner: GuestRunner::InPlace,
            json: false,
            health: Health::default(),
            input: Vec::new(),
            schemas: SchemaCache::default(),
            live: None,
            in_message: false,
        }
    }

    fn checked(mut self, check: CallResult) -> Result<Self, WasmError> {
        match check.outcome {
            Ok(_) => {
                self.json = check.json;
                Ok(self)
            }
            Err(BatchFailure::Guest(msg)) => Err(WasmError::Init(msg)),
            Err(other) => Err(WasmError::Instantiate(other.to_string())),
        }
    }

    /// The module's digest.
    pub fn digest(&self) -> &str {
        &self.guest.module.digest
    }

    /// The world of the module.
    pub fn world(&self) -> World {
        self.guest.module.world
    }

    /// Whether the guest takes and gives JSON batches.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Whether the stage is quarantined now.
    pub fn is_quarantined(&self) -> bool {
        self.health.until.is_some_and(|t| Instant::now() < t)
    }

    /// The batches until [`WasmStage::end_message`] (the tag batches of one Skydive message)
    /// run in one fresh instance, called once each, instead of an instance each; a failed call
    /// discards it (docs/wasm-host.md §1.6).
    pub fn begin_message(&mut self) {
        self.in_message = true;
        self.live = None;
    }

    /// Ends what [`WasmStage::begin_message`] began: the instance is dropped.
    pub fn end_message(&mut self) {
        self.in_message = false;
        self.live = None;
    }

    /// Transforms one tag's flows. On failure the flows are counted as dropped with the reason
    /// and nothing is returned.
    pub async fn transform(
        &mut self,
        flows: &[crate::skydive::flow::Flow],
        stats: &PipelineStats,
    ) -> Vec<WasmRecord> {
        let mut input = std::mem::take(&mut self.input);
        if self.json {
            super::json::encode_flows_json(flows, &mut input);
        } else {
            encoding::encode_flows(flows, &mut input);
        }
        self.run(Input::Flows(input), flows.len() as u64, stats)
            .await
    }

    /// Mangles one tag's records.
    pub async fn mangle(
        &mut self,
        tag: &str,
        records: &[crate::pipeline::record::Record],
        stats: &PipelineStats,
    ) -> Vec<WasmRecord> {
        let input = if self.json {
            super::json::encode_records_json(records)
        } else {
            encoding::encode_records(records)
        };
        self.run(
            Input::Records(tag.to_string(), input),
            records.len() as u64,
            stats,
        )
        .await
    }

    async fn run(&mut self, input: Input, count: u64, stats: &PipelineStats) -> Vec<WasmRecord> {
        if let Some(until) = self.health.until {
            let now = Instant::now();
            if now < until {
                stats.count_drop(DropReason::Quarantined, count);
                return Vec::new();
            }
        }
        let result = self.execute(input).await;
        stats
            .wasm_fuel_used
            .fetch_add(result.fuel_used, Ordering::Relaxed);
        if result.logs_dropped > 0 {
            tracing::debug!(
                stage = self.guest.stage,
                lines = result.logs_dropped,
                "guest log lines over the budget"
            );
        }
        match result.outcome {
            Ok(records) => {
                if self.health.consecutive > 0 || self.health.backoff.is_some() {
                    tracing::info!(stage = self.guest.stage, "wasm stage healthy again");
                }
                // The failure log's rate limit outlives a success between two failures.
                self.health = Health {
                    last_logged: self.health.last_logged,
                    ..Health::default()
                };
                records
            }
            Err(failure) => {
                stats.count_drop(failure.reason(), count);
                self.failed(&failure, stats);
                Vec::new()
            }
        }
    }

    /// Runs one call (and decodes its records) where the runner says.
    async fn execute(&mut self, input: Input) -> CallResult {
        let json = self.json;
        let mut live = self.live.take();
        let keep = self.in_message && !matches!(input, Input::Check);
        match &self.runner {
            GuestRunner::Pool { pool, tenant } => {
                let guest = self.guest.clone();
                let mut schemas = std::mem::take(&mut self.schemas);
                let ran = pool
                    .run(tenant, move || {
                        let r = execute(&guest, &input, json, &mut schemas, &mut live, keep);
                        (r, input, schemas, live)
                    })
                    .await;
                match ran {
                    Ok((r, input, schemas, live)) => {
                        self.schemas = schemas;
                        self.keep(input, live);
                        r
                    }
                    Err(e) => host_failure(e.to_string()),
                }
            }
            GuestRunner::InPlace if on_multi_thread_runtime() => {
                // The worker hands its other tasks to another thread and runs the guest here:
                // no round trip to the blocking pool (two thread wake-ups, the larger part of a
                // small batch's cost), and neighbours still run while a guest spins.
                let r = tokio::task::block_in_place(|| {
                    execute(
                        &self.guest,
                        &input,
                        json,
                        &mut self.schemas,
                        &mut live,
                        keep,
                    )
                });
                self.keep(input, live);
                r
            }
            GuestRunner::InPlace => {
                let guest = self.guest.clone();
                let mut schemas = std::mem::take(&mut self.schemas);
                let joined = tokio::task::spawn_blocking(move || {
                    let r = execute(&guest, &input, json, &mut schemas, &mut live, keep);
                    (r, input, schemas, live)
                })
                .await;
                match joined {
                    Ok((r, input, schemas, live)) => {
                        self.schemas = schemas;
                        self.keep(input, live);
                        r
                    }
                    Err(e) => host_failure(format!("host task failed: {e}")),
                }
            }
        }
    }

    /// Keeps a flow batch's buffer for the next batch, and the instance the call left (none
    /// outside a message or after a failure).
    fn keep(&mut self, input: Input, live: Option<Live>) {
        if let Input::Flows(buf) = input {
            self.input = buf;
        }
        self.live = live;
    }

    fn failed(&mut self, failure: &BatchFailure, stats: &PipelineStats) {
        let guest = &self.guest;
        // The tenant sees every failure in its guest log (rate-limited there).
        guest.log.push(
            guest.stage,
            Level::Error,
            &format!("batch dropped ({}): {failure}", failure.reason().as_str()),
        );
        let h = &mut self.health;
        h.consecutive += 1;
        let now = Instant::now();
        if h.last_logged
            .is_none_or(|t| now.duration_since(t) >= FAILURE_LOG_EVERY)
        {
            tracing::warn!(
                stage = guest.stage,
                module = %guest.module.digest,
                reason = failure.reason().as_str(),
                consecutive = h.consecutive,
                not_logged = h.unlogged,
                error = %failure,
                "wasm batch failed"
            );
            h.last_logged = Some(now);
            h.unlogged = 0;
        } else {
            h.unlogged += 1;
        }
        // A retry after quarantine that fails again goes straight back, for twice as long.
        let retrying = h.backoff.is_some();
        if retrying || h.consecutive >= guest.options.quarantine_after {
            let backoff = match h.backoff {
                Some(b) => (b * 2).min(guest.options.quarantine_max),
                None => guest.options.quarantine_backoff,
            };
            h.backoff = Some(backoff);
            h.until = Some(Instant::now() + backoff);
            stats.wasm_quarantines.fetch_add(1, Ordering::Relaxed);
            guest.log.push(
                guest.stage,
                Level::Error,
                &format!(
                    "quarantined for {} ms after {} failed batches: its batches are dropped until then",
                    backoff.as_millis(),
                    h.consecutive
                ),
            );
            tracing::error!(
                stage = guest.stage,
                module = %guest.module.digest,
                failures = h.consecutive,
                backoff_ms = backoff.as_millis() as u64,
                "wasm stage quarantined: its batches are dropped until the backoff ends"
            );
        }
    }
}

fn host_failure(message: String) -> CallResult {
    CallResult {
        outcome: Err(BatchFailure::Trap(message)),
        json: false,
        fuel_used: 0,
        logs_dropped: 0,
    }
}

/// One call and the decoding of its records (`json`: the guest's JSON form), on whatever
/// thread runs guests: in `live`'s instance if there is one, else in a fresh one; `live` holds
/// the instance afterwards only if the call succeeded and `keep` says to (else it is dropped
/// here, on the guest's thread).
fn execute(
    guest: &Guest,
    input: &Input,
    json: bool,
    schemas: &mut SchemaCache,
    live: &mut Option<Live>,
    keep: bool,
) -> CallResult {
    let (outcome, fuel_used, logs_dropped, used) = call(guest, input, live.take());
    let mut says_json = false;
    let outcome = outcome.and_then(|bytes| {
        match input {
            Input::Check => {
                says_json = bytes.first() == Some(&JSON_ENCODING);
                Ok(Vec::new())
            }
            _ if json => super::json::decode_json_records(&bytes, schemas),
            _ => encoding::decode_records(bytes, schemas),
        }
        .map_err(|e| BatchFailure::Guest(truncate(e.to_string(), GUEST_ERROR_BYTES)))
    });
    if outcome.is_ok() && keep {
        *live = used.kept();
    }
    CallResult {
        outcome,
        json: says_json,
        fuel_used,
        logs_dropped,
    }
}

/// Whether `block_in_place` may be used here (a multi-thread tokio runtime, as `sluice run`
/// and `sluice serve` use); elsewhere (current-thread runtimes in tests) the guest runs on the
/// blocking pool.
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// What a call feeds the guest.
enum Input {
    /// `init` only (build-time check).
    Check,
    /// `transform(batch)`.
    Flows(Vec<u8>),
    /// `mangle(tag, batch)`.
    Records(String, Vec<u8>),
}

/// Maps a wasmtime error to the failure it stands for.
fn classify(e: &wasmtime::Error, options: &StageOptions) -> BatchFailure {
    if let Some(m) = e.downcast_ref::<MemoryLimitExceeded>() {
        return BatchFailure::Memory(m.to_string());
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => BatchFailure::Fuel(options.limits.fuel),
        Some(Trap::Interrupt) => BatchFailure::Deadline(options.limits.deadline),
        Some(t) => BatchFailure::Trap(t.to_string()),
        None => BatchFailure::Trap(format!("{e:#}")),
    }
}

/// One call: in `live`'s instance (its fuel and deadline set anew), else in a fresh store
/// (instantiate, `init(config)`, all under one batch's fuel and deadline). Returns the guest's
/// bytes (for a check, one byte: [`JSON_ENCODING`] when the guest takes JSON), the fuel used,
/// the log lines over the budget and the store it ran in. Runs where blocking is allowed (a
/// guest thread, `block_in_place` or the blocking pool); never panics on guest behaviour.
fn call(
    guest: &Guest,
    input: &Input,
    live: Option<Live>,
) -> (Result<Vec<u8>, BatchFailure>, u64, u64, Live) {
    let limits = guest.options.limits;
    let mut current = match live {
        Some(mut kept) => {
            kept.arm(limits);
            kept
        }
        None => Live::new(guest),
    };
    let outcome = current.run(guest, input);
    let fuel_used = limits.fuel - current.store.get_fuel().unwrap_or(0);
    let logs_dropped = current.batch_log.finish();
    (outcome, fuel_used, logs_dropped, current)
}

/// A store and, once instantiated and `init` called, its guest instance.
pub(super) struct Live {
    store: Store<StoreState>,
    instance: Option<Instance>,
    batch_log: Arc<BatchLog>,
    /// Held while the instance is kept between calls.
    kept: Option<Kept>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("instantiated", &self.instance.is_some())
            .finish_non_exhaustive()
    }
}

/// Instances kept between the batches of a message, across all stages: at most half of what
/// the pooling allocator holds, so that pipelines waiting between batches (for the guest pool,
/// say) can never leave a call without an instance. Past it, a batch's instance is dropped as
/// before.
static KEPT: KeptBudget = KeptBudget::new(super::engine::POOL_COMPONENT_INSTANCES as usize / 2);

/// A count of kept instances with a ceiling.
pub(super) struct KeptBudget {
    kept: AtomicUsize,
    max: usize,
}

impl KeptBudget {
    pub(super) const fn new(max: usize) -> Self {
        KeptBudget {
            kept: AtomicUsize::new(0),
            max,
        }
    }

    /// A place for one more kept instance, if there is one.
    pub(super) fn take(&'static self) -> Option<Kept> {
        self.kept
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Kept(self))
    }
}

/// One kept instance's place in its [`KeptBudget`], given back when dropped.
pub(super) struct Kept(&'static KeptBudget);

impl Drop for Kept {
    fn drop(&mut self) {
        self.0.kept.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Live {
    /// A fresh store under the stage's limits, nothing instantiated yet.
    fn new(guest: &Guest) -> Self {
        let host = WasmHost::global();
        let batch_log = BatchLog::new(
            guest.log.clone(),
            guest.stage,
            guest.options.log_lines_per_batch,
        );
        let limits = guest.options.limits;
        let mut store = Store::new(
            host.engine(),
            StoreState {
                limiter: Limiter {
                    cap: limits.memory_bytes,
                    used: 0,
                },
                batch_log: batch_log.clone(),
                wasi: super::wasi::context(&batch_log),
                table: ResourceTable::new(),
            },
        );
        store.limiter(|s| &mut s.limiter);
        store.epoch_deadline_trap();
        let mut live = Live {
            store,
            instance: None,
            batch_log,
            kept: None,
        };
        live.arm(limits);
        live
    }

    /// Itself, to be kept for the message's next batch, if [`KEPT`] has room (it already
    /// holds its place after a first batch).
    fn kept(mut self) -> Option<Self> {
        if self.kept.is_none() {
            self.kept = Some(KEPT.take()?);
        }
        Some(self)
    }

    /// One batch's fuel and deadline, from now.
    fn arm(&mut self, limits: WasmLimits) {
        let _ = self.store.set_fuel(limits.fuel);
        let tick = WasmHost::global().settings().epoch_tick.as_nanos().max(1);
        let ticks = (limits.deadline.as_nanos().div_ceil(tick) as u64).max(1) + 1;
        self.store.set_epoch_deadline(ticks);
    }

    /// The instance, made and `init` called first if there is none yet.
    fn instance(&mut self, guest: &Guest) -> Result<Instance, BatchFailure> {
        if let Some(instance) = self.instance {
            return Ok(instance);
        }
        let store = &mut self.store;
        let fail = |e: wasmtime::Error| classify(&e, &guest.options);
        let instance = guest.module.pre.instantiate(&mut *store).map_err(fail)?;
        let init = instance
            .get_typed_func::<(&str,), (Result<(), String>,)>(&mut *store, "init")
            .map_err(fail)?;
        let (r,) = init
            .call(&mut *store, (guest.config.as_str(),))
            .map_err(fail)?;
        r.map_err(|msg| BatchFailure::Guest(truncate(format!("init: {msg}"), GUEST_ERROR_BYTES)))?;
        self.instance = Some(instance);
        Ok(instance)
    }

    /// One call of the stage's export on `input`.
    fn run(&mut self, guest: &Guest, input: &Input) -> Result<Vec<u8>, BatchFailure> {
        let instance = self.instance(guest)?;
        let options = &guest.options;
        let fail = |e: wasmtime::Error| classify(&e, options);
        let store = &mut self.store;
        let (result,) = match input {
            Input::Check => {
                // A guest that doesn't say (built before `batch-encoding` existed) takes bytes.
                let json = match instance
                    .get_typed_func::<(), (bindings::BatchEncoding,)>(&mut *store, "batch-encoding")
                {
                    Ok(f) => {
                        f.call(&mut *store, ()).map_err(fail)?.0 == bindings::BatchEncoding::Json
                    }
                    Err(_) => false,
                };
                return Ok(vec![u8::from(json)]);
            }
            Input::Flows(batch) => {
                let f = instance
                    .get_typed_func::<(&[u8],), Batch>(&mut *store, "transform")
                    .map_err(fail)?;
                f.call(&mut *store, (batch.as_slice(),)).map_err(fail)?
            }
            Input::Records(tag, batch) => {
                let f = instance
                    .get_typed_func::<(&str, &[u8]), Batch>(&mut *store, "mangle")
                    .map_err(fail)?;
                f.call(&mut *store, (tag.as_str(), batch.as_slice()))
                    .map_err(fail)?
            }
        };
        let bytes = result.map_err(|msg| BatchFailure::Guest(truncate(msg, GUEST_ERROR_BYTES)))?;
        if bytes.len() > options.limits.output_bytes {
            return Err(BatchFailure::OutputLimit {
                bytes: bytes.len(),
                limit: options.limits.output_bytes,
            });
        }
        Ok(bytes)
    }
}

/// A check's answer for a guest that takes JSON batches.
const JSON_ENCODING: u8 = 1;

/// A batch result, copied out of the guest. (Not a `WasmList` view: wasmtime runs the
/// export's post-return, which frees the guest's buffer, before `call` returns, so a view would
/// read freed memory. The copy is bounded by the guest's memory cap.)
type Batch = (Result<Vec<u8>, String>,);

//! The pipeline supervisor of `sluice serve`: each pipeline runs as its own task (a subscriber
//! feeding a [`crate::pipeline::Pipeline`] through a bounded channel), is restarted with backoff when it fails,
//! and is stopped with a full flush on stop, replace, delete and shutdown.
//!
//! Each run is [`crate::runner::run`], as `sluice run`'s: every pipeline has its own channel,
//! writer and task, so a slow sink pushes back on that pipeline's WebSocket only.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument as _, info, warn};

use crate::config::{
    ConfigError, ConfigErrors, ExporterConfig, MangleType, ServeRules, TransformType,
};
use crate::db::account::{self, AccountRow};
use crate::db::{Db, DesiredState, PipelineRow};
use crate::egress::EgressPolicy;
use crate::fence::Fence;
use crate::guest_log::GuestLog;
use crate::metrics::{Counters, DropReason, PipelineStats};
use crate::pipeline::BuildContext;
use crate::pipeline::batch::prom_sky_con::PromGauges;
use crate::runner::{self, RunParts};
use crate::secrets::Keyring;
use crate::serve::definitions::{resolve_for_serve, resolve_modules, subscriber_settings};
use crate::sinks::{Confinement, DiskQuota};
use crate::skydive::subscriber::SubscriberStats;
use crate::wasm::{GuestPool, GuestRunner, WasmError, WasmStage, World};

/// First delay before restarting a failed pipeline.
const BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Largest delay between restarts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What a pipeline is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Not running (desired state `stopped`, or not started yet).
    Stopped,
    /// Building its stages (may query the analyzer).
    Starting,
    /// Subscribed (or reconnecting) and exporting.
    Running,
    /// Failed; waiting to be restarted.
    Failed,
    /// Flushing before it stops.
    Stopping,
}

impl RunState {
    /// Every state, for metrics.
    pub const ALL: [RunState; 5] = [
        RunState::Stopped,
        RunState::Starting,
        RunState::Running,
        RunState::Failed,
        RunState::Stopping,
    ];

    /// The name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Stopped => "stopped",
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Failed => "failed",
            RunState::Stopping => "stopping",
        }
    }
}

/// Settings the supervisor applies to every pipeline.
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// `<data_dir>`; each pipeline's files go under `<data_dir>/pipelines/<id>/`.
    pub data_dir: PathBuf,
    /// What a definition must keep to (ceilings, egress, paths).
    pub rules: ServeRules,
    /// Opens the sealed secrets of stored definitions.
    pub keyring: Arc<Keyring>,
    /// Where guests run.
    pub guests: Arc<GuestPool>,
    /// Bytes one tenant's `file` writers may keep.
    pub file_bytes_per_tenant: u64,
}

impl SupervisorSettings {
    /// Settings with the default ceilings, any destination allowed, a new key and a guest pool
    /// of two threads (tests and benchmarks).
    pub fn with_defaults(data_dir: PathBuf) -> Self {
        SupervisorSettings {
            data_dir,
            rules: ServeRules {
                ceilings: Default::default(),
                egress: EgressPolicy::unrestricted(),
                allow_absolute_paths: false,
            },
            keyring: Arc::new(Keyring::ephemeral()),
            guests: GuestPool::start(2, 1),
            file_bytes_per_tenant: u64::MAX,
        }
    }
}

/// The live side of one pipeline, shared with status and metrics readers.
#[derive(Debug)]
pub struct Live {
    /// Owner.
    pub tenant_id: String,
    /// Pipeline counters (cumulative across restarts; loaded from the `account` table).
    pub stats: Arc<PipelineStats>,
    /// Subscriber counters.
    pub subscriber: Arc<SubscriberStats>,
    /// Restarts after failures.
    pub restarts: AtomicU64,
    /// What its guests said (`GET /v1/pipelines/{id}/logs`); kept across restarts.
    pub guest_log: Arc<GuestLog>,
    /// The gauges of its `prom_sky_con` store (`GET /v1/pipelines/{id}/metrics`).
    pub prom_gauges: Arc<PromGauges>,
    /// This node's hold on the pipeline: its runs stop when it lapses, and every database
    /// write for it carries its generation (docs/service.md §9).
    pub fence: Arc<Fence>,
    status: Mutex<(RunState, Option<String>)>,
    /// The running task; the async mutex serialises start/stop/replace of this pipeline.
    task: tokio::sync::Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    cancel: CancellationToken,
    handle: JoinHandle<()>,
}

impl Live {
    /// Current state and last error.
    pub fn state(&self) -> (RunState, Option<String>) {
        let (state, error) = &*self.status.lock().unwrap_or_else(|e| e.into_inner());
        let error = error.clone().or_else(|| self.subscriber.last_error());
        (*state, error)
    }

    /// Whether the subscriber is connected now.
    pub fn connected(&self) -> bool {
        self.subscriber.connected.load(Ordering::Relaxed)
    }

    /// Every counter now.
    pub fn counters(&self) -> Counters {
        Counters::read(&self.stats, &self.subscriber)
    }

    fn set(&self, state: RunState, error: Option<String>) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = state;
        if error.is_some() || state == RunState::Running {
            s.1 = error;
        }
    }

    fn account_row(&self, pipeline_id: &str) -> AccountRow {
        let c = self.counters();
        let dropped: BTreeMap<&str, u64> = c.dropped.iter().copied().filter(|d| d.1 > 0).collect();
        AccountRow {
            pipeline_id: pipeline_id.to_string(),
            flows_received: c.received as i64,
            records_written: c.records_written as i64,
            objects_written: c.objects_written as i64,
            bytes_written: c.bytes_written as i64,
            write_errors: c.write_errors as i64,
            dropped: serde_json::to_string(&dropped).unwrap_or_else(|_| "{}".into()),
            updated_at: crate::now_ms(),
        }
    }
}

/// Runs every pipeline of this node. A cheap clone.
#[derive(Debug, Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    settings: SupervisorSettings,
    pipelines: Mutex<HashMap<String, Arc<Live>>>,
    /// Each tenant's `file` writer quota.
    quotas: Mutex<HashMap<String, Arc<DiskQuota>>>,
}

impl Supervisor {
    /// A supervisor with no pipelines yet.
    pub fn new(db: Db, settings: SupervisorSettings) -> Self {
        Supervisor {
            inner: Arc::new(Inner {
                db,
                settings,
                pipelines: Mutex::new(HashMap::new()),
                quotas: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// What definitions must keep to on this server.
    pub fn rules(&self) -> &ServeRules {
        &self.inner.settings.rules
    }

    /// The keys of sealed secrets.
    pub fn keyring(&self) -> &Keyring {
        &self.inner.settings.keyring
    }

    /// A stored definition as the typed config, its secrets opened and checked again against
    /// this server's rules (they may have changed since it was stored).
    pub fn open_stored(&self, definition: &str) -> Result<ExporterConfig, String> {
        let mut config = ExporterConfig::load(definition).map_err(|e| e.to_string())?;
        for (key, value) in config.secrets_mut() {
            if crate::secrets::is_sealed(value) {
                *value = self
                    .keyring()
                    .open(key, value)
                    .map_err(|e| format!("{key}: {e}"))?;
            }
        }
        let errors = config.check_for_serve(self.rules());
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).to_string());
        }
        Ok(config)
    }

    /// The definition to store: `config` with its secrets sealed, as canonical YAML.
    pub fn sealed_definition(&self, config: &ExporterConfig) -> String {
        let mut sealed = config.clone();
        for (key, value) in sealed.secrets_mut() {
            if !value.is_empty() && !crate::secrets::is_sealed(value) {
                *value = self.keyring().seal(key, value);
            }
        }
        serde_yaml::to_string(&sealed).expect("a pipeline definition serialises to YAML")
    }

    /// Checks each wasm stage's guest accepts its `config` (its `init`, run on the guest pool
    /// within the tenant's share) and that the module instantiates under its limits.
    pub async fn check_guests(&self, resolved: &ExporterConfig, tenant: &str) -> Vec<ConfigError> {
        let p = &resolved.pipeline;
        let mut errors = Vec::new();
        for (section, world, wasm) in [
            (
                "transform",
                World::Transformer,
                (p.transform.kind == TransformType::Wasm).then_some(&p.transform.wasm),
            ),
            (
                "mangle",
                World::Mangler,
                (p.mangle.kind == MangleType::Wasm).then_some(&p.mangle.wasm),
            ),
        ] {
            let Some(Some(options)) = wasm else { continue };
            let built = WasmStage::build(
                options,
                world,
                section,
                self.guest_runner(tenant),
                Arc::new(GuestLog::new()),
            )
            .await;
            if let Err(e) = built {
                let key = match e {
                    WasmError::Init(_) => "config",
                    WasmError::AboveServerLimit { what, .. } => what,
                    _ => "module",
                };
                errors.push(ConfigError {
                    path: format!("pipeline.{section}.wasm.{key}"),
                    line: None,
                    message: e.to_string(),
                });
            }
        }
        errors
    }

    /// Runs CPU-heavy work for a tenant (compiling its module) on the guest pool, within the
    /// tenant's share.
    pub async fn run_as<R: Send + 'static>(
        &self,
        tenant: &str,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, crate::wasm::PoolClosed> {
        self.inner.settings.guests.run(tenant, work).await
    }

    /// Where a tenant's guests run: the guest pool, within its share.
    fn guest_runner(&self, tenant: &str) -> GuestRunner {
        GuestRunner::Pool {
            pool: self.inner.settings.guests.clone(),
            tenant: tenant.into(),
        }
    }

    /// A tenant's `file` writer quota.
    fn quota(&self, tenant: &str) -> Arc<DiskQuota> {
        self.inner
            .quotas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(tenant.to_string())
            .or_insert_with(|| Arc::new(DiskQuota::new(self.inner.settings.file_bytes_per_tenant)))
            .clone()
    }

    /// What a dry run of `tenant` is built with: the egress policy, the guest pool and a log
    /// of its own (it writes no file).
    pub fn dry_run_context(&self, tenant: &str) -> BuildContext {
        BuildContext {
            egress: self.rules().egress.clone(),
            confine: None,
            guests: self.guest_runner(tenant),
            guest_log: Arc::new(GuestLog::new()),
            prom_gauges: Arc::default(),
        }
    }

    /// What a pipeline is built with: its folder, the egress policy, the guest pool and its
    /// guest log.
    fn build_context(&self, id: &str, live: &Live) -> BuildContext {
        BuildContext {
            egress: self.rules().egress.clone(),
            confine: Some(Confinement {
                within: self.pipeline_dir(id),
                quota: self.quota(&live.tenant_id),
                owner: id.to_string(),
            }),
            guests: self.guest_runner(&live.tenant_id),
            guest_log: live.guest_log.clone(),
            prom_gauges: live.prom_gauges.clone(),
        }
    }

    /// The folder of a pipeline's files.
    pub fn pipeline_dir(&self, id: &str) -> PathBuf {
        self.inner.settings.data_dir.join("pipelines").join(id)
    }

    /// The folder of uploaded modules (`<data_dir>/modules`).
    pub fn modules_dir(&self) -> PathBuf {
        self.inner.settings.data_dir.join("modules")
    }

    /// The file of an uploaded module.
    pub fn module_path(&self, digest: &str) -> PathBuf {
        self.modules_dir().join(format!("{digest}.wasm"))
    }

    /// The modules a tenant owns: digest → world.
    pub async fn owned_modules(
        &self,
        tenant_id: &str,
    ) -> Result<HashMap<String, String>, crate::db::DbError> {
        Ok(crate::db::modules::list(&self.inner.db, Some(tenant_id))
            .await?
            .into_iter()
            .map(|m| (m.digest, m.world))
            .collect())
    }

    /// Checks a definition's paths for `sluice serve` and resolves them into the pipeline's
    /// folder (see [`resolve_for_serve`]); a wasm stage's module digest becomes the path of
    /// the tenant's uploaded module (`owned`: digest → world, from [`Supervisor::owned_modules`]).
    pub fn resolve(
        &self,
        id: &str,
        config: &ExporterConfig,
        owned: &HashMap<String, String>,
    ) -> Result<ExporterConfig, Vec<ConfigError>> {
        let mut resolved = resolve_for_serve(config, &self.pipeline_dir(id));
        let errors = resolve_modules(&mut resolved, owned, &self.modules_dir());
        if errors.is_empty() {
            Ok(resolved)
        } else {
            Err(errors)
        }
    }

    /// The live side of a pipeline, if it is registered.
    pub fn live(&self, id: &str) -> Option<Arc<Live>> {
        self.map().get(id).cloned()
    }

    /// Every registered pipeline, by id.
    pub fn all(&self) -> Vec<(String, Arc<Live>)> {
        let mut v: Vec<_> = self
            .map()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// How many pipelines are in each state.
    pub fn states(&self) -> Vec<(&'static str, u64)> {
        let all = self.all();
        RunState::ALL
            .iter()
            .map(|s| {
                let n = all.iter().filter(|(_, l)| l.state().0 == *s).count() as u64;
                (s.as_str(), n)
            })
            .collect()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Live>>> {
        self.inner
            .pipelines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a stored pipeline this node holds under `fence` (counters from its saved
    /// account) and starts it if its desired state is `running`.
    pub async fn add(&self, row: &PipelineRow, fence: Arc<Fence>) {
        let stats = Arc::new(PipelineStats::default());
        match account::load(&self.inner.db, &row.id).await {
            Ok(Some(saved)) => restore(&stats, &saved),
            Ok(None) => {}
            Err(e) => warn!(pipeline = %row.id, error = %e, "Cannot load saved counters."),
        }
        let live = Arc::new(Live {
            tenant_id: row.tenant_id.clone(),
            stats,
            subscriber: Arc::new(SubscriberStats::default()),
            restarts: AtomicU64::new(0),
            guest_log: Arc::new(GuestLog::new()),
            prom_gauges: Arc::default(),
            fence,
            status: Mutex::new((RunState::Stopped, None)),
            task: tokio::sync::Mutex::new(None),
        });
        self.map().insert(row.id.clone(), live.clone());
        if row.desired_state == DesiredState::Running {
            self.start_with(&row.id, &live, &row.definition).await;
        }
    }

    /// Starts a registered pipeline from its definition (no-op if it runs).
    pub async fn start(&self, row: &PipelineRow) {
        if let Some(live) = self.live(&row.id) {
            self.start_with(&row.id, &live, &row.definition).await;
        }
    }

    async fn start_with(&self, id: &str, live: &Arc<Live>, definition: &str) {
        let mut task = live.task.lock().await;
        if task.is_some() {
            return;
        }
        let owned = match self.owned_modules(&live.tenant_id).await {
            Ok(owned) => owned,
            Err(e) => {
                live.set(
                    RunState::Failed,
                    Some(format!("cannot read the tenant's modules: {e}")),
                );
                return;
            }
        };
        let config = self.open_stored(definition).and_then(|c| {
            self.resolve(id, &c, &owned).map_err(|errors| {
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            })
        });
        let config = match config {
            Ok(config) => config,
            Err(error) => {
                // Only a definition stored by an older version could fail here.
                live.set(RunState::Failed, Some(error));
                return;
            }
        };
        let cancel = CancellationToken::new();
        let span = tracing::info_span!("pipeline", id = %id, tenant = %live.tenant_id);
        // Before the spawn: the task sets `running` as soon as it has built the stages.
        live.set(RunState::Starting, None);
        let context = self.build_context(id, live);
        let handle = tokio::spawn(
            supervise(
                id.to_string(),
                config,
                context,
                live.clone(),
                cancel.clone(),
            )
            .instrument(span),
        );
        *task = Some(Running { cancel, handle });
    }

    /// Stops a pipeline: its subscriber disconnects, every message already accepted is
    /// processed and every buffer flushed before this returns. Saves its counters.
    pub async fn stop(&self, id: &str) {
        let Some(live) = self.live(id) else { return };
        let mut task = live.task.lock().await;
        if let Some(running) = task.take() {
            live.set(RunState::Stopping, None);
            running.cancel.cancel();
            if let Err(e) = running.handle.await {
                warn!(pipeline = %id, error = %e, "Pipeline task ended abnormally.");
            }
        }
        live.set(RunState::Stopped, None);
        drop(task);
        self.save_account(id, &live).await;
    }

    /// Applies a new definition: the old pipeline stops and flushes, then the new one starts
    /// if `start` (the desired state is `running`).
    pub async fn replace(&self, row: &PipelineRow) {
        self.stop(&row.id).await;
        if row.desired_state == DesiredState::Running {
            self.start(row).await;
        }
    }

    /// Stops (flushing) and forgets a pipeline, and removes its folder: what its `file`
    /// writer wrote, and what its spool could not upload within the stop's wait (counted in
    /// the log), go with it, so that a deleted pipeline holds no disk.
    pub async fn remove(&self, id: &str) {
        self.stop(id).await;
        if let Some(live) = self.map().remove(id) {
            self.quota(&live.tenant_id).remove(id);
        }
        let dir = self.pipeline_dir(id);
        let spooled = crate::sinks::spool::count_in(&dir);
        if spooled > 0 {
            warn!(pipeline = %id, objects = spooled, "Deleting a pipeline with objects still spooled: they are discarded.");
        }
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(pipeline = %id, folder = %dir.display(), error = %e, "Cannot remove the pipeline's folder.");
        }
    }

    /// Stops (flushing) and forgets a pipeline this node no longer holds, keeping its folder:
    /// objects left in its spool are uploaded by [`crate::sinks::spool`]'s next opener
    /// (docs/service.md §9).
    pub async fn release(&self, id: &str) {
        self.stop(id).await;
        if let Some(live) = self.map().remove(id) {
            self.quota(&live.tenant_id).remove(id);
        }
    }

    /// Uploads what a pipeline's spool holds with its S3 writer alone (the pipeline runs on
    /// another node), waiting up to [`runner::SPOOL_DRAIN`]; returns how many objects are left.
    pub async fn drain_spool(&self, row: &PipelineRow) -> usize {
        let dir = self.pipeline_dir(&row.id);
        let config = match self.open_stored(&row.definition) {
            Ok(config) => resolve_for_serve(&config, &dir),
            Err(e) => {
                warn!(pipeline = %row.id, error = %e, "Cannot read the definition to upload its spool.");
                return crate::sinks::spool::count_in(&dir);
            }
        };
        let confine = Confinement {
            within: dir.clone(),
            quota: self.quota(&row.tenant_id),
            owner: row.id.clone(),
        };
        let sink = crate::sinks::Sink::from_config_spooled(
            &config.pipeline.write,
            PathBuf::from(&config.pipeline.write.spool.dir),
            Arc::new(PipelineStats::default()),
            &self.rules().egress,
            Some(&confine),
        );
        match sink {
            Ok(sink) => sink.close(runner::SPOOL_DRAIN).await,
            Err(e) => {
                // Most often its lock: the pipeline runs on a node sharing this folder.
                tracing::debug!(pipeline = %row.id, error = %e, "Cannot open the spool to upload it.");
                crate::sinks::spool::count_in(&dir)
            }
        }
    }

    /// Stops every pipeline at once, each flushing, and saves their counters.
    pub async fn shutdown(&self) {
        let ids: Vec<String> = self.all().into_iter().map(|(id, _)| id).collect();
        let stops = ids.iter().map(|id| self.stop(id));
        futures_util::future::join_all(stops).await;
    }

    /// Saves every pipeline's counters (periodic).
    pub async fn save_all_accounts(&self) {
        for (id, live) in self.all() {
            self.save_account(&id, &live).await;
        }
    }

    async fn save_account(&self, id: &str, live: &Live) {
        let (node, generation) = (live.fence.node(), live.fence.generation());
        if let Err(e) = account::save(&self.inner.db, &live.account_row(id), node, generation).await
        {
            // The pipeline may just have been deleted, or taken over by another node (which
            // counts from what was saved last): nothing to keep then.
            tracing::debug!(pipeline = %id, error = %e, "Counters not saved.");
        }
    }
}

/// Adds saved counters to fresh ones.
fn restore(stats: &PipelineStats, saved: &AccountRow) {
    let add = |c: &AtomicU64, v: i64| {
        c.fetch_add(v.max(0) as u64, Ordering::Relaxed);
    };
    add(&stats.records_written, saved.records_written);
    add(&stats.objects_written, saved.objects_written);
    add(&stats.bytes_written, saved.bytes_written);
    add(&stats.write_errors, saved.write_errors);
    let dropped = saved.dropped_map();
    let malformed = dropped.get("malformed").copied().unwrap_or(0);
    // `received` counts malformed flows too; the pipeline's own counter does not.
    add(
        &stats.flows_received,
        saved.flows_received - malformed as i64,
    );
    for reason in DropReason::ALL {
        if let Some(n) = dropped.get(reason.as_str()) {
            stats.count_drop(reason, *n);
        }
    }
}

/// One pipeline's task: build, subscribe, export; on failure wait (backoff) and start again,
/// until cancelled. Cancelling flushes everything accepted before returning.
async fn supervise(
    id: String,
    config: ExporterConfig,
    context: BuildContext,
    live: Arc<Live>,
    cancel: CancellationToken,
) {
    // The hold lapsing stops the run, as a stop would (everything accepted is flushed), by
    // this node's own clock: the database may be out of reach.
    let watch = {
        let (fence, cancel) = (live.fence.clone(), cancel.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = fence.lapsed() => {
                    warn!(generation = fence.generation(), "This node's hold on the pipeline lapsed: stopping it.");
                    cancel.cancel();
                }
                () = cancel.cancelled() => {}
            }
        })
    };
    let mut backoff = BACKOFF_INITIAL;
    loop {
        live.set(RunState::Starting, None);
        let started = Instant::now();
        let parts =
            subscriber_settings(&config)
                .map_err(|e| e.to_string())
                .map(|mut subscriber| {
                    subscriber.egress = context.egress.clone();
                    subscriber.fence = Some(live.fence.clone());
                    RunParts {
                        config: &config,
                        context: &context,
                        subscriber,
                        default_spool_dir: PathBuf::from(&config.pipeline.write.spool.dir),
                        stats: live.stats.clone(),
                        subscriber_stats: live.subscriber.clone(),
                    }
                });
        let ran = match parts {
            Ok(parts) => {
                runner::run(parts, &cancel, || {
                    live.set(RunState::Running, None);
                    info!(pipeline = %id, "Pipeline started.");
                })
                .await
            }
            Err(e) => Err(e),
        };
        let error = match ran {
            Ok(end) => {
                if end.left_in_spool > 0 {
                    info!(pipeline = %id, objects = end.left_in_spool, "Objects left in the spool for the next start.");
                }
                break;
            }
            Err(error) => error,
        };
        if started.elapsed() > HEALTHY_RUN {
            backoff = BACKOFF_INITIAL;
        }
        warn!(pipeline = %id, error = %error, retry_in = ?backoff, "Pipeline failed.");
        live.set(RunState::Failed, Some(error));
        tokio::select! {
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        live.restarts.fetch_add(1, Ordering::Relaxed);
    }
    watch.abort();
    if !live.fence.holds() {
        live.set(
            RunState::Stopped,
            Some("stopped: this node's hold on the pipeline lapsed".into()),
        );
    }
    info!(pipeline = %id, "Pipeline stopped.");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failing_pipeline_is_restarted_with_backoff_until_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Db::open_in_memory().await.unwrap();
        let tenant = crate::db::Tenant {
            id: "t1".into(),
            name: "one".into(),
            created_at: 0,
        };
        store.create_tenant(&tenant, "k1", "hash1").await.unwrap();
        // The tenant owns the module, but its file is gone: the pipeline never builds.
        let module = crate::db::ModuleRow {
            digest: "ab12".into(),
            tenant_id: "t1".into(),
            size: 1,
            world: "transformer".into(),
            created_at: 0,
        };
        crate::db::modules::insert(&store, &module).await.unwrap();
        let supervisor = Supervisor::new(
            store,
            SupervisorSettings::with_defaults(dir.path().to_path_buf()),
        );
        let definition = "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:9/ws/subscriber/flow\n  transform:\n    type: wasm\n    wasm:\n      module: ab12\n  store:\n    buffered:\n      dirname: b\n      max_flows_per_object: 10\n      max_flow_array_size: 100\n  write:\n    type: file\n    file:\n      dir: out\n";
        let row = PipelineRow {
            id: "p1".into(),
            tenant_id: "t1".into(),
            definition: definition.into(),
            desired_state: DesiredState::Running,
            created_at: 0,
            updated_at: 0,
            analyzer: String::new(),
            host_id: String::new(),
            spool_bytes: 0,
        };
        supervisor.add(&row, Arc::new(Fence::unbounded("n1"))).await;
        let live = supervisor.live("p1").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while live.restarts.load(Ordering::Relaxed) < 2 {
            assert!(Instant::now() < deadline, "no restarts: {:?}", live.state());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (state, error) = live.state();
        assert!(
            matches!(state, RunState::Failed | RunState::Starting),
            "{state:?}"
        );
        assert!(error.unwrap().contains("cannot build the pipeline"));
        supervisor.stop("p1").await;
        assert_eq!(live.state().0, RunState::Stopped);
        assert_eq!(supervisor.states()[0], ("stopped", 1));
        supervisor.remove("p1").await;
        assert!(supervisor.live("p1").is_none());
    }
}

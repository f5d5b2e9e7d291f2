//! `sluice serve`: the multi-tenant service. Opens the database (migrating it), joins the
//! cluster of nodes sharing it (alone on SQLite) and brings back the pipelines it holds in
//! their desired state, serves the REST API, runs the cluster loop and saves counters in the
//! background, and on shutdown flushes every pipeline and hands it over.

pub mod cluster;
pub mod config;
pub mod definitions;
mod http;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, App};
use crate::config::{ExporterConfig, ServeRules};
use crate::db::{Db, PipelineRow, leases, pipelines};
use crate::egress::EgressPolicy;
use crate::secrets::{Keyring, is_sealed};
use crate::supervisor::{Supervisor, SupervisorSettings};
use crate::wasm::GuestPool;
use cluster::{Cluster, Timings};
use config::{ADMIN_TOKEN_ENV, ServerConfig};
use definitions::StoredFields;

/// The server config file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG: &str = "config/sluice.yml";

/// Command-line overrides of `sluice serve`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Server config file [default: config/sluice.yml when it exists, else built-in defaults].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Listen address (overrides `listen`), e.g. 127.0.0.1:0 for a free port.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data folder (overrides `data_dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Database URL, `sqlite://<path>` or `postgres://...` (overrides `database` and
    /// `SLUICE_DATABASE_URL`).
    #[arg(long)]
    pub database: Option<String>,
    /// This node's id (overrides `node_id`; default: the hostname).
    #[arg(long)]
    pub node_id: Option<String>,
}

impl ServeArgs {
    /// The effective server config: the file, then the flags.
    pub fn resolve(&self) -> anyhow::Result<ServerConfig> {
        let mut config = match &self.config {
            Some(path) => ServerConfig::load(path)?,
            None if Path::new(DEFAULT_CONFIG).exists() => {
                ServerConfig::load(Path::new(DEFAULT_CONFIG))?
            }
            None => ServerConfig::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(dir) = &self.data_dir {
            config.data_dir = dir.clone();
        }
        if let Ok(url) = std::env::var(config::DATABASE_URL_ENV)
            && !url.trim().is_empty()
        {
            config.database = Some(url);
        }
        if let Some(url) = &self.database {
            config.database = Some(url.clone());
        }
        if let Some(node) = &self.node_id {
            config.node_id = Some(node.clone());
        }
        Ok(config)
    }
}

/// A server bound to its address, with its pipelines started.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    config: ServerConfig,
}

impl Server {
    /// Opens the data folder and database, starts the stored pipelines, binds the listener.
    pub async fn bind(config: ServerConfig) -> anyhow::Result<Server> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
        let admin_token = admin_token(&config)?;
        let keyring = Arc::new(Keyring::load(&config.data_dir)?);
        let limits = &config.limits;
        // Before any pipeline is built: the wasm host takes the server's limits.
        crate::wasm::WasmHost::install(crate::wasm::HostSettings {
            max_module_bytes: limits.max_module_bytes,
            limits: crate::wasm::WasmLimits {
                fuel: limits.wasm_fuel,
                deadline: Duration::from_millis(limits.wasm_deadline_ms),
                memory_bytes: limits.wasm_memory_bytes as usize,
                output_bytes: limits.wasm_output_bytes as usize,
            },
            ..Default::default()
        });
        std::fs::create_dir_all(config.data_dir.join("modules"))
            .with_context(|| format!("cannot create {}/modules", config.data_dir.display()))?;
        let url = config.database_url();
        let db = Db::connect(&url)
            .await
            .with_context(|| format!("cannot open the database {}", crate::db::redact_url(&url)))?;
        // Bound before the pipelines start: the egress policy refuses the server's own address.
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let egress = EgressPolicy::new(
            &config.egress.allow,
            &config.egress.deny,
            config.egress.default,
            vec![listener.local_addr()?],
        );
        let node = config.node();
        let supervisor = Supervisor::new(
            db.clone(),
            SupervisorSettings {
                data_dir: config.data_dir.clone(),
                rules: ServeRules {
                    ceilings: limits.ceilings(),
                    egress,
                    allow_absolute_paths: config.allow_absolute_paths,
                },
                keyring,
                guests: GuestPool::start(limits.guest_threads, limits.guest_calls_per_tenant),
                file_bytes_per_tenant: limits.file_bytes_per_tenant,
            },
        );
        // Stored definitions brought up to this version (idempotent: every node may do it),
        // then this node joins and starts what it holds (docs/service.md §9).
        let rows = pipelines::list(&db, None).await?;
        for row in &rows {
            upgrade_stored(&db, &supervisor, row).await?;
        }
        let address = config
            .advertise_address
            .unwrap_or(listener.local_addr()?)
            .to_string();
        let cluster = Cluster::join(
            db.clone(),
            node.clone(),
            address,
            Timings::for_ttl(Duration::from_secs(limits.lease_ttl_secs)),
            supervisor.clone(),
            config.data_dir.clone(),
        )
        .await
        .context("cannot join the cluster")?;
        tracing::info!(pipelines = supervisor.all().len(), stored = rows.len(), node = %node, data_dir = %config.data_dir.display(), "Pipelines restored.");
        let app = Arc::new(App {
            db,
            supervisor,
            admin_hash: api::auth::admin_hash(&admin_token),
            metrics_hash: config
                .metrics_token
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(api::auth::admin_hash),
            limits: config.limits.clone(),
            node,
            cluster,
            peers: api::forward::client(),
            requests: Mutex::new(Default::default()),
            tokens: Default::default(),
        });
        Ok(Server {
            listener,
            app,
            config,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown`, then stops every pipeline (each flushing) and saves counters.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Server {
            listener,
            app,
            config,
        } = self;
        let background = CancellationToken::new();
        let housekeeping = tokio::spawn(housekeeping(
            app.clone(),
            config.clone(),
            background.clone(),
        ));
        let cluster = tokio::spawn(app.cluster.clone().run(background.clone()));
        let router = api::router(app.clone());
        let served = http::serve(listener, router, &config.http, shutdown).await;
        tracing::info!("Stopping every pipeline (flushing) and handing them over.");
        app.cluster.hand_over().await;
        app.supervisor.shutdown().await;
        background.cancel();
        let _ = housekeeping.await;
        let _ = cluster.await;
        served.context("the HTTP server failed")
    }
}

/// Brings a stored pipeline up to this version: every secret sealed under the current key
/// (plaintext from before sealing existed, or a previous key after a rotation), and its lease
/// under the canonical analyzer key.
async fn upgrade_stored(
    db: &Db,
    supervisor: &Supervisor,
    row: &PipelineRow,
) -> anyhow::Result<PipelineRow> {
    let mut row = row.clone();
    let Ok(mut config) = ExporterConfig::load(&row.definition) else {
        return Ok(row); // reported when it starts
    };
    let keyring = supervisor.keyring();
    // Rows from before the columns existed (or before a canonical form changed).
    let fields = StoredFields::of(&config, supervisor.rules().ceilings.max_spool_bytes);
    let mut stale = {
        let mut expected = row.clone();
        fields.apply(&mut expected);
        expected != row
    };
    fields.apply(&mut row);
    for (key, value) in config.secrets_mut() {
        if value.is_empty() || (is_sealed(value) && keyring.is_current(value)) {
            continue;
        }
        stale = true;
        if is_sealed(value) {
            *value = keyring
                .open(key, value)
                .with_context(|| format!("pipeline {}: {key}", row.id))?;
        }
    }
    if stale {
        row.definition = supervisor.sealed_definition(&config);
        db.upgrade_pipeline(&row, &fields.modules).await?;
        tracing::info!(pipeline = %row.id, "Stored definition brought up to date (sealed secrets, columns).");
    }
    if let Some(key) = definitions::lease_key(&config)
        && let Some(lease) = leases::for_pipeline(db, &row.id).await?
        && lease.key() != key
        && let Err(e) = leases::rekey(db, &row.id, &key).await
    {
        tracing::warn!(pipeline = %row.id, analyzer = %key.analyzer, error = %e, "Cannot move the lease to its canonical analyzer.");
    }
    Ok(row)
}

/// Saves every pipeline's counters periodically (the cluster loop renews the leases).
async fn housekeeping(app: Arc<App>, config: ServerConfig, stop: CancellationToken) {
    let mut save =
        tokio::time::interval(Duration::from_secs(config.limits.account_save_secs.max(1)));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = save.tick() => app.supervisor.save_all_accounts().await,
        }
    }
}

/// The admin token: `SLUICE_ADMIN_TOKEN`, else the config's, else the one kept in
/// `<data_dir>/admin-token` (generated on first start).
fn admin_token(config: &ServerConfig) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var(ADMIN_TOKEN_ENV)
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_string());
    }
    if let Some(token) = config.admin_token.as_deref()
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_string());
    }
    let path = config.data_dir.join("admin-token");
    if let Ok(token) = std::fs::read_to_string(&path)
        && !token.trim().is_empty()
    {
        tracing::info!(file = %path.display(), "Admin token read from the data folder.");
        return Ok(token.trim().to_string());
    }
    let token = api::auth::new_token();
    write_private(&path, &token).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(file = %path.display(), "No admin token configured: generated one.");
    Ok(token)
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content.as_bytes())?;
    file.write_all(b"\n")
}

/// `sluice serve`: binds, prints `sluice serve listening on <addr>`, serves until `shutdown`.
pub async fn serve(args: ServeArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = args.resolve()?;
    let server = Server::bind(config).await?;
    let addr = server.local_addr()?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        writeln!(out, "sluice serve listening on {addr}")?;
        out.flush()?;
    }
    server.run(shutdown).await
}

//! `sluice run` and `sluice check`: one pipeline from an upstream exporter file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::config::env::Overrides;
use crate::config::{ExporterConfig, MAX_CONFIG_BYTES, StoreType};
use crate::metrics::{PipelineStats, StatsSnapshot};
use crate::pipeline::BuildContext;
use crate::pipeline::batch::prom_sky_con::PromGauges;
use crate::runner::{self, RunParts};
use crate::skydive::subscriber::{SubscriberSettings, SubscriberStats};

/// Reads and validates a pipeline file with the `SKYDIVE_*` variables of the environment
/// applied over it (config/env.rs); errors name the file, key path and line, or the variable.
pub fn load(path: &Path) -> anyhow::Result<(ExporterConfig, Overrides)> {
    load_with_env(path, std::env::vars())
}

/// [`load`] with the variables `vars` in place of the process's.
pub fn load_with_env(
    path: &Path,
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<(ExporterConfig, Overrides)> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > MAX_CONFIG_BYTES as u64 {
        bail!(
            "{}: {} bytes, more than the {MAX_CONFIG_BYTES} accepted",
            path.display(),
            meta.len()
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    ExporterConfig::load_with_env(&text, vars).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })
}

/// `sluice check`: the resolved pipeline as YAML (secrets redacted), or every error.
/// The `SKYDIVE_*` variables are listed first (secrets redacted), then the pipeline they give.
pub fn check(path: &Path) -> anyhow::Result<String> {
    check_with_env(path, std::env::vars())
}

/// [`check`] with the variables `vars` in place of the process's.
pub fn check_with_env(
    path: &Path,
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<String> {
    let (config, overrides) = load_with_env(path, vars)?;
    let mut text = format!("# {}: valid\n", path.display());
    for o in &overrides.applied {
        text.push_str(&format!(
            "# {} sets {}: {:?}\n",
            o.variable,
            o.key,
            o.shown_value()
        ));
    }
    for name in &overrides.unknown {
        text.push_str(&format!("# {name} names no key: ignored\n"));
    }
    text.push_str(&serde_yaml::to_string(&config.redacted())?);
    Ok(text)
}

/// The analyzer identity: `host_id` from the file, else the machine's hostname (Skydive's default).
fn host_id(config: &ExporterConfig) -> String {
    config.host_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default()
    })
}

/// What a finished run did.
#[derive(Debug)]
pub struct RunSummary {
    /// Pipeline counters.
    pub pipeline: StatsSnapshot,
    /// Flows the subscriber had to drop as malformed.
    pub malformed_flows: u64,
    /// Objects still in the spool (not uploaded yet); the next start uploads them.
    pub left_in_spool: usize,
}

/// `sluice run`: subscribe and export until `shutdown`, then flush everything pending.
pub async fn run(path: &Path, shutdown: CancellationToken) -> anyhow::Result<RunSummary> {
    let (config, overrides) = load(path)?;
    for o in &overrides.applied {
        tracing::info!(variable = %o.variable, key = o.key, value = o.shown_value(), "environment override");
    }
    for name in &overrides.unknown {
        tracing::warn!(variable = %name, "SKYDIVE_* variable names no key: ignored");
    }
    let stats = Arc::new(PipelineStats::default());
    let subscriber_stats = Arc::new(SubscriberStats::default());
    let subscriber = SubscriberSettings {
        url: config.pipeline.subscriber.url.clone(),
        host_id: host_id(&config),
        capture_id: config.pipeline.subscriber.capture_id.clone(),
        username: config.analyzer.auth.cluster.username.clone(),
        password: config.analyzer.auth.cluster.password.clone(),
        silence_timeout: Duration::from_secs(60),
        tls: crate::tls::client_config(&config.tls)
            .with_context(|| format!("{}: cannot use the TLS settings", path.display()))?,
        ..SubscriberSettings::default()
    };
    tracing::info!(file = %path.display(), url = %subscriber.shown_url(), namespace = %subscriber.namespace(), "pipeline starting");
    let context = BuildContext::default();
    let gauges = match &config.pipeline.store.prom_sky_con.port {
        Some(port) if config.pipeline.store.kind == StoreType::PromSkyCon => Some(
            serve_gauges(port.0.get(), context.prom_gauges.clone(), shutdown.clone())
                .await
                .with_context(|| format!("{}: pipeline.store.prom_sky_con.port", path.display()))?,
        ),
        _ => None,
    };
    let parts = RunParts {
        config: &config,
        context: &context,
        subscriber,
        default_spool_dir: crate::sinks::spool::default_dir(
            path,
            &config.pipeline.store.buffered.dirname,
        ),
        stats: stats.clone(),
        subscriber_stats: subscriber_stats.clone(),
    };
    let end = runner::run(parts, &shutdown, || {}).await;
    if let Some(server) = gauges {
        server.abort();
    }
    let end = end.map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let malformed = subscriber_stats
        .malformed_flows
        .load(std::sync::atomic::Ordering::Relaxed);
    stats.count_drop(crate::metrics::DropReason::Malformed, malformed);
    let backpressure = subscriber_stats
        .backpressure_flows
        .load(std::sync::atomic::Ordering::Relaxed);
    stats.count_drop(crate::metrics::DropReason::Backpressure, backpressure);
    Ok(RunSummary {
        pipeline: stats.snapshot(),
        malformed_flows: malformed,
        left_in_spool: end.left_in_spool,
    })
}

/// Serves the `prom_sky_con` store's gauges on `/metrics` at `port` of every interface, as
/// upstream's `:<port>` (docs/stages.md §9.3), until `shutdown`. The port is bound before the
/// pipeline starts: one that can't be bound fails the run (upstream exited).
async fn serve_gauges(
    port: u16,
    gauges: Arc<PromGauges>,
    shutdown: CancellationToken,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    // `[::]` takes IPv4 too where the system allows; else IPv4 only.
    let listener =
        match tokio::net::TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port)).await {
            Ok(listener) => listener,
            Err(_) => tokio::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port))
                .await
                .with_context(|| format!("cannot listen on port {port}"))?,
        };
    tracing::info!(port, "prom_sky_con: gauges on /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let gauges = gauges.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    gauges.render(),
                )
            }
        }),
    );
    Ok(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "prom_sky_con: the /metrics listener failed");
        }
    }))
}

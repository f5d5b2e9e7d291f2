//! `sluice run` and `sluice check`: one pipeline from an upstream exporter file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::config::{ExporterConfig, MAX_CONFIG_BYTES};
use crate::metrics::{PipelineStats, StatsSnapshot};
use crate::pipeline::BuildContext;
use crate::runner::{self, RunParts};
use crate::skydive::subscriber::{SubscriberSettings, SubscriberStats};

/// Reads and validates a pipeline file; errors name the file, key path and line.
pub fn load(path: &Path) -> anyhow::Result<ExporterConfig> {
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
    ExporterConfig::load(&text).map_err(|errors| {
        let lines: Vec<String> = errors
            .0
            .iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })
}

/// `sluice check`: the resolved pipeline as YAML (secrets redacted), or every error.
pub fn check(path: &Path) -> anyhow::Result<String> {
    let config = load(path)?;
    let mut text = format!("# {}: valid\n", path.display());
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
    let config = load(path)?;
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
    let parts = RunParts {
        config: &config,
        context: &BuildContext::default(),
        subscriber,
        default_spool_dir: crate::sinks::spool::default_dir(
            path,
            &config.pipeline.store.buffered.dirname,
        ),
        stats: stats.clone(),
        subscriber_stats: subscriber_stats.clone(),
    };
    let end = runner::run(parts, &shutdown, || {})
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let malformed = subscriber_stats
        .malformed_flows
        .load(std::sync::atomic::Ordering::Relaxed);
    stats.count_drop(crate::metrics::DropReason::Malformed, malformed);
    Ok(RunSummary {
        pipeline: stats.snapshot(),
        malformed_flows: malformed,
        left_in_spool: end.left_in_spool,
    })
}

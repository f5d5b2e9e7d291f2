//! `sluice run` and `sluice check`: one pipeline from an upstream exporter file.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{ExporterConfig, MAX_CONFIG_BYTES};
use crate::egress::EgressPolicy;
use crate::metrics::{PipelineStats, StatsSnapshot};
use crate::pipeline::Pipeline;
use crate::sinks::Sink;
use crate::subscriber::{self, SubscriberSettings, SubscriberStats};

/// Messages buffered between the subscriber and the pipeline. Small on purpose: a slow sink
/// pushes back on the WebSocket read instead of growing memory.
const CHANNEL_MESSAGES: usize = 64;

/// How long a stopping `sluice run` waits for spooled objects to be uploaded; what is left
/// stays in the spool for the next start.
const SPOOL_DRAIN: Duration = Duration::from_secs(30);

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
    // The writer is built here (not by the pipeline) to close it after the last flush.
    let sink = Sink::from_config_spooled(
        &config.pipeline.write,
        crate::sinks::spool::default_dir(path, &config.pipeline.store.buffered.dirname),
        stats.clone(),
        &EgressPolicy::unrestricted(),
        None,
    )
    .with_context(|| format!("{}: cannot start the writer", path.display()))?;
    // A run of the same file that ended just before must not share a stream second with this
    // one (its objects' keys would be reused).
    crate::pipeline::store::wait_for_next_second().await;
    let pipeline = Pipeline::build(&config, Some(sink.clone()), stats.clone())
        .await
        .with_context(|| format!("{}: cannot build the pipeline", path.display()))?;
    let settings = SubscriberSettings {
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
    tracing::info!(file = %path.display(), url = %settings.shown_url(), namespace = %settings.namespace(), "pipeline starting");
    let (tx, rx) = mpsc::channel(CHANNEL_MESSAGES);
    let sub_stats = Arc::new(SubscriberStats::default());
    let subscriber = tokio::spawn(subscriber::run(
        settings,
        tx,
        sub_stats.clone(),
        shutdown.clone(),
    ));
    // The pipeline stops when the subscriber's sender is dropped: it then drains what was
    // already accepted and flushes every pending buffer.
    let pipeline = tokio::spawn(pipeline.run(rx, CancellationToken::new()));
    subscriber.await.context("subscriber task failed")?;
    let stats = pipeline.await.context("pipeline task failed")?;
    // Everything flushed is spooled; give the uploads a bounded time to finish.
    let left_in_spool = sink.close(SPOOL_DRAIN).await;
    let malformed = sub_stats
        .malformed_flows
        .load(std::sync::atomic::Ordering::Relaxed);
    stats.count_drop(crate::metrics::DropReason::Malformed, malformed);
    Ok(RunSummary {
        pipeline: stats.snapshot(),
        malformed_flows: malformed,
        left_in_spool,
    })
}

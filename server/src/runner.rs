//! One run of one pipeline, as `sluice run` and each pipeline task of `sluice serve` do it:
//! the writer, the stages, then the subscriber feeding them through a bounded channel, until
//! cancelled (everything accepted is flushed) or until a part fails.
//!
//! The writer is built here, not by the pipeline, so that it can be closed (its spool drained
//! for a while, its folder lock released) after the pipeline's last flush.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::ExporterConfig;
use crate::metrics::PipelineStats;
use crate::pipeline::{BuildContext, Pipeline};
use crate::sinks::Sink;
use crate::skydive::subscriber::{self, SubscriberSettings, SubscriberStats};

/// Messages buffered between a pipeline's subscriber and its stages: a slow sink pushes back
/// on this pipeline's WebSocket only.
pub const CHANNEL_MESSAGES: usize = 64;
/// How long a stopping pipeline waits for its spool to upload; the rest waits for the next
/// start.
pub const SPOOL_DRAIN: Duration = Duration::from_secs(30);

/// What a run is made of.
#[derive(Debug)]
pub struct RunParts<'a> {
    /// The checked definition.
    pub config: &'a ExporterConfig,
    /// Where it may connect and write, where its guests run.
    pub context: &'a BuildContext,
    /// How to subscribe.
    pub subscriber: SubscriberSettings,
    /// The spool folder when the definition names none.
    pub default_spool_dir: PathBuf,
    /// The pipeline's counters (kept across runs).
    pub stats: Arc<PipelineStats>,
    /// The subscriber's counters (kept across runs).
    pub subscriber_stats: Arc<SubscriberStats>,
}

/// How a run ended without failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunEnd {
    /// Objects still in the spool (the next start uploads them).
    pub left_in_spool: usize,
}

/// Runs until `cancel` (Ok: every accepted flow processed, every buffer flushed) or until a
/// part fails (Err, saying which). `started` is called once the stages are built and the
/// subscriber about to connect.
pub async fn run(
    parts: RunParts<'_>,
    cancel: &CancellationToken,
    started: impl FnOnce(),
) -> Result<RunEnd, String> {
    let RunParts {
        config,
        context,
        subscriber,
        default_spool_dir,
        stats,
        subscriber_stats,
    } = parts;
    // A run that ended just before (in this process, or one that ended before it started) must
    // not share a stream second with this one: this run's first objects would take the keys of
    // that run's first objects and overwrite them in the store.
    tokio::select! {
        () = cancel.cancelled() => return Ok(RunEnd { left_in_spool: 0 }),
        () = crate::pipeline::batch::wait_for_next_second() => {}
    }
    // The prom_sky_con store writes no object (docs/stages.md §9.3): no writer, so no spool
    // folder is opened for it.
    let sink = if config.pipeline.store.kind == crate::config::StoreType::PromSkyCon {
        Sink::Memory(crate::sinks::MemorySink::default())
    } else {
        Sink::from_config_spooled(
            &config.pipeline.write,
            default_spool_dir,
            stats.clone(),
            &context.egress,
            context.confine.as_ref(),
        )
        .map_err(|e| format!("cannot start the writer: {e}"))?
    };
    let built = tokio::select! {
        () = cancel.cancelled() => None,
        built = Pipeline::build_in(config, Some(sink.clone()), stats, context) => Some(built),
    };
    let outcome = match built {
        None => Ok(()),
        Some(Err(e)) => Err(format!("cannot build the pipeline: {e}")),
        Some(Ok(pipeline)) => {
            started();
            feed(pipeline, subscriber, subscriber_stats, cancel).await
        }
    };
    let left_in_spool = sink.close(SPOOL_DRAIN).await;
    outcome.map(|()| RunEnd { left_in_spool })
}

/// Subscribes and feeds `pipeline` until cancelled (Ok, after the flush) or until a part dies.
///
/// The subscriber and the pipeline are one task, so the flows the subscriber decodes are freed
/// on the thread that allocated them: as two tasks on two threads, the cross-thread frees and
/// the wake-ups cost `sluice run` about 8% of its CPU per flow (`cargo bench -p sluice --bench
/// service`, perf). A pipeline is then one core's work, and a server's pipelines spread over
/// its cores.
async fn feed(
    pipeline: Pipeline,
    settings: SubscriberSettings,
    stats: Arc<SubscriberStats>,
    cancel: &CancellationToken,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel(CHANNEL_MESSAGES);
    let sub_cancel = cancel.child_token();
    let cancel = cancel.clone();
    let both = tokio::spawn(async move {
        let sub = AssertUnwindSafe(subscriber::run(settings, tx, stats, sub_cancel.clone()))
            .catch_unwind();
        // The pipeline stops when the subscriber's sender is dropped: it then drains what was
        // already accepted and flushes every buffer.
        let pipe = AssertUnwindSafe(pipeline.run(rx, CancellationToken::new())).catch_unwind();
        tokio::pin!(sub, pipe);
        tokio::select! {
            ended = &mut pipe => {
                sub_cancel.cancel();
                let _ = sub.await;
                match ended {
                    Err(panic) => Err(format!("pipeline task panicked: {}", panic_message(panic))),
                    // Stopping: the subscriber dropped its sender and the pipeline flushed and
                    // ended, possibly before the subscriber was seen to end.
                    Ok(_) if cancel.is_cancelled() => Ok(()),
                    Ok(_) => Err("pipeline task ended unexpectedly".to_string()),
                }
            }
            ended = &mut sub => {
                let flushed = pipe.await;
                match (ended, flushed) {
                    (Err(panic), _) => Err(format!("subscriber task panicked: {}", panic_message(panic))),
                    (_, Err(panic)) => Err(format!("pipeline task panicked: {}", panic_message(panic))),
                    _ if cancel.is_cancelled() => Ok(()),
                    _ => Err("subscriber ended unexpectedly".to_string()),
                }
            }
        }
    });
    both.await
        .unwrap_or_else(|e| Err(format!("pipeline task failed: {e}")))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

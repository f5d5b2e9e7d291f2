//! One tenant pipeline: classify → filter → group by tag → transform → mangle → store, with the
//! store driving storeheader → encode → compress → write → account ([`output`]).

pub mod account;
pub mod batch;
pub mod classify;
pub mod compress;
pub mod encode;
pub mod filter;
pub mod keyformat;
pub mod mangle;
pub mod output;
pub mod record;
pub mod storeheader;
pub mod transform;
pub mod ttl_cache;

use std::sync::Arc;

use ipnet::IpNet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{AccountType, ClassifyType, ExporterConfig};
use crate::egress::EgressPolicy;
use crate::guest_log::GuestLog;
use crate::metrics::{DropReason, PipelineStats};
use crate::sinks::{Confinement, Sink};
use crate::skydive::flow::Flow;
use crate::skydive::subscriber::FlowBatch;
use crate::wasm::{GuestRunner, WasmStage};
use batch::Batcher;
use classify::{Classifier, Tag};
use filter::Filter;
use mangle::Mangler;
use output::{KeyLayout, Output};
use record::Record;
use transform::Transformer;

/// Why a pipeline could not be built from a valid config.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Transform stage.
    #[error(transparent)]
    Transform(#[from] transform::TransformBuildError),
    /// Mangle stage.
    #[error(transparent)]
    Mangle(#[from] mangle::MangleBuildError),
    /// Write stage.
    #[error(transparent)]
    Sink(#[from] crate::sinks::SinkError),
    /// The analyzer client of `subnet_autodiscovery`.
    #[error(transparent)]
    Topology(#[from] crate::skydive::topology::TopologyError),
    /// The account file's folder is outside the pipeline's.
    #[error("pipeline.account.file.filename: {0}")]
    AccountFile(std::io::Error),
}

/// What a pipeline is built with besides its definition. The default is `sluice run`'s: any
/// destination, files wherever its user may write, guests run in place.
#[derive(Debug, Clone, Default)]
pub struct BuildContext {
    /// Where the pipeline may connect.
    pub egress: EgressPolicy,
    /// `sluice serve`: the folder its files stay in, and the tenant's quota.
    pub confine: Option<Confinement>,
    /// Where its guests run.
    pub guests: GuestRunner,
    /// Where its guests' lines go.
    pub guest_log: Arc<GuestLog>,
    /// The gauges of a `prom_sky_con` store, for whoever serves them.
    pub prom_gauges: Arc<batch::prom_sky_con::PromGauges>,
}

/// A built pipeline. It is driven by one task: [`Pipeline::run`].
#[derive(Debug)]
pub struct Pipeline {
    classifier: Classifier,
    filter: Filter,
    transformer: Transformer,
    mangler: Mangler,
    batcher: Batcher,
    output: Output,
}

impl Pipeline {
    /// Builds every stage from a validated config; `sink` overrides the configured writer.
    ///
    /// With `subnet_autodiscovery` this queries the analyzer for the Kubernetes nodes, retrying
    /// for at most [`classify::autodiscovery::DISCOVERY_BUDGET`].
    pub async fn build(
        config: &ExporterConfig,
        sink: Option<Sink>,
        stats: Arc<PipelineStats>,
    ) -> Result<Self, BuildError> {
        Self::build_in(config, sink, stats, &BuildContext::default()).await
    }

    /// [`Pipeline::build`] with `sluice serve`'s confinement, egress policy and guest pool.
    pub async fn build_in(
        config: &ExporterConfig,
        sink: Option<Sink>,
        stats: Arc<PipelineStats>,
        context: &BuildContext,
    ) -> Result<Self, BuildError> {
        let p = &config.pipeline;
        // Config errors first (as upstream's order: mangle, transform, classify), so a bad
        // `extend` template is reported before any wait for the analyzer.
        let mangler = Mangler::build(p, context).await?;
        let transformer = Transformer::build(config, context).await?;
        let mut masks: Vec<IpNet> = p
            .classify
            .cluster_net_masks
            .iter()
            .filter_map(|m| m.get().map(|m| m.0))
            .collect();
        if p.classify.kind == ClassifyType::SubnetAutodiscovery {
            let client =
                crate::skydive::topology::TopologyClient::from_config(config, &context.egress)?;
            masks.extend(
                classify::autodiscovery::discover_node_masks(
                    &client,
                    classify::autodiscovery::DISCOVERY_BUDGET,
                )
                .await,
            );
        }
        let sink = match sink {
            Some(sink) => sink,
            None => Sink::from_config(&p.write, &context.egress, context.confine.as_ref())?,
        };
        let encoder = encode::Encoder::from_config(&p.encode);
        let compressor = compress::Compressor::from_config(&p.compress);
        let extension = match compressor {
            compress::Compressor::Gzip { .. } => "gz",
            compress::Compressor::None => encoder.extension(),
        };
        let bucket = match (&p.store.kind, p.store.buffered.dirname.as_str()) {
            (crate::config::StoreType::Direct, "") => "my_dirname".to_string(),
            (_, dirname) => dirname.to_string(),
        };
        if p.account.kind == AccountType::File
            && let Some(c) = &context.confine
        {
            let file = std::path::Path::new(&p.account.file.filename);
            let folder = file.parent().unwrap_or(std::path::Path::new("."));
            crate::sinks::ensure_within(folder, &c.within).map_err(BuildError::AccountFile)?;
        }
        let batcher = match p.store.kind {
            crate::config::StoreType::PromSkyCon => {
                let client =
                    crate::skydive::topology::TopologyClient::from_config(config, &context.egress)?;
                Batcher::PromSkyCon(batch::prom_sky_con::PromSkyConStore::new(
                    &p.store.prom_sky_con,
                    context.prom_gauges.clone(),
                    Some(client),
                    crate::now_ms(),
                ))
            }
            _ => {
                // A replaced definition without the store no longer shows its gauges.
                context.prom_gauges.clear();
                Batcher::from_config(&p.store, crate::now_ms())
            }
        };
        let output = Output {
            header: storeheader::StoreHeader::from_config(&p.storeheader),
            encoder,
            compressor,
            sink,
            bucket,
            keys: KeyLayout::from_config(config, extension),
            stats,
            account_file: (p.account.kind == AccountType::File)
                .then(|| account::AccountFile::new(&p.account.file.filename)),
        };
        Ok(Pipeline {
            classifier: Classifier::new(masks),
            filter: Filter::new(&p.filter.excluded_tags),
            transformer,
            mangler,
            batcher,
            output,
        })
    }

    /// The pipeline's counters.
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.output.stats
    }

    /// Runs one message of flows through every stage.
    pub async fn process(&mut self, flows: Vec<Flow>, now_ms: i64) {
        self.process_messages(vec![flows], now_ms).await;
    }

    /// Runs messages through every stage, in order. The transform first looks up what all of
    /// them will need, so that a pipeline that fell behind on analyzer round trips catches
    /// up a whole channel of messages per round trip (docs/stages.md §6.2.4).
    pub async fn process_messages(&mut self, messages: Vec<Vec<Flow>>, now_ms: i64) {
        let messages: Vec<Vec<(Tag, Vec<Flow>)>> = messages
            .into_iter()
            .map(|flows| self.classify(flows))
            .collect();
        let flows: Vec<&Flow> = messages
            .iter()
            .flatten()
            .flat_map(|(_, flows)| flows)
            .collect();
        self.transformer.prepare(&flows, now_ms).await;
        for groups in messages {
            self.transform_and_store(groups, now_ms).await;
        }
    }

    /// Classifies and filters one message's flows: its tag groups, in order of first
    /// appearance so that output order is deterministic.
    fn classify(&mut self, flows: Vec<Flow>) -> Vec<(Tag, Vec<Flow>)> {
        let stats = &self.output.stats;
        let received = flows.len() as u64;
        let total = stats.flows_received.fetch_add(received, Ordering::Relaxed) + received;
        tracing::debug!(flows = received, received_total = total, "message received");
        let mut groups: Vec<(Tag, Vec<Flow>)> = Vec::new();
        let mut filtered = 0;
        let total = flows.len();
        for (i, flow) in flows.into_iter().enumerate() {
            let tag = self.classifier.tag(&flow);
            if self.filter.is_excluded(tag) {
                filtered += 1;
                continue;
            }
            match groups.iter_mut().find(|(t, _)| *t == tag) {
                Some((_, group)) => group.push(flow),
                None => {
                    // Room for the rest of the batch: flows are large, and growing the
                    // group step by step would copy them several times over.
                    let mut group = Vec::with_capacity(total - i);
                    group.push(flow);
                    groups.push((tag, group));
                }
            }
        }
        stats.count_drop(DropReason::Filtered, filtered);
        groups
    }

    /// Transform → mangle → store for one message's tag groups. A wasm stage runs the groups
    /// in one instance (docs/wasm-host.md §1.6).
    async fn transform_and_store(&mut self, groups: Vec<(Tag, Vec<Flow>)>, now_ms: i64) {
        self.wasm_stages().for_each(WasmStage::begin_message);
        let batches = self.transform_and_mangle(groups, now_ms).await;
        self.wasm_stages().for_each(WasmStage::end_message);
        self.batcher.store(now_ms, batches, &mut self.output).await;
    }

    /// The pipeline's wasm transform and mangle stages.
    fn wasm_stages(&mut self) -> impl Iterator<Item = &mut WasmStage> {
        [self.transformer.wasm(), self.mangler.wasm()]
            .into_iter()
            .flatten()
    }

    /// Transform → mangle for one message's tag groups.
    async fn transform_and_mangle(
        &mut self,
        groups: Vec<(Tag, Vec<Flow>)>,
        now_ms: i64,
    ) -> Vec<(&'static str, Vec<Record>)> {
        let stats = &self.output.stats;
        let mut batches: Vec<(&'static str, Vec<Record>)> = Vec::with_capacity(groups.len());
        for (tag, flows) in groups {
            let records = self
                .transformer
                .transform_batch(tag, flows, now_ms, stats)
                .await;
            if records.is_empty() {
                continue;
            }
            let records = self
                .mangler
                .mangle_batch(tag.as_str(), records, now_ms, stats)
                .await;
            batches.push((tag.as_str(), records));
        }
        batches
    }

    /// Processes `first` with the messages already waiting behind it, up to
    /// [`LOOK_AHEAD_MESSAGES`]; their room in the subscriber's queue is given back after.
    async fn process_waiting(&mut self, first: FlowBatch, input: &mut mpsc::Receiver<FlowBatch>) {
        let mut batches = vec![first];
        while batches.len() < LOOK_AHEAD_MESSAGES
            && let Ok(next) = input.try_recv()
        {
            batches.push(next);
        }
        let messages = batches
            .iter_mut()
            .map(|batch| std::mem::take(&mut batch.flows))
            .collect();
        self.process_messages(messages, crate::now_ms()).await;
        drop(batches);
    }

    /// Flushes what is due by time.
    pub async fn tick(&mut self, now_ms: i64) {
        self.batcher.tick(now_ms, &mut self.output).await;
    }

    /// Flushes everything pending (shutdown).
    pub async fn flush_all(&mut self, now_ms: i64) {
        self.batcher.flush_all(now_ms, &mut self.output).await;
    }

    /// Records waiting in the store.
    pub fn pending(&self) -> usize {
        self.batcher.pending()
    }

    /// Drives the pipeline: messages from `input`, time flushes, and on `shutdown` (or when
    /// `input` closes) every message already accepted is processed and everything flushed.
    pub async fn run(
        mut self,
        mut input: mpsc::Receiver<FlowBatch>,
        shutdown: CancellationToken,
    ) -> Arc<PipelineStats> {
        loop {
            let sleep = match self.batcher.next_deadline_ms() {
                Some(deadline) => Duration::from_millis((deadline - crate::now_ms()).max(0) as u64),
                None => Duration::from_secs(3600),
            };
            tokio::select! {
                message = input.recv() => match message {
                    Some(batch) => self.process_waiting(batch, &mut input).await,
                    None => break,
                },
                () = tokio::time::sleep(sleep) => self.tick(crate::now_ms()).await,
                () = shutdown.cancelled() => break,
            }
        }
        input.close();
        while let Some(batch) = input.recv().await {
            self.process_waiting(batch, &mut input).await;
        }
        self.flush_all(crate::now_ms()).await;
        let left = self.pending();
        if left > 0 {
            self.output
                .stats
                .count_drop(DropReason::Shutdown, left as u64);
            tracing::error!(
                records = left,
                "records still pending at shutdown: the last write failed"
            );
        }
        self.output.stats.clone()
    }
}

/// Most messages processed together ([`Pipeline::process_messages`]): the subscriber's whole
/// channel.
pub const LOOK_AHEAD_MESSAGES: usize = crate::runner::CHANNEL_MESSAGES;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod awsvpc_tests;

//! Transform: turn a Skydive flow into an output record, or drop it.

pub mod awsflowlogs;
pub mod ocsf;
pub mod secadvisor;
pub mod vpclogs;

use super::BuildContext;
use super::classify::Tag;
use super::record::Record;
use crate::config::{ExporterConfig, TransformType};
use crate::metrics::{DropReason, PipelineStats};
use crate::skydive::flow::Flow;
use crate::wasm::{WasmError, WasmStage, World};
use secadvisor::SecAdvisor;

/// Why a transform could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransformBuildError {
    /// The secadvisor transform's topology client or `extend` entries.
    #[error(transparent)]
    Secadvisor(#[from] secadvisor::SecAdvisorBuildError),
    /// The wasm guest (`pipeline.transform.wasm`).
    #[error("pipeline.transform.wasm: {0}")]
    Wasm(#[from] WasmError),
    /// The vpclogs transform's analyzer client (TLS material).
    #[error(transparent)]
    Topology(#[from] crate::skydive::topology::TopologyError),
}

/// A configured transform.
#[derive(Debug)]
pub enum Transformer {
    /// The flow itself.
    None,
    /// IBM Security Advisor records.
    Secadvisor(Box<SecAdvisor>),
    /// AWS VPC Flow Logs records.
    AwsFlowLogs(awsflowlogs::AwsFlowLogs),
    /// IBM VPC Flow Logs records.
    VpcLogs(vpclogs::VpcLogs),
    /// A tenant's WebAssembly guest, called once per tag batch.
    Wasm(Box<WasmStage>),
    /// OCSF Network Activity events.
    Ocsf(ocsf::Ocsf),
}

impl Transformer {
    /// Builds from a validated config: the whole file, since secadvisor and vpclogs also need
    /// the analyzer's address, credentials and TLS settings.
    pub async fn build(
        config: &ExporterConfig,
        context: &BuildContext,
    ) -> Result<Self, TransformBuildError> {
        match config.pipeline.transform.kind {
            TransformType::None => Ok(Transformer::None),
            TransformType::Ocsf => Ok(Transformer::Ocsf(ocsf::Ocsf)),
            TransformType::Secadvisor => Ok(Transformer::Secadvisor(Box::new(
                SecAdvisor::from_config(config, &context.egress)?,
            ))),
            TransformType::Awsflowlogs => Ok(Transformer::AwsFlowLogs(
                awsflowlogs::AwsFlowLogs::from_options(&config.pipeline.transform.awsflowlogs),
            )),
            TransformType::Vpclogs => Ok(Transformer::VpcLogs(vpclogs::VpcLogs::from_config(
                config,
                &context.egress,
            )?)),
            TransformType::Wasm => {
                let options = config.pipeline.transform.wasm.clone().unwrap_or_default();
                let stage = WasmStage::build(
                    &options,
                    World::Transformer,
                    "transform",
                    context.guests.clone(),
                    context.guest_log.clone(),
                )
                .await?;
                Ok(Transformer::Wasm(Box::new(stage)))
            }
        }
    }

    /// Looks up ahead what transforming `flows` will ask the analyzer (secadvisor's peers and
    /// node types), so that the lookups of several messages share their round trips.
    pub async fn prepare(&mut self, flows: &[&Flow], now_ms: i64) {
        if let Transformer::Secadvisor(t) = self {
            t.prepare(flows, now_ms).await;
        }
    }

    /// The wasm stage, if it is one.
    pub fn wasm(&mut self) -> Option<&mut WasmStage> {
        match self {
            Transformer::Wasm(stage) => Some(stage),
            _ => None,
        }
    }

    /// Transforms the flows of `tag` at `now_ms` (the message's clock), counting what is
    /// dropped: by the transform's choice (`transform`) or, for a wasm stage, by its failure
    /// reason.
    pub async fn transform_batch(
        &mut self,
        tag: Tag,
        flows: Vec<Flow>,
        now_ms: i64,
        stats: &PipelineStats,
    ) -> Vec<Record> {
        let total = flows.len();
        let records: Vec<Record> = match self {
            Transformer::Wasm(stage) => {
                return stage
                    .transform(&flows, stats)
                    .await
                    .into_iter()
                    .map(Record::Wasm)
                    .collect();
            }
            Transformer::None => flows
                .into_iter()
                .map(|f| Record::Flow(Box::new(f)))
                .collect(),
            Transformer::AwsFlowLogs(t) => flows
                .iter()
                .map(|f| Record::AwsFlowLog(Box::new(t.transform(f))))
                .collect(),
            Transformer::Ocsf(t) => flows
                .iter()
                .filter_map(|f| t.transform(tag, f))
                .map(|r| Record::Ocsf(Box::new(r)))
                .collect(),
            Transformer::Secadvisor(t) => {
                t.prefetch(&flows);
                let mut records = Vec::with_capacity(total);
                for flow in flows {
                    if let Some(r) = t.transform(flow, now_ms).await {
                        records.push(Record::SecAdvisor(Box::new(r)));
                    }
                }
                records
            }
            Transformer::VpcLogs(t) => {
                let mut records = Vec::with_capacity(total);
                for flow in &flows {
                    if let Some(r) = t.transform(flow).await {
                        records.push(Record::VpcLog(Box::new(r)));
                    }
                }
                records
            }
        };
        stats.count_drop(DropReason::Transform, (total - records.len()) as u64);
        records
    }
}

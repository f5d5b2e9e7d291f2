//! Transform: turn a Skydive flow into an output record, or drop it.

pub mod secadvisor;

use super::record::Record;
use crate::config::{ExporterConfig, TransformType};
use crate::flow::Flow;
use crate::metrics::{DropReason, PipelineStats};
use crate::wasm::{WasmError, WasmStage, World};
use secadvisor::SecAdvisor;

/// Why a transform could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransformBuildError {
    /// The type is valid but this build doesn't provide it yet.
    #[error("transform type {0} is not available yet")]
    Unavailable(&'static str),
    /// The secadvisor transform's topology client or `extend` entries.
    #[error(transparent)]
    Secadvisor(#[from] secadvisor::SecAdvisorBuildError),
    /// The wasm guest (`pipeline.transform.wasm`).
    #[error("pipeline.transform.wasm: {0}")]
    Wasm(#[from] WasmError),
}

/// A configured transform.
#[derive(Debug)]
pub enum Transformer {
    /// The flow itself.
    None,
    /// IBM Security Advisor records.
    Secadvisor(Box<SecAdvisor>),
    /// A tenant's WebAssembly guest, called once per tag batch.
    Wasm(Box<WasmStage>),
}

impl Transformer {
    /// Builds from a validated config: the whole file, since secadvisor also needs the
    /// analyzer's address, credentials and TLS settings.
    pub fn from_config(config: &ExporterConfig) -> Result<Self, TransformBuildError> {
        match config.pipeline.transform.kind {
            TransformType::None => Ok(Transformer::None),
            TransformType::Secadvisor => Ok(Transformer::Secadvisor(Box::new(
                SecAdvisor::from_config(config)?,
            ))),
            TransformType::Wasm => {
                let options = config.pipeline.transform.wasm.clone().unwrap_or_default();
                let stage = WasmStage::from_options(&options, World::Transformer, "transform")?;
                Ok(Transformer::Wasm(Box::new(stage)))
            }
            other => Err(TransformBuildError::Unavailable(other.as_str())),
        }
    }

    /// Transforms one tag's flows, counting what is dropped: by the transform's choice
    /// (`transform`) or, for a wasm stage, by its failure reason.
    pub async fn transform_batch(
        &mut self,
        flows: Vec<Flow>,
        stats: &PipelineStats,
    ) -> Vec<Record> {
        if let Transformer::Wasm(stage) = self {
            return stage
                .transform(&flows, stats)
                .await
                .into_iter()
                .map(Record::Wasm)
                .collect();
        }
        let total = flows.len();
        let mut records = Vec::with_capacity(total);
        for flow in flows {
            if let Some(record) = self.transform(flow).await {
                records.push(record);
            }
        }
        stats.count_drop(DropReason::Transform, (total - records.len()) as u64);
        records
    }

    /// One flow in, at most one record out.
    pub async fn transform(&mut self, flow: Flow) -> Option<Record> {
        match self {
            Transformer::None => Some(Record::Flow(Box::new(flow))),
            Transformer::Secadvisor(t) => t
                .transform(flow, crate::now_ms())
                .await
                .map(|r| Record::SecAdvisor(Box::new(r))),
            Transformer::Wasm(stage) => {
                // One flow as a batch of one; the pipeline calls `transform_batch` instead.
                let stats = PipelineStats::default();
                stage
                    .transform(std::slice::from_ref(&flow), &stats)
                    .await
                    .into_iter()
                    .next()
                    .map(Record::Wasm)
            }
        }
    }
}

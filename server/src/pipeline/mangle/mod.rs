//! Mangle: post-process one tag's batch of records.

pub mod action;
pub mod logstatus;

use super::BuildContext;
use super::record::Record;
use crate::config::{MangleType, PipelineConfig};
use crate::metrics::PipelineStats;
use crate::wasm::{WasmError, WasmStage, World};
use logstatus::LogStatus;

/// Why a mangler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MangleBuildError {
    /// The wasm guest (`pipeline.mangle.wasm`).
    #[error("pipeline.mangle.wasm: {0}")]
    Wasm(#[from] WasmError),
}

/// A configured mangler.
#[derive(Debug)]
pub enum Mangler {
    /// Records pass unchanged.
    None,
    /// OK / NODATA / SKIPDATA log status records.
    Logstatus(Box<LogStatus>),
    /// Accept/reject from two capture points.
    Action(action::ActionMangler),
    /// A tenant's WebAssembly guest.
    Wasm(Box<WasmStage>),
}

impl Mangler {
    /// Builds from a validated config (`action` reads `pipeline.action`, as upstream).
    pub async fn build(
        pipeline: &PipelineConfig,
        context: &BuildContext,
    ) -> Result<Self, MangleBuildError> {
        match pipeline.mangle.kind {
            MangleType::None => Ok(Mangler::None),
            MangleType::Logstatus => Ok(Mangler::Logstatus(Box::default())),
            MangleType::Action => Ok(Mangler::Action(action::ActionMangler::new(
                &pipeline.action,
            ))),
            MangleType::Wasm => {
                let options = pipeline.mangle.wasm.clone().unwrap_or_default();
                let stage = WasmStage::build(
                    &options,
                    World::Mangler,
                    "mangle",
                    context.guests.clone(),
                    context.guest_log.clone(),
                )
                .await?;
                Ok(Mangler::Wasm(Box::new(stage)))
            }
        }
    }

    /// The wasm stage, if it is one.
    pub fn wasm(&mut self) -> Option<&mut WasmStage> {
        match self {
            Mangler::Wasm(stage) => Some(stage),
            _ => None,
        }
    }

    /// Called once per tag per message; `now_ms` is the message's clock. A wasm mangler's
    /// failed batch is counted as dropped with its reason.
    pub async fn mangle_batch(
        &mut self,
        tag: &str,
        records: Vec<Record>,
        now_ms: i64,
        stats: &PipelineStats,
    ) -> Vec<Record> {
        match self {
            Mangler::None => records,
            Mangler::Logstatus(m) => m.mangle(tag, records, now_ms),
            Mangler::Action(m) => m.mangle(records, now_ms),
            Mangler::Wasm(stage) => stage
                .mangle(tag, &records, stats)
                .await
                .into_iter()
                .map(Record::Wasm)
                .collect(),
        }
    }
}

//! Mangle: post-process one tag's batch of records.

pub mod logstatus;

use super::record::Record;
use crate::config::{MangleSection, MangleType};
use crate::metrics::PipelineStats;
use crate::wasm::{WasmError, WasmStage, World};
use logstatus::LogStatus;

/// Why a mangler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MangleBuildError {
    /// The type is valid but this build doesn't provide it yet.
    #[error("mangle type {0} is not available yet")]
    Unavailable(&'static str),
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
    /// A tenant's WebAssembly guest.
    Wasm(Box<WasmStage>),
}

impl Mangler {
    /// Builds from a validated config section.
    pub fn from_config(section: &MangleSection) -> Result<Self, MangleBuildError> {
        match section.kind {
            MangleType::None => Ok(Mangler::None),
            MangleType::Logstatus => Ok(Mangler::Logstatus(Box::default())),
            MangleType::Wasm => {
                let options = section.wasm.clone().unwrap_or_default();
                let stage = WasmStage::from_options(&options, World::Mangler, "mangle")?;
                Ok(Mangler::Wasm(Box::new(stage)))
            }
            other => Err(MangleBuildError::Unavailable(other.as_str())),
        }
    }

    /// Called once per tag per message; `now_ms` is the wall clock.
    pub fn mangle(&mut self, tag: &str, records: Vec<Record>, now_ms: i64) -> Vec<Record> {
        match self {
            Mangler::None => records,
            Mangler::Logstatus(m) => m.mangle(tag, records, now_ms),
            // Wasm manglers run through `mangle_batch`; called here they pass records through.
            Mangler::Wasm(_) => records,
        }
    }

    /// As [`Mangler::mangle`], and the way a wasm mangler runs: a failed batch's records are
    /// counted as dropped with the reason.
    pub async fn mangle_batch(
        &mut self,
        tag: &str,
        records: Vec<Record>,
        now_ms: i64,
        stats: &PipelineStats,
    ) -> Vec<Record> {
        match self {
            Mangler::Wasm(stage) => stage
                .mangle(tag, &records, stats)
                .await
                .into_iter()
                .map(Record::Wasm)
                .collect(),
            other => other.mangle(tag, records, now_ms),
        }
    }
}

//! Mangle: post-process one tag's batch of records.

pub mod action;
pub mod logstatus;

use super::record::Record;
use crate::config::{MangleType, PipelineConfig};
use logstatus::LogStatus;

/// Why a mangler could not be built.
#[derive(Debug, thiserror::Error)]
pub enum MangleBuildError {
    /// The type is valid but this build doesn't provide it yet.
    #[error("mangle type {0} is not available yet")]
    Unavailable(&'static str),
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
}

impl Mangler {
    /// Builds from a validated config (`action` reads `pipeline.action`, as upstream).
    pub fn from_config(pipeline: &PipelineConfig) -> Result<Self, MangleBuildError> {
        match pipeline.mangle.kind {
            MangleType::None => Ok(Mangler::None),
            MangleType::Logstatus => Ok(Mangler::Logstatus(Box::default())),
            MangleType::Action => Ok(Mangler::Action(action::ActionMangler::new(
                &pipeline.action,
            ))),
            other => Err(MangleBuildError::Unavailable(other.as_str())),
        }
    }

    /// Called once per tag per message; `now_ms` is the wall clock.
    pub fn mangle(&mut self, tag: &str, records: Vec<Record>, now_ms: i64) -> Vec<Record> {
        match self {
            Mangler::None => records,
            Mangler::Logstatus(m) => m.mangle(tag, records, now_ms),
            Mangler::Action(m) => m.mangle(records, now_ms),
        }
    }
}

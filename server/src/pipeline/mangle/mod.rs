//! Mangle: post-process one tag's batch of records.

pub mod action;

use super::record::Record;
use crate::config::{MangleSection, MangleType};

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
    /// Accept/reject from two capture points (built with [`action::ActionMangler::new`] from
    /// `pipeline.action`).
    Action(action::ActionMangler),
}

impl Mangler {
    /// Builds from a validated config section.
    pub fn from_config(section: &MangleSection) -> Result<Self, MangleBuildError> {
        match section.kind {
            MangleType::None => Ok(Mangler::None),
            other => Err(MangleBuildError::Unavailable(other.as_str())),
        }
    }

    /// Called once per tag per message; `now_ms` is the wall clock.
    pub fn mangle(&mut self, _tag: &str, records: Vec<Record>, now_ms: i64) -> Vec<Record> {
        match self {
            Mangler::None => records,
            Mangler::Action(m) => m.mangle(records, now_ms),
        }
    }
}

//! Transform: turn a Skydive flow into an output record, or drop it.

pub mod awsflowlogs;
pub mod vpclogs;

use super::record::Record;
use crate::config::{TransformSection, TransformType};
use crate::flow::Flow;

/// Why a transform could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TransformBuildError {
    /// The type is valid but this build doesn't provide it yet.
    #[error("transform type {0} is not available yet")]
    Unavailable(&'static str),
}

/// A configured transform.
#[derive(Debug)]
pub enum Transformer {
    /// The flow itself.
    None,
    /// AWS VPC Flow Logs records.
    AwsFlowLogs(awsflowlogs::AwsFlowLogs),
    /// IBM VPC Flow Logs records (built with [`vpclogs::VpcLogs::from_config`]: it needs the
    /// analyzer's address).
    VpcLogs(vpclogs::VpcLogs),
}

impl Transformer {
    /// Builds from a validated config section.
    pub fn from_config(section: &TransformSection) -> Result<Self, TransformBuildError> {
        match section.kind {
            TransformType::None => Ok(Transformer::None),
            TransformType::Awsflowlogs => Ok(Transformer::AwsFlowLogs(
                awsflowlogs::AwsFlowLogs::from_options(&section.awsflowlogs),
            )),
            other => Err(TransformBuildError::Unavailable(other.as_str())),
        }
    }

    /// One flow in, at most one record out.
    pub async fn transform(&mut self, flow: Flow) -> Option<Record> {
        match self {
            Transformer::None => Some(Record::Flow(Box::new(flow))),
            Transformer::AwsFlowLogs(t) => Some(Record::AwsFlowLog(Box::new(t.transform(&flow)))),
            Transformer::VpcLogs(t) => t
                .transform(&flow)
                .await
                .map(|r| Record::VpcLog(Box::new(r))),
        }
    }
}

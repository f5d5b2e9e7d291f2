//! Transform: turn a Skydive flow into an output record, or drop it.

pub mod awsflowlogs;
pub mod secadvisor;
pub mod vpclogs;

use super::record::Record;
use crate::config::{ExporterConfig, TransformType};
use crate::flow::Flow;
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
            TransformType::Awsflowlogs => Ok(Transformer::AwsFlowLogs(
                awsflowlogs::AwsFlowLogs::from_options(&config.pipeline.transform.awsflowlogs),
            )),
            TransformType::Vpclogs => {
                Ok(Transformer::VpcLogs(vpclogs::VpcLogs::from_config(config)))
            }
            other => Err(TransformBuildError::Unavailable(other.as_str())),
        }
    }

    /// One flow in, at most one record out; `now_ms` is the clock of the message.
    pub async fn transform(&mut self, flow: Flow, now_ms: i64) -> Option<Record> {
        match self {
            Transformer::None => Some(Record::Flow(Box::new(flow))),
            Transformer::Secadvisor(t) => t
                .transform(flow, now_ms)
                .await
                .map(|r| Record::SecAdvisor(Box::new(r))),
            Transformer::AwsFlowLogs(t) => Some(Record::AwsFlowLog(Box::new(t.transform(&flow)))),
            Transformer::VpcLogs(t) => t
                .transform(&flow)
                .await
                .map(|r| Record::VpcLog(Box::new(r))),
        }
    }
}

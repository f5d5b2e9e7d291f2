//! sluice: a multi-tenant network-flow export service for Skydive.
//!
//! The module tree follows the data path: `subscriber` → `pipeline` → `sinks`, with `config`
//! describing a pipeline and `sim` standing in for a Skydive analyzer.

pub mod flow;
pub mod sim;
pub mod subscriber;

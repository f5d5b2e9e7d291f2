//! sluice: a multi-tenant network-flow export service for Skydive.
//!
//! The module tree follows the data path (docs/architecture.md): `skydive` (the analyzer's flows
//! and topology) → `runner` → `pipeline` (the stages, with `wasm` for tenants' guests) → `sinks`,
//! with `config` describing a pipeline, `run` wiring one pipeline for `sluice run`, and `sim`
//! standing in for a Skydive analyzer. `serve` is the multi-tenant service: `api` (REST) →
//! `supervisor` (one task per pipeline) over `db` (SQLite or PostgreSQL via sqlx), with
//! `serve::cluster` placing pipelines on nodes and `fence` stopping those a node lost.

pub mod api;
pub mod config;
pub mod db;
pub mod egress;
pub mod fence;
pub mod guest_cli;
pub mod guest_log;
pub mod log_throttle;
pub mod metrics;
pub mod pipeline;
pub mod run;
pub mod runner;
pub mod secrets;
pub mod serve;
pub mod sim;
pub mod sinks;
pub mod skydive;
pub mod supervisor;
#[cfg(test)]
mod test_vectors;
pub mod tls;
pub mod wasm;

/// Epoch milliseconds as RFC 3339 (UTC, milliseconds).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

//! Every counter sluice keeps, and the one place their metric names are spelled.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::skydive::subscriber::SubscriberStats;

/// Why a flow or record was not delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A flow in a message could not be decoded.
    Malformed,
    /// Its tag is in `pipeline.filter.excluded_tags`.
    Filtered,
    /// The transform chose not to report it (e.g. `exclude_started_flows`).
    Transform,
    /// Pending records exceeded `max_flow_array_size`; the oldest were dropped.
    Overflow,
    /// The pipeline fell behind its analyzer: a message waited longer than the subscriber's
    /// `BACKPRESSURE_WAIT` for room in its queue.
    Backpressure,
    /// The object could not be encoded or compressed.
    Encode,
    /// The writer failed and there was no buffer to retry from (`direct` store).
    Write,
    /// Still pending when the process stopped and the last write failed.
    Shutdown,
    /// A wasm stage trapped (a guest panic, an out-of-bounds access...) on the batch.
    Trap,
    /// A wasm stage ran out of fuel on the batch.
    Fuel,
    /// A wasm stage passed its wall-clock deadline on the batch.
    Deadline,
    /// A wasm stage hit its memory cap on the batch.
    Memory,
    /// A wasm stage returned more than the output limit.
    OutputLimit,
    /// A wasm stage returned an error, or output the host could not read.
    GuestError,
    /// The wasm stage is quarantined after repeated failures.
    Quarantined,
    /// The store can't hold it: the prom_sky_con store takes flows with a transport layer and
    /// counters.
    Unsupported,
}

impl DropReason {
    /// Every reason, in the order of [`PipelineStats::dropped`].
    pub const ALL: [DropReason; 16] = [
        DropReason::Malformed,
        DropReason::Filtered,
        DropReason::Transform,
        DropReason::Overflow,
        DropReason::Backpressure,
        DropReason::Encode,
        DropReason::Write,
        DropReason::Shutdown,
        DropReason::Trap,
        DropReason::Fuel,
        DropReason::Deadline,
        DropReason::Memory,
        DropReason::OutputLimit,
        DropReason::GuestError,
        DropReason::Quarantined,
        DropReason::Unsupported,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Filtered => "filtered",
            DropReason::Transform => "transform",
            DropReason::Overflow => "overflow",
            DropReason::Backpressure => "backpressure",
            DropReason::Encode => "encode",
            DropReason::Write => "write",
            DropReason::Shutdown => "shutdown",
            DropReason::Trap => "trap",
            DropReason::Fuel => "fuel",
            DropReason::Deadline => "deadline",
            DropReason::Memory => "memory",
            DropReason::OutputLimit => "output_limit",
            DropReason::GuestError => "guest_error",
            DropReason::Quarantined => "quarantined",
            DropReason::Unsupported => "unsupported",
        }
    }
}

/// Metric names, Prometheus style.
pub mod names {
    /// Flows received from the analyzer.
    pub const FLOWS_RECEIVED: &str = "sluice_flows_received_total";
    /// Flows or records dropped, by `reason`.
    pub const DROPPED: &str = "sluice_dropped_total";
    /// Records written inside objects.
    pub const RECORDS_WRITTEN: &str = "sluice_records_written_total";
    /// Objects written.
    pub const OBJECTS_WRITTEN: &str = "sluice_objects_written_total";
    /// Bytes written (after compression).
    pub const BYTES_WRITTEN: &str = "sluice_bytes_written_total";
    /// Failed object writes (each is retried).
    pub const WRITE_ERRORS: &str = "sluice_write_errors_total";
    /// 1 while the pipeline's subscriber is connected to its analyzer.
    pub const SUBSCRIBER_CONNECTED: &str = "sluice_subscriber_connected";
    /// Times the supervisor restarted a failed pipeline.
    pub const PIPELINE_RESTARTS: &str = "sluice_pipeline_restarts_total";
    /// Pipelines of `sluice serve`, by `state`.
    pub const PIPELINES: &str = "sluice_pipelines";
    /// REST API requests answered, by `status`.
    pub const API_REQUESTS: &str = "sluice_api_requests_total";
    /// Fuel consumed by the pipeline's wasm stages (what a tenant is billed for).
    pub const WASM_FUEL: &str = "sluice_wasm_fuel_used_total";
    /// Times a wasm stage was quarantined after repeated failures.
    pub const WASM_QUARANTINES: &str = "sluice_wasm_quarantines_total";
}

/// Counters of one pipeline: what the account stage reports.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Flows that reached the pipeline.
    pub flows_received: AtomicU64,
    /// Indexed like [`DropReason::ALL`].
    pub dropped: [AtomicU64; DropReason::ALL.len()],
    /// Records written.
    pub records_written: AtomicU64,
    /// Objects written.
    pub objects_written: AtomicU64,
    /// Bytes written.
    pub bytes_written: AtomicU64,
    /// Failed writes.
    pub write_errors: AtomicU64,
    /// Fuel consumed by wasm stages.
    pub wasm_fuel_used: AtomicU64,
    /// Times a wasm stage was quarantined.
    pub wasm_quarantines: AtomicU64,
}

impl PipelineStats {
    /// Counts `n` dropped for `reason`.
    pub fn count_drop(&self, reason: DropReason, n: u64) {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.dropped[i].fetch_add(n, Ordering::Relaxed);
    }

    /// How many were dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        let i = DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.dropped[i].load(Ordering::Relaxed)
    }

    /// A plain copy of the counters, for status output and tests.
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            flows_received: get(&self.flows_received),
            dropped: DropReason::ALL
                .iter()
                .map(|r| (r.as_str(), self.dropped(*r)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            records_written: get(&self.records_written),
            objects_written: get(&self.objects_written),
            bytes_written: get(&self.bytes_written),
            write_errors: get(&self.write_errors),
            wasm_fuel_used: get(&self.wasm_fuel_used),
            wasm_quarantines: get(&self.wasm_quarantines),
        }
    }
}

/// A copy of [`PipelineStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StatsSnapshot {
    /// Flows received.
    pub flows_received: u64,
    /// Non-zero drop counts by reason.
    pub dropped: Vec<(&'static str, u64)>,
    /// Records written.
    pub records_written: u64,
    /// Objects written.
    pub objects_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Failed writes.
    pub write_errors: u64,
    /// Fuel consumed by wasm stages.
    pub wasm_fuel_used: u64,
    /// Times a wasm stage was quarantined.
    pub wasm_quarantines: u64,
}

/// Every counter of one pipeline, drop reasons included even when zero (for metrics and the
/// `status` route).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Flows received from the analyzer, malformed ones included.
    pub received: u64,
    /// Drops by reason, in [`DropReason::ALL`] order.
    pub dropped: Vec<(&'static str, u64)>,
    /// Records written.
    pub records_written: u64,
    /// Objects written.
    pub objects_written: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Failed writes.
    pub write_errors: u64,
    /// Fuel burnt by wasm stages.
    pub fuel_used: u64,
    /// Times a wasm stage was quarantined.
    pub wasm_quarantines: u64,
}

impl Counters {
    /// Reads a pipeline's counters, with the flows its subscriber dropped before they reached
    /// the pipeline (malformed, or no room while the pipeline was behind).
    pub fn read(stats: &PipelineStats, subscriber: &SubscriberStats) -> Self {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let malformed = get(&subscriber.malformed_flows);
        let backpressure = get(&subscriber.backpressure_flows);
        Counters {
            received: get(&stats.flows_received) + malformed + backpressure,
            dropped: DropReason::ALL
                .iter()
                .map(|r| {
                    let extra = match r {
                        DropReason::Malformed => malformed,
                        DropReason::Backpressure => backpressure,
                        _ => 0,
                    };
                    (r.as_str(), stats.dropped(*r) + extra)
                })
                .collect(),
            records_written: get(&stats.records_written),
            objects_written: get(&stats.objects_written),
            bytes_written: get(&stats.bytes_written),
            write_errors: get(&stats.write_errors),
            fuel_used: get(&stats.wasm_fuel_used),
            wasm_quarantines: get(&stats.wasm_quarantines),
        }
    }
}

/// One pipeline's series for [`render_prometheus`].
#[derive(Debug, Clone)]
pub struct PipelineSeries {
    /// `tenant` label.
    pub tenant: String,
    /// `pipeline` label.
    pub pipeline: String,
    /// Its counters.
    pub counters: Counters,
    /// Whether its subscriber is connected.
    pub connected: bool,
    /// Restarts after failures.
    pub restarts: u64,
}

/// Renders the Prometheus text format (version 0.0.4): per pipeline counters, pipelines by
/// state, and API requests by status.
pub fn render_prometheus(pipelines: &[PipelineSeries], server: Option<&ServerSeries>) -> String {
    let mut out = String::new();
    let mut family = |name: &str, kind: &str, help: &str, samples: Vec<(String, u64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (labels, value) in samples {
            out.push_str(&format!("{name}{{{labels}}} {value}\n"));
        }
    };
    let ids = |p: &PipelineSeries| {
        format!(
            "tenant=\"{}\",pipeline=\"{}\"",
            escape_label(&p.tenant),
            escape_label(&p.pipeline)
        )
    };
    let per = |f: &dyn Fn(&PipelineSeries) -> u64| -> Vec<(String, u64)> {
        pipelines.iter().map(|p| (ids(p), f(p))).collect()
    };
    family(
        names::FLOWS_RECEIVED,
        "counter",
        "Flows received from the analyzer.",
        per(&|p| p.counters.received),
    );
    let mut dropped = Vec::new();
    for p in pipelines {
        for (reason, n) in &p.counters.dropped {
            dropped.push((format!("{},reason=\"{reason}\"", ids(p)), *n));
        }
    }
    family(
        names::DROPPED,
        "counter",
        "Flows or records dropped, by reason.",
        dropped,
    );
    family(
        names::RECORDS_WRITTEN,
        "counter",
        "Records written inside objects.",
        per(&|p| p.counters.records_written),
    );
    family(
        names::OBJECTS_WRITTEN,
        "counter",
        "Objects written.",
        per(&|p| p.counters.objects_written),
    );
    family(
        names::BYTES_WRITTEN,
        "counter",
        "Bytes written, after compression.",
        per(&|p| p.counters.bytes_written),
    );
    family(
        names::WRITE_ERRORS,
        "counter",
        "Failed object writes (each is retried).",
        per(&|p| p.counters.write_errors),
    );
    family(
        names::WASM_FUEL,
        "counter",
        "Fuel burnt by the pipeline's wasm stages.",
        per(&|p| p.counters.fuel_used),
    );
    family(
        names::WASM_QUARANTINES,
        "counter",
        "Times a wasm stage was quarantined after repeated failures.",
        per(&|p| p.counters.wasm_quarantines),
    );
    family(
        names::SUBSCRIBER_CONNECTED,
        "gauge",
        "1 while the pipeline is connected to its analyzer.",
        per(&|p| u64::from(p.connected)),
    );
    family(
        names::PIPELINE_RESTARTS,
        "counter",
        "Restarts of a failed pipeline by the supervisor.",
        per(&|p| p.restarts),
    );
    let Some(server) = server else {
        return out;
    };
    family(
        names::PIPELINES,
        "gauge",
        "Pipelines by state.",
        server
            .states
            .iter()
            .map(|(s, n)| (format!("state=\"{}\"", escape_label(s)), *n))
            .collect(),
    );
    family(
        names::API_REQUESTS,
        "counter",
        "REST API requests answered, by HTTP status.",
        server
            .api_requests
            .iter()
            .map(|(s, n)| (format!("status=\"{s}\""), *n))
            .collect(),
    );
    out
}

/// The server-wide series (the operator's view only).
#[derive(Debug, Clone, Default)]
pub struct ServerSeries {
    /// Pipelines by state.
    pub states: Vec<(&'static str, u64)>,
    /// API requests answered, by status.
    pub api_requests: Vec<(u16, u64)>,
}

/// Escapes a label value: backslash, double quote and line feed.
/// A label value escaped for the Prometheus text format.
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_groups_families_and_escapes_labels() {
        let stats = PipelineStats::default();
        stats.flows_received.fetch_add(5, Ordering::Relaxed);
        stats.count_drop(DropReason::Filtered, 2);
        let series = PipelineSeries {
            tenant: "t\"1".into(),
            pipeline: "p1".into(),
            counters: Counters::read(&stats, &{
                let subscriber = SubscriberStats::default();
                subscriber.malformed_flows.store(1, Ordering::Relaxed);
                subscriber
            }),
            connected: true,
            restarts: 0,
        };
        let server = ServerSeries {
            states: vec![("running", 1)],
            api_requests: vec![(200, 3)],
        };
        let tenant_view = render_prometheus(std::slice::from_ref(&series), None);
        assert!(!tenant_view.contains("sluice_pipelines"), "{tenant_view}");
        assert!(
            !tenant_view.contains("sluice_api_requests"),
            "{tenant_view}"
        );
        let text = render_prometheus(&[series], Some(&server));
        assert!(
            text.contains("sluice_flows_received_total{tenant=\"t\\\"1\",pipeline=\"p1\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("reason=\"filtered\"} 2\n"), "{text}");
        assert!(text.contains("reason=\"malformed\"} 1\n"), "{text}");
        assert!(
            text.contains("sluice_pipelines{state=\"running\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("sluice_api_requests_total{status=\"200\"} 3\n"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE sluice_dropped_total counter").count(),
            1
        );
    }
}

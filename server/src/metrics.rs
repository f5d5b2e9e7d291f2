//! Every counter sluice keeps, and the one place their metric names are spelled.

use std::sync::atomic::{AtomicU64, Ordering};

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
}

impl DropReason {
    /// Every reason, in the order of [`PipelineStats::dropped`].
    pub const ALL: [DropReason; 14] = [
        DropReason::Malformed,
        DropReason::Filtered,
        DropReason::Transform,
        DropReason::Overflow,
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
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::Filtered => "filtered",
            DropReason::Transform => "transform",
            DropReason::Overflow => "overflow",
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

//! What a transform produces and the encoders write.

use serde::{Serialize, Serializer};

use super::transform::awsflowlogs::AwsFlowLog;
use super::transform::ocsf::NetworkActivity;
use super::transform::vpclogs::VpcLog;
pub use crate::pipeline::transform::secadvisor::record::SecAdvisorRecord;
use crate::skydive::flow::{Flow, FlowMetric};
pub use crate::wasm::record::WasmRecord;

/// One output record. Each transform has its own shape; encoders handle them all.
#[derive(Debug, Clone)]
pub enum Record {
    /// The Skydive flow itself (transform `none`).
    Flow(Box<Flow>),
    /// An IBM Security Advisor record (transform `secadvisor`).
    SecAdvisor(Box<SecAdvisorRecord>),
    /// An AWS VPC Flow Logs record (transform `awsflowlogs`).
    AwsFlowLog(Box<AwsFlowLog>),
    /// An IBM VPC Flow Logs record (transform `vpclogs`).
    VpcLog(Box<VpcLog>),
    /// A record made by a wasm guest: ordered fields.
    Wasm(WasmRecord),
    /// An OCSF Network Activity event (transform `ocsf`).
    Ocsf(Box<NetworkActivity>),
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Record::Flow(f) => f.serialize(s),
            Record::SecAdvisor(r) => r.serialize(s),
            Record::AwsFlowLog(r) => r.serialize(s),
            Record::VpcLog(r) => r.serialize(s),
            Record::Wasm(r) => r.serialize(s),
            Record::Ocsf(r) => r.serialize(s),
        }
    }
}

/// Builds one CSV row: fields in the order of the record's header.
#[derive(Debug, Default)]
pub struct CsvRow {
    /// The fields, unquoted.
    pub fields: Vec<String>,
}

impl CsvRow {
    /// Appends a field.
    pub fn push(&mut self, value: impl ToString) {
        self.fields.push(value.to_string());
    }

    /// Appends a field that is empty when zero.
    fn push_nonzero(&mut self, value: i64) {
        self.fields.push(if value == 0 {
            String::new()
        } else {
            value.to_string()
        });
    }

    /// Appends `n` empty fields (an absent part of the record).
    pub fn push_empty(&mut self, n: usize) {
        self.fields.extend(std::iter::repeat_n(String::new(), n));
    }

    /// Appends a metric's seven columns (`RTT` empty when zero), or seven empty ones.
    pub fn push_metric(&mut self, metric: Option<&FlowMetric>) {
        let Some(m) = metric else {
            return self.push_empty(7);
        };
        for v in [
            m.ab_packets,
            m.ab_bytes,
            m.ba_packets,
            m.ba_bytes,
            m.start,
            m.last,
        ] {
            self.push(v);
        }
        self.push_nonzero(m.rtt);
    }
}

const FLOW_CSV_HEADER: &[&str] = &[
    "UUID",
    "LayersPath",
    "Application",
    "Link.Protocol",
    "Link.A",
    "Link.B",
    "Link.ID",
    "Network.Protocol",
    "Network.A",
    "Network.B",
    "Network.ID",
    "Transport.Protocol",
    "Transport.A",
    "Transport.B",
    "ICMP.Type",
    "ICMP.Code",
    "ICMP.ID",
    "LastUpdateMetric.ABPackets",
    "LastUpdateMetric.ABBytes",
    "LastUpdateMetric.BAPackets",
    "LastUpdateMetric.BABytes",
    "LastUpdateMetric.Start",
    "LastUpdateMetric.Last",
    "LastUpdateMetric.RTT",
    "Metric.ABPackets",
    "Metric.ABBytes",
    "Metric.BAPackets",
    "Metric.BABytes",
    "Metric.Start",
    "Metric.Last",
    "Metric.RTT",
    "Start",
    "Last",
    "TrackingID",
    "L3TrackingID",
    "ParentUUID",
    "NodeTID",
    "CaptureID",
    "RawPacketsCaptured",
    "FinishType",
];

/// A record's CSV column names: fixed for builtin records, the guest's for wasm records.
#[derive(Debug, Clone, Copy)]
pub enum CsvHeader<'a> {
    /// A builtin record's columns.
    Static(&'static [&'static str]),
    /// A wasm record's CSV column names.
    Names(&'a [Box<str>]),
}

impl<'a> CsvHeader<'a> {
    /// The names in order.
    pub fn iter(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        let (fixed, names): (&'static [&'static str], &'a [Box<str>]) = match *self {
            CsvHeader::Static(h) => (h, &[]),
            CsvHeader::Names(n) => (&[], n),
        };
        fixed.iter().copied().chain(names.iter().map(|n| &**n))
    }

    /// The names, owned.
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

impl From<&'static [&'static str]> for CsvHeader<'_> {
    fn from(h: &'static [&'static str]) -> Self {
        CsvHeader::Static(h)
    }
}

impl PartialEq for CsvHeader<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (CsvHeader::Static(a), CsvHeader::Static(b)) => std::ptr::eq(*a, *b) || a == b,
            (CsvHeader::Names(a), CsvHeader::Names(b)) => std::ptr::eq(*a, *b) || a == b,
            _ => self.iter().eq(other.iter()),
        }
    }
}

impl Record {
    /// Column names of this record's CSV form, in field order.
    pub fn csv_header(&self) -> CsvHeader<'_> {
        match self {
            Record::Flow(_) => FLOW_CSV_HEADER.into(),
            Record::SecAdvisor(_) => {
                crate::pipeline::transform::secadvisor::record::CSV_HEADER.into()
            }
            Record::AwsFlowLog(r) => r.csv_header().into(),
            Record::VpcLog(r) => r.csv_header().into(),
            Record::Wasm(r) => CsvHeader::Names(r.columns()),
            Record::Ocsf(_) => crate::pipeline::transform::ocsf::CSV_HEADER.into(),
        }
    }

    /// This record's CSV fields, matching [`Record::csv_header`].
    pub fn csv_row(&self, row: &mut CsvRow) {
        match self {
            Record::Flow(f) => flow_csv_row(f, row),
            Record::SecAdvisor(r) => r.csv_row(row),
            Record::AwsFlowLog(r) => r.csv_row(row),
            Record::VpcLog(r) => r.csv_row(row),
            Record::Wasm(r) => r.csv_row(row),
            Record::Ocsf(r) => r.csv_row(row),
        }
    }
}

/// A flow flattened to columns; nested layers absent from the flow give empty fields.
/// TCPMetric, IPMetric and the extra layers are left out of CSV (JSON carries them).
fn flow_csv_row(f: &Flow, row: &mut CsvRow) {
    row.push(&f.uuid);
    row.push(&f.layers_path);
    row.push(&f.application);
    for layer in [&f.link, &f.network] {
        match layer {
            Some(l) => {
                row.push(l.protocol);
                row.push(&l.a);
                row.push(&l.b);
                row.push(l.id);
            }
            None => row.push_empty(4),
        }
    }
    match &f.transport {
        Some(t) => {
            row.push(t.protocol);
            row.push(t.a);
            row.push(t.b);
        }
        None => row.push_empty(3),
    }
    match &f.icmp {
        Some(i) => {
            row.push(i.kind);
            row.push_nonzero(i.code.into());
            row.push_nonzero(i.id.into());
        }
        None => row.push_empty(3),
    }
    row.push_metric(f.last_update_metric.as_ref());
    row.push_metric(f.metric.as_ref());
    row.push(f.start);
    row.push(f.last);
    row.push(&f.tracking_id);
    row.push(&f.l3_tracking_id);
    row.push(&f.parent_uuid);
    row.push(&f.node_tid);
    row.push(&f.capture_id);
    row.push(f.raw_packets_captured);
    row.push(f.finish_type.code());
}

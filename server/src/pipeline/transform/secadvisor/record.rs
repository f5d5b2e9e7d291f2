//! The Security Advisor record (docs/stages.md §6.2): its JSON form, its CSV form, and
//! the Go field paths its `extend` templates read.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use compact_str::{CompactString, format_compact};
use serde::{Deserialize, Serialize};

use crate::pipeline::encode::{JsonObject, write_go_str};
use crate::pipeline::record::CsvRow;
use crate::skydive::flow::FlowMetric;

/// The record format version written in every record.
pub const VERSION: &str = "1.1.0";

/// What a peer address was recognised as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerType {
    /// A Kubernetes pod.
    #[serde(rename = "pod")]
    Pod,
    /// A Docker or runc container not associated with a pod.
    #[serde(rename = "container")]
    Container,
    /// A host (VM).
    #[serde(rename = "host")]
    Host,
}

impl PeerType {
    /// The name written in `Context.*.Type`.
    pub fn as_str(self) -> &'static str {
        match self {
            PeerType::Pod => "pod",
            PeerType::Container => "container",
            PeerType::Host => "host",
        }
    }
}

impl fmt::Display for PeerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn is_empty<S: AsRef<str> + ?Sized>(s: &S) -> bool {
    s.as_ref().is_empty()
}

/// A short text (addresses, ports, UUIDs, paths) kept inside the record when it fits in 24
/// bytes. Records wait in the store until their object is written, so strings on the heap
/// meant an allocation, a free and a cache miss at encoding for each one.
pub type Short = CompactString;

/// A text field whose value is nearly always one of a few constants (`STARTED`, `IPV4`, `OK`):
/// borrowing those saves an allocation per record on the per-flow path.
pub type Text = Cow<'static, str>;

/// Who a peer is: `{Type, Name, Set}`, empty members omitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerContext {
    /// pod, container or host.
    #[serde(rename = "Type")]
    pub kind: PeerType,
    /// e.g. `namespace/pod-name`, a container name, or a host name.
    #[serde(rename = "Name", default, skip_serializing_if = "is_empty")]
    pub name: String,
    /// The owner, e.g. `ReplicaSet:namespace/replicaset-name`.
    #[serde(rename = "Set", default, skip_serializing_if = "is_empty")]
    pub set: String,
}

/// The contexts of the two peers; at least one is present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerContexts {
    /// Network.A's context.
    #[serde(rename = "A", default, skip_serializing_if = "Option::is_none")]
    pub a: Option<PeerContext>,
    /// Network.B's context.
    #[serde(rename = "B", default, skip_serializing_if = "Option::is_none")]
    pub b: Option<PeerContext>,
}

/// The `Network` or `Transport` layer: protocol name, both ends as strings, legacy names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecAdvisorLayer {
    /// e.g. `IPV4`, `TCP`.
    #[serde(rename = "Protocol", default, skip_serializing_if = "is_empty")]
    pub protocol: Text,
    /// Address or port (decimal) of A.
    #[serde(rename = "A", default, skip_serializing_if = "is_empty")]
    pub a: Short,
    /// Address or port (decimal) of B.
    #[serde(rename = "B", default, skip_serializing_if = "is_empty")]
    pub b: Short,
    /// Legacy pod name of A (`0_0_<clean name>_0`), Network only.
    #[serde(rename = "A_Name", default, skip_serializing_if = "is_empty")]
    pub a_name: Short,
    /// Legacy pod name of B, Network only.
    #[serde(rename = "B_Name", default, skip_serializing_if = "is_empty")]
    pub b_name: Short,
}

/// One Security Advisor record, serialised in upstream's key order with its omissions.
///
/// `LinkID` and `L3TrackingID` are internal (used by the logstatus mangler): never written,
/// but read when decoding so test vectors and guests can carry them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SecAdvisorRecord {
    /// Flow UUID.
    #[serde(rename = "UUID", default, skip_serializing_if = "is_empty")]
    pub uuid: Short,
    /// The flow's Link.ID (0 without a link layer); internal.
    #[serde(rename = "LinkID", default, skip_serializing)]
    pub link_id: i64,
    /// The flow's L3TrackingID; internal.
    #[serde(rename = "L3TrackingID", default, skip_serializing)]
    pub l3_tracking_id: Short,
    /// e.g. `Ethernet/IPv4/TCP`.
    #[serde(rename = "LayersPath", default, skip_serializing_if = "is_empty")]
    pub layers_path: Short,
    /// [`VERSION`] for records made by the transform.
    #[serde(rename = "Version", default, skip_serializing_if = "is_empty")]
    pub version: Text,
    /// STARTED, UPDATED or ENDED.
    #[serde(rename = "Status", default, skip_serializing_if = "is_empty")]
    pub status: Text,
    /// SYN_FIN, SYN_RST, Timeout, or empty.
    #[serde(rename = "FinishType", default, skip_serializing_if = "is_empty")]
    pub finish_type: Text,
    /// Addresses, with legacy pod names.
    #[serde(rename = "Network", default, skip_serializing_if = "Option::is_none")]
    pub network: Option<SecAdvisorLayer>,
    /// Ports as decimal strings.
    #[serde(rename = "Transport", default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<SecAdvisorLayer>,
    /// Who the peers are.
    #[serde(rename = "Context", default, skip_serializing_if = "Option::is_none")]
    pub context: Option<PeerContexts>,
    /// Counters of the last update window.
    #[serde(
        rename = "LastUpdateMetric",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub last_update_metric: Option<FlowMetric>,
    /// Cumulative counters.
    #[serde(rename = "Metric", default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<FlowMetric>,
    /// First packet, ms; always written.
    #[serde(rename = "Start", default)]
    pub start: i64,
    /// Last packet, ms; always written.
    #[serde(rename = "Last", default)]
    pub last: i64,
    /// Times this flow was seen before; always written.
    #[serde(rename = "UpdateCount", default)]
    pub update_count: i64,
    /// Topology type of the capturing node.
    #[serde(rename = "NodeType", default, skip_serializing_if = "is_empty")]
    pub node_type: Short,
    /// OK, NODATA or SKIPDATA (logstatus mangler).
    #[serde(rename = "LogStatus", default, skip_serializing_if = "is_empty")]
    pub log_status: Text,
    /// `extend` results, keys sorted.
    #[serde(rename = "Extend", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extend: BTreeMap<String, String>,
}

/// Replaces every character outside `[A-Za-z0-9.-]` with `-` (legacy peer names).
pub fn clean_legacy_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// `0_0_<clean name>_0` for a pod with a name, else empty.
pub fn legacy_name(context: Option<&PeerContext>) -> Short {
    match context {
        Some(c) if c.kind == PeerType::Pod && !c.name.is_empty() => {
            format_compact!("0_0_{}_0", clean_legacy_name(&c.name))
        }
        _ => Short::default(),
    }
}

/// What Go's text/template prints for a map key that is absent.
pub const NO_VALUE: &str = "<no value>";

impl SecAdvisorRecord {
    /// The value at a Go field path (`["Network", "A"]` for `{{.Network.A}}`), as a template
    /// prints it. `None` where Go's template execution fails: a nil pointer on the way, an
    /// unknown field, or a path ending on a struct (which would print Go's `%v` form).
    pub fn field(&self, path: &[String]) -> Option<Cow<'_, str>> {
        let keys: Vec<&str> = path.iter().map(String::as_str).collect();
        let s = |v: &str| Some(Cow::Owned(v.to_string()));
        let n = |v: i64| Some(Cow::Owned(v.to_string()));
        match keys.as_slice() {
            ["UUID"] => Some(Cow::Borrowed(&self.uuid)),
            ["LinkID"] => n(self.link_id),
            ["L3TrackingID"] => Some(Cow::Borrowed(&self.l3_tracking_id)),
            ["LayersPath"] => Some(Cow::Borrowed(&self.layers_path)),
            ["Version"] => Some(Cow::Borrowed(&self.version)),
            ["Status"] => Some(Cow::Borrowed(&self.status)),
            ["FinishType"] => Some(Cow::Borrowed(&self.finish_type)),
            ["Start"] => n(self.start),
            ["Last"] => n(self.last),
            ["UpdateCount"] => n(self.update_count),
            ["NodeType"] => Some(Cow::Borrowed(&self.node_type)),
            ["LogStatus"] => Some(Cow::Borrowed(&self.log_status)),
            [layer @ ("Network" | "Transport"), field] => {
                let l = if *layer == "Network" {
                    self.network.as_ref()?
                } else {
                    self.transport.as_ref()?
                };
                match *field {
                    "Protocol" => Some(Cow::Borrowed(&l.protocol)),
                    "A" => Some(Cow::Borrowed(&l.a)),
                    "B" => Some(Cow::Borrowed(&l.b)),
                    "AName" => Some(Cow::Borrowed(&l.a_name)),
                    "BName" => Some(Cow::Borrowed(&l.b_name)),
                    _ => None,
                }
            }
            ["Context", peer @ ("A" | "B"), field] => {
                let contexts = self.context.as_ref()?;
                let c = if *peer == "A" {
                    contexts.a.as_ref()?
                } else {
                    contexts.b.as_ref()?
                };
                match *field {
                    "Type" => s(c.kind.as_str()),
                    "Name" => Some(Cow::Borrowed(&c.name)),
                    "Set" => Some(Cow::Borrowed(&c.set)),
                    _ => None,
                }
            }
            [metric @ ("Metric" | "LastUpdateMetric"), field] => {
                let m = if *metric == "Metric" {
                    self.metric.as_ref()?
                } else {
                    self.last_update_metric.as_ref()?
                };
                match *field {
                    "ABPackets" => n(m.ab_packets),
                    "ABBytes" => n(m.ab_bytes),
                    "BAPackets" => n(m.ba_packets),
                    "BABytes" => n(m.ba_bytes),
                    "Start" => n(m.start),
                    "Last" => n(m.last),
                    "RTT" => n(m.rtt),
                    _ => None,
                }
            }
            ["Extend", key] => Some(
                self.extend
                    .get(*key)
                    .map_or(Cow::Borrowed(NO_VALUE), |v| Cow::Borrowed(v)),
            ),
            _ => None,
        }
    }

    /// Appends this record's JSON, compact (`depth` `None`) or indented at `depth`: the bytes
    /// serde writes with the Go formatter (tests compare the two on every shape), without
    /// serde's per-byte work on constant keys. The secadvisor encoder writes every record
    /// twice per flow update (logstatus), so this is on the hot path.
    pub fn write_json(&self, out: &mut Vec<u8>, depth: Option<usize>) {
        let mut o = JsonObject::open(out, depth);
        o.str_nonempty("UUID", &self.uuid);
        o.str_nonempty("LayersPath", &self.layers_path);
        o.str_nonempty("Version", &self.version);
        o.str_nonempty("Status", &self.status);
        o.str_nonempty("FinishType", &self.finish_type);
        for (key, layer) in [("Network", &self.network), ("Transport", &self.transport)] {
            if let Some(l) = layer {
                let mut lo = o.object(key);
                lo.str_nonempty("Protocol", &l.protocol);
                lo.str_nonempty("A", &l.a);
                lo.str_nonempty("B", &l.b);
                lo.str_nonempty("A_Name", &l.a_name);
                lo.str_nonempty("B_Name", &l.b_name);
                lo.end();
            }
        }
        if let Some(contexts) = &self.context {
            let mut co = o.object("Context");
            for (key, peer) in [("A", &contexts.a), ("B", &contexts.b)] {
                if let Some(p) = peer {
                    let mut po = co.object(key);
                    write_go_str(po.key("Type"), p.kind.as_str());
                    po.str_nonempty("Name", &p.name);
                    po.str_nonempty("Set", &p.set);
                    po.end();
                }
            }
            co.end();
        }
        for (key, metric) in [
            ("LastUpdateMetric", &self.last_update_metric),
            ("Metric", &self.metric),
        ] {
            if let Some(m) = metric {
                let mut mo = o.object(key);
                mo.int("ABPackets", m.ab_packets);
                mo.int("ABBytes", m.ab_bytes);
                mo.int("BAPackets", m.ba_packets);
                mo.int("BABytes", m.ba_bytes);
                mo.int("Start", m.start);
                mo.int("Last", m.last);
                if m.rtt != 0 {
                    mo.int("RTT", m.rtt);
                }
                mo.end();
            }
        }
        o.int("Start", self.start);
        o.int("Last", self.last);
        o.int("UpdateCount", self.update_count);
        o.str_nonempty("NodeType", &self.node_type);
        o.str_nonempty("LogStatus", &self.log_status);
        if !self.extend.is_empty() {
            let mut eo = o.object("Extend");
            for (name, value) in &self.extend {
                write_go_str(eo.data_key(name), value);
            }
            eo.end();
        }
        o.end();
    }

    /// This record's CSV fields, matching [`CSV_HEADER`].
    pub fn csv_row(&self, row: &mut CsvRow) {
        row.push(&self.uuid);
        row.push(&self.layers_path);
        row.push(&self.version);
        row.push(&self.status);
        row.push(&self.finish_type);
        match &self.network {
            Some(l) => {
                for v in [&*l.protocol, &l.a, &l.b, &l.a_name, &l.b_name] {
                    row.push(v);
                }
            }
            None => row.push_empty(5),
        }
        match &self.transport {
            Some(l) => {
                for v in [&*l.protocol, &l.a, &l.b] {
                    row.push(v);
                }
            }
            None => row.push_empty(3),
        }
        let contexts = self.context.as_ref();
        for peer in [
            contexts.and_then(|c| c.a.as_ref()),
            contexts.and_then(|c| c.b.as_ref()),
        ] {
            match peer {
                Some(c) => {
                    row.push(c.kind);
                    row.push(&c.name);
                    row.push(&c.set);
                }
                None => row.push_empty(3),
            }
        }
        row.push_metric(self.last_update_metric.as_ref());
        row.push_metric(self.metric.as_ref());
        row.push(self.start);
        row.push(self.last);
        row.push(self.update_count);
        row.push(&self.node_type);
        row.push(&self.log_status);
        row.push(if self.extend.is_empty() {
            String::new()
        } else {
            serde_json::to_string(&self.extend).unwrap_or_default()
        });
    }
}

/// CSV columns of a Security Advisor record: nested fields flattened with dotted names; absent
/// layers give empty fields; `Extend` is one column holding its JSON object.
pub const CSV_HEADER: &[&str] = &[
    "UUID",
    "LayersPath",
    "Version",
    "Status",
    "FinishType",
    "Network.Protocol",
    "Network.A",
    "Network.B",
    "Network.A_Name",
    "Network.B_Name",
    "Transport.Protocol",
    "Transport.A",
    "Transport.B",
    "Context.A.Type",
    "Context.A.Name",
    "Context.A.Set",
    "Context.B.Type",
    "Context.B.Name",
    "Context.B.Set",
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
    "UpdateCount",
    "NodeType",
    "LogStatus",
    "Extend",
];

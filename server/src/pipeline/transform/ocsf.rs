//! `ocsf`: one OCSF Network Activity event (class 4001, OCSF 1.1.0) per flow, the form security
//! lakes take (docs/ocsf.md has the mapping table).
//!
//! The counters and times are those of the flow's last update window, as for `awsflowlogs`
//! (docs/awsflowlogs.md §2): summing `traffic.bytes` over the events of a flow gives its total.
//! A flow without an IP layer has no endpoint OCSF can name (an endpoint needs an address, a
//! name or an id) and is not reported (dropped as `transform`).

use serde::Serialize;

use crate::pipeline::classify::Tag;
use crate::pipeline::record::CsvRow;
use crate::skydive::flow::{FinishType, Flow, FlowMetric, FlowProtocol};

/// The OCSF version the events follow.
pub const OCSF_VERSION: &str = "1.1.0";
/// Network Activity.
pub const CLASS_UID: u32 = 4001;
/// The Network Activity category.
pub const CATEGORY_UID: u32 = 4;
/// `severity_id` of every event: Informational.
pub const SEVERITY_INFORMATIONAL: u8 = 1;

/// The `ocsf` transform.
#[derive(Debug, Clone, Default)]
pub struct Ocsf;

/// What happened to the connection, OCSF's `activity_id` of Network Activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activity {
    /// The flow ended (FIN, or expired).
    Close = 2,
    /// The flow ended with a reset.
    Reset = 3,
    /// A report on a flow still open.
    Traffic = 6,
}

impl Activity {
    fn of(finish: FinishType) -> Self {
        match finish {
            FinishType::NotFinished => Activity::Traffic,
            FinishType::Timeout | FinishType::TcpFin => Activity::Close,
            FinishType::TcpRst => Activity::Reset,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Activity::Close => "Close",
            Activity::Reset => "Reset",
            Activity::Traffic => "Traffic",
        }
    }

    fn type_name(self) -> &'static str {
        match self {
            Activity::Close => "Network Activity: Close",
            Activity::Reset => "Network Activity: Reset",
            Activity::Traffic => "Network Activity: Traffic",
        }
    }
}

/// OCSF's `direction_id` from the classifier's tag: the cluster is "here".
fn direction(tag: Tag) -> (u8, &'static str) {
    match tag {
        Tag::Ingress => (1, "Inbound"),
        Tag::Egress => (2, "Outbound"),
        Tag::Internal => (3, "Lateral"),
        Tag::Other => (0, "Unknown"),
    }
}

impl Ocsf {
    /// The event of one flow of tag `tag`, or `None` for a flow without an IP layer.
    pub fn transform(&self, tag: Tag, flow: &Flow) -> Option<NetworkActivity> {
        let network = flow.network.as_ref().filter(|n| {
            matches!(n.protocol, FlowProtocol::Ipv4 | FlowProtocol::Ipv6)
                && !n.a.is_empty()
                && !n.b.is_empty()
        })?;
        let activity = Activity::of(flow.finish_type);
        let (direction_id, direction) = direction(tag);
        let link = flow.link.as_ref();
        let transport = flow.transport.as_ref();
        let protocol = match transport {
            Some(t) => Some(t.protocol),
            None if flow.icmp.is_some() || flow.layers_path.contains("ICMP") => {
                Some(match network.protocol {
                    FlowProtocol::Ipv6 => FlowProtocol::Icmpv6,
                    _ => FlowProtocol::Icmpv4,
                })
            }
            None => None,
        };
        let (counters, start, end) = match (&flow.last_update_metric, &flow.metric) {
            (Some(m), _) => (Some(m), m.start, m.last),
            (None, Some(m)) => (Some(m), flow.start, flow.last),
            (None, None) => (None, flow.start, flow.last),
        };
        let endpoint = |ip: &str, port: Option<i64>, mac: Option<&str>| Endpoint {
            ip: ip.to_string(),
            port,
            mac: mac.filter(|m| !m.is_empty()).map(str::to_string),
        };
        Some(NetworkActivity {
            activity_id: activity as u8,
            activity_name: activity.name(),
            category_uid: CATEGORY_UID,
            category_name: "Network Activity",
            class_uid: CLASS_UID,
            class_name: "Network Activity",
            type_uid: CLASS_UID * 100 + activity as u32,
            type_name: activity.type_name(),
            severity_id: SEVERITY_INFORMATIONAL,
            severity: "Informational",
            time: end,
            start_time: start,
            end_time: end,
            src_endpoint: endpoint(
                &network.a,
                transport.map(|t| t.a),
                link.map(|l| l.a.as_str()),
            ),
            dst_endpoint: endpoint(
                &network.b,
                transport.map(|t| t.b),
                link.map(|l| l.b.as_str()),
            ),
            connection_info: ConnectionInfo {
                uid: Some(flow.tracking_id.clone()).filter(|t| !t.is_empty()),
                protocol_num: protocol.and_then(FlowProtocol::iana_number),
                protocol_name: protocol.map(protocol_name),
                direction_id,
                direction,
            },
            traffic: counters.map(Traffic::of),
            metadata: Metadata {
                version: OCSF_VERSION,
                uid: flow.uuid.clone(),
                log_provider: "Skydive",
                product: Product {
                    name: "sluice",
                    vendor_name: "sluice",
                    version: env!("CARGO_PKG_VERSION"),
                },
            },
        })
    }
}

/// OCSF's lower-case protocol name (`tcp`, `udp`, ...).
fn protocol_name(protocol: FlowProtocol) -> &'static str {
    match protocol {
        FlowProtocol::Tcp => "tcp",
        FlowProtocol::Udp => "udp",
        FlowProtocol::Sctp => "sctp",
        FlowProtocol::Icmpv4 => "icmp",
        FlowProtocol::Icmpv6 => "ipv6-icmp",
        FlowProtocol::Ipv4 => "ipv4",
        FlowProtocol::Ipv6 => "ipv6",
        FlowProtocol::Ethernet => "ethernet",
    }
}

/// One OCSF Network Activity event; its JSON keys are OCSF's attribute names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NetworkActivity {
    /// 2 Close, 3 Reset, 6 Traffic.
    pub activity_id: u8,
    /// The activity's caption.
    pub activity_name: &'static str,
    /// 4, Network Activity.
    pub category_uid: u32,
    /// The category's caption.
    pub category_name: &'static str,
    /// 4001, Network Activity.
    pub class_uid: u32,
    /// The class's caption.
    pub class_name: &'static str,
    /// `class_uid * 100 + activity_id`.
    pub type_uid: u32,
    /// `<class>: <activity>`.
    pub type_name: &'static str,
    /// 1, Informational.
    pub severity_id: u8,
    /// The severity's caption.
    pub severity: &'static str,
    /// When the reported window ended, ms since the epoch.
    pub time: i64,
    /// The window's first packet, ms.
    pub start_time: i64,
    /// The window's last packet, ms.
    pub end_time: i64,
    /// The initiator: `Network.A`, `Transport.A`, `Link.A`.
    pub src_endpoint: Endpoint,
    /// The responder: `Network.B`, `Transport.B`, `Link.B`.
    pub dst_endpoint: Endpoint,
    /// Protocol and direction.
    pub connection_info: ConnectionInfo,
    /// The window's counters; absent for a flow without any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
    /// Who wrote the event, in which OCSF version.
    pub metadata: Metadata,
}

/// OCSF's `network_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The address.
    pub ip: String,
    /// The port; absent without a transport layer (ICMP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// The MAC address, when the flow has a link layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// OCSF's `network_connection_info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionInfo {
    /// Skydive's `TrackingID`, the same for every report on the flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The IANA protocol number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_num: Option<u8>,
    /// The protocol's lower-case name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol_name: Option<&'static str>,
    /// 0 Unknown, 1 Inbound, 2 Outbound, 3 Lateral (from the tag).
    pub direction_id: u8,
    /// The direction's caption.
    pub direction: &'static str,
}

/// OCSF's `network_traffic`: out is from the source to the destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Both ways.
    pub bytes: i64,
    /// Both ways.
    pub packets: i64,
    /// Source to destination (`ABBytes`).
    pub bytes_out: i64,
    /// Source to destination (`ABPackets`).
    pub packets_out: i64,
    /// Destination to source (`BABytes`).
    pub bytes_in: i64,
    /// Destination to source (`BAPackets`).
    pub packets_in: i64,
}

impl Traffic {
    fn of(m: &FlowMetric) -> Self {
        Traffic {
            bytes: m.ab_bytes.saturating_add(m.ba_bytes),
            packets: m.ab_packets.saturating_add(m.ba_packets),
            bytes_out: m.ab_bytes,
            packets_out: m.ab_packets,
            bytes_in: m.ba_bytes,
            packets_in: m.ba_packets,
        }
    }
}

/// OCSF's `metadata`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Metadata {
    /// The OCSF version, [`OCSF_VERSION`].
    pub version: &'static str,
    /// The flow's UUID.
    pub uid: String,
    /// Where the flows were observed: Skydive.
    pub log_provider: &'static str,
    /// The product that wrote the event.
    pub product: Product,
}

/// OCSF's `product`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Product {
    /// `sluice`.
    pub name: &'static str,
    /// `sluice`.
    pub vendor_name: &'static str,
    /// sluice's version.
    pub version: &'static str,
}

/// The CSV columns: the JSON form's attributes, nested ones joined with `.`.
pub const CSV_HEADER: &[&str] = &[
    "activity_id",
    "activity_name",
    "category_uid",
    "category_name",
    "class_uid",
    "class_name",
    "type_uid",
    "type_name",
    "severity_id",
    "severity",
    "time",
    "start_time",
    "end_time",
    "src_endpoint.ip",
    "src_endpoint.port",
    "src_endpoint.mac",
    "dst_endpoint.ip",
    "dst_endpoint.port",
    "dst_endpoint.mac",
    "connection_info.uid",
    "connection_info.protocol_num",
    "connection_info.protocol_name",
    "connection_info.direction_id",
    "connection_info.direction",
    "traffic.bytes",
    "traffic.packets",
    "traffic.bytes_out",
    "traffic.packets_out",
    "traffic.bytes_in",
    "traffic.packets_in",
    "metadata.version",
    "metadata.uid",
    "metadata.log_provider",
    "metadata.product.name",
    "metadata.product.vendor_name",
    "metadata.product.version",
];

impl NetworkActivity {
    /// The CSV fields of [`CSV_HEADER`]; an absent attribute is an empty field.
    pub fn csv_row(&self, row: &mut CsvRow) {
        fn opt<T: ToString>(row: &mut CsvRow, v: Option<T>) {
            match v {
                Some(v) => row.push(v),
                None => row.push_empty(1),
            }
        }
        row.push(self.activity_id);
        row.push(self.activity_name);
        row.push(self.category_uid);
        row.push(self.category_name);
        row.push(self.class_uid);
        row.push(self.class_name);
        row.push(self.type_uid);
        row.push(self.type_name);
        row.push(self.severity_id);
        row.push(self.severity);
        row.push(self.time);
        row.push(self.start_time);
        row.push(self.end_time);
        for e in [&self.src_endpoint, &self.dst_endpoint] {
            row.push(&e.ip);
            opt(row, e.port);
            opt(row, e.mac.as_ref());
        }
        let c = &self.connection_info;
        opt(row, c.uid.as_ref());
        opt(row, c.protocol_num);
        opt(row, c.protocol_name);
        row.push(c.direction_id);
        row.push(c.direction);
        match &self.traffic {
            Some(t) => {
                for v in [
                    t.bytes,
                    t.packets,
                    t.bytes_out,
                    t.packets_out,
                    t.bytes_in,
                    t.packets_in,
                ] {
                    row.push(v);
                }
            }
            None => row.push_empty(6),
        }
        let m = &self.metadata;
        row.push(m.version);
        row.push(&m.uid);
        row.push(m.log_provider);
        row.push(m.product.name);
        row.push(m.product.vendor_name);
        row.push(m.product.version);
    }
}

#[cfg(test)]
mod tests;

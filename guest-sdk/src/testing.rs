//! Run a guest's logic natively, without wasm: build flows, run [`run_transform`] or
//! [`run_mangle`], and check the records.
//!
//! ```
//! use sluice_guest::testing::{FlowData, run_transform};
//! # use sluice_guest::{Config, Error, Flows, Output, Transform};
//! # struct Echo;
//! # impl Transform for Echo {
//! #     fn init(_: &Config) -> Result<Self, Error> { Ok(Echo) }
//! #     fn transform(&mut self, flows: Flows<'_>, out: &mut Output) -> Result<(), Error> {
//! #         for f in &flows { out.record().str("UUID", f?.uuid()); }
//! #         Ok(())
//! #     }
//! # }
//! let flows = [FlowData::tcp4("10.0.0.1", 40000, "10.0.0.2", 443)];
//! let records = run_transform::<Echo>("null", &flows).unwrap();
//! assert_eq!(records[0].get_str("UUID"), Some(flows[0].uuid.as_str()));
//! ```
//!
//! The same bytes cross the boundary here as in the server: flows are encoded as ENCODING.md
//! §2 says and the output is decoded from §3, so what passes here behaves the same under wasm
//! (apart from the limits: fuel, time and memory).

use std::cell::RefCell;

use serde_json::Value as Json;

use sluice_wire::flow::FlowFields;

use crate::flow::{FinishType, Icmp, IpMetric, Layer, Metric, Protocol, TcpMetric, Transport};
use crate::record::{Output, Records, Value};
use crate::{Config, Error, Level, Mangle, Transform};

thread_local! {
    static LOGS: RefCell<Vec<(Level, String)>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn capture_log(level: Level, message: &str) {
    LOGS.with_borrow_mut(|l| l.push((level, message.to_owned())));
}

/// The lines the guest logged on this thread since the last call.
pub fn take_logs() -> Vec<(Level, String)> {
    LOGS.with_borrow_mut(std::mem::take)
}

/// An owned link or network layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerData {
    /// Protocol.
    pub protocol: Protocol,
    /// Source.
    pub a: String,
    /// Destination.
    pub b: String,
    /// Id.
    pub id: i64,
}

/// An owned flow to feed a guest in tests; every field public, unset layers `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlowData {
    /// `UUID`.
    pub uuid: String,
    /// `LayersPath`.
    pub layers_path: String,
    /// `Application`.
    pub application: String,
    /// `TrackingID`.
    pub tracking_id: String,
    /// `L3TrackingID`.
    pub l3_tracking_id: String,
    /// `ParentUUID`.
    pub parent_uuid: String,
    /// `NodeTID`.
    pub node_tid: String,
    /// `CaptureID`.
    pub capture_id: String,
    /// `Start`, ms.
    pub start: i64,
    /// `Last`, ms.
    pub last: i64,
    /// `RawPacketsCaptured`.
    pub raw_packets_captured: i64,
    /// `FinishType`.
    pub finish_type: FinishType,
    /// `Link`.
    pub link: Option<LayerData>,
    /// `Network`.
    pub network: Option<LayerData>,
    /// `Transport`.
    pub transport: Option<Transport>,
    /// `ICMP`.
    pub icmp: Option<Icmp>,
    /// `LastUpdateMetric`.
    pub last_update_metric: Option<Metric>,
    /// `Metric`.
    pub metric: Option<Metric>,
    /// `TCPMetric`.
    pub tcp_metric: Option<TcpMetric>,
    /// `IPMetric`.
    pub ip_metric: Option<IpMetric>,
    /// `DHCPv4` JSON text.
    pub dhcpv4: Option<String>,
    /// `DNS` JSON text.
    pub dns: Option<String>,
    /// `VRRPv2` JSON text.
    pub vrrpv2: Option<String>,
}

impl FlowData {
    /// A TCP over IPv4 flow with Ethernet and cumulative metrics.
    pub fn tcp4(src: &str, sport: i64, dst: &str, dport: i64) -> Self {
        FlowData {
            uuid: format!("{src}:{sport}-{dst}:{dport}"),
            layers_path: "Ethernet/IPv4/TCP".into(),
            application: "TCP".into(),
            start: 1_546_338_030_000,
            last: 1_546_338_032_500,
            link: Some(LayerData {
                protocol: Protocol::Ethernet,
                a: "fa:16:3e:29:e0:82".into(),
                b: "fa:16:3e:96:06:e8".into(),
                id: 0,
            }),
            network: Some(LayerData {
                protocol: Protocol::Ipv4,
                a: src.into(),
                b: dst.into(),
                id: 0,
            }),
            transport: Some(Transport {
                protocol: Protocol::Tcp,
                a: sport,
                b: dport,
                id: 0,
            }),
            metric: Some(Metric {
                ab_packets: 6,
                ab_bytes: 516,
                ba_packets: 4,
                ba_bytes: 760,
                ..Metric::default()
            }),
            ..FlowData::default()
        }
    }

    /// A flow from Skydive's JSON (as the analyzer sends it, `docs/skydive-protocol.md` §3).
    pub fn from_skydive_json(text: &str) -> Result<Self, Error> {
        let v: Json = serde_json::from_str(text)?;
        let s = |v: &Json, k: &str| v.get(k).and_then(Json::as_str).unwrap_or("").to_owned();
        let i = |v: &Json, k: &str| v.get(k).and_then(Json::as_i64).unwrap_or(0);
        let proto = |v: &Json| -> Protocol {
            let name = v.get("Protocol").and_then(Json::as_str).unwrap_or("");
            (0..8)
                .map(Protocol::from_ordinal)
                .find(|p| p.name() == name)
                .unwrap_or(Protocol::Other(255))
        };
        let layer = |k: &str| {
            v.get(k).filter(|l| l.is_object()).map(|l| LayerData {
                protocol: proto(l),
                a: s(l, "A"),
                b: s(l, "B"),
                id: i(l, "ID"),
            })
        };
        let metric = |k: &str| {
            v.get(k).filter(|m| m.is_object()).map(|m| Metric {
                ab_packets: i(m, "ABPackets"),
                ab_bytes: i(m, "ABBytes"),
                ba_packets: i(m, "BAPackets"),
                ba_bytes: i(m, "BABytes"),
                start: i(m, "Start"),
                last: i(m, "Last"),
                rtt: i(m, "RTT"),
            })
        };
        let raw = |k: &str| v.get(k).filter(|x| !x.is_null()).map(Json::to_string);
        Ok(FlowData {
            uuid: s(&v, "UUID"),
            layers_path: s(&v, "LayersPath"),
            application: s(&v, "Application"),
            tracking_id: s(&v, "TrackingID"),
            l3_tracking_id: s(&v, "L3TrackingID"),
            parent_uuid: s(&v, "ParentUUID"),
            node_tid: s(&v, "NodeTID"),
            capture_id: s(&v, "CaptureID"),
            start: i(&v, "Start"),
            last: i(&v, "Last"),
            raw_packets_captured: i(&v, "RawPacketsCaptured"),
            finish_type: match i(&v, "FinishType") {
                1 => FinishType::Timeout,
                2 => FinishType::TcpFin,
                3 => FinishType::TcpRst,
                _ => FinishType::NotFinished,
            },
            link: layer("Link"),
            network: layer("Network"),
            transport: v
                .get("Transport")
                .filter(|t| t.is_object())
                .map(|t| Transport {
                    protocol: proto(t),
                    a: i(t, "A"),
                    b: i(t, "B"),
                    id: i(t, "ID"),
                }),
            icmp: v.get("ICMP").filter(|t| t.is_object()).map(|t| {
                const TYPES: [&str; 13] = [
                    "UNKNOWN",
                    "DESTINATION_UNREACHABLE",
                    "ECHO",
                    "NEIGHBOR",
                    "ADDRESS_MASK",
                    "INFO",
                    "PARAMETER_PROBLEM",
                    "REDIRECT",
                    "ROUTER",
                    "SOURCE_QUENCH",
                    "TIME_EXCEEDED",
                    "TIMESTAMP",
                    "PACKET_TOO_BIG",
                ];
                let name = s(t, "Type");
                Icmp {
                    kind: TYPES.iter().position(|n| *n == name).unwrap_or(0) as u8,
                    code: i(t, "Code") as u32,
                    id: i(t, "ID") as u32,
                }
            }),
            last_update_metric: metric("LastUpdateMetric"),
            metric: metric("Metric"),
            tcp_metric: v.get("TCPMetric").filter(|m| m.is_object()).map(|m| {
                let mut values = [0; 22];
                for (slot, name) in values.iter_mut().zip(TcpMetric::NAMES) {
                    *slot = i(m, name);
                }
                TcpMetric { values }
            }),
            ip_metric: v
                .get("IPMetric")
                .filter(|m| m.is_object())
                .map(|m| IpMetric {
                    fragments: i(m, "Fragments"),
                    fragment_errors: i(m, "FragmentErrors"),
                }),
            dhcpv4: raw("DHCPv4"),
            dns: raw("DNS"),
            vrrpv2: raw("VRRPv2"),
        })
    }

    /// The fields the flow writer takes.
    fn wire_fields(&self) -> FlowFields<'_> {
        FlowFields {
            uuid: &self.uuid,
            layers_path: &self.layers_path,
            application: &self.application,
            tracking_id: &self.tracking_id,
            l3_tracking_id: &self.l3_tracking_id,
            parent_uuid: &self.parent_uuid,
            node_tid: &self.node_tid,
            capture_id: &self.capture_id,
            start: self.start,
            last: self.last,
            raw_packets_captured: self.raw_packets_captured,
            finish_type: self.finish_type,
            link: self.link.as_ref().map(LayerData::wire),
            network: self.network.as_ref().map(LayerData::wire),
            transport: self.transport,
            icmp: self.icmp,
            last_update_metric: self.last_update_metric,
            metric: self.metric,
            tcp_metric: self.tcp_metric,
            ip_metric: self.ip_metric,
            dhcpv4: self.dhcpv4.as_deref(),
            dns: self.dns.as_deref(),
            vrrpv2: self.vrrpv2.as_deref(),
        }
    }
}

impl LayerData {
    fn wire(&self) -> Layer<'_> {
        Layer {
            protocol: self.protocol,
            a: &self.a,
            b: &self.b,
            id: self.id,
        }
    }
}

/// Encodes flows as a flow batch (ENCODING.md §2), with the host's encoder.
pub fn encode_flows(flows: &[FlowData]) -> Vec<u8> {
    let mut b = Vec::new();
    sluice_wire::flow::encode_flows(flows.iter().map(FlowData::wire_fields), &mut b);
    b
}

/// An owned field value of a [`RecordData`].
#[derive(Debug, Clone, PartialEq)]
pub enum ValueData {
    /// `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float.
    Float(f64),
    /// A string.
    Str(String),
    /// A JSON text.
    Json(String),
    /// A value that CSV writes as the text `csv` (`RecordBuilder::value_csv`).
    WithCsv(Box<ValueData>, String),
}

impl ValueData {
    fn borrow(&self) -> Value<'_> {
        match self {
            ValueData::WithCsv(v, _) => v.borrow(),
            ValueData::Null => Value::Null,
            ValueData::Bool(b) => Value::Bool(*b),
            ValueData::Int(v) => Value::Int(*v),
            ValueData::UInt(v) => Value::UInt(*v),
            ValueData::Float(v) => Value::Float(*v),
            ValueData::Str(s) => Value::Str(s),
            ValueData::Json(s) => Value::Json(s),
        }
    }

    fn own(v: Value<'_>) -> Self {
        match v {
            Value::Null => ValueData::Null,
            Value::Bool(b) => ValueData::Bool(b),
            Value::Int(v) => ValueData::Int(v),
            Value::UInt(v) => ValueData::UInt(v),
            Value::Float(v) => ValueData::Float(v),
            Value::Str(s) => ValueData::Str(s.to_owned()),
            Value::Json(s) => ValueData::Json(s.to_owned()),
        }
    }

    /// As the host writes it in JSON.
    pub fn to_json(&self) -> Json {
        match self {
            ValueData::Null => Json::Null,
            ValueData::Bool(b) => (*b).into(),
            ValueData::Int(v) => (*v).into(),
            ValueData::UInt(v) => (*v).into(),
            ValueData::Float(v) => {
                serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number)
            }
            ValueData::Str(s) => s.as_str().into(),
            ValueData::Json(s) => serde_json::from_str(s).unwrap_or(Json::Null),
            ValueData::WithCsv(v, _) => v.to_json(),
        }
    }

    /// As the host writes it in CSV (before quoting).
    pub fn to_csv(&self) -> String {
        match self {
            ValueData::Null => String::new(),
            ValueData::Bool(b) => b.to_string(),
            ValueData::Int(v) => v.to_string(),
            ValueData::UInt(v) => v.to_string(),
            ValueData::Float(v) if v.is_finite() => v.to_string(),
            ValueData::Float(_) => String::new(),
            ValueData::Str(s) | ValueData::Json(s) => s.clone(),
            ValueData::WithCsv(_, csv) => csv.clone(),
        }
    }
}

/// An owned record: ordered fields.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RecordData {
    /// The fields in order.
    pub fields: Vec<(String, ValueData)>,
    /// CSV column names, one per field, when the record has its own (`Name`).
    pub columns: Option<Vec<String>>,
}

impl RecordData {
    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&ValueData> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// A string field's value.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        match self.get(name)? {
            ValueData::Str(s) => Some(s),
            _ => None,
        }
    }

    /// An integer field's value.
    pub fn get_i64(&self, name: &str) -> Option<i64> {
        match *self.get(name)? {
            ValueData::Int(v) => Some(v),
            ValueData::UInt(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The field names in order.
    pub fn names(&self) -> Vec<&str> {
        self.fields.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The CSV column names in order.
    pub fn columns(&self) -> Vec<&str> {
        match &self.columns {
            Some(c) => c.iter().map(String::as_str).collect(),
            None => self.names(),
        }
    }

    /// The record's CSV fields (before quoting), as the host writes them.
    pub fn to_csv_fields(&self) -> Vec<String> {
        self.fields.iter().map(|(_, v)| v.to_csv()).collect()
    }

    /// The record as the host's JSON encoder writes it (fields in order).
    pub fn to_json_text(&self) -> String {
        let mut s = String::from("{");
        for (i, (name, value)) in self.fields.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&Json::from(name.as_str()).to_string());
            s.push(':');
            s.push_str(&value.to_json().to_string());
        }
        s.push('}');
        s
    }
}

/// Encodes records as a record batch (ENCODING.md §3), as the host does for a mangler.
pub fn encode_records(records: &[RecordData]) -> Vec<u8> {
    let mut out = Output::default();
    for r in records {
        let mut b = out.record();
        for (i, (name, value)) in r.fields.iter().enumerate() {
            let column = r.columns.as_ref().and_then(|c| c.get(i));
            let name = crate::Name {
                json: name,
                csv: column.map(String::as_str).filter(|c| c != name),
            };
            b = match value {
                ValueData::WithCsv(v, csv) => b.value_csv(name, v.borrow(), csv),
                v => b.value(name, v.borrow()),
            };
        }
    }
    out.finish()
}

/// Decodes a record batch.
pub fn decode_records(batch: &[u8]) -> Result<Vec<RecordData>, Error> {
    let records = Records::new(batch)?;
    records
        .iter()
        .map(|r| {
            let r = r?;
            let columns = r.columns();
            Ok(RecordData {
                fields: r
                    .fields()
                    .map(|(n, v)| {
                        if let Value::Json(text) = v {
                            // The host checks every JSON text a guest returns.
                            serde_json::from_str::<Json>(text).map_err(|_| {
                                crate::wire::WireError::Invalid("json value is not JSON")
                            })?;
                        }
                        let v = ValueData::own(v);
                        let v = match r.csv_text(n) {
                            Some(csv) => ValueData::WithCsv(Box::new(v), csv.to_owned()),
                            None => v,
                        };
                        Ok((n.to_owned(), v))
                    })
                    .collect::<Result<_, Error>>()?,
                columns: (columns != r.names())
                    .then(|| columns.iter().map(|c| (*c).to_owned()).collect()),
            })
        })
        .collect()
}

/// Runs a [`Transform`] as the host would on one batch: `init(config)` (a JSON text), then
/// `transform` over the encoded flows; returns the decoded records.
pub fn run_transform<T: Transform>(
    config: &str,
    flows: &[FlowData],
) -> Result<Vec<RecordData>, Error> {
    let mut t = T::init(&Config::parse(config)?)?;
    let batch = encode_flows(flows);
    let mut out = Output::default();
    t.transform(crate::Flows::new(&batch)?, &mut out)?;
    decode_records(&out.finish())
}

/// Runs a [`Mangle`] as the host would on one tag's batch.
pub fn run_mangle<T: Mangle>(
    config: &str,
    tag: &str,
    records: &[RecordData],
) -> Result<Vec<RecordData>, Error> {
    let mut m = T::init(&Config::parse(config)?)?;
    let batch = encode_records(records);
    let mut out = Output::default();
    m.mangle(tag, Records::new(&batch)?, &mut out)?;
    decode_records(&out.finish())
}

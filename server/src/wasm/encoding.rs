//! The host's side of the batch encoding (`guest-sdk/ENCODING.md`): flows and records out to a
//! guest, records back. The format itself is `sluice-wire`, which the guest SDK uses too; here
//! is what only the host does: lending its flow model's fields to the flow writer, sharing one `Arc`
//! schema between the records of a shape (and across batches), checking the JSON texts guests
//! return, and turning builtin records and JSON objects into records.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use sluice_wire::WireError;
use sluice_wire::flow::{
    FinishType, FlowFields, Icmp, IpMetric, Layer, Metric, Protocol, TcpMetric, Transport,
};
use sluice_wire::record::{BatchWriter, RecordBatch as WireBatch, SchemaRef};

use super::record::{RecordBatch, Schema, WasmRecord, WasmValue};
use crate::pipeline::record::Record;
use crate::skydive::flow::{Flow, FlowLayer, FlowMetric};

pub use sluice_wire::VERSION;
pub use sluice_wire::record::{MAX_FIELDS, MAX_NAME};

/// Why a guest's record batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The batch ended inside a field.
    #[error("record batch truncated")]
    Truncated,
    /// Not version 1, or not a record batch.
    #[error(
        "record batch has version {version}, kind {kind} (want {VERSION}, {})",
        sluice_wire::KIND_RECORDS
    )]
    Header {
        /// Version byte.
        version: u8,
        /// Kind byte.
        kind: u8,
    },
    /// Anything else out of shape.
    #[error("malformed record batch: {0}")]
    Invalid(&'static str),
    /// A JSON answer that is not an array of objects.
    #[error("the JSON answer is not an array of record objects: {0}")]
    Json(String),
}

impl DecodeError {
    /// The error of reading `batch`.
    fn of(e: WireError, batch: &[u8]) -> Self {
        match e {
            WireError::Truncated => DecodeError::Truncated,
            WireError::Version(version) => DecodeError::Header {
                version,
                kind: batch.get(1).copied().unwrap_or(0),
            },
            WireError::Kind(kind) => DecodeError::Header {
                version: VERSION,
                kind,
            },
            WireError::Utf8 => DecodeError::Invalid("string is not UTF-8"),
            WireError::Invalid(what) => DecodeError::Invalid(what),
        }
    }
}

fn layer(l: &FlowLayer) -> Layer<'_> {
    Layer {
        protocol: Protocol::from_ordinal(l.protocol.ordinal() as u8),
        a: &l.a,
        b: &l.b,
        id: l.id,
    }
}

fn metric(m: &FlowMetric) -> Metric {
    Metric {
        ab_packets: m.ab_packets,
        ab_bytes: m.ab_bytes,
        ba_packets: m.ba_packets,
        ba_bytes: m.ba_bytes,
        start: m.start,
        last: m.last,
        rtt: m.rtt,
    }
}

/// The fields of the host's flow model, as the flow writer takes them.
fn wire_fields(f: &Flow) -> FlowFields<'_> {
    FlowFields {
        uuid: &f.uuid,
        layers_path: &f.layers_path,
        application: &f.application,
        tracking_id: &f.tracking_id,
        l3_tracking_id: &f.l3_tracking_id,
        parent_uuid: &f.parent_uuid,
        node_tid: &f.node_tid,
        capture_id: &f.capture_id,
        start: f.start,
        last: f.last,
        raw_packets_captured: f.raw_packets_captured,
        finish_type: FinishType::from_code(f.finish_type.code()),
        link: f.link.as_ref().map(layer),
        network: f.network.as_ref().map(layer),
        transport: f.transport.as_ref().map(|t| Transport {
            protocol: Protocol::from_ordinal(t.protocol.ordinal() as u8),
            a: t.a,
            b: t.b,
            id: t.id,
        }),
        icmp: f.icmp.as_ref().map(|i| Icmp {
            kind: i.kind.ordinal() as u8,
            code: i.code,
            id: i.id,
        }),
        last_update_metric: f.last_update_metric.as_ref().map(metric),
        metric: f.metric.as_ref().map(metric),
        tcp_metric: f.tcp_metric.as_ref().map(|m| TcpMetric {
            values: [
                m.ab_syn_start,
                m.ba_syn_start,
                m.ab_syn_ttl.into(),
                m.ba_syn_ttl.into(),
                m.ab_fin_start,
                m.ba_fin_start,
                m.ab_rst_start,
                m.ba_rst_start,
                m.ab_segment_out_of_order,
                m.ab_segment_skipped,
                m.ab_segment_skipped_bytes,
                m.ab_packets,
                m.ab_bytes,
                m.ab_saw_start,
                m.ab_saw_end,
                m.ba_segment_out_of_order,
                m.ba_segment_skipped,
                m.ba_segment_skipped_bytes,
                m.ba_packets,
                m.ba_bytes,
                m.ba_saw_start,
                m.ba_saw_end,
            ],
        }),
        ip_metric: f.ip_metric.as_ref().map(|m| IpMetric {
            fragments: m.fragments,
            fragment_errors: m.fragment_errors,
        }),
        dhcpv4: f.dhcpv4.as_deref().map(RawValue::get),
        dns: f.dns.as_deref().map(RawValue::get),
        vrrpv2: f.vrrpv2.as_deref().map(RawValue::get),
    }
}

/// Encodes flows as a flow batch (ENCODING.md §2), replacing `b`'s content.
pub fn encode_flows(flows: &[Flow], b: &mut Vec<u8>) {
    sluice_wire::flow::encode_flows(flows.iter().map(wire_fields), b);
}

/// Builds a record batch (ENCODING.md §3): a mangler's input.
#[derive(Debug, Default)]
pub struct RecordWriter {
    w: BatchWriter,
    schemas: Vec<Arc<Schema>>,
}

impl RecordWriter {
    fn schema(&mut self, schema: &Arc<Schema>) -> u32 {
        if let Some(i) = self
            .schemas
            .iter()
            .rposition(|s| Arc::ptr_eq(s, schema) || **s == **schema)
        {
            return i as u32;
        }
        self.schemas.push(schema.clone());
        (self.schemas.len() - 1) as u32
    }

    fn start(&mut self, schema: &Arc<Schema>) {
        let index = self.schema(schema);
        self.w.record(index);
    }

    fn value(&mut self, v: WasmValue<'_>) {
        self.w.value(v);
    }

    /// Appends a guest's record: its checked value bytes as they are.
    pub fn push(&mut self, record: &WasmRecord) {
        self.start(record.schema());
        self.w.encoded_fields(record.value_bytes());
    }

    /// The batch.
    pub fn finish(self) -> Vec<u8> {
        self.w.finish(&self.schemas)
    }
}

/// Encodes any records as a record batch for a mangler: guest records as they are, builtin
/// records through their JSON form (top-level keys in order; nested objects as JSON texts).
pub fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut w = RecordWriter::default();
    let mut shapes: Vec<Arc<Schema>> = Vec::new();
    for record in records {
        match record {
            Record::Wasm(r) => w.push(r),
            other => push_builtin(&mut w, other, &mut shapes),
        }
    }
    w.finish()
}

/// A builtin record as ordered fields, via its JSON form.
fn push_builtin(w: &mut RecordWriter, record: &Record, shapes: &mut Vec<Arc<Schema>>) {
    let text = serde_json::to_string(record).unwrap_or_else(|_| "{}".into());
    let fields = OrderedFields::parse(&text).unwrap_or_default();
    push_object(w, &fields, shapes);
}

/// A JSON object's members as one record: its keys in order are the fields (records of the
/// same keys share a schema); strings, numbers, booleans and null are values, nested objects
/// and arrays JSON texts.
pub(super) fn push_object(
    w: &mut RecordWriter,
    fields: &[(String, Box<RawValue>)],
    shapes: &mut Vec<Arc<Schema>>,
) {
    let names: Vec<Box<str>> = fields.iter().map(|(n, _)| n.as_str().into()).collect();
    let schema = match shapes.iter().find(|s| *s.names == *names) {
        Some(s) => s.clone(),
        None => {
            let s = Arc::new(Schema::new(names.into()));
            shapes.push(s.clone());
            s
        }
    };
    w.start(&schema);
    for (_, raw) in fields {
        let text = raw.get();
        let unquoted;
        let value = match text.as_bytes().first() {
            Some(b'"') => match serde_json::from_str::<String>(text) {
                Ok(s) => {
                    unquoted = s;
                    WasmValue::Str(&unquoted)
                }
                Err(_) => WasmValue::Null,
            },
            Some(b't') => WasmValue::Bool(true),
            Some(b'f') => WasmValue::Bool(false),
            Some(b'n') | None => WasmValue::Null,
            Some(b'{' | b'[') => WasmValue::Json(text),
            Some(_) => {
                if let Ok(v) = text.parse::<i64>() {
                    WasmValue::Int(v)
                } else if let Ok(v) = text.parse::<u64>() {
                    WasmValue::UInt(v)
                } else {
                    text.parse::<f64>()
                        .map_or(WasmValue::Null, WasmValue::Float)
                }
            }
        };
        w.value(value);
    }
}

/// A JSON object's members in document order.
#[derive(Debug, Default)]
pub(super) struct OrderedFields(pub(super) Vec<(String, Box<RawValue>)>);

impl OrderedFields {
    fn parse(text: &str) -> Result<Vec<(String, Box<RawValue>)>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        Ok(de.deserialize_map(OrderedFieldsVisitor)?.0)
    }
}

impl<'de> serde::Deserialize<'de> for OrderedFields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(OrderedFieldsVisitor)
    }
}

struct OrderedFieldsVisitor;

impl<'de> Visitor<'de> for OrderedFieldsVisitor {
    type Value = OrderedFields;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedFields, A::Error> {
        let mut fields = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
            fields.push((k, v));
        }
        Ok(OrderedFields(fields))
    }
}

/// Schemas seen in earlier batches of a stage, reused when a batch has the same ones: records
/// of one shape then share one `Arc`, which the CSV encoder compares by pointer.
#[derive(Debug, Default)]
pub struct SchemaCache(Vec<Arc<Schema>>);

impl SchemaCache {
    /// Most schemas kept.
    const SIZE: usize = 16;

    fn intern(&mut self, schema: &SchemaRef<'_>) -> Arc<Schema> {
        if let Some(known) = self.0.iter().find(|s| s.is(schema)) {
            return known.clone();
        }
        let schema = Arc::new(Schema::from_wire(schema));
        if self.0.len() == Self::SIZE {
            self.0.remove(0);
        }
        self.0.push(schema.clone());
        schema
    }
}

/// Decodes a guest's record batch (ENCODING.md §3), checking every length, tag, string and
/// JSON text once; the records then read their values from the batch's bytes.
pub fn decode_records(
    batch: Vec<u8>,
    cache: &mut SchemaCache,
) -> Result<Vec<WasmRecord>, DecodeError> {
    let err = |e| DecodeError::of(e, &batch);
    let parsed = WireBatch::parse(&batch).map_err(err)?;
    let mut spans = Vec::with_capacity(parsed.len());
    let mut records = parsed.records();
    while let Some(record) = records.next_with(|_, field| match field.value {
        WasmValue::Json(text) if serde_json::from_str::<&RawValue>(text).is_err() => {
            Err(WireError::Invalid("json value is not JSON"))
        }
        _ => Ok(()),
    }) {
        let record = record.map_err(err)?;
        let start = record.start as u32;
        spans.push((record.schema, start, start + record.fields.len() as u32));
    }
    let schemas = parsed.schemas().iter().map(|s| cache.intern(s)).collect();
    let batch = Arc::new(RecordBatch {
        bytes: batch.into_boxed_slice(),
        schemas,
    });
    Ok(spans
        .into_iter()
        .map(|(schema, start, end)| WasmRecord::new(batch.clone(), schema, start, end))
        .collect())
}

//! The host's side of the batch encoding (`guest-sdk/ENCODING.md`): flows and records out to a
//! guest, records back. The guest SDK has its own implementation; the tests check one against
//! the other.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::record::{WasmRecord, WasmValue};
use crate::flow::{Flow, FlowLayer, FlowMetric};
use crate::pipeline::record::Record;

/// The encoding version written and accepted.
pub const VERSION: u8 = 1;
const KIND_FLOWS: u8 = 1;
const KIND_RECORDS: u8 = 2;
const RECORDS_HEADER: usize = 16;
/// Most fields in one record shape.
pub const MAX_FIELDS: usize = 1024;
/// Longest field name.
pub const MAX_NAME: usize = 256;

/// Why a guest's record batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The batch ended inside a field.
    #[error("record batch truncated")]
    Truncated,
    /// Not version 1, or not a record batch.
    #[error("record batch has version {version}, kind {kind} (want {VERSION}, {KIND_RECORDS})")]
    Header {
        /// Version byte.
        version: u8,
        /// Kind byte.
        kind: u8,
    },
    /// Anything else out of shape.
    #[error("malformed record batch: {0}")]
    Invalid(&'static str),
}

trait Put {
    fn u8(&mut self, v: u8);
    fn u16(&mut self, v: u16);
    fn u32(&mut self, v: u32);
    fn i64(&mut self, v: i64);
    fn str(&mut self, v: &str);
}

impl Put for Vec<u8> {
    fn u8(&mut self, v: u8) {
        self.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn i64(&mut self, v: i64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, v: &str) {
        self.u32(v.len() as u32);
        self.extend_from_slice(v.as_bytes());
    }
}

fn put_layer(b: &mut Vec<u8>, l: &FlowLayer) {
    b.u8(l.protocol.ordinal() as u8);
    b.i64(l.id);
    b.str(&l.a);
    b.str(&l.b);
}

fn put_metric(b: &mut Vec<u8>, m: &FlowMetric) {
    for v in [
        m.ab_packets,
        m.ab_bytes,
        m.ba_packets,
        m.ba_bytes,
        m.start,
        m.last,
        m.rtt,
    ] {
        b.i64(v);
    }
}

/// Encodes flows as a flow batch (ENCODING.md §2), replacing `b`'s content.
pub fn encode_flows(flows: &[Flow], b: &mut Vec<u8>) {
    b.clear();
    b.u8(VERSION);
    b.u8(KIND_FLOWS);
    b.u16(0);
    b.u32(flows.len() as u32);
    for f in flows {
        let size_at = b.len();
        b.u32(0);
        let bits = [
            f.link.is_some(),
            f.network.is_some(),
            f.transport.is_some(),
            f.icmp.is_some(),
            f.last_update_metric.is_some(),
            f.metric.is_some(),
            f.tcp_metric.is_some(),
            f.ip_metric.is_some(),
            f.dhcpv4.is_some(),
            f.dns.is_some(),
            f.vrrpv2.is_some(),
        ];
        let present = bits
            .iter()
            .enumerate()
            .fold(0u16, |acc, (i, set)| acc | (u16::from(*set) << i));
        b.u16(present);
        b.u8(f.finish_type.code());
        b.i64(f.start);
        b.i64(f.last);
        b.i64(f.raw_packets_captured);
        for s in [
            &f.uuid,
            &f.layers_path,
            &f.application,
            &f.tracking_id,
            &f.l3_tracking_id,
            &f.parent_uuid,
            &f.node_tid,
            &f.capture_id,
        ] {
            b.str(s);
        }
        if let Some(l) = &f.link {
            put_layer(b, l);
        }
        if let Some(l) = &f.network {
            put_layer(b, l);
        }
        if let Some(t) = &f.transport {
            b.u8(t.protocol.ordinal() as u8);
            b.i64(t.a);
            b.i64(t.b);
            b.i64(t.id);
        }
        if let Some(i) = &f.icmp {
            b.u8(i.kind.ordinal() as u8);
            b.u32(i.code);
            b.u32(i.id);
        }
        if let Some(m) = &f.last_update_metric {
            put_metric(b, m);
        }
        if let Some(m) = &f.metric {
            put_metric(b, m);
        }
        if let Some(m) = &f.tcp_metric {
            for v in [
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
            ] {
                b.i64(v);
            }
        }
        if let Some(m) = &f.ip_metric {
            b.i64(m.fragments);
            b.i64(m.fragment_errors);
        }
        for raw in [&f.dhcpv4, &f.dns, &f.vrrpv2].into_iter().flatten() {
            b.str(raw.get());
        }
        let size = (b.len() - size_at - 4) as u32;
        b[size_at..size_at + 4].copy_from_slice(&size.to_le_bytes());
    }
}

/// Builds a record batch (ENCODING.md §3): a mangler's input.
#[derive(Debug, Default)]
pub struct RecordWriter {
    buf: Vec<u8>,
    count: u32,
    schemas: Vec<Arc<[Box<str>]>>,
}

impl RecordWriter {
    fn schema(&mut self, names: &Arc<[Box<str>]>) -> u32 {
        if let Some(i) = self
            .schemas
            .iter()
            .rposition(|s| Arc::ptr_eq(s, names) || **s == **names)
        {
            return i as u32;
        }
        self.schemas.push(names.clone());
        (self.schemas.len() - 1) as u32
    }

    fn value(&mut self, v: &WasmValue) {
        let b = &mut self.buf;
        match v {
            WasmValue::Null => b.u8(0),
            WasmValue::Bool(false) => b.u8(1),
            WasmValue::Bool(true) => b.u8(2),
            WasmValue::Int(v) => {
                b.u8(3);
                b.i64(*v);
            }
            WasmValue::UInt(v) => {
                b.u8(4);
                b.extend_from_slice(&v.to_le_bytes());
            }
            WasmValue::Float(v) => {
                b.u8(5);
                b.extend_from_slice(&v.to_le_bytes());
            }
            WasmValue::Str(s) => {
                b.u8(6);
                b.str(s);
            }
            WasmValue::Json(j) => {
                b.u8(7);
                b.str(j.get());
            }
        }
    }

    /// Appends one record.
    pub fn push(&mut self, record: &WasmRecord) {
        if self.buf.is_empty() {
            self.buf.resize(RECORDS_HEADER, 0);
        }
        let schema = self.schema(record.names_arc());
        self.buf.u32(schema);
        for v in record.values() {
            self.value(v);
        }
        self.count += 1;
    }

    /// The batch.
    pub fn finish(mut self) -> Vec<u8> {
        if self.buf.is_empty() {
            self.buf.resize(RECORDS_HEADER, 0);
        }
        let offset = self.buf.len() as u32;
        let schema_count = self.schemas.len() as u32;
        for schema in std::mem::take(&mut self.schemas) {
            self.buf.u16(schema.len() as u16);
            for name in schema.iter() {
                self.buf.str(name);
            }
        }
        let mut header = Vec::with_capacity(RECORDS_HEADER);
        header.u8(VERSION);
        header.u8(KIND_RECORDS);
        header.u16(0);
        header.u32(self.count);
        header.u32(offset);
        header.u32(schema_count);
        self.buf[..RECORDS_HEADER].copy_from_slice(&header);
        self.buf
    }
}

/// Encodes any records as a record batch for a mangler: guest records as they are, builtin
/// records through their JSON form (top-level keys in order; nested objects as JSON texts).
pub fn encode_records(records: &[Record]) -> Vec<u8> {
    let mut w = RecordWriter::default();
    let mut shapes: Vec<Arc<[Box<str>]>> = Vec::new();
    for record in records {
        match record {
            Record::Wasm(r) => w.push(r),
            other => {
                let r = to_wasm_record(other, &mut shapes);
                w.push(&r);
            }
        }
    }
    w.finish()
}

/// A builtin record as ordered fields, via its JSON form.
pub fn to_wasm_record(record: &Record, shapes: &mut Vec<Arc<[Box<str>]>>) -> WasmRecord {
    let text = serde_json::to_string(record).unwrap_or_else(|_| "{}".into());
    let fields = OrderedFields::parse(&text).unwrap_or_default();
    let names: Vec<Box<str>> = fields.iter().map(|(n, _)| n.as_str().into()).collect();
    let names = match shapes.iter().find(|s| ***s == *names) {
        Some(s) => s.clone(),
        None => {
            let s: Arc<[Box<str>]> = names.into();
            shapes.push(s.clone());
            s
        }
    };
    let values = fields.into_iter().map(|(_, raw)| json_value(raw)).collect();
    WasmRecord::new(names, values)
}

fn json_value(raw: Box<RawValue>) -> WasmValue {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<String>(text)
            .map_or(WasmValue::Null, |s| WasmValue::Str(s.into())),
        Some(b't') => WasmValue::Bool(true),
        Some(b'f') => WasmValue::Bool(false),
        Some(b'n') | None => WasmValue::Null,
        Some(b'{' | b'[') => WasmValue::Json(raw),
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
    }
}

/// A JSON object's members in document order.
#[derive(Debug, Default)]
struct OrderedFields(Vec<(String, Box<RawValue>)>);

impl OrderedFields {
    fn parse(text: &str) -> Result<Vec<(String, Box<RawValue>)>, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(text);
        Ok(de.deserialize_map(OrderedFieldsVisitor)?.0)
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

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| DecodeError::Invalid("string is not UTF-8"))
    }
}

/// Decodes a guest's record batch (ENCODING.md §3) into records, checking every length.
pub fn decode_records(batch: &[u8]) -> Result<Vec<WasmRecord>, DecodeError> {
    let mut r = Reader(batch);
    let (version, kind) = (r.u8()?, r.u8()?);
    if version != VERSION || kind != KIND_RECORDS {
        return Err(DecodeError::Header { version, kind });
    }
    r.u16()?;
    let count = r.u32()? as usize;
    let offset = r.u32()? as usize;
    let schema_count = r.u32()? as usize;
    if offset < RECORDS_HEADER || offset > batch.len() {
        return Err(DecodeError::Invalid("schemas_offset out of range"));
    }
    let mut s = Reader(&batch[offset..]);
    let mut schemas: Vec<Arc<[Box<str>]>> = Vec::with_capacity(schema_count.min(1024));
    for _ in 0..schema_count {
        let n = s.u16()? as usize;
        if n > MAX_FIELDS {
            return Err(DecodeError::Invalid("more than 1024 fields in a record"));
        }
        let mut names: Vec<Box<str>> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = s.str()?;
            if name.len() > MAX_NAME {
                return Err(DecodeError::Invalid("field name longer than 256 bytes"));
            }
            if names.iter().any(|n| &**n == name) {
                return Err(DecodeError::Invalid("duplicate field name in a record"));
            }
            names.push(name.into());
        }
        schemas.push(names.into());
    }
    // Each record takes at least 4 bytes: bound the allocation by the bytes present.
    let mut body = Reader(&batch[RECORDS_HEADER..offset]);
    if count > body.0.len() / 4 + 1 {
        return Err(DecodeError::Invalid("record count larger than the batch"));
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let schema = schemas
            .get(body.u32()? as usize)
            .ok_or(DecodeError::Invalid("unknown schema"))?;
        let mut values = Vec::with_capacity(schema.len());
        for _ in 0..schema.len() {
            values.push(match body.u8()? {
                0 => WasmValue::Null,
                1 => WasmValue::Bool(false),
                2 => WasmValue::Bool(true),
                3 => WasmValue::Int(i64::from_le_bytes(body.array()?)),
                4 => WasmValue::UInt(u64::from_le_bytes(body.array()?)),
                5 => WasmValue::Float(f64::from_le_bytes(body.array()?)),
                6 => WasmValue::Str(body.str()?.into()),
                7 => WasmValue::Json(
                    RawValue::from_string(body.str()?.to_owned())
                        .map_err(|_| DecodeError::Invalid("json value is not JSON"))?,
                ),
                _ => return Err(DecodeError::Invalid("unknown value tag")),
            });
        }
        records.push(WasmRecord::new(schema.clone(), values));
    }
    Ok(records)
}

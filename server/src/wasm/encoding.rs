//! The host's side of the batch encoding (`guest-sdk/ENCODING.md`): flows and records out to a
//! guest, records back. The guest SDK has its own implementation; the tests check one against
//! the other.

use std::fmt;
use std::sync::Arc;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::record::{RecordBatch, Schema, WasmField, WasmRecord, WasmValue};
use crate::pipeline::record::Record;
use crate::skydive::flow::{Flow, FlowLayer, FlowMetric};

/// The encoding version written and accepted.
pub const VERSION: u8 = 1;
const KIND_FLOWS: u8 = 1;
const KIND_RECORDS: u8 = 2;
const RECORDS_HEADER: usize = 16;
/// Record batch flag: the schema table is followed by the CSV column names.
const FLAG_COLUMNS: u16 = 1;
/// Value tag: a CSV text, then the field's value.
const TAG_CSV: u8 = 8;
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
    /// A JSON answer that is not an array of objects.
    #[error("the JSON answer is not an array of record objects: {0}")]
    Json(String),
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
        if self.buf.is_empty() {
            self.buf.resize(RECORDS_HEADER, 0);
        }
        let index = self.schema(schema);
        self.buf.u32(index);
        self.count += 1;
    }

    fn value(&mut self, v: WasmValue<'_>) {
        let b = &mut self.buf;
        match v {
            WasmValue::Null => b.u8(0),
            WasmValue::Bool(false) => b.u8(1),
            WasmValue::Bool(true) => b.u8(2),
            WasmValue::Int(v) => {
                b.u8(3);
                b.i64(v);
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
                b.str(j);
            }
        }
    }

    /// Appends a guest's record: its checked value bytes as they are.
    pub fn push(&mut self, record: &WasmRecord) {
        self.start(record.schema());
        self.buf.extend_from_slice(record.value_bytes());
    }

    /// The batch.
    pub fn finish(mut self) -> Vec<u8> {
        if self.buf.is_empty() {
            self.buf.resize(RECORDS_HEADER, 0);
        }
        let offset = self.buf.len() as u32;
        let schema_count = self.schemas.len() as u32;
        let schemas = std::mem::take(&mut self.schemas);
        for schema in &schemas {
            self.buf.u16(schema.names.len() as u16);
            for name in schema.names.iter() {
                self.buf.str(name);
            }
        }
        let columns = schemas.iter().any(|s| s.has_columns());
        if columns {
            for schema in &schemas {
                for name in schema.columns.iter() {
                    self.buf.str(name);
                }
            }
        }
        let mut header = Vec::with_capacity(RECORDS_HEADER);
        header.u8(VERSION);
        header.u8(KIND_RECORDS);
        header.u16(if columns { FLAG_COLUMNS } else { 0 });
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

/// A bounds-checked cursor over a batch.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8]) -> Self {
        Reader(bytes)
    }
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

/// Trims JSON's whitespace around a JSON text.
fn trim_json(text: &str) -> &str {
    text.trim_matches([' ', '\t', '\n', '\r'])
}

fn read_value<'a>(r: &mut Reader<'a>, tag: u8) -> Result<WasmValue<'a>, DecodeError> {
    Ok(match tag {
        0 => WasmValue::Null,
        1 => WasmValue::Bool(false),
        2 => WasmValue::Bool(true),
        3 => WasmValue::Int(i64::from_le_bytes(r.array()?)),
        4 => WasmValue::UInt(u64::from_le_bytes(r.array()?)),
        5 => WasmValue::Float(f64::from_le_bytes(r.array()?)),
        6 => WasmValue::Str(r.str()?),
        7 => WasmValue::Json(trim_json(r.str()?)),
        _ => return Err(DecodeError::Invalid("unknown value tag")),
    })
}

/// One field: a value, or (tag 8) a CSV text and then the value.
pub(super) fn read_field<'a>(r: &mut Reader<'a>) -> Result<WasmField<'a>, DecodeError> {
    match r.u8()? {
        TAG_CSV => {
            let csv = r.str()?;
            let tag = r.u8()?;
            if tag == TAG_CSV {
                return Err(DecodeError::Invalid("a CSV text inside a CSV text"));
            }
            Ok(WasmField {
                value: read_value(r, tag)?,
                csv: Some(csv),
            })
        }
        tag => Ok(WasmField {
            value: read_value(r, tag)?,
            csv: None,
        }),
    }
}

fn read_names(s: &mut Reader<'_>, n: usize, unique: bool) -> Result<Arc<[Box<str>]>, DecodeError> {
    // A hostile guest sends many schemas of 1,024 fields: the duplicate check stays linear
    // (a set) past a few fields, where comparing with each earlier name would be quadratic.
    const LINEAR_UP_TO: usize = 16;
    let mut names: Vec<Box<str>> = Vec::with_capacity(n);
    let mut seen = hashbrown::HashSet::with_hasher(foldhash::fast::RandomState::default());
    for _ in 0..n {
        let name = s.str()?;
        if name.len() > MAX_NAME {
            return Err(DecodeError::Invalid("field name longer than 256 bytes"));
        }
        let duplicate = unique
            && if n <= LINEAR_UP_TO {
                names.iter().any(|n| &**n == name)
            } else {
                !seen.insert(name)
            };
        if duplicate {
            return Err(DecodeError::Invalid("duplicate field name in a record"));
        }
        names.push(name.into());
    }
    Ok(names.into())
}

/// Schemas seen in earlier batches of a stage, reused when a batch has the same ones: records
/// of one shape then share one `Arc`, which the CSV encoder compares by pointer.
#[derive(Debug, Default)]
pub struct SchemaCache(Vec<Arc<Schema>>);

impl SchemaCache {
    /// Most schemas kept.
    const SIZE: usize = 16;

    fn intern(&mut self, schema: Schema) -> Arc<Schema> {
        if let Some(known) = self.0.iter().find(|s| ***s == schema) {
            return known.clone();
        }
        let schema = Arc::new(schema);
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
    let mut r = Reader(&batch);
    let (version, kind) = (r.u8()?, r.u8()?);
    if version != VERSION || kind != KIND_RECORDS {
        return Err(DecodeError::Header { version, kind });
    }
    let flags = r.u16()?;
    let count = r.u32()? as usize;
    let offset = r.u32()? as usize;
    let schema_count = r.u32()? as usize;
    if offset < RECORDS_HEADER || offset > batch.len() {
        return Err(DecodeError::Invalid("schemas_offset out of range"));
    }
    let mut s = Reader(&batch[offset..]);
    let mut names = Vec::with_capacity(schema_count.min(1024));
    for _ in 0..schema_count {
        let n = s.u16()? as usize;
        if n > MAX_FIELDS {
            return Err(DecodeError::Invalid("more than 1024 fields in a record"));
        }
        names.push(read_names(&mut s, n, true)?);
    }
    let mut schemas = Vec::with_capacity(names.len());
    for names in names {
        let schema = if flags & FLAG_COLUMNS != 0 {
            let columns = read_names(&mut s, names.len(), false)?;
            Schema { names, columns }
        } else {
            Schema::new(names)
        };
        schemas.push(cache.intern(schema));
    }
    // Each record takes at least 4 bytes: bound the allocation by the bytes present.
    let mut body = Reader(&batch[RECORDS_HEADER..offset]);
    if count > body.0.len() / 4 + 1 {
        return Err(DecodeError::Invalid("record count larger than the batch"));
    }
    let mut spans = Vec::with_capacity(count);
    for _ in 0..count {
        let index = body.u32()?;
        let schema = schemas
            .get(index as usize)
            .ok_or(DecodeError::Invalid("unknown schema"))?;
        let start = offset - body.0.len();
        for _ in 0..schema.names.len() {
            if let WasmValue::Json(text) = read_field(&mut body)?.value
                && serde_json::from_str::<&RawValue>(text).is_err()
            {
                return Err(DecodeError::Invalid("json value is not JSON"));
            }
        }
        spans.push((index, start as u32, (offset - body.0.len()) as u32));
    }
    let batch = Arc::new(RecordBatch {
        bytes: batch.into_boxed_slice(),
        schemas,
    });
    Ok(spans
        .into_iter()
        .map(|(schema, start, end)| WasmRecord::new(batch.clone(), schema, start, end))
        .collect())
}

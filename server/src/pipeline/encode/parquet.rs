//! The `parquet` encoder (docs/parquet.md): one Parquet file per object, compressed inside.
//!
//! `awsflowlogs` records get AWS's Parquet flow-log schema with Athena's types (§2); any other
//! record gets a schema read from its JSON form, one per object, by the type rules of §3: a
//! field's column is boolean, int64, double or string, a nested object a group of columns, and
//! a list, or a field whose type changes within the object, a JSON column holding each value's
//! JSON text, so nothing is lost. A row group is built in memory, at most
//! `encode.parquet.row_group_rows` records, then written; a file holds one or more.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use parquet::basic::{
    Compression, GzipLevel, LogicalType, Repetition, Type as Physical, ZstdLevel,
};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int32Type, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{Type, TypePtr};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::config::{ParquetCompression, ParquetOptions};
use crate::pipeline::record::Record;
use crate::pipeline::transform::awsflowlogs::AwsFlowLog;

/// The object's Content-Type (IANA's registration for Parquet).
pub const CONTENT_TYPE: &str = "application/vnd.apache.parquet";

/// Why an object could not be written as Parquet.
#[derive(Debug, thiserror::Error)]
pub enum ParquetEncodeError {
    /// The Parquet writer refused the schema or the data.
    #[error("parquet: {0}")]
    Writer(#[from] ParquetError),
    /// A record's JSON form could not be made or read back.
    #[error("parquet: a record's JSON form: {0}")]
    Json(#[from] serde_json::Error),
    /// Every record of the object is empty: a file needs a column.
    #[error("parquet: the records have no field to make a column of")]
    NoColumns,
}

/// A configured Parquet encoder.
#[derive(Clone)]
pub struct ParquetEncoder {
    properties: Arc<WriterProperties>,
    row_group_rows: usize,
    compression: ParquetCompression,
}

impl fmt::Debug for ParquetEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParquetEncoder")
            .field("compression", &self.compression)
            .field("row_group_rows", &self.row_group_rows)
            .finish()
    }
}

impl ParquetEncoder {
    /// From validated options.
    pub fn from_options(options: &ParquetOptions) -> Self {
        let codec = match options.compression {
            ParquetCompression::Snappy => Compression::SNAPPY,
            ParquetCompression::Zstd => Compression::ZSTD(ZstdLevel::default()),
            ParquetCompression::Gzip => Compression::GZIP(GzipLevel::default()),
            ParquetCompression::None => Compression::UNCOMPRESSED,
        };
        let row_group_rows = options.row_group_rows.unwrap_or_default().get();
        let properties = WriterProperties::builder()
            .set_compression(codec)
            .set_created_by(format!("sluice {}", env!("CARGO_PKG_VERSION")))
            .set_max_row_group_row_count(Some(row_group_rows))
            .build();
        ParquetEncoder {
            properties: Arc::new(properties),
            row_group_rows,
            compression: options.compression,
        }
    }

    /// Writes `records` as one Parquet file, appended to `out`.
    pub fn encode(&self, records: &[Record], out: &mut Vec<u8>) -> Result<(), ParquetEncodeError> {
        match aws_version(records) {
            Some(version) => self.write(out, aws_schema(version)?, records, |chunk| {
                Ok(aws_columns(version, chunk))
            }),
            None => self.encode_any(records, out),
        }
    }

    /// Writes values of any kind (each a JSON object in its serde form) by the type rules of
    /// docs/parquet.md §3.
    fn encode_any<T: Serialize>(
        &self,
        records: &[T],
        out: &mut Vec<u8>,
    ) -> Result<(), ParquetEncodeError> {
        let shape = Shape::of_records(records)?;
        let leaves = shape.leaves();
        if leaves.is_empty() {
            return Err(ParquetEncodeError::NoColumns);
        }
        let schema = shape.schema()?;
        self.write(out, schema, records, |chunk| {
            generic_columns(&leaves, chunk)
        })
    }

    /// One file of `schema`, a row group per `row_group_rows` records, each made by `columns`
    /// (one entry per leaf column, in schema order).
    fn write<T>(
        &self,
        out: &mut Vec<u8>,
        schema: TypePtr,
        records: &[T],
        mut columns: impl FnMut(&[T]) -> Result<Vec<Column>, ParquetEncodeError>,
    ) -> Result<(), ParquetEncodeError> {
        let mut writer = SerializedFileWriter::new(out, schema, self.properties.clone())?;
        for chunk in records.chunks(self.row_group_rows) {
            let data = columns(chunk)?;
            let mut group = writer.next_row_group()?;
            for column in &data {
                let Some(mut w) = group.next_column()? else {
                    break;
                };
                let levels = Some(column.levels.as_slice());
                match &column.values {
                    Values::Bool(v) => w.typed::<BoolType>().write_batch(v, levels, None)?,
                    Values::Int32(v) => w.typed::<Int32Type>().write_batch(v, levels, None)?,
                    Values::Int64(v) => w.typed::<Int64Type>().write_batch(v, levels, None)?,
                    Values::Double(v) => w.typed::<DoubleType>().write_batch(v, levels, None)?,
                    Values::Bytes(v) => w.typed::<ByteArrayType>().write_batch(v, levels, None)?,
                };
                w.close()?;
            }
            group.close()?;
        }
        writer.close()?;
        Ok(())
    }
}

/// One column of a row group: a definition level per record (how deep the value is defined;
/// the column's depth when it is there) and the values that are there.
struct Column {
    levels: Vec<i16>,
    values: Values,
}

enum Values {
    Bool(Vec<bool>),
    Int32(Vec<i32>),
    Int64(Vec<i64>),
    Double(Vec<f64>),
    Bytes(Vec<ByteArray>),
}

impl Column {
    fn new(values: Values, rows: usize) -> Self {
        Column {
            levels: Vec::with_capacity(rows),
            values,
        }
    }
}

fn text(s: &str) -> ByteArray {
    ByteArray::from(Bytes::copy_from_slice(s.as_bytes()))
}

fn static_text(s: &'static str) -> ByteArray {
    ByteArray::from(Bytes::from_static(s.as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// §2: awsflowlogs records, AWS's schema.

/// The version of an object made only of `awsflowlogs` records of one version.
fn aws_version(records: &[Record]) -> Option<u8> {
    let version = match records.first()? {
        Record::AwsFlowLog(r) => r.version,
        _ => return None,
    };
    records
        .iter()
        .all(|r| matches!(r, Record::AwsFlowLog(a) if a.version == version))
        .then_some(version)
}

/// AWS's Parquet columns: name, physical type (Athena's `int`/`bigint`/`string`).
const AWS_COLUMNS: &[(&str, Physical)] = &[
    ("version", Physical::INT32),
    ("account_id", Physical::BYTE_ARRAY),
    ("interface_id", Physical::BYTE_ARRAY),
    ("srcaddr", Physical::BYTE_ARRAY),
    ("dstaddr", Physical::BYTE_ARRAY),
    ("srcport", Physical::INT32),
    ("dstport", Physical::INT32),
    ("protocol", Physical::INT64),
    ("packets", Physical::INT64),
    ("bytes", Physical::INT64),
    ("start", Physical::INT64),
    ("end", Physical::INT64),
    ("action", Physical::BYTE_ARRAY),
    ("log_status", Physical::BYTE_ARRAY),
    // Version 3.
    ("vpc_id", Physical::BYTE_ARRAY),
    ("subnet_id", Physical::BYTE_ARRAY),
    ("instance_id", Physical::BYTE_ARRAY),
    ("tcp_flags", Physical::INT32),
    ("type", Physical::BYTE_ARRAY),
    ("pkt_srcaddr", Physical::BYTE_ARRAY),
    ("pkt_dstaddr", Physical::BYTE_ARRAY),
];

/// Version 2's columns are the first 14.
const AWS_V2_COLUMNS: usize = 14;

fn aws_column_count(version: u8) -> usize {
    if version == 3 {
        AWS_COLUMNS.len()
    } else {
        AWS_V2_COLUMNS
    }
}

fn aws_schema(version: u8) -> Result<TypePtr, ParquetError> {
    let fields = AWS_COLUMNS[..aws_column_count(version)]
        .iter()
        .map(|&(name, physical)| {
            let logical = (physical == Physical::BYTE_ARRAY).then_some(LogicalType::String);
            Type::primitive_type_builder(name, physical)
                .with_repetition(Repetition::OPTIONAL)
                .with_logical_type(logical)
                .build()
                .map(Arc::new)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Arc::new(
        Type::group_type_builder("schema")
            .with_fields(fields)
            .build()?,
    ))
}

/// The columns of `records` (all `awsflowlogs`), in [`AWS_COLUMNS`] order. An absent field
/// (`-` in AWS's text) is null.
fn aws_columns(version: u8, records: &[Record]) -> Vec<Column> {
    let rows: Vec<&AwsFlowLog> = records
        .iter()
        .filter_map(|r| match r {
            Record::AwsFlowLog(a) => Some(&**a),
            _ => None,
        })
        .collect();
    let n = rows.len();
    let int32 = |get: &dyn Fn(&AwsFlowLog) -> Option<i64>| {
        let mut c = Column::new(Values::Int32(Vec::with_capacity(n)), n);
        for r in &rows {
            push_int32(&mut c, get(r));
        }
        c
    };
    let int64 = |get: &dyn Fn(&AwsFlowLog) -> Option<i64>| {
        let mut c = Column::new(Values::Int64(Vec::with_capacity(n)), n);
        for r in &rows {
            match (get(r), &mut c.values) {
                (Some(v), Values::Int64(values)) => {
                    values.push(v);
                    c.levels.push(1);
                }
                _ => c.levels.push(0),
            }
        }
        c
    };
    let string = |get: &dyn Fn(&AwsFlowLog) -> Option<ByteArray>| {
        let mut c = Column::new(Values::Bytes(Vec::with_capacity(n)), n);
        for r in &rows {
            match (get(r), &mut c.values) {
                (Some(v), Values::Bytes(values)) => {
                    values.push(v);
                    c.levels.push(1);
                }
                _ => c.levels.push(0),
            }
        }
        c
    };
    let absent = || {
        let mut c = Column::new(Values::Bytes(Vec::new()), n);
        c.levels.resize(n, 0);
        c
    };
    // The same account id in every record of a pipeline: one buffer shared by every value.
    let account = rows.first().map(|r| text(&r.account_id));
    let mut columns = vec![
        int32(&|r| Some(r.version.into())),
        string(&|r| match &account {
            Some(a) if a.data() == r.account_id.as_bytes() => Some(a.clone()),
            _ => Some(text(&r.account_id)),
        }),
        string(&|r| r.interface_id.as_deref().map(text)),
        string(&|r| r.srcaddr.as_deref().map(text)),
        string(&|r| r.dstaddr.as_deref().map(text)),
        int32(&|r| r.srcport),
        int32(&|r| r.dstport),
        int64(&|r| r.protocol.map(i64::from)),
        int64(&|r| r.packets),
        int64(&|r| r.bytes),
        int64(&|r| Some(r.start)),
        int64(&|r| Some(r.end)),
        string(&|r| Some(static_text(r.action))),
        string(&|r| Some(static_text(r.log_status))),
    ];
    if version == 3 {
        // vpc-id, subnet-id, instance-id: no Skydive equivalent (docs/awsflowlogs.md §2).
        columns.extend([absent(), absent(), absent()]);
        columns.push(int32(&|r| r.tcp_flags.map(i64::from)));
        columns.push(string(&|r| r.ip_type.map(static_text)));
        // pkt-srcaddr, pkt-dstaddr: not computed.
        columns.extend([absent(), absent()]);
    }
    columns
}

/// An int32 value, or null when absent or out of int32's range (ports and flags never are).
fn push_int32(c: &mut Column, value: Option<i64>) {
    match (value.and_then(|v| i32::try_from(v).ok()), &mut c.values) {
        (Some(v), Values::Int32(values)) => {
            values.push(v);
            c.levels.push(1);
        }
        _ => c.levels.push(0),
    }
}

// ---------------------------------------------------------------------------------------------
// §3: any other record, a schema from its JSON form.

/// A record's JSON form, with the order of its keys kept.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer above `i64::MAX`.
    Big(u64),
    Float(f64),
    Str(String),
    Obj(Vec<(String, Json)>),
    Arr(Vec<Json>),
}

impl Json {
    fn of<T: Serialize>(record: &T) -> Result<Json, serde_json::Error> {
        serde_json::from_slice(&serde_json::to_vec(record)?)
    }

    fn get(&self, name: &str) -> Option<&Json> {
        match self {
            Json::Obj(fields) => fields.iter().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Json;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(i64::try_from(v).map_or(Json::Big(v), Json::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Json, E> {
                Ok(Json::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::Str(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Json::Arr(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut fields: Vec<(String, Json)> = Vec::new();
                while let Some((key, value)) = map.next_entry::<String, Json>()? {
                    // A repeated key: the last one wins, as in serde_json's own maps.
                    match fields.iter_mut().find(|(k, _)| *k == key) {
                        Some(field) => field.1 = value,
                        None => fields.push((key, value)),
                    }
                }
                Ok(Json::Obj(fields))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(v) => s.serialize_bool(*v),
            Json::Int(v) => s.serialize_i64(*v),
            Json::Big(v) => s.serialize_u64(*v),
            Json::Float(v) => s.serialize_f64(*v),
            Json::Str(v) => s.serialize_str(v),
            Json::Obj(fields) => {
                let mut m = s.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    m.serialize_entry(k, v)?;
                }
                m.end()
            }
            Json::Arr(items) => {
                let mut q = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    q.serialize_element(item)?;
                }
                q.end()
            }
        }
    }
}

/// What a field held across the records of an object (docs/parquet.md §3).
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    /// Only nulls (or absent) so far.
    Null,
    Bool,
    /// Numbers: whether one had a fraction, whether one was above `i64::MAX`, whether every
    /// integer is exact as a double (|n| ≤ 2^53).
    Number {
        float: bool,
        big: bool,
        exact: bool,
    },
    Str,
    /// Objects: their fields in the order first seen.
    Group(Vec<(String, Shape)>),
    /// Values of more than one kind, or lists: each value's JSON text.
    Json,
}

/// Integers up to this magnitude are exact as doubles.
const EXACT_IN_DOUBLE: u64 = 1 << 53;

/// How a leaf column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    Bool,
    Int64,
    Double,
    Str,
    Json,
}

impl Shape {
    fn of_records<T: Serialize>(records: &[T]) -> Result<Shape, serde_json::Error> {
        let mut shape = Shape::Null;
        for record in records {
            shape.merge(&Json::of(record)?);
        }
        Ok(shape)
    }

    fn merge(&mut self, value: &Json) {
        let seen = match value {
            Json::Null => return,
            Json::Bool(_) => Shape::Bool,
            Json::Int(v) => Shape::Number {
                float: false,
                big: false,
                exact: v.unsigned_abs() <= EXACT_IN_DOUBLE,
            },
            Json::Big(_) => Shape::Number {
                float: false,
                big: true,
                exact: false,
            },
            Json::Float(_) => Shape::Number {
                float: true,
                big: false,
                exact: true,
            },
            Json::Str(_) => Shape::Str,
            Json::Arr(_) => Shape::Json,
            Json::Obj(fields) => {
                let mut known = match std::mem::replace(self, Shape::Null) {
                    Shape::Group(known) => known,
                    Shape::Null => Vec::new(),
                    _ => {
                        *self = Shape::Json;
                        return;
                    }
                };
                for (name, value) in fields {
                    match known.iter_mut().find(|(k, _)| k == name) {
                        Some((_, shape)) => shape.merge(value),
                        None => {
                            let mut shape = Shape::Null;
                            shape.merge(value);
                            known.push((name.clone(), shape));
                        }
                    }
                }
                *self = Shape::Group(known);
                return;
            }
        };
        *self = match (std::mem::replace(self, Shape::Null), seen) {
            (Shape::Null, seen) => seen,
            (Shape::Json, _) => Shape::Json,
            (
                Shape::Number { float, big, exact },
                Shape::Number {
                    float: f,
                    big: b,
                    exact: e,
                },
            ) => Shape::Number {
                float: float || f,
                big: big || b,
                exact: exact && e,
            },
            (old, seen) if old == seen => old,
            _ => Shape::Json,
        };
    }

    /// The leaf type of a shape that isn't a group.
    fn leaf(&self) -> Leaf {
        match self {
            Shape::Bool => Leaf::Bool,
            Shape::Number {
                float: false,
                big: false,
                ..
            } => Leaf::Int64,
            Shape::Number {
                float: true,
                big: false,
                exact: true,
            } => Leaf::Double,
            // Only nulls: a string column of nulls.
            Shape::Null | Shape::Str => Leaf::Str,
            // A group without a field (only `{}`) can't be a Parquet group.
            Shape::Number { .. } | Shape::Group(_) | Shape::Json => Leaf::Json,
        }
    }

    fn is_group(&self) -> bool {
        matches!(self, Shape::Group(fields) if !fields.is_empty())
    }

    /// The leaf columns, in schema order: each one's path of names and type.
    fn leaves(&self) -> Vec<(Vec<String>, Leaf)> {
        fn walk(shape: &Shape, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Leaf)>) {
            match shape {
                Shape::Group(fields) if shape.is_group() || path.is_empty() => {
                    for (name, field) in fields {
                        path.push(name.clone());
                        walk(field, path, out);
                        path.pop();
                    }
                }
                leaf => out.push((path.clone(), leaf.leaf())),
            }
        }
        let mut out = Vec::new();
        if let Shape::Group(_) = self {
            walk(self, &mut Vec::new(), &mut out);
        }
        out
    }

    /// The Parquet schema of an object whose records have this shape: every column optional.
    fn schema(&self) -> Result<TypePtr, ParquetError> {
        fn field(name: &str, shape: &Shape) -> Result<TypePtr, ParquetError> {
            if let Shape::Group(fields) = shape
                && shape.is_group()
            {
                let children = fields
                    .iter()
                    .map(|(n, s)| field(n, s))
                    .collect::<Result<Vec<_>, _>>()?;
                return Ok(Arc::new(
                    Type::group_type_builder(name)
                        .with_repetition(Repetition::OPTIONAL)
                        .with_fields(children)
                        .build()?,
                ));
            }
            let (physical, logical) = match shape.leaf() {
                Leaf::Bool => (Physical::BOOLEAN, None),
                Leaf::Int64 => (Physical::INT64, None),
                Leaf::Double => (Physical::DOUBLE, None),
                Leaf::Str => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
                Leaf::Json => (Physical::BYTE_ARRAY, Some(LogicalType::Json)),
            };
            Ok(Arc::new(
                Type::primitive_type_builder(name, physical)
                    .with_repetition(Repetition::OPTIONAL)
                    .with_logical_type(logical)
                    .build()?,
            ))
        }
        let fields = match self {
            Shape::Group(fields) => fields
                .iter()
                .map(|(n, s)| field(n, s))
                .collect::<Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        Ok(Arc::new(
            Type::group_type_builder("schema")
                .with_fields(fields)
                .build()?,
        ))
    }
}

/// The leaf columns of one row group of records of any kind.
fn generic_columns<T: Serialize>(
    leaves: &[(Vec<String>, Leaf)],
    records: &[T],
) -> Result<Vec<Column>, ParquetEncodeError> {
    let trees = records
        .iter()
        .map(Json::of)
        .collect::<Result<Vec<_>, _>>()?;
    let n = trees.len();
    let mut columns = Vec::with_capacity(leaves.len());
    for (path, leaf) in leaves {
        let values = match leaf {
            Leaf::Bool => Values::Bool(Vec::with_capacity(n)),
            Leaf::Int64 => Values::Int64(Vec::with_capacity(n)),
            Leaf::Double => Values::Double(Vec::with_capacity(n)),
            Leaf::Str | Leaf::Json => Values::Bytes(Vec::with_capacity(n)),
        };
        let mut column = Column::new(values, n);
        for tree in &trees {
            // How deep the path is defined: a missing or null field stops it.
            let mut node = tree;
            let mut depth = 0;
            for name in path {
                match node.get(name) {
                    Some(Json::Null) | None => break,
                    Some(next) => {
                        node = next;
                        depth += 1;
                    }
                }
            }
            column.levels.push(depth as i16);
            if depth < path.len() {
                continue;
            }
            match (&mut column.values, node) {
                (Values::Bool(v), Json::Bool(b)) => v.push(*b),
                (Values::Int64(v), Json::Int(i)) => v.push(*i),
                (Values::Double(v), Json::Int(i)) => v.push(*i as f64),
                (Values::Double(v), Json::Float(f)) => v.push(*f),
                (Values::Bytes(v), Json::Str(s)) if *leaf == Leaf::Str => v.push(text(s)),
                (Values::Bytes(v), value) => {
                    v.push(ByteArray::from(Bytes::from(serde_json::to_vec(value)?)))
                }
                // The shape was read from these same records: nothing else can be here.
                _ => {
                    column.levels.pop();
                    column.levels.push(0);
                }
            }
        }
        columns.push(column);
    }
    Ok(columns)
}

#[cfg(test)]
pub(crate) mod tests;

//! Records made by wasm guests: ordered fields, written as JSON objects in field order and as
//! CSV rows under a header of the fields' CSV column names.
//!
//! A record is a view into its batch as the guest returned it (ENCODING.md §3), checked once
//! when the batch is decoded: the values are read from those bytes when the record is written,
//! not copied into owned values first (that copy cost more than the JSON writing itself).

use std::fmt;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

pub use sluice_wire::record::{Field as WasmField, Value as WasmValue};
use sluice_wire::record::{SchemaNames, SchemaRef};

use crate::pipeline::record::CsvRow;

/// Field names of one record shape.
#[derive(Debug, PartialEq, Eq)]
pub struct Schema {
    /// JSON keys, in order.
    pub names: Arc<[Box<str>]>,
    /// CSV column names, in order: the same `Arc` as `names` when the guest gave none.
    pub columns: Arc<[Box<str>]>,
}

impl Schema {
    /// A schema whose CSV columns are its names.
    pub fn new(names: Arc<[Box<str>]>) -> Self {
        Schema {
            columns: names.clone(),
            names,
        }
    }

    /// Whether the CSV columns differ from the names.
    pub fn has_columns(&self) -> bool {
        !Arc::ptr_eq(&self.names, &self.columns) && self.names != self.columns
    }

    /// A schema read from a batch.
    pub(super) fn from_wire(schema: &SchemaRef<'_>) -> Self {
        let boxed =
            |names: &[&str]| -> Arc<[Box<str>]> { names.iter().map(|&n| n.into()).collect() };
        let names = boxed(&schema.names);
        match &schema.columns {
            Some(columns) => Schema {
                names,
                columns: boxed(columns),
            },
            None => Schema::new(names),
        }
    }

    /// Whether it is the schema read from a batch (same names and CSV columns).
    pub(super) fn is(&self, schema: &SchemaRef<'_>) -> bool {
        let same = |ours: &[Box<str>], theirs: &[&str]| {
            ours.len() == theirs.len() && ours.iter().zip(theirs).all(|(a, b)| **a == **b)
        };
        same(&self.names, &schema.names)
            && same(
                &self.columns,
                schema.columns.as_deref().unwrap_or(&schema.names),
            )
    }
}

/// The schema table of a mangler's input batch.
impl SchemaNames for Schema {
    fn field_count(&self) -> usize {
        self.names.len()
    }
    fn name(&self, i: usize) -> &str {
        &self.names[i]
    }
    fn column(&self, i: usize) -> Option<&str> {
        if Arc::ptr_eq(&self.names, &self.columns) {
            return None;
        }
        Some(&*self.columns[i]).filter(|c| *c != &*self.names[i])
    }
}

/// A checked record batch: the guest's bytes and its schemas.
pub struct RecordBatch {
    pub(super) bytes: Box<[u8]>,
    pub(super) schemas: Vec<Arc<Schema>>,
}

impl fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBatch")
            .field("bytes", &self.bytes.len())
            .field("schemas", &self.schemas.len())
            .finish()
    }
}

/// A guest's record: a shared, checked batch and where the record's values are in it.
#[derive(Clone)]
pub struct WasmRecord {
    batch: Arc<RecordBatch>,
    schema: u32,
    start: u32,
    end: u32,
}

impl WasmRecord {
    /// Record `schema` of `batch`, its values at `start..end` (checked by the decoder).
    pub(super) fn new(batch: Arc<RecordBatch>, schema: u32, start: u32, end: u32) -> Self {
        WasmRecord {
            batch,
            schema,
            start,
            end,
        }
    }

    /// The record's shape.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.batch.schemas[self.schema as usize]
    }

    /// The field names (JSON keys) in order.
    pub fn names(&self) -> &[Box<str>] {
        &self.schema().names
    }

    /// The CSV column names in order.
    pub fn columns(&self) -> &[Box<str>] {
        &self.schema().columns
    }

    /// The encoded values (ENCODING.md §3 `value × field count`), as checked.
    pub fn value_bytes(&self) -> &[u8] {
        &self.batch.bytes[self.start as usize..self.end as usize]
    }

    /// The fields in order.
    pub fn fields(&self) -> impl Iterator<Item = WasmField<'_>> + '_ {
        // The batch was checked when decoded: a read can't fail; if it did, the record ends.
        sluice_wire::record::fields(self.value_bytes())
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<WasmValue<'_>> {
        let i = self.names().iter().position(|n| &**n == name)?;
        self.fields().nth(i).map(|f| f.value)
    }

    /// The CSV fields, matching [`WasmRecord::columns`].
    pub fn csv_row(&self, row: &mut CsvRow) {
        for field in self.fields() {
            if let Some(text) = field.csv {
                row.push(text);
                continue;
            }
            match field.value {
                WasmValue::Null => row.push(""),
                WasmValue::Bool(b) => row.push(b),
                WasmValue::Int(v) => row.push(v),
                WasmValue::UInt(v) => row.push(v),
                WasmValue::Float(v) if v.is_finite() => row.push(v),
                WasmValue::Float(_) => row.push(""),
                WasmValue::Str(s) => row.push(s),
                WasmValue::Json(j) => row.push(j),
            }
        }
    }
}

impl PartialEq for WasmRecord {
    fn eq(&self, other: &Self) -> bool {
        (Arc::ptr_eq(self.schema(), other.schema()) || self.schema() == other.schema())
            && self.fields().eq(other.fields())
    }
}

impl fmt::Debug for WasmRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.names().iter().zip(self.fields()))
            .finish()
    }
}

/// A value as JSON.
struct JsonValue<'a>(WasmValue<'a>);

impl Serialize for JsonValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            WasmValue::Null => s.serialize_unit(),
            WasmValue::Bool(b) => s.serialize_bool(b),
            WasmValue::Int(v) => s.serialize_i64(v),
            WasmValue::UInt(v) => s.serialize_u64(v),
            WasmValue::Float(v) if v.is_finite() => s.serialize_f64(v),
            WasmValue::Float(_) => s.serialize_unit(),
            WasmValue::Str(v) => s.serialize_str(v),
            // Checked when decoded; parsed again here to embed it as raw JSON.
            WasmValue::Json(v) => match serde_json::from_str::<&RawValue>(v) {
                Ok(raw) => raw.serialize(s),
                Err(_) => s.serialize_unit(),
            },
        }
    }
}

impl Serialize for WasmRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names = self.names();
        let mut map = s.serialize_map(Some(names.len()))?;
        for (name, field) in names.iter().zip(self.fields()) {
            map.serialize_entry(&**name, &JsonValue(field.value))?;
        }
        map.end()
    }
}

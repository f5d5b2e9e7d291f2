//! Records made by wasm guests: ordered fields, written as JSON objects in field order and as
//! CSV rows under a header of the field names.

use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;

use crate::pipeline::record::CsvRow;

/// One field value (ENCODING.md §3 value tags).
#[derive(Debug, Clone)]
pub enum WasmValue {
    /// JSON `null`, an empty CSV field.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float; JSON `null` when not finite.
    Float(f64),
    /// A string.
    Str(Box<str>),
    /// A JSON text (checked when decoded), embedded as is.
    Json(Box<RawValue>),
}

impl PartialEq for WasmValue {
    fn eq(&self, other: &Self) -> bool {
        use WasmValue::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (UInt(a), UInt(b)) => a == b,
            (Float(a), Float(b)) => a == b,
            (Str(a), Str(b)) => a == b,
            // JSON texts compare as text.
            (Json(a), Json(b)) => a.get() == b.get(),
            _ => false,
        }
    }
}

impl Serialize for WasmValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            WasmValue::Null => s.serialize_unit(),
            WasmValue::Bool(b) => s.serialize_bool(*b),
            WasmValue::Int(v) => s.serialize_i64(*v),
            WasmValue::UInt(v) => s.serialize_u64(*v),
            WasmValue::Float(v) if v.is_finite() => s.serialize_f64(*v),
            WasmValue::Float(_) => s.serialize_unit(),
            WasmValue::Str(v) => s.serialize_str(v),
            WasmValue::Json(v) => v.serialize(s),
        }
    }
}

/// A guest's record: field names shared by every record of the same shape in a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct WasmRecord {
    names: Arc<[Box<str>]>,
    values: Vec<WasmValue>,
}

impl WasmRecord {
    /// A record from its names and values (as many of each).
    pub fn new(names: Arc<[Box<str>]>, values: Vec<WasmValue>) -> Self {
        debug_assert_eq!(names.len(), values.len());
        WasmRecord { names, values }
    }

    /// The field names in order.
    pub fn names(&self) -> &[Box<str>] {
        &self.names
    }

    /// The shared names (for a host encoding records back for a mangler).
    pub fn names_arc(&self) -> &Arc<[Box<str>]> {
        &self.names
    }

    /// The values in field order.
    pub fn values(&self) -> &[WasmValue] {
        &self.values
    }

    /// A field's value.
    pub fn get(&self, name: &str) -> Option<&WasmValue> {
        self.names
            .iter()
            .position(|n| &**n == name)
            .map(|i| &self.values[i])
    }

    /// The CSV fields, matching [`WasmRecord::names`].
    pub fn csv_row(&self, row: &mut CsvRow) {
        for v in &self.values {
            match v {
                WasmValue::Null => row.push(""),
                WasmValue::Bool(b) => row.push(b),
                WasmValue::Int(v) => row.push(v),
                WasmValue::UInt(v) => row.push(v),
                WasmValue::Float(v) if v.is_finite() => row.push(v),
                WasmValue::Float(_) => row.push(""),
                WasmValue::Str(s) => row.push(s),
                WasmValue::Json(j) => row.push(j.get()),
            }
        }
    }
}

impl Serialize for WasmRecord {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.values.len()))?;
        for (name, value) in self.names.iter().zip(&self.values) {
            map.serialize_entry(&**name, value)?;
        }
        map.end()
    }
}

//! Output records: ordered fields written by [`Output::record`], and read back by [`Records`]
//! (ENCODING.md §3).

use std::borrow::Cow;
use std::cell::Cell;
use std::sync::atomic::{AtomicU32, Ordering};

use sluice_wire::record::{BatchWriter, OpenRecord, RecordBatch, RecordCursor, SchemaNames};
pub use sluice_wire::record::{MAX_FIELDS, Value};

use crate::wire::WireError;

/// A field's name: its JSON key, and the CSV column name when that differs. A `&str` is both;
/// `("SrcAddr", "srcaddr")` is the key `SrcAddr` under the CSV column `srcaddr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Name<'n> {
    /// The JSON key.
    pub json: &'n str,
    /// The CSV column name, when not the JSON key.
    pub csv: Option<&'n str>,
}

impl<'n> From<&'n str> for Name<'n> {
    fn from(json: &'n str) -> Self {
        Name { json, csv: None }
    }
}

impl<'n> From<&'n String> for Name<'n> {
    fn from(json: &'n String) -> Self {
        Name {
            json: json.as_str(),
            csv: None,
        }
    }
}

impl<'n> From<(&'n str, &'n str)> for Name<'n> {
    fn from((json, csv): (&'n str, &'n str)) -> Self {
        Name {
            json,
            csv: Some(csv),
        }
    }
}

/// A schema's field: JSON key and CSV column (when different). Borrowed when `'static`, so a
/// [`Schema::new_static`] costs no allocation in each batch's `init`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldName {
    json: Cow<'static, str>,
    csv: Option<Cow<'static, str>>,
}

impl FieldName {
    fn matches(&self, name: Name<'_>) -> bool {
        self.json == name.json && self.csv.as_deref() == name.csv
    }

    fn own(name: Name<'_>) -> Self {
        FieldName {
            json: Cow::Owned(name.json.to_owned()),
            csv: name.csv.map(|c| Cow::Owned(c.to_owned())),
        }
    }

    fn borrowed(name: Name<'static>) -> Self {
        FieldName {
            json: Cow::Borrowed(name.json),
            csv: name.csv.map(Cow::Borrowed),
        }
    }
}

/// A record shape's fields, as an [`Output`] keeps them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields(Vec<FieldName>);

impl std::ops::Deref for Fields {
    type Target = [FieldName];
    fn deref(&self) -> &[FieldName] {
        &self.0
    }
}

impl SchemaNames for Fields {
    fn field_count(&self) -> usize {
        self.0.len()
    }
    fn name(&self, i: usize) -> &str {
        &self.0[i].json
    }
    fn column(&self, i: usize) -> Option<&str> {
        self.0[i].csv.as_deref()
    }
}

/// A record shape declared once (in `init`, or a `static`-like field of the stage): its
/// fields' names and CSV columns. [`Output::row`] then writes records of it by position, with
/// no name compared per field: the fast way to write many records of one shape.
///
/// ```
/// use sluice_guest::{Output, Schema};
/// let schema = Schema::new([("SrcAddr", "srcaddr"), ("DstPort", "dstport")]);
/// let mut out = Output::default();
/// out.row(&schema).str("10.0.0.1").int(443);
/// ```
#[derive(Debug)]
pub struct Schema {
    fields: Fields,
    /// Its index in the last [`Output`] that used it: (output id, index).
    slot: Cell<(u32, u32)>,
}

impl Schema {
    /// A shape from its field names (`&str`, or `(json, csv)` pairs), in order.
    pub fn new<'n, N: Into<Name<'n>>>(names: impl IntoIterator<Item = N>) -> Self {
        Schema {
            fields: Fields(
                names
                    .into_iter()
                    .map(|n| FieldName::own(n.into()))
                    .collect(),
            ),
            slot: Cell::new((0, 0)),
        }
    }

    /// The same from `'static` names, without copying them.
    pub fn new_static<N: Into<Name<'static>> + Copy>(names: &'static [N]) -> Self {
        Schema {
            fields: Fields(
                names
                    .iter()
                    .map(|n| FieldName::borrowed((*n).into()))
                    .collect(),
            ),
            slot: Cell::new((0, 0)),
        }
    }

    /// How many fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// Whether it has no field.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }
}

/// Ids of outputs, so a [`Schema`] remembers its index in the current one (0: none).
static OUTPUTS: AtomicU32 = AtomicU32::new(1);

/// The records a stage returns. Build each with [`Output::record`] (or [`Output::row`]).
#[derive(Debug)]
pub struct Output {
    id: u32,
    w: BatchWriter,
    schemas: Vec<Fields>,
    last: Option<usize>,
}

impl Default for Output {
    fn default() -> Self {
        Output::with_capacity(0)
    }
}

impl Output {
    /// An empty output with room for `bytes` of records.
    pub fn with_capacity(bytes: usize) -> Self {
        Output {
            id: OUTPUTS.fetch_add(1, Ordering::Relaxed),
            w: BatchWriter::with_capacity(bytes),
            schemas: Vec::new(),
            last: None,
        }
    }

    /// Starts a record of `schema`: add its values in the schema's order, e.g.
    /// `out.row(&schema).str(addr).int(80);`. Fields left out at the end are `null`; a value
    /// past the schema's last field panics (the batch fails).
    pub fn row<'o>(&'o mut self, schema: &'o Schema) -> RowBuilder<'o> {
        let (id, index) = schema.slot.get();
        let index = if id == self.id {
            index as usize
        } else {
            let index = match self.schemas.iter().position(|s| *s == schema.fields) {
                Some(i) => i,
                None => {
                    self.schemas.push(schema.fields.clone());
                    self.schemas.len() - 1
                }
            };
            schema.slot.set((self.id, index as u32));
            index
        };
        self.w.record(index as u32);
        self.last = Some(index);
        RowBuilder {
            out: self,
            left: schema.fields.len(),
        }
    }

    /// Starts a record; add fields in the order they should be written, e.g.
    /// `out.record().str("SrcAddr", a).int("SrcPort", 80);` (the record is complete when the
    /// builder is dropped).
    pub fn record(&mut self) -> RecordBuilder<'_> {
        let start = self.w.open_record();
        RecordBuilder {
            candidate: self.last,
            out: self,
            start,
            field: 0,
            names: None,
        }
    }

    /// Records written so far.
    pub fn len(&self) -> usize {
        self.w.len()
    }

    /// Whether no record was written.
    pub fn is_empty(&self) -> bool {
        self.w.is_empty()
    }

    /// The encoded record batch.
    pub fn finish(self) -> Vec<u8> {
        self.w.finish(&self.schemas)
    }
}

/// Adds the values of one record of a [`Schema`], in order; finished when dropped.
#[derive(Debug)]
pub struct RowBuilder<'o> {
    out: &'o mut Output,
    left: usize,
}

// Inlined: a guest writes every field through these, and as calls each spilled its value to
// memory and matched on it again (an integer field: 87 fuel as a call, 61 inlined).
impl RowBuilder<'_> {
    /// Adds the next field's value.
    #[inline(always)]
    pub fn value(mut self, value: Value<'_>) -> Self {
        self.next();
        self.out.w.value(value);
        self
    }

    /// Adds the next field, written as `value` in JSON and as the text `csv` in CSV (see
    /// [`RecordBuilder::value_csv`]).
    #[inline(always)]
    pub fn value_csv(mut self, value: Value<'_>, csv: &str) -> Self {
        self.next();
        self.out.w.field(value, Some(csv));
        self
    }

    /// Adds a string.
    #[inline(always)]
    pub fn str(self, value: &str) -> Self {
        self.value(Value::Str(value))
    }

    /// Adds a signed integer.
    #[inline(always)]
    pub fn int(self, value: i64) -> Self {
        self.value(Value::Int(value))
    }

    /// Adds an unsigned integer.
    #[inline(always)]
    pub fn uint(self, value: u64) -> Self {
        self.value(Value::UInt(value))
    }

    /// Adds a float.
    #[inline(always)]
    pub fn float(self, value: f64) -> Self {
        self.value(Value::Float(value))
    }

    /// Adds a boolean.
    #[inline(always)]
    pub fn bool(self, value: bool) -> Self {
        self.value(Value::Bool(value))
    }

    /// Adds a `null`.
    #[inline(always)]
    pub fn null(self) -> Self {
        self.value(Value::Null)
    }

    /// Adds a JSON text (an object or array), embedded as is.
    #[inline(always)]
    pub fn json(self, json_text: &str) -> Self {
        self.value(Value::Json(json_text))
    }

    #[inline(always)]
    fn next(&mut self) {
        assert!(
            self.left > 0,
            "a record has more values than its schema has fields"
        );
        self.left -= 1;
    }
}

impl Drop for RowBuilder<'_> {
    fn drop(&mut self) {
        for _ in 0..self.left {
            self.out.w.value(Value::Null);
        }
    }
}

/// Adds the fields of one record; finished when dropped.
#[derive(Debug)]
pub struct RecordBuilder<'o> {
    out: &'o mut Output,
    start: OpenRecord,
    field: usize,
    /// The schema the names match so far (the previous record's, to start with).
    candidate: Option<usize>,
    /// The names, once they no longer match `candidate`.
    names: Option<Vec<FieldName>>,
}

impl RecordBuilder<'_> {
    fn name(&mut self, name: Name<'_>) {
        if let Some(names) = &mut self.names {
            names.push(FieldName::own(name));
        } else if self
            .candidate
            .and_then(|c| self.out.schemas[c].get(self.field))
            .is_some_and(|n| n.matches(name))
        {
            // Still the candidate's names.
        } else {
            let mut names: Vec<FieldName> = match self.candidate {
                Some(c) => self.out.schemas[c][..self.field].to_vec(),
                None => Vec::new(),
            };
            names.push(FieldName::own(name));
            self.names = Some(names);
        }
        self.field += 1;
    }

    /// Adds a field with any [`Value`].
    pub fn value<'n>(mut self, name: impl Into<Name<'n>>, value: Value<'_>) -> Self {
        self.name(name.into());
        self.out.w.value(value);
        self
    }

    /// Adds a field written as `value` in JSON and as the text `csv` in CSV: for formats whose
    /// text form marks what a field lacks (AWS flow logs write `-`) where their JSON form has a
    /// zero value.
    pub fn value_csv<'n>(mut self, name: impl Into<Name<'n>>, value: Value<'_>, csv: &str) -> Self {
        self.name(name.into());
        self.out.w.field(value, Some(csv));
        self
    }

    /// Adds a string field.
    pub fn str<'n>(self, name: impl Into<Name<'n>>, value: &str) -> Self {
        self.value(name, Value::Str(value))
    }

    /// Adds a signed integer field.
    pub fn int<'n>(self, name: impl Into<Name<'n>>, value: i64) -> Self {
        self.value(name, Value::Int(value))
    }

    /// Adds an unsigned integer field.
    pub fn uint<'n>(self, name: impl Into<Name<'n>>, value: u64) -> Self {
        self.value(name, Value::UInt(value))
    }

    /// Adds a float field.
    pub fn float<'n>(self, name: impl Into<Name<'n>>, value: f64) -> Self {
        self.value(name, Value::Float(value))
    }

    /// Adds a boolean field.
    pub fn bool<'n>(self, name: impl Into<Name<'n>>, value: bool) -> Self {
        self.value(name, Value::Bool(value))
    }

    /// Adds a `null` field.
    pub fn null<'n>(self, name: impl Into<Name<'n>>) -> Self {
        self.value(name, Value::Null)
    }

    /// Adds a field holding a JSON text (an object or array), embedded as is.
    pub fn json<'n>(self, name: impl Into<Name<'n>>, json_text: &str) -> Self {
        self.value(name, Value::Json(json_text))
    }

    /// Adds every field of `record`, in its order, with its CSV column names and texts (a
    /// mangler's pass-through).
    pub fn fields_of(mut self, record: &RecordView<'_>) -> Self {
        for i in 0..record.names.len() {
            self = self.field_of(record, i);
        }
        self
    }

    /// Adds the `i`th field of `record` (nothing if it has fewer), with its CSV column name and
    /// text.
    pub fn field_of(self, record: &RecordView<'_>, i: usize) -> Self {
        let (Some(&json), Some(&value)) = (record.names.get(i), record.values.get(i)) else {
            return self;
        };
        let name = Name {
            json,
            csv: record
                .columns
                .and_then(|c| c.get(i).copied())
                .filter(|c| *c != json),
        };
        match record.csv.get(i).copied().flatten() {
            Some(csv) => self.value_csv(name, value, csv),
            None => self.value(name, value),
        }
    }
}

impl Drop for RecordBuilder<'_> {
    fn drop(&mut self) {
        let index = match self.names.take() {
            None if self
                .candidate
                .is_some_and(|c| self.out.schemas[c].len() == self.field) =>
            {
                self.candidate.unwrap_or(0)
            }
            names => {
                let names = names.unwrap_or_else(|| match self.candidate {
                    Some(c) => self.out.schemas[c][..self.field].to_vec(),
                    None => Vec::new(),
                });
                match self.out.schemas.iter().position(|s| s.0 == names) {
                    Some(i) => i,
                    None => {
                        self.out.schemas.push(Fields(names));
                        self.out.schemas.len() - 1
                    }
                }
            }
        };
        self.out.w.close_record(self.start, index as u32);
        self.out.last = Some(index);
    }
}

/// A record batch read back: a mangler's input, or a test's output.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    batch: RecordBatch<'a>,
}

impl<'a> Records<'a> {
    /// Reads a record batch's header and schemas, checking them as the host does.
    pub fn new(batch: &'a [u8]) -> Result<Self, WireError> {
        Ok(Records {
            batch: RecordBatch::parse(batch)?,
        })
    }

    /// How many records the batch holds.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The records in order. A malformed record ends the iteration with an error.
    pub fn iter(&self) -> RecordIter<'_, 'a> {
        RecordIter {
            records: self,
            cursor: self.batch.records(),
        }
    }
}

/// Iterator over a batch's records.
#[derive(Debug)]
pub struct RecordIter<'r, 'a> {
    records: &'r Records<'a>,
    cursor: RecordCursor<'r, 'a>,
}

impl<'r, 'a> Iterator for RecordIter<'r, 'a> {
    type Item = Result<RecordView<'r>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let schemas = self.records.batch.schemas();
        let fields = self
            .cursor
            .peek_schema()
            .and_then(|i| schemas.get(i as usize))
            .map_or(0, |s| s.names.len());
        let mut values = Vec::with_capacity(fields);
        let mut csv = Vec::new();
        let record = self.cursor.next_with(|i, field| {
            if let Some(text) = field.csv {
                // Only records with CSV texts pay for the list of them.
                csv.resize(i, None);
                csv.push(Some(text));
            } else if !csv.is_empty() {
                csv.push(None);
            }
            values.push(field.value);
            Ok(())
        })?;
        Some(record.map(|record| {
            let schema = &schemas[record.schema as usize];
            RecordView {
                names: &schema.names,
                columns: schema.columns.as_deref(),
                values,
                csv,
            }
        }))
    }
}

/// One record of a [`Records`] batch.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordView<'r> {
    names: &'r [&'r str],
    columns: Option<&'r [&'r str]>,
    values: Vec<Value<'r>>,
    /// Each field's CSV text, if any field has one (else empty).
    csv: Vec<Option<&'r str>>,
}

impl<'r> RecordView<'r> {
    /// The value of the field `name`.
    pub fn get(&self, name: &str) -> Option<Value<'r>> {
        self.names
            .iter()
            .position(|n| *n == name)
            .map(|i| self.values[i])
    }

    /// The fields in order.
    pub fn fields(&self) -> impl Iterator<Item = (&'r str, Value<'r>)> + '_ {
        self.names.iter().copied().zip(self.values.iter().copied())
    }

    /// The field names in order.
    pub fn names(&self) -> &'r [&'r str] {
        self.names
    }

    /// The CSV column names in order (the field names unless the record has its own).
    pub fn columns(&self) -> &'r [&'r str] {
        self.columns.unwrap_or(self.names)
    }

    /// The CSV text of the field `name`, when it has one apart from its value
    /// ([`RecordBuilder::value_csv`]).
    pub fn csv_text(&self, name: &str) -> Option<&'r str> {
        let i = self.names.iter().position(|n| *n == name)?;
        self.csv.get(i).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{ValueData, decode_records};

    #[test]
    fn rows_share_the_schema_of_named_records_and_pad_with_nulls() {
        static FIELDS: [(&str, &str); 3] = [("A", "a"), ("B", "b"), ("C", "c")];
        let schema = Schema::new_static(&FIELDS);
        let mut out = Output::default();
        out.row(&schema)
            .int(1)
            .value_csv(Value::Str(""), "-")
            .str("x");
        out.record()
            .int(("A", "a"), 2)
            .str(("B", "b"), "y")
            .null(("C", "c"));
        out.row(&schema).int(3);
        let records = decode_records(&out.finish()).unwrap();
        assert_eq!(records.len(), 3);
        for r in &records {
            assert_eq!(r.columns(), ["a", "b", "c"]);
        }
        assert_eq!(records[0].to_csv_fields(), ["1", "-", "x"]);
        assert_eq!(records[0].to_json_text(), r#"{"A":1,"B":"","C":"x"}"#);
        assert_eq!(records[1].to_json_text(), r#"{"A":2,"B":"y","C":null}"#);
        assert_eq!(records[2].get("C"), Some(&ValueData::Null));
        // Schemas in the batch: one for the three records above; the same names without CSV
        // columns are another.
        let schemas = |batch: &[u8]| u32::from_le_bytes(batch[12..16].try_into().unwrap());
        let mut again = Output::default();
        again.row(&schema).int(1);
        again.row(&Schema::new(["A", "B", "C"])).int(1);
        assert_eq!(schemas(&again.finish()), 2);
        let mut out = Output::default();
        out.row(&schema).int(1);
        out.record().int(("A", "a"), 2);
        out.row(&schema).int(3);
        assert_eq!(schemas(&out.finish()), 2);
    }

    #[test]
    #[should_panic(expected = "more values than its schema has fields")]
    fn a_row_longer_than_its_schema_panics() {
        let schema = Schema::new(["A"]);
        let mut out = Output::default();
        out.row(&schema).int(1).int(2);
    }
}

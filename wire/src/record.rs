//! The record batch (ENCODING.md §3), guest → host, and host → guest for `mangle`: values and
//! fields, the writer, and the checking reader.
//!
//! ```text
//! batch   := version:u8 (=1)  kind:u8 (=2)  flags:u16  count:u32
//!            schemas_offset:u32  schema_count:u32
//!            record × count  schema × schema_count  [columns × schema_count]
//! record  := schema:u32  field × (the schema's field count)
//! schema  := field_count:u16  str name × field_count
//! columns := str csv_name × (that schema's field count)      (flag bit 0)
//! field   := value  |  tag:u8 (=8)  str csv_text  value
//! value   := tag:u8 payload                                  (tags 0–7)
//! ```

use std::sync::Arc;

use crate::{KIND_RECORDS, Reader, VERSION, WireError, Writer};

/// Bytes of a record batch's header; the records start after it.
pub const HEADER: usize = 16;
/// Flag bit 0: the schema table is followed by each schema's CSV column names.
pub const FLAG_CSV_COLUMNS: u16 = 1;
/// Most fields in one schema.
pub const MAX_FIELDS: usize = 1024;
/// Longest field name or CSV column name, in bytes.
pub const MAX_NAME: usize = 256;

/// Value tags (the byte before each value).
pub mod tag {
    /// `null`: no payload.
    pub const NULL: u8 = 0;
    /// `false`: no payload.
    pub const FALSE: u8 = 1;
    /// `true`: no payload.
    pub const TRUE: u8 = 2;
    /// A signed integer: `i64`.
    pub const INT: u8 = 3;
    /// An unsigned integer: `u64`.
    pub const UINT: u8 = 4;
    /// A float: `f64`.
    pub const FLOAT: u8 = 5;
    /// A string: `str`.
    pub const STR: u8 = 6;
    /// A JSON text: `str`.
    pub const JSON: u8 = 7;
    /// Not a value: a field's CSV text (`str`), then its value.
    pub const CSV: u8 = 8;
}

/// One field value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// JSON `null`, an empty CSV field.
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// An unsigned integer.
    UInt(u64),
    /// A float (`null` in JSON when not finite).
    Float(f64),
    /// A string.
    Str(&'a str),
    /// A JSON text (object, array...) embedded as is.
    Json(&'a str),
}

impl Value<'_> {
    /// The string, for [`Value::Str`].
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, for [`Value::Int`] and a [`Value::UInt`] that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Int(v) => Some(v),
            Value::UInt(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }
}

/// One field of a record: its value and, when it has one (tag 8), the text CSV writes instead.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Field<'a> {
    /// The value (what JSON writes).
    pub value: Value<'a>,
    /// The CSV text, when it differs from the value's.
    pub csv: Option<&'a str>,
}

/// Trims JSON's whitespace around a JSON text.
#[inline]
fn trim_json(text: &str) -> &str {
    text.trim_matches([' ', '\t', '\n', '\r'])
}

/// The value after its tag byte. A JSON text is read without the whitespace around it.
///
/// This and [`read_field`] are always inlined: the host reads every field of a guest's
/// records through them (once to check the batch, once to write each row), and as calls,
/// returning each field through memory, the check took twice as long.
#[inline(always)]
fn read_value<'a>(r: &mut Reader<'a>, t: u8) -> Result<Value<'a>, WireError> {
    Ok(match t {
        tag::NULL => Value::Null,
        tag::FALSE => Value::Bool(false),
        tag::TRUE => Value::Bool(true),
        tag::INT => Value::Int(r.i64()?),
        tag::UINT => Value::UInt(r.u64()?),
        tag::FLOAT => Value::Float(r.f64()?),
        tag::STR => Value::Str(r.str()?),
        tag::JSON => Value::Json(trim_json(r.str()?)),
        _ => return Err(WireError::Invalid("unknown value tag")),
    })
}

/// One field: a value, or (tag 8) a CSV text and then a value.
#[inline(always)]
fn read_field<'a>(r: &mut Reader<'a>) -> Result<Field<'a>, WireError> {
    match r.u8()? {
        tag::CSV => {
            let csv = r.str()?;
            let t = r.u8()?;
            if t == tag::CSV {
                return Err(WireError::Invalid("a CSV text inside a CSV text"));
            }
            Ok(Field {
                value: read_value(r, t)?,
                csv: Some(csv),
            })
        }
        t => Ok(Field {
            value: read_value(r, t)?,
            csv: None,
        }),
    }
}

/// A tag and an 8-byte payload, in one append.
#[inline(always)]
fn put_word(b: &mut Vec<u8>, t: u8, word: [u8; 8]) {
    let mut bytes = [t, 0, 0, 0, 0, 0, 0, 0, 0];
    bytes[1..].copy_from_slice(&word);
    b.extend_from_slice(&bytes);
}

/// A record shape as the schema table writes it: each side keeps its shapes its own way.
pub trait SchemaNames {
    /// How many fields.
    fn field_count(&self) -> usize;
    /// Field `i`'s name (its JSON key).
    fn name(&self, i: usize) -> &str;
    /// Field `i`'s CSV column name, when it differs from the name.
    fn column(&self, i: usize) -> Option<&str>;
}

impl<T: SchemaNames + ?Sized> SchemaNames for Arc<T> {
    fn field_count(&self) -> usize {
        (**self).field_count()
    }
    fn name(&self, i: usize) -> &str {
        (**self).name(i)
    }
    fn column(&self, i: usize) -> Option<&str> {
        (**self).column(i)
    }
}

/// Writes a record batch: records as they come (each names its schema by index), the schema
/// table at the end.
#[derive(Debug)]
pub struct BatchWriter {
    buf: Vec<u8>,
    count: u32,
}

impl Default for BatchWriter {
    fn default() -> Self {
        BatchWriter::with_capacity(0)
    }
}

/// A record begun with [`BatchWriter::open_record`], its schema not known yet.
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct OpenRecord(usize);

impl BatchWriter {
    /// An empty batch with room for `bytes` of records.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER + bytes);
        buf.resize(HEADER, 0);
        BatchWriter { buf, count: 0 }
    }

    /// Starts a record of schema `index`; its fields follow.
    #[inline]
    pub fn record(&mut self, index: u32) {
        self.buf.put_u32(index);
        self.count += 1;
    }

    /// Starts a record whose schema is known once its fields are written.
    #[inline]
    pub fn open_record(&mut self) -> OpenRecord {
        let at = self.buf.len();
        self.buf.put_u32(0);
        OpenRecord(at)
    }

    /// Ends a record begun with [`BatchWriter::open_record`]: it is of schema `index`.
    #[inline]
    pub fn close_record(&mut self, record: OpenRecord, index: u32) {
        self.buf[record.0..record.0 + 4].copy_from_slice(&index.to_le_bytes());
        self.count += 1;
    }

    /// Appends a field's value: its tag and payload. A guest writes every field through this:
    /// room is made once a value (one capacity check, not two or three), which is fewer
    /// instructions, so less fuel, a field.
    #[inline(always)]
    pub fn value(&mut self, value: Value<'_>) {
        let b = &mut self.buf;
        let (t, text) = match value {
            Value::Null => return b.push(tag::NULL),
            Value::Bool(false) => return b.push(tag::FALSE),
            Value::Bool(true) => return b.push(tag::TRUE),
            Value::Int(v) => return put_word(b, tag::INT, v.to_le_bytes()),
            Value::UInt(v) => return put_word(b, tag::UINT, v.to_le_bytes()),
            Value::Float(v) => return put_word(b, tag::FLOAT, v.to_le_bytes()),
            Value::Str(s) => (tag::STR, s),
            Value::Json(s) => (tag::JSON, s),
        };
        let mut head = [t, 0, 0, 0, 0];
        head[1..].copy_from_slice(&(text.len() as u32).to_le_bytes());
        b.reserve(head.len() + text.len());
        b.extend_from_slice(&head);
        b.extend_from_slice(text.as_bytes());
    }

    /// Appends a field: its CSV text, if any, and its value.
    #[inline(always)]
    pub fn field(&mut self, value: Value<'_>, csv: Option<&str>) {
        if let Some(text) = csv {
            self.buf.put_u8(tag::CSV);
            self.buf.put_str(text);
        }
        self.value(value);
    }

    /// Appends fields already encoded (a record's values read from a checked batch).
    #[inline]
    pub fn encoded_fields(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Records written so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether none was.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch, with `schemas` (in index order) as its schema table. The CSV column lists
    /// are written, and the flag set, only when a schema has a column name of its own.
    pub fn finish<S: SchemaNames>(mut self, schemas: &[S]) -> Vec<u8> {
        let offset = self.buf.len() as u32;
        for schema in schemas {
            let n = schema.field_count();
            self.buf.put_u16(n as u16);
            for i in 0..n {
                self.buf.put_str(schema.name(i));
            }
        }
        let columns = schemas
            .iter()
            .any(|s| (0..s.field_count()).any(|i| s.column(i).is_some()));
        if columns {
            for schema in schemas {
                for i in 0..schema.field_count() {
                    let name = schema.column(i).unwrap_or_else(|| schema.name(i));
                    self.buf.put_str(name);
                }
            }
        }
        let mut header = [0u8; HEADER];
        header[0] = VERSION;
        header[1] = KIND_RECORDS;
        let flags = if columns { FLAG_CSV_COLUMNS } else { 0 };
        header[2..4].copy_from_slice(&flags.to_le_bytes());
        header[4..8].copy_from_slice(&self.count.to_le_bytes());
        header[8..12].copy_from_slice(&offset.to_le_bytes());
        header[12..16].copy_from_slice(&(schemas.len() as u32).to_le_bytes());
        self.buf[..HEADER].copy_from_slice(&header);
        self.buf
    }
}

/// One schema of a batch read: its field names and, when the batch has them, CSV columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaRef<'a> {
    /// Field names (JSON keys), in order; no two alike.
    pub names: Vec<&'a str>,
    /// CSV column names, one per field, when the batch gives them (flag bit 0).
    pub columns: Option<Vec<&'a str>>,
}

/// A record batch whose header and schema table were read and checked: version and kind,
/// offsets, at most [`MAX_FIELDS`] fields per schema, names of at most [`MAX_NAME`] bytes,
/// unique within their schema. Its records are checked as [`RecordBatch::records`] reads
/// them.
#[derive(Debug, Clone)]
pub struct RecordBatch<'a> {
    count: u32,
    /// The batch from its start up to the schema table.
    head: &'a [u8],
    schemas: Vec<SchemaRef<'a>>,
}

/// Reads `n` names of a schema.
fn read_names<'a>(s: &mut Reader<'a>, n: usize) -> Result<Vec<&'a str>, WireError> {
    let mut names = Vec::with_capacity(n);
    for _ in 0..n {
        let name = s.str()?;
        if name.len() > MAX_NAME {
            return Err(WireError::Invalid("field name longer than 256 bytes"));
        }
        names.push(name);
    }
    Ok(names)
}

/// Whether two names are alike: by comparing each pair for a few, else sorted (a hostile
/// batch of many 1,024-field schemas stays O(n log n) per schema, with no hasher to seed).
fn has_duplicates(names: &[&str]) -> bool {
    const PAIRWISE_UP_TO: usize = 16;
    if names.len() <= PAIRWISE_UP_TO {
        return names
            .iter()
            .enumerate()
            .any(|(i, n)| names[..i].contains(n));
    }
    let mut sorted = names.to_vec();
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[0] == w[1])
}

impl<'a> RecordBatch<'a> {
    /// Reads and checks a record batch's header and schema table.
    pub fn parse(batch: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(batch);
        crate::read_kind(&mut r, KIND_RECORDS)?;
        let flags = r.u16()?;
        let count = r.u32()?;
        let offset = r.u32()? as usize;
        let schema_count = r.u32()? as usize;
        if offset < HEADER || offset > batch.len() {
            return Err(WireError::Invalid("schemas_offset out of range"));
        }
        // Each record takes at least 4 bytes: a count past that is a lie (and would size
        // allocations by it).
        if count as usize > (offset - HEADER) / 4 + 1 {
            return Err(WireError::Invalid("record count larger than the batch"));
        }
        let mut s = Reader::new(&batch[offset..]);
        // Each schema takes at least 2 bytes.
        let mut schemas = Vec::with_capacity(schema_count.min(s.rest().len() / 2));
        for _ in 0..schema_count {
            let n = s.u16()? as usize;
            if n > MAX_FIELDS {
                return Err(WireError::Invalid("more than 1024 fields in a record"));
            }
            let names = read_names(&mut s, n)?;
            if has_duplicates(&names) {
                return Err(WireError::Invalid("duplicate field name in a record"));
            }
            schemas.push(SchemaRef {
                names,
                columns: None,
            });
        }
        if flags & FLAG_CSV_COLUMNS != 0 {
            for schema in &mut schemas {
                schema.columns = Some(read_names(&mut s, schema.names.len())?);
            }
        }
        Ok(RecordBatch {
            count,
            head: &batch[..offset],
            schemas,
        })
    }

    /// How many records the header says.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether it says none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The schemas, in index order.
    pub fn schemas(&self) -> &[SchemaRef<'a>] {
        &self.schemas
    }

    /// The records, in order, read (and checked) one at a time.
    pub fn records(&self) -> RecordCursor<'_, 'a> {
        RecordCursor {
            batch: self,
            left: self.count,
            r: Reader::new(&self.head[HEADER..]),
        }
    }
}

/// One record read: its schema and where its fields are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordSpan<'a> {
    /// Its schema's index.
    pub schema: u32,
    /// Its fields' bytes.
    pub fields: &'a [u8],
    /// Where those bytes start in the batch.
    pub start: usize,
}

/// Reads a batch's records in order; after an error it reads none.
#[derive(Debug, Clone)]
pub struct RecordCursor<'b, 'a> {
    batch: &'b RecordBatch<'a>,
    left: u32,
    r: Reader<'a>,
}

impl<'a> RecordCursor<'_, 'a> {
    /// The schema index the next record names, unchecked (to size what it is read into).
    #[inline]
    pub fn peek_schema(&self) -> Option<u32> {
        if self.left == 0 {
            return None;
        }
        self.r.clone().u32().ok()
    }

    /// The next record: its schema index, then each field read and checked and given to
    /// `each` with its position (an error `each` returns is the record's).
    #[inline]
    pub fn next_with(
        &mut self,
        mut each: impl FnMut(usize, Field<'a>) -> Result<(), WireError>,
    ) -> Option<Result<RecordSpan<'a>, WireError>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let result = (|| {
            let schema = self.r.u32()?;
            let fields = self
                .batch
                .schemas
                .get(schema as usize)
                .ok_or(WireError::Invalid("unknown schema"))?
                .names
                .len();
            let before = self.r.rest();
            for i in 0..fields {
                each(i, read_field(&mut self.r)?)?;
            }
            let used = before.len() - self.r.rest().len();
            Ok(RecordSpan {
                schema,
                fields: &before[..used],
                start: self.batch.head.len() - before.len(),
            })
        })();
        if result.is_err() {
            self.left = 0;
        }
        Some(result)
    }
}

/// The fields of a record read back from its span (a batch already checked).
#[inline]
pub fn fields(bytes: &[u8]) -> impl Iterator<Item = Field<'_>> + '_ {
    let mut r = Reader::new(bytes);
    std::iter::from_fn(move || read_field(&mut r).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Names(Vec<(&'static str, Option<&'static str>)>);

    impl SchemaNames for Names {
        fn field_count(&self) -> usize {
            self.0.len()
        }
        fn name(&self, i: usize) -> &str {
            self.0[i].0
        }
        fn column(&self, i: usize) -> Option<&str> {
            self.0[i].1
        }
    }

    fn sample() -> Vec<u8> {
        let mut w = BatchWriter::default();
        w.record(0);
        w.value(Value::Int(-1));
        w.field(Value::Str(""), Some("-"));
        let open = w.open_record();
        w.value(Value::Json(" [1] "));
        w.close_record(open, 1);
        w.record(0);
        w.value(Value::UInt(u64::MAX));
        w.value(Value::Float(0.5));
        w.finish(&[
            Names(vec![("a", Some("A")), ("b", None)]),
            Names(vec![("j", None)]),
        ])
    }

    #[test]
    fn written_records_read_back_with_their_schemas() {
        let bytes = sample();
        let batch = RecordBatch::parse(&bytes).unwrap();
        assert_eq!(batch.len(), 3);
        assert_eq!(batch.schemas()[0].names, ["a", "b"]);
        assert_eq!(batch.schemas()[0].columns.as_deref(), Some(&["A", "b"][..]));
        assert_eq!(batch.schemas()[1].columns.as_deref(), Some(&["j"][..]));
        let mut cursor = batch.records();
        let mut got = Vec::new();
        let mut counts = Vec::new();
        while let Some(span) = cursor.next_with(|i, f| {
            got.push((i, f));
            Ok(())
        }) {
            let span = span.unwrap();
            assert_eq!(
                &bytes[span.start..span.start + span.fields.len()],
                span.fields
            );
            counts.push((span.schema, fields(span.fields).count()));
        }
        assert_eq!(counts, [(0, 2), (1, 1), (0, 2)]);
        assert_eq!(
            got.iter().map(|(_, f)| f.value).collect::<Vec<_>>(),
            [
                Value::Int(-1),
                Value::Str(""),
                Value::Json("[1]"),
                Value::UInt(u64::MAX),
                Value::Float(0.5)
            ]
        );
        assert_eq!(got[1].1.csv, Some("-"));
        // Without column names, no column lists.
        let mut w = BatchWriter::default();
        w.record(0);
        w.value(Value::Null);
        let plain = w.finish(&[Names(vec![("x", None)])]);
        assert_eq!(u16::from_le_bytes([plain[2], plain[3]]), 0);
        assert_eq!(
            RecordBatch::parse(&plain).unwrap().schemas()[0].columns,
            None
        );
    }

    fn read_all(bytes: &[u8]) -> Result<usize, WireError> {
        let batch = RecordBatch::parse(bytes)?;
        let mut cursor = batch.records();
        let mut n = 0;
        while let Some(r) = cursor.next_with(|_, _| Ok(())) {
            r?;
            n += 1;
        }
        if n != batch.len() {
            return Err(WireError::Truncated);
        }
        Ok(n)
    }

    #[test]
    fn a_cut_or_bent_batch_is_an_error_not_a_panic() {
        let good = sample();
        assert_eq!(read_all(&good), Ok(3));
        for cut in 0..good.len() {
            assert!(read_all(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = good.clone();
        bad[4] = 0xff;
        assert!(read_all(&bad).is_err());
        let mut bad = good.clone();
        bad[0] = 9;
        assert_eq!(read_all(&bad), Err(WireError::Version(9)));
        let mut bad = good.clone();
        bad[1] = 1;
        assert_eq!(read_all(&bad), Err(WireError::Kind(1)));
        // A CSV text must be followed by a value.
        let mut bad = good;
        let csv = HEADER + 4 + 9;
        assert_eq!(bad[csv], tag::CSV);
        bad[csv + 1 + 4 + 1] = tag::CSV;
        assert_eq!(
            read_all(&bad),
            Err(WireError::Invalid("a CSV text inside a CSV text"))
        );
    }

    #[test]
    fn schema_limits_hold() {
        let batch = |names: Vec<String>| {
            let mut w = BatchWriter::default();
            w.record(0);
            for _ in &names {
                w.value(Value::Null);
            }
            let leaked: Vec<(&'static str, Option<&'static str>)> = names
                .into_iter()
                .map(|n| (&*Box::leak(n.into_boxed_str()), None))
                .collect();
            w.finish(&[Names(leaked)])
        };
        let many = |n: usize| (0..n).map(|i| format!("f{i}")).collect::<Vec<_>>();
        assert_eq!(read_all(&batch(many(MAX_FIELDS))), Ok(1));
        assert!(read_all(&batch(many(MAX_FIELDS + 1))).is_err());
        assert!(read_all(&batch(vec!["n".repeat(MAX_NAME)])).is_ok());
        assert!(read_all(&batch(vec!["n".repeat(MAX_NAME + 1)])).is_err());
        for n in [2, 16, 17, 1000] {
            let mut names = many(n);
            names[n - 1] = "f0".into();
            assert_eq!(
                read_all(&batch(names)),
                Err(WireError::Invalid("duplicate field name in a record")),
                "{n}"
            );
        }
    }
}

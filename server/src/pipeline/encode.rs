//! Encoders: Go-compatible JSON, the secadvisor `{"data": [...]}` wrapper, CSV, and Parquet
//! ([`parquet`](self::parquet)).
//!
//! The JSON bytes match Go's `encoding/json` Encoder, which upstream consumers were written
//! against: struct field order, HTML-safe escaping of `<`, `>`, `&`, U+2028 and U+2029, tab
//! indentation when pretty, and a trailing newline.

pub mod parquet;

use std::io;

use serde::{Serialize, Serializer};
use serde_json::ser::Formatter;

use super::record::{CsvRow, Record};
use super::storeheader::StoreObject;
use crate::config::{EncodeSection, EncodeType};

/// Why an object could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// serde_json failed (a record type that can't be serialized).
    #[error("json encoding failed: {0}")]
    Json(#[from] serde_json::Error),
    /// The object's shape doesn't fit the encoder (checked at config load; kept as a guard).
    #[error("{encoder} can't encode {what}")]
    Unsupported {
        /// Encoder name.
        encoder: &'static str,
        /// What it was given.
        what: &'static str,
    },
    /// The Parquet writer failed.
    #[error(transparent)]
    Parquet(#[from] self::parquet::ParquetEncodeError),
    /// Records of different shapes in one CSV object.
    #[error("csv needs records of one shape; got columns {first:?} and then {other:?}")]
    MixedCsv {
        /// First record's columns.
        first: Vec<String>,
        /// A later record's columns.
        other: Vec<String>,
    },
}

/// A configured encoder.
#[derive(Debug, Clone)]
pub enum Encoder {
    /// Plain JSON of the object.
    Json {
        /// Tab-indented.
        pretty: bool,
    },
    /// `{"data": [...]}`.
    Secadvisor {
        /// Tab-indented.
        pretty: bool,
    },
    /// Header row plus one row per record.
    Csv {
        /// Field separator.
        delimiter: char,
    },
    /// A Parquet file.
    Parquet(self::parquet::ParquetEncoder),
}

impl Encoder {
    /// Builds the encoder from a validated config section.
    pub fn from_config(section: &EncodeSection) -> Self {
        let pretty = section.json.pretty;
        match section.kind {
            EncodeType::Json => Encoder::Json { pretty },
            EncodeType::Secadvisor => Encoder::Secadvisor { pretty },
            EncodeType::Csv => Encoder::Csv {
                delimiter: section
                    .csv
                    .delimiter
                    .as_deref()
                    .and_then(|d| d.chars().next())
                    .unwrap_or(','),
            },
            EncodeType::Parquet => Encoder::Parquet(self::parquet::ParquetEncoder::from_options(
                &section.parquet,
            )),
        }
    }

    /// The object's Content-Type.
    pub fn content_type(&self) -> &'static str {
        match self {
            Encoder::Json { .. } | Encoder::Secadvisor { .. } => "application/json",
            Encoder::Csv { .. } => "text/csv",
            Encoder::Parquet(_) => self::parquet::CONTENT_TYPE,
        }
    }

    /// Key suffix when the object is not compressed.
    pub fn extension(&self) -> &'static str {
        match self {
            Encoder::Json { .. } | Encoder::Secadvisor { .. } => "json",
            Encoder::Csv { .. } => "csv",
            Encoder::Parquet(_) => "parquet",
        }
    }

    /// Encodes an object, appending to `out`.
    pub fn encode(&self, object: &StoreObject<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match (self, object) {
            (Encoder::Json { pretty }, object) => write_go_json(out, *pretty, object),
            (Encoder::Secadvisor { pretty }, StoreObject::Records(records)) => {
                // `{"data": [...]}`; the records sit at depth 2 when indented.
                let record_depth = pretty.then_some(2);
                let mut wrapper = JsonObject::open(out, pretty.then_some(0));
                let list = wrapper.key("data");
                list.push(b'[');
                for (i, record) in records.iter().enumerate() {
                    if i > 0 {
                        list.push(b',');
                    }
                    if let Some(depth) = record_depth {
                        newline_indent(list, depth);
                    }
                    match record {
                        Record::SecAdvisor(r) => r.write_json(list, record_depth),
                        other => {
                            let formatter = GoFormatter::at_depth(*pretty, 2);
                            let mut ser =
                                serde_json::Serializer::with_formatter(&mut *list, formatter);
                            other.serialize(&mut ser)?;
                        }
                    }
                }
                if *pretty && !records.is_empty() {
                    newline_indent(list, 1);
                }
                list.push(b']');
                wrapper.end();
                out.push(b'\n');
                Ok(())
            }
            (Encoder::Csv { delimiter }, StoreObject::Records(records)) => {
                write_csv(out, *delimiter, records)
            }
            (Encoder::Parquet(p), StoreObject::Records(records)) => Ok(p.encode(records, out)?),
            (Encoder::Parquet(_), _) => Err(EncodeError::Unsupported {
                encoder: "parquet",
                what: "a store header",
            }),
            (Encoder::Secadvisor { .. }, _) => Err(EncodeError::Unsupported {
                encoder: "secadvisor",
                what: "a store header",
            }),
            (Encoder::Csv { .. }, _) => Err(EncodeError::Unsupported {
                encoder: "csv",
                what: "a store header",
            }),
        }
    }
}

/// Serializes like Go's `json.Encoder` (with `SetIndent("", "\t")` when pretty).
pub fn write_go_json<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    pretty: bool,
    value: &T,
) -> Result<(), EncodeError> {
    let mut ser = serde_json::Serializer::with_formatter(&mut *out, GoFormatter::new(pretty));
    value.serialize(&mut ser)?;
    out.push(b'\n');
    Ok(())
}

/// Appends `s` as a JSON string escaped as Go does. Strings with nothing to escape (nearly all
/// of them in flows) are copied in one go; the others go through serde with [`GoFormatter`].
pub fn write_go_str(out: &mut Vec<u8>, s: &str) {
    // Branch-free, so the compiler vectorises it; non-ASCII takes the slow path too (U+2028).
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (0x20..0x80).contains(&b) & !matches!(b, b'"' | b'\\' | b'<' | b'>' | b'&')
    });
    if plain {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let mut ser = serde_json::Serializer::with_formatter(&mut *out, GoFormatter::new(false));
        // Writing a string into a Vec can't fail.
        let _ = ser.serialize_str(s);
    }
}

/// A JSON object written field by field, for records whose encoding is hand-written for speed
/// (keys are ASCII constants and need no escaping): compact, or tab-indented as Go's
/// `SetIndent("", "\t")` writes it.
pub struct JsonObject<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    /// The object's nesting depth when indented; `None` when compact.
    depth: Option<usize>,
}

impl<'a> JsonObject<'a> {
    /// Opens an object that is written compact (`None`) or indented at `depth`.
    pub fn open(out: &'a mut Vec<u8>, depth: Option<usize>) -> Self {
        out.push(b'{');
        JsonObject {
            out,
            first: true,
            depth,
        }
    }

    /// Writes `"key":` (after a comma unless first) and gives the buffer for the value.
    pub fn key(&mut self, key: &str) -> &mut Vec<u8> {
        self.separate();
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.push(b'"');
        self.colon();
        self.out
    }

    /// Like [`key`](Self::key) for a key that is data (escaped like a value).
    pub fn data_key(&mut self, key: &str) -> &mut Vec<u8> {
        self.separate();
        write_go_str(self.out, key);
        self.colon();
        self.out
    }

    /// Writes `key` and opens the object that is its value.
    pub fn object(&mut self, key: &str) -> JsonObject<'_> {
        let depth = self.depth.map(|d| d + 1);
        JsonObject::open(self.key(key), depth)
    }

    /// A comma before every member but the first, then the member's indent.
    fn separate(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        if let Some(depth) = self.depth {
            newline_indent(self.out, depth + 1);
        }
    }

    /// Between a key and its value.
    fn colon(&mut self) {
        self.out.extend_from_slice(match self.depth {
            Some(_) => b": ",
            None => b":",
        });
    }

    /// A string field, left out when empty (Go's `omitempty`).
    pub fn str_nonempty(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            write_go_str(self.key(key), value);
        }
    }

    /// An integer field.
    pub fn int(&mut self, key: &str, value: i64) {
        let mut digits = itoa::Buffer::new();
        self.key(key)
            .extend_from_slice(digits.format(value).as_bytes());
    }

    /// Closes the object; an empty one stays `{}` even when indented, as in Go.
    pub fn end(self) {
        if let (Some(depth), false) = (self.depth, self.first) {
            newline_indent(self.out, depth);
        }
        self.out.push(b'}');
    }
}

/// A newline and `depth` tabs.
fn newline_indent(out: &mut Vec<u8>, depth: usize) {
    out.push(b'\n');
    out.resize(out.len() + depth, b'\t');
}

/// A serde_json formatter reproducing Go's escaping and indentation.
#[derive(Debug)]
pub struct GoFormatter {
    pretty: bool,
    depth: usize,
    has_value: bool,
}

impl GoFormatter {
    /// Compact or tab-indented.
    pub fn new(pretty: bool) -> Self {
        Self::at_depth(pretty, 0)
    }

    /// For a value nested `depth` levels deep in a document written around it.
    pub fn at_depth(pretty: bool, depth: usize) -> Self {
        GoFormatter {
            pretty,
            depth,
            has_value: false,
        }
    }

    fn open<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth += 1;
        self.has_value = false;
        w.write_all(bracket)
    }

    fn close<W: ?Sized + io::Write>(&mut self, w: &mut W, bracket: &[u8]) -> io::Result<()> {
        self.depth -= 1;
        if self.pretty && self.has_value {
            self.newline_indent(w)?;
        }
        w.write_all(bracket)
    }

    /// Before an array element or an object key: a comma after the first, then the indent.
    fn element<W: ?Sized + io::Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        if !first {
            w.write_all(b",")?;
        }
        if self.pretty {
            self.newline_indent(w)?;
        }
        Ok(())
    }

    fn newline_indent<W: ?Sized + io::Write>(&self, w: &mut W) -> io::Result<()> {
        w.write_all(b"\n")?;
        for _ in 0..self.depth {
            w.write_all(b"\t")?;
        }
        Ok(())
    }
}

impl Formatter for GoFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        // Nearly every fragment needs none of Go's extra escapes: one branch-free pass (which
        // the compiler vectorises) says so before the byte-by-byte walk.
        if !bytes.iter().fold(false, |found, &b| {
            found | matches!(b, b'<' | b'>' | b'&' | 0xE2)
        }) {
            return w.write_all(bytes);
        }
        let mut start = 0;
        let mut i = 0;
        while i < bytes.len() {
            let (escape, width): (&[u8], usize) = match bytes[i] {
                b'<' => (b"\\u003c", 1),
                b'>' => (b"\\u003e", 1),
                b'&' => (b"\\u0026", 1),
                0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA8) => {
                    (b"\\u2028", 3)
                }
                0xE2 if bytes.get(i + 1) == Some(&0x80) && bytes.get(i + 2) == Some(&0xA9) => {
                    (b"\\u2029", 3)
                }
                _ => {
                    i += 1;
                    continue;
                }
            };
            w.write_all(&bytes[start..i])?;
            w.write_all(escape)?;
            i += width;
            start = i;
        }
        w.write_all(&bytes[start..])
    }

    fn begin_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"[")
    }

    fn end_array<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"]")
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.element(w, first)
    }

    fn end_array_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }

    fn begin_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.open(w, b"{")
    }

    fn end_object<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.close(w, b"}")
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        self.element(w, first)
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(if self.pretty { b": " } else { b":" })
    }

    fn end_object_value<W: ?Sized + io::Write>(&mut self, _w: &mut W) -> io::Result<()> {
        self.has_value = true;
        Ok(())
    }
}

fn write_csv(out: &mut Vec<u8>, delimiter: char, records: &[Record]) -> Result<(), EncodeError> {
    let Some(first) = records.first() else {
        return Ok(());
    };
    let header = first.csv_header();
    write_csv_line(out, delimiter, header.iter());
    let mut row = CsvRow::default();
    for record in records {
        let columns = record.csv_header();
        if columns != header {
            return Err(EncodeError::MixedCsv {
                first: header.to_vec(),
                other: columns.to_vec(),
            });
        }
        row.fields.clear();
        record.csv_row(&mut row);
        write_csv_line(out, delimiter, row.fields.iter().map(String::as_str));
    }
    Ok(())
}

/// One RFC 4180 line, quoting as Go's `encoding/csv` does.
fn write_csv_line<'a>(out: &mut Vec<u8>, delimiter: char, fields: impl Iterator<Item = &'a str>) {
    let mut sep = [0u8; 4];
    let sep = delimiter.encode_utf8(&mut sep).as_bytes();
    for (i, field) in fields.enumerate() {
        if i > 0 {
            out.extend_from_slice(sep);
        }
        if csv_needs_quotes(field, delimiter) {
            out.push(b'"');
            for part in field.split('"').enumerate() {
                if part.0 > 0 {
                    out.extend_from_slice(b"\"\"");
                }
                out.extend_from_slice(part.1.as_bytes());
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(field.as_bytes());
        }
    }
    out.push(b'\n');
}

fn csv_needs_quotes(field: &str, delimiter: char) -> bool {
    if field.is_empty() {
        return false;
    }
    field == r"\."
        || field.contains(delimiter)
        || field.contains(['"', '\r', '\n'])
        || field.starts_with(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skydive::flow::Flow;

    fn flow_record(json: &str) -> Record {
        Record::Flow(Box::new(serde_json::from_str::<Flow>(json).unwrap()))
    }

    fn encode(encoder: Encoder, records: &[Record]) -> String {
        let mut out = Vec::new();
        encoder
            .encode(&StoreObject::Records(records), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn go_escaping_of_html_and_line_separators() {
        let r = flow_record(r#"{"UUID":"a<b>&c\u2028\u2029é\"","Start":0,"Last":0}"#);
        assert_eq!(
            encode(Encoder::Json { pretty: false }, &[r]),
            "[{\"UUID\":\"a\\u003cb\\u003e\\u0026c\\u2028\\u2029é\\\"\",\"Start\":0,\"Last\":0,\"ParentUUID\":\"\",\"RawPacketsCaptured\":0}]\n"
        );
    }

    #[test]
    fn pretty_uses_tabs_and_empty_containers_stay_inline() {
        let r = flow_record(r#"{"UUID":"u","Start":1,"Last":2,"FinishType":2}"#);
        assert_eq!(
            encode(Encoder::Json { pretty: true }, &[r]),
            "[\n\t{\n\t\t\"UUID\": \"u\",\n\t\t\"Start\": 1,\n\t\t\"Last\": 2,\n\t\t\"ParentUUID\": \"\",\n\t\t\"RawPacketsCaptured\": 0,\n\t\t\"FinishType\": 2\n\t}\n]\n"
        );
        assert_eq!(
            encode(Encoder::Secadvisor { pretty: true }, &[]),
            "{\n\t\"data\": []\n}\n"
        );
        assert_eq!(
            encode(Encoder::Secadvisor { pretty: false }, &[]),
            "{\"data\":[]}\n"
        );
        assert_eq!(encode(Encoder::Json { pretty: false }, &[]), "[]\n");
    }

    #[test]
    fn csv_has_a_header_and_rfc4180_quoting() {
        let a = flow_record(
            r#"{"UUID":"x,\"y\"","Start":1,"Last":2,"Network":{"Protocol":"IPV4","A":"10.0.0.1","B":"10.0.0.2","ID":0}}"#,
        );
        let b = flow_record(r#"{"UUID":" lead","Start":3,"Last":4}"#);
        let text = encode(Encoder::Csv { delimiter: ',' }, &[a, b]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("UUID,LayersPath,Application,Link.Protocol,"));
        assert!(
            lines[1].starts_with("\"x,\"\"y\"\"\",,,,,,,IPV4,10.0.0.1,10.0.0.2,0,"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("\" lead\","), "{}", lines[2]);
        let columns = lines[0].split(',').count();
        assert_eq!(lines[2].split(',').count(), columns);
    }

    #[test]
    fn csv_with_space_delimiter_quotes_fields_with_spaces() {
        let r = flow_record(r#"{"UUID":"a b","Start":1,"Last":2}"#);
        let text = encode(Encoder::Csv { delimiter: ' ' }, &[r]);
        assert!(text.lines().nth(1).unwrap().starts_with("\"a b\" "));
    }
}

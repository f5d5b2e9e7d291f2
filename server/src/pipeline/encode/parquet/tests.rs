//! Parquet written here is read back with the `parquet` crate's record reader (its own code
//! path, not the writer's) and compared value by value with the CSV or JSON of the same records.

use bytes::Bytes;
use parquet::basic::{Compression, LogicalType, Type as Physical};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use serde_json::{Value, json};

use super::*;
use crate::config::{ParquetCompression, ParquetOptions, RowGroupRows};
use crate::pipeline::encode::Encoder;
use crate::pipeline::record::Record;
use crate::pipeline::storeheader::StoreObject;
use crate::pipeline::transform::awsflowlogs::AwsFlowLogs;
use crate::skydive::flow::Flow;

/// Varied flows: TCP, UDP, ICMPv4 and ICMPv6, with and without a link layer, an update window,
/// any counters or a network layer, counters past 2^31, every finish type.
pub(crate) fn varied_flows(n: u64) -> Vec<Flow> {
    (0..n)
        .map(|i| {
            let v6 = i % 11 == 5;
            let (a, b) = if v6 {
                (format!("fd00::{i:x}"), "2001:db8::1".to_string())
            } else {
                (format!("10.{}.{}.{}", i % 3, i % 7, i % 250), format!("93.184.216.{}", i % 200))
            };
            let icmp = i % 9 == 4;
            let proto = if i % 4 == 1 { "UDP" } else { "TCP" };
            let network = if i % 13 == 12 {
                String::new()
            } else {
                format!(
                    r#""Network":{{"Protocol":"{}","A":"{a}","B":"{b}","ID":0}},"#,
                    if v6 { "IPV6" } else { "IPV4" }
                )
            };
            let link = if i % 5 == 3 {
                String::new()
            } else {
                format!(r#""Link":{{"Protocol":"ETHERNET","A":"02:00:00:00:00:{:02x}","B":"02:00:00:00:01:01","ID":{}}},"#, i % 256, i % 6)
            };
            let (path, layer) = if icmp {
                (
                    format!("Ethernet/{}/{}", if v6 { "IPv6" } else { "IPv4" }, if v6 { "ICMPv6" } else { "ICMPv4" }),
                    r#""ICMP":{"Type":"ECHO","Code":0,"ID":9},"#.to_string(),
                )
            } else {
                (
                    format!("Ethernet/IPv4/{proto}"),
                    format!(r#""Transport":{{"Protocol":"{proto}","A":{},"B":{},"ID":0}},"#, 1024 + i * 37 % 60000, [80, 443, 53, 8080][i as usize % 4]),
                )
            };
            let window = if i % 6 == 2 {
                String::new()
            } else {
                format!(r#""LastUpdateMetric":{{"ABPackets":{},"ABBytes":{},"BAPackets":2,"BABytes":{},"Start":{},"Last":{},"RTT":0}},"#, i + 1, (i + 1) * 100, 3_000_000_000u64 + i, 1_546_338_000_000i64 + i as i64 * 1000, 1_546_338_030_000i64 + i as i64 * 1000)
            };
            let metric = if i % 17 == 16 {
                String::new()
            } else {
                format!(r#""Metric":{{"ABPackets":{},"ABBytes":{},"BAPackets":7,"BABytes":900,"Start":1546338000000,"Last":1546338090000,"RTT":{}}},"#, i * 3 + 1, i * 5_000_000_000 + 60, i * 1000)
            };
            let tcp = if i % 8 == 0 && !icmp && proto == "TCP" {
                r#""TCPMetric":{"ABSynStart":1546338000000,"BASynStart":1546338000010,"ABFinStart":1546338090000},"#
            } else {
                ""
            };
            let finish = ["", r#","FinishType":1"#, r#","FinishType":2"#, r#","FinishType":3"#][i as usize % 4];
            let json = format!(
                r#"{{"UUID":"u{i}","LayersPath":"{path}","Application":"{proto}",{link}{network}{layer}{window}{metric}{tcp}"Start":1546338000000,"Last":1546338090000,"TrackingID":"t{i}","L3TrackingID":"l{i}","ParentUUID":"","NodeTID":"node-{}","CaptureID":"cap","RawPacketsCaptured":0{finish}}}"#,
                i % 2
            );
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
        })
        .collect()
}

fn encoder(compression: ParquetCompression, rows: usize) -> ParquetEncoder {
    ParquetEncoder::from_options(&ParquetOptions {
        compression,
        row_group_rows: RowGroupRows::new(rows),
    })
}

fn reader(bytes: &[u8]) -> SerializedFileReader<Bytes> {
    SerializedFileReader::new(Bytes::copy_from_slice(bytes)).unwrap()
}

fn rows(bytes: &[u8]) -> Vec<Row> {
    let reader = reader(bytes);
    reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// The text AWS's format gives the value, `-` for null.
fn aws_text(field: &Field) -> String {
    match field {
        Field::Null => "-".into(),
        Field::Int(v) => v.to_string(),
        Field::Long(v) => v.to_string(),
        Field::Str(v) => v.clone(),
        other => panic!("unexpected value {other:?}"),
    }
}

#[test]
fn awsflowlogs_parquet_holds_every_value_of_the_csv() {
    let flows = varied_flows(120);
    for version in [2, 3] {
        let t = AwsFlowLogs::from_options(&crate::config::AwsFlowLogsOptions {
            version,
            account_id: Some("123456789012".into()),
            upstream_names: false,
        });
        let mut records: Vec<Record> = flows
            .iter()
            .map(|f| Record::AwsFlowLog(Box::new(t.transform(f))))
            .collect();
        // A NODATA record, as the logstatus mangler writes them.
        if let Record::AwsFlowLog(r) = &mut records[7] {
            r.log_status = "NODATA";
            r.srcaddr = None;
            r.dstaddr = None;
            r.srcport = None;
            r.dstport = None;
            r.protocol = None;
            r.packets = None;
            r.bytes = None;
        }
        let object = StoreObject::Records(&records);
        let mut csv = Vec::new();
        Encoder::Csv { delimiter: ' ' }
            .encode(&object, &mut csv)
            .unwrap();
        let csv = String::from_utf8(csv).unwrap();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap().split(' ').collect();
        let mut file = Vec::new();
        let parquet = encoder(ParquetCompression::Snappy, 50);
        Encoder::Parquet(parquet)
            .encode(&object, &mut file)
            .unwrap();
        assert_eq!(&file[..4], b"PAR1");

        let read = reader(&file);
        let meta = read.metadata();
        assert_eq!(meta.num_row_groups(), 3, "120 records at 50 a group");
        let schema = meta.file_metadata().schema_descr();
        let names: Vec<String> = schema.columns().iter().map(|c| c.path().string()).collect();
        let expected: Vec<String> = header.iter().map(|h| h.replace('-', "_")).collect();
        assert_eq!(names, expected, "AWS's column names, in order");
        for c in schema.columns() {
            let expected = match c.name() {
                "version" | "srcport" | "dstport" | "tcp_flags" => Physical::INT32,
                "protocol" | "packets" | "bytes" | "start" | "end" => Physical::INT64,
                _ => Physical::BYTE_ARRAY,
            };
            assert_eq!(c.physical_type(), expected, "{}", c.name());
            if expected == Physical::BYTE_ARRAY {
                assert_eq!(
                    c.logical_type_ref(),
                    Some(&LogicalType::String),
                    "{}",
                    c.name()
                );
            }
        }
        let table = rows(&file);
        assert_eq!(table.len(), records.len());
        for (row, line) in table.iter().zip(lines) {
            let from_parquet: Vec<String> =
                row.get_column_iter().map(|(_, f)| aws_text(f)).collect();
            let from_csv: Vec<&str> = line.split(' ').collect();
            assert_eq!(from_parquet, from_csv, "version {version}");
        }
    }
}

#[test]
fn each_codec_is_the_one_asked_for() {
    let t = AwsFlowLogs::from_options(&Default::default());
    let records: Vec<Record> = varied_flows(30)
        .iter()
        .map(|f| Record::AwsFlowLog(Box::new(t.transform(f))))
        .collect();
    let mut sizes = Vec::new();
    for (option, codec) in [
        (ParquetCompression::Snappy, Compression::SNAPPY),
        (
            ParquetCompression::Zstd,
            Compression::ZSTD(Default::default()),
        ),
        (
            ParquetCompression::Gzip,
            Compression::GZIP(Default::default()),
        ),
        (ParquetCompression::None, Compression::UNCOMPRESSED),
    ] {
        let mut file = Vec::new();
        encoder(option, 10_000).encode(&records, &mut file).unwrap();
        let read = reader(&file);
        let group = read.metadata().row_group(0);
        for c in group.columns() {
            // The codec's level is not stored in the file: compare the codec.
            assert_eq!(
                std::mem::discriminant(&c.compression()),
                std::mem::discriminant(&codec),
                "{option:?}"
            );
        }
        assert_eq!(rows(&file).len(), 30);
        sizes.push(file.len());
    }
    assert!(sizes[3] > sizes[1], "zstd compresses: {sizes:?}");
}

/// A JSON value rebuilt from a Parquet row: nulls left out, JSON columns parsed.
fn json_of_row(row: &Row, json_columns: &[String], prefix: &str) -> Value {
    let mut out = serde_json::Map::new();
    for (name, field) in row.get_column_iter() {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        let value = match field {
            Field::Null => continue,
            Field::Bool(b) => json!(b),
            Field::Long(v) => json!(v),
            Field::Double(v) => json!(v),
            Field::Str(s) if json_columns.contains(&path) => serde_json::from_str(s).unwrap(),
            Field::Str(s) => json!(s),
            Field::Group(g) => json_of_row(g, json_columns, &path),
            other => panic!("{path}: unexpected {other:?}"),
        };
        out.insert(name.clone(), value);
    }
    Value::Object(out)
}

/// The rows of a file written by the type rules, as JSON.
pub(crate) fn read_back_json(file: &[u8]) -> Vec<Value> {
    let json_columns = json_columns(file);
    rows(file)
        .iter()
        .map(|r| json_of_row(r, &json_columns, ""))
        .collect()
}

/// `value` without its nulls (Parquet has no "present but null").
fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Equal, a double and an integer of the same value being equal.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x.as_f64() == y.as_f64() && (x.is_f64() || y.is_f64() || x == y)
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w))
        }
        _ => a == b,
    }
}

fn json_columns(file: &[u8]) -> Vec<String> {
    reader(file)
        .metadata()
        .file_metadata()
        .schema_descr()
        .columns()
        .iter()
        .filter(|c| c.logical_type_ref() == Some(&LogicalType::Json))
        .map(|c| c.path().string())
        .collect()
}

/// Every record, written by the type rules, reads back as its JSON form.
fn assert_round_trip<T: Serialize>(records: &[T], rows_per_group: usize) -> Vec<u8> {
    let mut file = Vec::new();
    encoder(ParquetCompression::Zstd, rows_per_group)
        .encode_any(records, &mut file)
        .unwrap();
    let json_columns = json_columns(&file);
    let table = rows(&file);
    assert_eq!(table.len(), records.len());
    for (row, record) in table.iter().zip(records) {
        let expected = without_nulls(&serde_json::to_value(record).unwrap());
        let got = json_of_row(row, &json_columns, "");
        assert!(same(&got, &expected), "\n got {got}\nwant {expected}");
    }
    file
}

#[test]
fn flows_keep_every_value_with_nested_layers_as_groups() {
    let records: Vec<Record> = varied_flows(100)
        .into_iter()
        .map(|f| Record::Flow(Box::new(f)))
        .collect();
    let mut file = Vec::new();
    Encoder::Parquet(encoder(ParquetCompression::Snappy, 30))
        .encode(&StoreObject::Records(&records), &mut file)
        .unwrap();
    let json_columns = json_columns(&file);
    for (row, record) in rows(&file).iter().zip(&records) {
        let expected = without_nulls(&serde_json::to_value(record).unwrap());
        assert!(same(&json_of_row(row, &json_columns, ""), &expected));
    }
    let schema = reader(&file).metadata().file_metadata().schema_descr_ptr();
    let column = |path: &str| {
        schema
            .columns()
            .iter()
            .find(|c| c.path().string() == path)
            .unwrap_or_else(|| panic!("no column {path}"))
            .clone()
    };
    // Nested objects are groups, with typed leaves: a query reads `Network.A` directly.
    assert_eq!(column("Network.A").physical_type(), Physical::BYTE_ARRAY);
    assert_eq!(column("Metric.ABBytes").physical_type(), Physical::INT64);
    assert_eq!(column("Transport.A").physical_type(), Physical::INT64);
    // The CSV of the same flows, value by value: its dotted columns are Parquet's paths. The
    // CSV writes an empty field where the flow has nothing, or a zero Skydive leaves out.
    let mut csv = Vec::new();
    Encoder::Csv { delimiter: ',' }
        .encode(&StoreObject::Records(&records), &mut csv)
        .unwrap();
    let csv = String::from_utf8(csv).unwrap();
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let mut compared = 0;
    for (row, line) in rows(&file).iter().zip(lines) {
        for (name, text) in header.iter().zip(line.split(',')) {
            let field = field_at(row, name);
            let got = match field {
                None | Some(Field::Null) => String::new(),
                Some(Field::Long(v)) => v.to_string(),
                Some(Field::Str(s)) => s.clone(),
                Some(other) => panic!("{name}: {other:?}"),
            };
            if text.is_empty() || (text == "0" && got.is_empty()) {
                assert!(
                    matches!(got.as_str(), "" | "0"),
                    "{name}: {got} where the CSV has {text:?}"
                );
            } else {
                assert_eq!(got, text, "{name}");
                compared += 1;
            }
        }
    }
    assert!(compared > 100 * 20, "{compared} values compared");
}

/// The value at a dotted path of a row, `None` where a group on the way is absent.
fn field_at<'a>(row: &'a Row, path: &str) -> Option<&'a Field> {
    let (head, rest) = match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    };
    let (_, field) = row.get_column_iter().find(|(n, _)| *n == head)?;
    match (field, rest) {
        (field, None) => Some(field),
        (Field::Group(g), Some(rest)) => field_at(g, rest),
        (_, Some(_)) => None,
    }
}

#[test]
fn a_field_whose_type_changes_keeps_every_value_as_json() {
    let records = vec![
        json!({"a": 1, "b": "x", "c": {"d": 1.5}, "n": 1, "big": 1}),
        json!({"a": "1", "b": null, "c": {"d": 2}, "n": 2.5, "big": 18446744073709551615u64}),
        json!({"a": 2.5, "c": "flat", "e": [1, {"f": "g"}], "n": -3}),
        json!({"a": 9007199254740993i64, "c": {}, "t": true, "x": {}}),
        json!({"a": [1, 2], "n": 9007199254740992i64, "t": false}),
    ];
    let file = assert_round_trip(&records, 2);
    let read = reader(&file);
    let schema = read.metadata().file_metadata().schema_descr();
    let mut kinds: Vec<(String, Physical, Option<LogicalType>)> = schema
        .columns()
        .iter()
        .map(|c| {
            (
                c.path().string(),
                c.physical_type(),
                c.logical_type_ref().cloned(),
            )
        })
        .collect();
    kinds.sort_by(|a, b| a.0.cmp(&b.0));
    let json = Some(LogicalType::Json);
    let string = Some(LogicalType::String);
    assert_eq!(
        kinds,
        [
            ("a".to_string(), Physical::BYTE_ARRAY, json.clone()),
            ("b".to_string(), Physical::BYTE_ARRAY, string.clone()),
            // An integer past i64: no int64 column can hold it.
            ("big".to_string(), Physical::BYTE_ARRAY, json.clone()),
            // An object in one record, a string in another: the column holds JSON texts.
            ("c".to_string(), Physical::BYTE_ARRAY, json.clone()),
            ("e".to_string(), Physical::BYTE_ARRAY, json.clone()),
            // Integers and fractions, every integer exact as a double.
            ("n".to_string(), Physical::DOUBLE, None),
            ("t".to_string(), Physical::BOOLEAN, None),
            // Only ever `{}`: no Parquet group can be empty.
            ("x".to_string(), Physical::BYTE_ARRAY, json),
        ]
    );
    // The texts tell a string from a number.
    let a: Vec<String> = rows(&file)
        .iter()
        .map(
            |r| match r.get_column_iter().find(|(n, _)| *n == "a").unwrap().1 {
                Field::Str(s) => s.clone(),
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(a, ["1", "\"1\"", "2.5", "9007199254740993", "[1,2]"]);
}

#[test]
fn integers_not_exact_as_doubles_stay_exact() {
    let records = vec![json!({"n": 9007199254740993i64}), json!({"n": 0.5})];
    let file = assert_round_trip(&records, 10);
    let column = reader(&file)
        .metadata()
        .file_metadata()
        .schema_descr()
        .column(0);
    assert_eq!(column.logical_type_ref(), Some(&LogicalType::Json));
}

#[test]
fn records_without_fields_are_an_error_not_a_panic() {
    let mut out = Vec::new();
    let e = encoder(ParquetCompression::Snappy, 10)
        .encode_any(&[json!({}), json!({})], &mut out)
        .unwrap_err();
    assert!(matches!(e, ParquetEncodeError::NoColumns), "{e}");
    // A field that is only ever null is a string column of nulls.
    let file = assert_round_trip(&[json!({"a": null}), json!({})], 10);
    let column = reader(&file)
        .metadata()
        .file_metadata()
        .schema_descr()
        .column(0);
    assert_eq!(column.logical_type_ref(), Some(&LogicalType::String));
}

#[test]
fn the_encoder_names_parquet() {
    let e = Encoder::Parquet(encoder(ParquetCompression::Snappy, 10));
    assert_eq!(e.content_type(), "application/vnd.apache.parquet");
    assert_eq!(e.extension(), "parquet");
}

//! `encode: parquet` end to end: `sluice sim` → `sluice run` (`awsflowlogs` v3, Parquet, AWS's
//! Hive-compatible layout with hour folders) → the S3 writer → a real S3 server (moto). The
//! objects are read back from the server and decoded with the `parquet` crate's reader (its
//! record API, not sluice's writer), then compared value by value with the CSV sluice writes for
//! the same flows: the simulator replays the first run's flows, verbatim, to a second run whose
//! encoder is `csv` with AWS's space delimiter (docs/parquet.md §2: a null is AWS's `-`).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use parquet::basic::{LogicalType, Type as Physical};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use regex::Regex;
use sluice_tests::s3::MotoServer;
use sluice_tests::{Sim, read_objects, run_until_drained, wall_ms};

const WAIT: Duration = Duration::from_secs(90);
const TOTAL: usize = 300;
const ACCOUNT: &str = "123456789012";
const REGION: &str = "eu-west-3";
const BUCKET: &str = "flowlogs";

fn config(sim: &Sim, encode: &str, write: &str) -> String {
    format!(
        "pipeline:\n  subscriber:\n    url: {url}\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  transform:\n    type: awsflowlogs\n    awsflowlogs:\n      version: 3\n      account_id: \"{ACCOUNT}\"\n  encode:\n{encode}  compress:\n    type: none\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: vpc\n      dirname: {BUCKET}\n      max_flows_per_object: 70\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 100000\n      key_format: aws-hive\n      key_format_per_hour: true\n  write:\n{write}",
        url = sim.ws_url()
    )
}

/// AWS's Hive-compatible object name (docs/awsflowlogs.md §3), with the hour folder.
fn hive_key() -> Regex {
    Regex::new(
        r"^vpc/AWSLogs/aws-account-id=(\d{12})/aws-service=vpcflowlogs/aws-region=([a-z0-9-]+)/year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})/(\d{12})_vpcflowlogs_([a-z0-9-]+)_fl-([a-z]+)_(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})Z_[0-9a-f]{16}\.log\.parquet$",
    )
    .unwrap()
}

/// The text AWS's format gives a value: `-` for null.
fn aws_text(field: &Field) -> String {
    match field {
        Field::Null => "-".into(),
        Field::Int(v) => v.to_string(),
        Field::Long(v) => v.to_string(),
        Field::Str(v) => v.clone(),
        other => panic!("a value AWS's schema doesn't have: {other:?}"),
    }
}

/// Athena's type of each AWS flow-log column (int, bigint, string).
fn athena_type(column: &str) -> Physical {
    match column {
        "version" | "srcport" | "dstport" | "tcp_flags" => Physical::INT32,
        "protocol" | "packets" | "bytes" | "start" | "end" => Physical::INT64,
        _ => Physical::BYTE_ARRAY,
    }
}

#[test]
fn parquet_in_hive_folders_on_s3_holds_what_the_csv_holds() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    moto.create_bucket(BUCKET).unwrap();

    // Run 1: Parquet to S3.
    let sim = Sim::start_fast(dir.path(), 30, 400, TOTAL as u32, 61).unwrap();
    let parquet_config = dir.path().join("parquet.yml");
    std::fs::write(
        &parquet_config,
        config(
            &sim,
            "    type: parquet\n    parquet:\n      compression: zstd\n      row_group_rows: 25\n",
            &format!(
                "    type: s3\n    s3:\n      endpoint: {}\n      region: {REGION}\n      access_key: {}\n      secret_key: {}\n    spool:\n      dir: {}\n",
                moto.endpoint(),
                moto.access_key,
                moto.secret_key,
                dir.path().join("spool").display()
            ),
        ),
    )
    .unwrap();
    let start_ms = wall_ms();
    run_until_drained(&sim, &parquet_config, TOTAL, WAIT).unwrap_or_else(|e| panic!("{e:#}"));
    let end_ms = wall_ms();
    let sent_log = sim.sent_log.clone();
    drop(sim);

    // Run 2: the same flows, replayed, to CSV files.
    let replay = Sim::start(
        dir.path(),
        &[
            "--replay",
            sent_log.to_str().unwrap(),
            "--rate",
            "400",
            "--batch-secs",
            "0.3",
        ],
    )
    .unwrap();
    let out = dir.path().join("csv");
    let csv_config = dir.path().join("csv.yml");
    std::fs::write(
        &csv_config,
        config(
            &replay,
            "    type: csv\n    csv:\n      delimiter: \" \"\n",
            &format!(
                "    type: file\n    file:\n      dir: {}\n    s3:\n      region: {REGION}\n",
                out.display()
            ),
        ),
    )
    .unwrap();
    run_until_drained(&replay, &csv_config, TOTAL, WAIT).unwrap_or_else(|e| panic!("{e:#}"));
    let mut csv_rows: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let mut csv_header: Option<Vec<String>> = None;
    for o in read_objects(&out).unwrap() {
        let text = String::from_utf8(o.content).unwrap();
        let mut lines = text.lines();
        let header: Vec<String> = lines.next().unwrap().split(' ').map(String::from).collect();
        assert_eq!(csv_header.get_or_insert(header.clone()), &header);
        for line in lines {
            *csv_rows
                .entry(line.split(' ').map(String::from).collect())
                .or_default() += 1;
        }
    }
    assert_eq!(
        csv_rows.values().sum::<usize>(),
        TOTAL,
        "one CSV row per flow"
    );
    let csv_header = csv_header.unwrap();

    // The Parquet objects, as stored.
    let pattern = hive_key();
    let objects = moto.objects(BUCKET).unwrap();
    assert!(objects.len() >= TOTAL / 70, "{} objects", objects.len());
    let mut parquet_rows: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    let mut row_groups = 0;
    for o in &objects {
        let c = pattern
            .captures(&o.key)
            .unwrap_or_else(|| panic!("{} is not AWS's Hive layout", o.key));
        // Partition values agree with the file name, which is the object's start minute.
        assert_eq!((&c[1], &c[7]), (ACCOUNT, ACCOUNT), "{}", o.key);
        assert_eq!((&c[2], &c[8]), (REGION, REGION), "{}", o.key);
        assert_eq!(
            (&c[3], &c[4], &c[5], &c[6]),
            (&c[10], &c[11], &c[12], &c[13]),
            "{}",
            o.key
        );
        let minute = chrono::NaiveDateTime::parse_from_str(
            &format!("{}{}{}{}{}", &c[10], &c[11], &c[12], &c[13], &c[14]),
            "%Y%m%d%H%M",
        )
        .unwrap()
        .and_utc()
        .timestamp_millis();
        assert!(
            minute >= start_ms - 60_000 && minute <= end_ms,
            "{}: outside the run",
            o.key
        );
        assert_eq!(
            o.content_type.as_deref(),
            Some("application/vnd.apache.parquet"),
            "{}",
            o.key
        );
        assert_eq!(o.content_encoding, None, "{}: compressed inside", o.key);
        assert_eq!(&o.raw[..4], b"PAR1");
        assert_eq!(&o.raw[o.raw.len() - 4..], b"PAR1");

        let reader = SerializedFileReader::new(Bytes::from(o.raw.clone()))
            .unwrap_or_else(|e| panic!("{}: not Parquet: {e}", o.key));
        let meta = reader.metadata();
        let schema = meta.file_metadata().schema_descr();
        let names: Vec<String> = schema
            .columns()
            .iter()
            .map(|c| c.name().to_string())
            .collect();
        let expected: Vec<String> = csv_header.iter().map(|h| h.replace('-', "_")).collect();
        assert_eq!(names, expected, "{}: AWS's columns in order", o.key);
        for column in schema.columns() {
            assert_eq!(
                column.physical_type(),
                athena_type(column.name()),
                "{}",
                column.name()
            );
            if column.physical_type() == Physical::BYTE_ARRAY {
                assert_eq!(column.logical_type_ref(), Some(&LogicalType::String));
            }
        }
        let rows = meta.file_metadata().num_rows() as usize;
        assert_eq!(
            o.metadata.get("num-records").map(String::as_str),
            Some(rows.to_string().as_str()),
            "{}",
            o.key
        );
        row_groups += meta.num_row_groups();
        for g in meta.row_groups() {
            assert!(g.num_rows() <= 25, "row_group_rows");
            for column in g.columns() {
                assert_eq!(
                    std::mem::discriminant(&column.compression()),
                    std::mem::discriminant(&parquet::basic::Compression::ZSTD(Default::default()))
                );
            }
        }
        for row in reader.get_row_iter(None).unwrap() {
            let row = row.unwrap();
            let values: Vec<String> = row.get_column_iter().map(|(_, f)| aws_text(f)).collect();
            *parquet_rows.entry(values).or_default() += 1;
        }
    }
    assert!(
        row_groups > objects.len(),
        "objects of 70 rows in groups of 25"
    );
    assert_eq!(parquet_rows.values().sum::<usize>(), TOTAL);
    // Every value of every record: the same multiset of rows.
    assert_eq!(parquet_rows, csv_rows);
    eprintln!(
        "parquet: {} objects, {row_groups} row groups, {TOTAL} records, {} bytes",
        objects.len(),
        objects.iter().map(|o| o.raw.len()).sum::<usize>()
    );
}

/// In `sluice serve` every key added here is a tenant's input: each bad value is a 400 naming
/// its key (and its line), before anything runs.
#[test]
fn serve_refuses_bad_values_of_the_new_keys_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let serve =
        sluice_tests::Serve::start(&dir.path().join("data"), "admin-parquet-tests").unwrap();
    let (_, token) = serve.tenant("alpha");
    let base = "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  store:\n    buffered:\n      dirname: bucket\n      max_flows_per_object: 500\n      max_flow_array_size: 1000\n  write:\n    type: file\n    file:\n      dir: out\n";
    let parquet = |section: &str| {
        format!(
            "{base}  compress:\n    type: none\n  encode:\n    type: parquet\n    parquet:\n{section}"
        )
    };
    let prom = "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  store:\n    type: prom_sky_con\n    prom_sky_con:\n      connection_timeout: 9999999\n";
    let cases = [
        (
            parquet("      row_group_rows: 0\n"),
            "pipeline.encode.parquet.row_group_rows",
        ),
        (
            parquet("      row_group_rows: 100001\n"),
            "pipeline.encode.parquet.row_group_rows",
        ),
        (
            parquet("      compression: lz4\n"),
            "pipeline.encode.parquet.compression",
        ),
        (
            format!("{base}  compress:\n    type: gzip\n  encode:\n    type: parquet\n"),
            "pipeline.compress.type",
        ),
        (
            base.replace(
                "      dirname: bucket\n",
                "      dirname: bucket\n      key_format_per_hour: true\n",
            ),
            "pipeline.store.buffered.key_format_per_hour",
        ),
        (
            base.replace(
                "      dirname: bucket\n",
                "      dirname: bucket\n      key_format: \"x={tag}/../{hash}\"\n",
            ),
            "pipeline.store.buffered.key_format",
        ),
        (
            prom.to_string(),
            "pipeline.store.prom_sky_con.connection_timeout",
        ),
        (
            prom.replace("connection_timeout: 9999999", "port: 70000"),
            "pipeline.store.prom_sky_con.port",
        ),
        (
            prom.replace(
                "    prom_sky_con:\n",
                "    prom_sky_con:\n      gauges: 1000000\n",
            ),
            "pipeline.store.prom_sky_con.gauges",
        ),
    ];
    for (yaml, key) in &cases {
        let r = serve.yaml("POST", "/v1/pipelines", Some(&token), yaml);
        assert_eq!(r.status, 400, "{key}: {}", r.text());
        let body = r.json();
        assert_eq!(body["error"]["code"], "invalid_config", "{body}");
        let errors = body["error"]["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["path"] == *key && e["line"].is_u64()),
            "{key}: {body}"
        );
    }
    // Nothing was created.
    let list = serve
        .request("GET", "/v1/pipelines", Some(&token), None)
        .json();
    assert_eq!(list["pipelines"].as_array().unwrap().len(), 0, "{list}");
}

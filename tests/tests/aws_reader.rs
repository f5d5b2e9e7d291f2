//! An AWS VPC Flow Logs object written by sluice (`transform: awsflowlogs`, CSV with a space
//! delimiter, gzip, `key_format: aws`) read by a reader that knows only AWS's published format
//! (docs/awsflowlogs.md §1), for version 2 (the default format) and version 3 (a custom format with
//! the v3 fields), and for the `awsflowlogs` wasm guest in its place (version 3). The reader is
//! written here from that description, not from sluice's code.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::IpAddr;
use std::time::Duration;

use regex::Regex;
use serde_json::Value;
use sluice_tests::{Sim, read_objects, run_until_drained, wall_ms};

const WAIT: Duration = Duration::from_secs(90);
const TOTAL: usize = 300;
const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-east-1";

// ---------------------------------------------------------------------------------------------
// The reader (AWS's published format only).

/// The version 2 (default format) fields, in AWS's order.
const V2_FIELDS: [&str; 14] = [
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
];

/// The version 3 fields (custom formats).
const V3_FIELDS: [&str; 7] = [
    "vpc-id",
    "subnet-id",
    "instance-id",
    "tcp-flags",
    "type",
    "pkt-srcaddr",
    "pkt-dstaddr",
];

/// One field's value: `-` (no data) or text that parsed as its type.
#[derive(Debug, Clone, PartialEq)]
enum Field {
    None,
    Int(i64),
    Text(String),
}

impl Field {
    fn int(&self) -> Option<i64> {
        match self {
            Field::Int(v) => Some(*v),
            _ => None,
        }
    }
    fn text(&self) -> Option<&str> {
        match self {
            Field::Text(v) => Some(v),
            _ => None,
        }
    }
}

/// One record: field name → value.
type AwsRecord = BTreeMap<String, Field>;

/// Parses one value of `name` as AWS types it (Athena DDL / Parquet types of B.1).
fn parse_field(name: &str, raw: &str) -> Result<Field, String> {
    if raw == "-" {
        return Ok(Field::None);
    }
    let int = |min: i64, max: i64| -> Result<Field, String> {
        let v: i64 = raw
            .parse()
            .map_err(|_| format!("{name}: `{raw}` is not an integer"))?;
        if v < min || v > max {
            return Err(format!("{name}: {v} out of range {min}..={max}"));
        }
        Ok(Field::Int(v))
    };
    match name {
        "version" => int(2, 10),
        "srcport" | "dstport" => int(0, 65_535),
        "protocol" => int(0, 255),
        "packets" | "bytes" | "start" | "end" => int(0, i64::MAX),
        "tcp-flags" => int(0, 255),
        "srcaddr" | "dstaddr" | "pkt-srcaddr" | "pkt-dstaddr" => raw
            .parse::<IpAddr>()
            .map(|_| Field::Text(raw.to_string()))
            .map_err(|_| format!("{name}: `{raw}` is not an IP address")),
        "action" => match raw {
            "ACCEPT" | "REJECT" => Ok(Field::Text(raw.to_string())),
            _ => Err(format!("action `{raw}`")),
        },
        "log-status" => match raw {
            "OK" | "NODATA" | "SKIPDATA" => Ok(Field::Text(raw.to_string())),
            _ => Err(format!("log-status `{raw}`")),
        },
        "type" => match raw {
            "IPv4" | "IPv6" | "EFA" => Ok(Field::Text(raw.to_string())),
            _ => Err(format!("type `{raw}`")),
        },
        "account-id" | "interface-id" | "vpc-id" | "subnet-id" | "instance-id" => {
            Ok(Field::Text(raw.to_string()))
        }
        other => Err(format!("unknown field `{other}`")),
    }
}

/// Reads a plain-text flow-log file: a header line naming the fields (space-separated), then
/// one record per line, fields separated by single spaces.
fn read_aws_file(text: &str) -> Result<(Vec<String>, Vec<AwsRecord>), String> {
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .ok_or("empty file")?
        .split(' ')
        .map(String::from)
        .collect();
    // The default format is exactly the v2 fields in order; a custom format names any of the
    // known fields, each once.
    for f in &header {
        if !V2_FIELDS.contains(&f.as_str()) && !V3_FIELDS.contains(&f.as_str()) {
            return Err(format!("header names an unknown field `{f}`"));
        }
        if header.iter().filter(|g| *g == f).count() > 1 {
            return Err(format!("header names `{f}` twice"));
        }
    }
    let highest = if header.iter().any(|f| V3_FIELDS.contains(&f.as_str())) {
        3
    } else {
        2
    };
    let mut records = Vec::new();
    for (i, line) in lines.enumerate() {
        let values: Vec<&str> = line.split(' ').collect();
        if values.len() != header.len() {
            return Err(format!(
                "line {}: {} fields, header has {}",
                i + 2,
                values.len(),
                header.len()
            ));
        }
        let mut record = AwsRecord::new();
        for (name, raw) in header.iter().zip(values) {
            let value = parse_field(name, raw).map_err(|e| format!("line {}: {e}", i + 2))?;
            record.insert(name.clone(), value);
        }
        // `version` is the highest version among the chosen fields.
        if let Some(v) = record.get("version")
            && v.int() != Some(highest)
        {
            return Err(format!("line {}: version {v:?}, expected {highest}", i + 2));
        }
        let status = record.get("log-status").and_then(Field::text);
        let has = |f: &str| record.get(f).is_some_and(|v| *v != Field::None);
        // Every record has its capture window; an OK record has its flow; NODATA/SKIPDATA
        // have `-` for the flow fields.
        if header.iter().any(|f| f == "start") && !(has("start") && has("end")) {
            return Err(format!("line {}: no start/end", i + 2));
        }
        if let (Some(s), Some(e)) = (
            record.get("start").and_then(Field::int),
            record.get("end").and_then(Field::int),
        ) && s > e
        {
            return Err(format!("line {}: start {s} after end {e}", i + 2));
        }
        let flow_fields = [
            "srcaddr", "dstaddr", "srcport", "dstport", "protocol", "packets", "bytes", "action",
        ];
        for f in flow_fields {
            if !header.iter().any(|h| h == f) {
                continue;
            }
            match status {
                Some("OK") if !has(f) => return Err(format!("line {}: OK without {f}", i + 2)),
                Some("NODATA" | "SKIPDATA") if has(f) => {
                    return Err(format!("line {}: {status:?} with {f}", i + 2));
                }
                _ => {}
            }
        }
        records.push(record);
    }
    Ok((header, records))
}

/// AWS's object name (B.1):
/// `[prefix/]AWSLogs/{account_id}/vpcflowlogs/{region}/{yyyy}/{mm}/{dd}/`
/// `{account_id}_vpcflowlogs_{region}_{flow_log_id}_{YYYYMMDDTHHmmZ}_{hash}.log.gz`.
fn aws_key_pattern() -> Regex {
    Regex::new(
        r"^(?:[^/]+/)*AWSLogs/(\d{12})/vpcflowlogs/([a-z0-9-]+)/(\d{4})/(\d{2})/(\d{2})/(\d{12})_vpcflowlogs_([a-z0-9-]+)_fl-([0-9a-z]+)_(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})Z_([0-9a-f]+)\.log\.gz$",
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------

fn run(version: u8, seed: u64) {
    run_transform(version, seed, false)
}

/// With `guest`, the transform is the `awsflowlogs` wasm guest instead of the builtin.
fn run_transform(version: u8, seed: u64, guest: bool) {
    let transform = if guest {
        format!(
            // The `aws` key layout takes its account id from `transform.awsflowlogs`.
            "    type: wasm\n    wasm:\n      module: {}\n      config: {{version: {version}, account_id: \"{ACCOUNT}\"}}\n    awsflowlogs:\n      account_id: \"{ACCOUNT}\"\n",
            sluice::wasm::test_guests::path("awsflowlogs").display()
        )
    } else {
        format!(
            "    type: awsflowlogs\n    awsflowlogs:\n      version: {version}\n      account_id: \"{ACCOUNT}\"\n"
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start_fast(dir.path(), 30, 400, TOTAL as u32, seed as u32).unwrap();
    let out = dir.path().join("out");
    let config = dir.path().join("aws.yml");
    std::fs::write(
        &config,
        format!(
            "analyzers: [{addr}]\npipeline:\n  subscriber:\n    url: {url}\n  mangle:\n    type: logstatus\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  transform:\n{transform}  encode:\n    type: csv\n    csv:\n      delimiter: \" \"\n  compress:\n    type: gzip\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 80\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 100000\n      key_format: aws\n  write:\n    type: file\n    file:\n      dir: {out}\n    s3:\n      region: {REGION}\n",
            addr = sim.addr,
            url = sim.ws_url(),
            out = out.display(),
        ),
    )
    .unwrap();
    let start_ms = wall_ms();
    run_until_drained(&sim, &config, TOTAL, WAIT).unwrap_or_else(|e| panic!("{e:#}"));
    let end_ms = wall_ms();
    let sent = sim.sent();

    let pattern = aws_key_pattern();
    let objects = read_objects(&out).unwrap();
    assert!(
        objects.len() >= TOTAL / 80,
        "80 records per object: {}",
        objects.len()
    );
    let mut records = Vec::new();
    for o in &objects {
        assert_eq!(o.bucket, "bucket");
        let c = pattern
            .captures(&o.key)
            .unwrap_or_else(|| panic!("{} does not follow AWS's object naming", o.key));
        assert!(o.key.starts_with("logs/AWSLogs/"), "{}", o.key);
        assert_eq!((&c[1], &c[6]), (ACCOUNT, ACCOUNT), "{}", o.key);
        assert_eq!((&c[2], &c[7]), (REGION, REGION), "{}", o.key);
        assert_eq!((&c[3], &c[4], &c[5]), (&c[9], &c[10], &c[11]), "{}", o.key);
        // The name's time is a minute of the run.
        let minute = chrono::NaiveDateTime::parse_from_str(
            &format!("{}{}{}{}{}", &c[9], &c[10], &c[11], &c[12], &c[13]),
            "%Y%m%d%H%M",
        )
        .unwrap()
        .and_utc()
        .timestamp_millis();
        assert!(
            minute >= start_ms - 60_000 && minute <= end_ms,
            "{}: time outside the run",
            o.key
        );
        // docs/awsflowlogs.md: the name's time is the object's start to the minute.
        let first: i64 = o.meta["metadata"]["first-timestamp"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(minute, first - first.rem_euclid(60_000), "{}", o.key);
        // The reader works on the stored bytes: gunzip, then text.
        let raw = std::fs::read(out.join(&o.bucket).join(&o.key)).unwrap();
        let mut text = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("{}: not gzip text: {e}", o.key));
        let (header, recs) =
            read_aws_file(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", o.key));
        let mut want: Vec<&str> = V2_FIELDS.to_vec();
        if version == 3 {
            want.extend(V3_FIELDS);
        }
        assert_eq!(header, want, "{}: header", o.key);
        assert_eq!(
            o.meta["metadata"]["num-records"].as_str().unwrap(),
            recs.len().to_string(),
            "{}",
            o.key
        );
        records.extend(recs);
    }

    // Counts against the sent log: one OK record per flow (logstatus leaves AWS records alone,
    // nothing is filtered), the same 5-tuples, and the window counters add up.
    assert_eq!(records.len(), sent.len(), "one record per flow sent");
    let status = |r: &AwsRecord| r["log-status"].text().unwrap().to_string();
    assert!(records.iter().all(|r| status(r) == "OK"));
    assert!(
        records.iter().all(
            |r| r["action"].text() == Some("ACCEPT") && r["account-id"].text() == Some(ACCOUNT)
        )
    );
    let key = |src: &str, dst: &str, sp: i64, dp: i64, proto: i64| {
        format!("{src} {dst} {sp} {dp} {proto}")
    };
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let (mut packets, mut bytes) = (0, 0);
    for r in &records {
        let text = |f: &str| r[f].text().unwrap().to_string();
        let int = |f: &str| r[f].int().unwrap();
        *got.entry(key(
            &text("srcaddr"),
            &text("dstaddr"),
            int("srcport"),
            int("dstport"),
            int("protocol"),
        ))
        .or_default() += 1;
        packets += int("packets");
        bytes += int("bytes");
        if version == 3 {
            let ip_type = if text("srcaddr").contains(':') {
                "IPv6"
            } else {
                "IPv4"
            };
            assert_eq!(r["type"].text(), Some(ip_type));
            for f in [
                "vpc-id",
                "subnet-id",
                "instance-id",
                "pkt-srcaddr",
                "pkt-dstaddr",
            ] {
                assert_eq!(r[f], Field::None, "Skydive can't know {f}");
            }
        }
    }
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    let (mut want_packets, mut want_bytes) = (0, 0);
    let v = |f: &Value, k: &str| f[k].as_i64().unwrap_or(0);
    for f in &sent {
        let proto = match f["Transport"]["Protocol"].as_str() {
            Some("TCP") => 6,
            Some("UDP") => 17,
            _ if f["LayersPath"].as_str().unwrap().contains("ICMPv6") => 58,
            _ => 1,
        };
        let t = &f["Transport"];
        *want
            .entry(key(
                f["Network"]["A"].as_str().unwrap(),
                f["Network"]["B"].as_str().unwrap(),
                v(t, "A"),
                v(t, "B"),
                proto,
            ))
            .or_default() += 1;
        let w = &f["LastUpdateMetric"];
        want_packets += v(w, "ABPackets") + v(w, "BAPackets");
        want_bytes += v(w, "ABBytes") + v(w, "BABytes");
    }
    assert_eq!(got, want, "5-tuples");
    assert_eq!(
        (packets, bytes),
        (want_packets, want_bytes),
        "window totals"
    );
    let protocols: std::collections::BTreeSet<i64> = records
        .iter()
        .map(|r| r["protocol"].int().unwrap())
        .collect();
    eprintln!(
        "aws v{version}: {} objects, {} records, protocols {protocols:?}, {packets} packets",
        objects.len(),
        records.len()
    );
}

#[test]
fn aws_v2_objects_read_as_aws_flow_logs() {
    run(2, 31);
}

#[test]
fn aws_v3_objects_read_as_aws_flow_logs() {
    run(3, 32);
}

/// The `awsflowlogs` guest's objects are AWS flow logs too (the same as the builtin's, which
/// `sluice::wasm` tests byte for byte).
#[test]
fn awsflowlogs_guest_v3_objects_read_as_aws_flow_logs() {
    run_transform(3, 33, true);
}

#[test]
fn the_reader_rejects_what_aws_would_not_write() {
    let header = V2_FIELDS.join(" ");
    let ok = "2 123456789010 eni-1235b8ca123456789 172.31.16.139 172.31.16.21 20641 22 6 20 4249 1418530010 1418530070 ACCEPT OK";
    let nodata =
        "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA";
    let (_, records) = read_aws_file(&format!("{header}\n{ok}\n{nodata}\n")).unwrap();
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["protocol"], Field::Int(6));
    assert_eq!(records[1]["srcaddr"], Field::None);
    for bad in [
        ok.replace(" 6 ", " TCP "),
        ok.replace("ACCEPT", "A"),
        ok.replace(' ', ","),
        ok.replace(" OK", " ok"),
        ok.replace("172.31.16.139", "172.31.16"),
        nodata.replace(" - NODATA", " ACCEPT NODATA"),
        ok.replacen("2 ", "3 ", 1),
    ] {
        assert!(
            read_aws_file(&format!("{header}\n{bad}\n")).is_err(),
            "accepted {bad}"
        );
    }
    assert!(read_aws_file(&format!("{},srcadr\n", header)).is_err());
    let re = aws_key_pattern();
    assert!(re.is_match(
        "AWSLogs/123456789012/vpcflowlogs/us-east-1/2018/06/20/123456789012_vpcflowlogs_us-east-1_fl-1234abcd_20180620T1620Z_fe123456.log.gz"
    ));
    assert!(!re.is_match("logs/internal/20180620T162000Z/00000000.gz"));
}

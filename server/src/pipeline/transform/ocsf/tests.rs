//! Every event is checked against what OCSF 1.1.0 requires of a Network Activity event
//! (docs/ocsf.md §1), in its JSON form and read back from Parquet.

use std::net::IpAddr;

use serde_json::Value;

use super::*;
use crate::pipeline::encode::Encoder;
use crate::pipeline::encode::parquet::tests::{read_back_json, varied_flows};
use crate::pipeline::record::Record;
use crate::pipeline::storeheader::StoreObject;

/// Attributes OCSF 1.1.0 requires of Network Activity (class 4001): the base event's
/// classification and occurrence attributes, `metadata` and both endpoints.
const REQUIRED: &[&str] = &[
    "activity_id",
    "category_uid",
    "class_uid",
    "type_uid",
    "time",
    "severity_id",
    "metadata",
    "src_endpoint",
    "dst_endpoint",
];

/// An endpoint needs at least one of these.
const ENDPOINT_ONE_OF: &[&str] = &[
    "ip",
    "uid",
    "name",
    "hostname",
    "svc_name",
    "instance_uid",
    "interface_uid",
    "interface_name",
];

fn int(event: &Value, path: &str) -> i64 {
    event
        .pointer(path)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("{path} is not an integer in {event}"))
}

/// Panics with the reason when `event` is not a valid Network Activity event.
fn check_event(event: &Value) {
    for name in REQUIRED {
        assert!(event.get(name).is_some(), "{name} missing in {event}");
    }
    assert_eq!(int(event, "/class_uid"), 4001);
    assert_eq!(int(event, "/category_uid"), 4);
    let activity = int(event, "/activity_id");
    assert!(
        (0..=6).contains(&activity) || activity == 99,
        "activity_id {activity}"
    );
    assert_eq!(int(event, "/type_uid"), 4001 * 100 + activity);
    let severity = int(event, "/severity_id");
    assert!((0..=6).contains(&severity) || severity == 99);
    // Timestamps are ms since the epoch.
    for path in ["/time", "/start_time", "/end_time"] {
        if event.pointer(path).is_some() {
            assert!(int(event, path) > 1_000_000_000_000, "{path} in ms");
        }
    }
    // metadata: version and product (with its vendor).
    assert_eq!(
        event.pointer("/metadata/version").and_then(Value::as_str),
        Some("1.1.0")
    );
    assert!(
        event
            .pointer("/metadata/product/vendor_name")
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    );
    for side in ["src_endpoint", "dst_endpoint"] {
        let endpoint = &event[side];
        assert!(
            ENDPOINT_ONE_OF.iter().any(|k| endpoint.get(k).is_some()),
            "{side} names nothing: {event}"
        );
        if let Some(ip) = endpoint.get("ip") {
            ip.as_str().unwrap().parse::<IpAddr>().unwrap();
        }
        if endpoint.get("port").is_some() {
            assert!((0..=65535).contains(&int(event, &format!("/{side}/port"))));
        }
    }
    // connection_info, when present, requires direction_id.
    if event.get("connection_info").is_some() {
        let direction = int(event, "/connection_info/direction_id");
        assert!([0, 1, 2, 3, 99].contains(&direction));
    }
    if let Some(traffic) = event.get("traffic") {
        for (k, v) in traffic.as_object().unwrap() {
            assert!(v.as_i64().is_some_and(|n| n >= 0), "traffic.{k}");
        }
    }
}

fn events(tag: Tag) -> (Vec<Flow>, Vec<Record>) {
    let flows = varied_flows(80);
    let records = flows
        .iter()
        .filter_map(|f| Ocsf.transform(tag, f))
        .map(|e| Record::Ocsf(Box::new(e)))
        .collect();
    (flows, records)
}

#[test]
fn every_event_has_what_network_activity_requires() {
    for tag in [Tag::Ingress, Tag::Egress, Tag::Internal, Tag::Other] {
        let (flows, records) = events(tag);
        // Only the flows without an IP layer are left out.
        let without_ip = flows.iter().filter(|f| f.network.is_none()).count();
        assert!(without_ip > 0);
        assert_eq!(records.len(), flows.len() - without_ip);
        for record in &records {
            check_event(&serde_json::to_value(record).unwrap());
        }
        // The same events read back from Parquet.
        let mut file = Vec::new();
        Encoder::Parquet(
            crate::pipeline::encode::parquet::ParquetEncoder::from_options(&Default::default()),
        )
        .encode(&StoreObject::Records(&records), &mut file)
        .unwrap();
        let back = read_back_json(&file);
        assert_eq!(back.len(), records.len());
        for (event, record) in back.iter().zip(&records) {
            check_event(event);
            assert_eq!(event, &serde_json::to_value(record).unwrap());
        }
    }
}

#[test]
fn the_mapping_of_one_flow() {
    let flow: Flow = serde_json::from_str(
        r#"{"UUID":"u1","LayersPath":"Ethernet/IPv4/TCP","Application":"TCP",
        "Link":{"Protocol":"ETHERNET","A":"02:00:00:00:00:01","B":"02:00:00:00:00:02","ID":3},
        "Network":{"Protocol":"IPV4","A":"10.0.0.1","B":"93.184.216.34","ID":0},
        "Transport":{"Protocol":"TCP","A":40000,"B":443,"ID":0},
        "LastUpdateMetric":{"ABPackets":3,"ABBytes":300,"BAPackets":2,"BABytes":1200,"Start":1546338030000,"Last":1546338060000,"RTT":0},
        "Metric":{"ABPackets":10,"ABBytes":1000,"BAPackets":8,"BABytes":9000,"Start":1546338000000,"Last":1546338060000,"RTT":0},
        "Start":1546338000000,"Last":1546338060000,"TrackingID":"t1","L3TrackingID":"l1",
        "ParentUUID":"","NodeTID":"n1","RawPacketsCaptured":0,"FinishType":3}"#,
    )
    .unwrap();
    let event = serde_json::to_value(Ocsf.transform(Tag::Egress, &flow).unwrap()).unwrap();
    let expected = serde_json::json!({
        "activity_id": 3, "activity_name": "Reset",
        "category_uid": 4, "category_name": "Network Activity",
        "class_uid": 4001, "class_name": "Network Activity",
        "type_uid": 400103, "type_name": "Network Activity: Reset",
        "severity_id": 1, "severity": "Informational",
        "time": 1546338060000i64, "start_time": 1546338030000i64, "end_time": 1546338060000i64,
        "src_endpoint": {"ip": "10.0.0.1", "port": 40000, "mac": "02:00:00:00:00:01"},
        "dst_endpoint": {"ip": "93.184.216.34", "port": 443, "mac": "02:00:00:00:00:02"},
        "connection_info": {"uid": "t1", "protocol_num": 6, "protocol_name": "tcp",
            "direction_id": 2, "direction": "Outbound"},
        "traffic": {"bytes": 1500, "packets": 5, "bytes_out": 300, "packets_out": 3,
            "bytes_in": 1200, "packets_in": 2},
        "metadata": {"version": "1.1.0", "uid": "u1", "log_provider": "Skydive",
            "product": {"name": "sluice", "vendor_name": "sluice",
                "version": env!("CARGO_PKG_VERSION")}}
    });
    assert_eq!(event, expected);
    check_event(&event);
    // Its CSV row has a field per column.
    let mut row = CsvRow::default();
    Ocsf.transform(Tag::Egress, &flow)
        .unwrap()
        .csv_row(&mut row);
    assert_eq!(row.fields.len(), CSV_HEADER.len());
    assert_eq!(row.fields[13], "10.0.0.1");
}

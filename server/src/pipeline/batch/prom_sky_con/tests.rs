//! The store against upstream's test data (tests/vectors/exporter/prom_sky_con.json), read back
//! with a Prometheus text-format parser.

use std::collections::HashMap;

use prometheus_parse::{Scrape, Value as Sample};
use serde_json::Value;

use super::*;
use crate::skydive::flow::Flow;

fn vectors() -> Value {
    crate::test_vectors::json("exporter/prom_sky_con.json")
}

/// (metric, labels) → value of every gauge in `text`.
pub(crate) fn scrape(text: &str) -> HashMap<(String, Vec<(String, String)>), f64> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .into_iter()
        .map(|s| {
            let Sample::Gauge(value) = s.value else {
                panic!("{} is not a gauge", s.metric)
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            ((s.metric, labels), value)
        })
        .collect()
}

fn expected(gauges: &Value) -> HashMap<(String, Vec<(String, String)>), f64> {
    gauges
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let mut labels: Vec<(String, String)> = g["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                .collect();
            labels.sort();
            (
                (g["metric"].as_str().unwrap().to_string(), labels),
                g["value"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn store(timeout: u64, now_ms: i64) -> PromSkyConStore {
    let options = PromSkyConOptions {
        connection_timeout: timeout,
        ..Default::default()
    };
    PromSkyConStore::new(&options, Arc::default(), None, now_ms)
}

const T0: i64 = 1_546_338_030_000;

#[test]
fn upstream_connection_gauges_and_their_cleanup() {
    let v = vectors();
    let case = &v["cases"][0];
    let flows: Vec<Record> = case["store_flows_input"]["other"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| Record::Flow(Box::new(serde_json::from_value::<Flow>(f.clone()).unwrap())))
        .collect();
    let stats = PipelineStats::default();
    // Upstream's test: connection_timeout 1, a cleanup 2 s later.
    let mut s = store(1, T0);
    s.store(T0, vec![("other", flows)], &stats);
    let text = s.gauges().render();
    assert_eq!(scrape(&text), expected(&case["expected_gauges"]));
    assert!(text.contains("# TYPE skydive_network_connection_total_bytes gauge"));
    assert_eq!(s.gauges().counts(), (1, 0));
    assert_eq!(
        stats
            .records_written
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    // The next cleanup is 120 s on; at 2 s nothing is due yet, as upstream's loop.
    assert_eq!(s.next_deadline_ms(), T0 + CLEANUP_EVERY_MS);
    s.tick(T0 + 2_000);
    assert_eq!(s.gauges().counts(), (1, 0));
    s.tick(T0 + CLEANUP_EVERY_MS);
    assert_eq!(s.gauges().counts(), (0, 0));
    assert!(scrape(&s.gauges().render()).is_empty());
}

#[test]
fn upstream_interface_gauges_as_intended() {
    let v = vectors();
    let case = &v["cases"][1];
    let gauges = PromGauges::default();
    let answer = Value::Array(vec![case["interface_node_json"].clone()]);
    assert_eq!(gauges.set_interfaces(&answer, T0), 1);
    let got = scrape(&gauges.render());
    let want = expected(&case["expected_gauges_intended"]);
    for (key, value) in &want {
        assert_eq!(got.get(key), Some(value), "{key:?}");
    }
    // The eleven gauges of the one interface, the ones the vector leaves out at 0.
    assert_eq!(got.len(), 11);
}

#[test]
fn interface_nodes_lacking_a_field_are_skipped_and_labels_follow_the_node() {
    let gauges = PromGauges::default();
    let node = |tid: &str, ip: &str, rx: Value| {
        serde_json::json!({"Host": "h", "Metadata": {"Name": "eth0", "Type": "device", "TID": tid,
            "IPV4": [ip], "Metric": {"RxBytes": rx}}})
    };
    let answer = serde_json::json!([
        node("a", "10.0.0.1", 5.into()),
        // A path: nested arrays are flattened.
        [node("b", "10.0.0.2", "not a number".into())],
        {"Host": "h", "Metadata": {"Name": "no-tid", "Type": "device"}},
        {"Host": "h", "Metadata": {"Name": 7, "Type": "device", "TID": "c"}},
        "garbage",
    ]);
    assert_eq!(gauges.set_interfaces(&answer, T0), 2);
    let got = scrape(&gauges.render());
    let rx = |tid: &str| {
        got.iter()
            .find(|((m, l), _)| {
                m == "skydive_network_interface_rx_bytes"
                    && l.contains(&("node_tid".into(), tid.into()))
            })
            .map(|(_, v)| *v)
    };
    assert_eq!(rx("a"), Some(5.0));
    assert_eq!(rx("b"), Some(0.0));
    assert_eq!(rx("c"), None);
    // A new address: the series shows it (upstream kept the first one).
    gauges.set_interfaces(&serde_json::json!([node("a", "10.9.9.9", 6.into())]), T0);
    let text = gauges.render();
    assert!(text.contains("ipv4=\"10.9.9.9\""), "{text}");
    assert!(!text.contains("ipv4=\"10.0.0.1\""), "{text}");
}

fn flow(l3: &str, tid: &str, ab_bytes: i64) -> Flow {
    serde_json::from_str(&format!(
        r#"{{"UUID":"u","LayersPath":"Ethernet/IPv4/UDP","Network":{{"Protocol":"IPV4","A":"10.0.0.1","B":"10.0.0.2","ID":0}},
        "Transport":{{"Protocol":"UDP","A":5353,"B":53,"ID":0}},
        "Metric":{{"ABPackets":1,"ABBytes":{ab_bytes},"BAPackets":1,"BABytes":7,"Start":0,"Last":0,"RTT":0}},
        "Start":0,"Last":0,"L3TrackingID":"{l3}","NodeTID":"{tid}","ParentUUID":"","RawPacketsCaptured":0}}"#
    ))
    .unwrap()
}

#[test]
fn each_capture_point_of_a_connection_has_its_own_series() {
    let stats = PipelineStats::default();
    let mut s = store(60, T0);
    let records = vec![
        Record::Flow(Box::new(flow("same", "capture-1", 100))),
        Record::Flow(Box::new(flow("same", "capture-2", 90))),
    ];
    s.store(T0, vec![("internal", records)], &stats);
    let got = scrape(&s.gauges().render());
    let bytes: Vec<(String, f64)> = got
        .iter()
        .filter(|((m, l), _)| {
            m == "skydive_network_connection_total_bytes"
                && l.contains(&("direction".into(), INITIATOR_TO_TARGET.into()))
        })
        .map(|((_, l), v)| {
            let tid = l.iter().find(|(k, _)| k == "node_tid").unwrap().1.clone();
            (tid, *v)
        })
        .collect::<std::collections::BTreeMap<_, _>>()
        .into_iter()
        .collect();
    assert_eq!(
        bytes,
        [
            ("capture-1".to_string(), 100.0),
            ("capture-2".to_string(), 90.0)
        ]
    );
}

#[test]
fn what_the_gauges_cannot_show_is_counted() {
    let stats = PipelineStats::default();
    let mut s = store(60, T0);
    let mut no_transport = flow("x", "t", 1);
    no_transport.transport = None;
    let mut no_metric = flow("y", "t", 1);
    no_metric.metric = None;
    s.store(
        T0,
        vec![(
            "other",
            vec![
                Record::Flow(Box::new(no_transport)),
                Record::Flow(Box::new(no_metric)),
                Record::Flow(Box::new(flow("z", "t", 1))),
            ],
        )],
        &stats,
    );
    assert_eq!(stats.dropped(DropReason::Unsupported), 2);
    assert_eq!(s.gauges().counts(), (1, 0));
}

#[test]
fn the_least_recently_seen_connection_goes_first_when_full() {
    let gauges = PromGauges::default();
    for i in 0..MAX_CONNECTIONS {
        assert!(gauges.set_flow(&flow(&format!("c{i}"), "t", 1), T0 + i as i64));
    }
    // c0 seen again: c1 is now the oldest.
    gauges.set_flow(&flow("c0", "t", 2), T0 + 1_000_000);
    gauges.set_flow(&flow("new", "t", 3), T0 + 1_000_001);
    assert_eq!(gauges.counts().0, MAX_CONNECTIONS);
    let g = gauges.lock();
    let has = |l3: &str| {
        g.connections
            .entries
            .contains_key(&(l3.to_string(), "t".to_string()))
    };
    assert!(has("c0") && has("new") && !has("c1") && has("c2"));
}

#[test]
fn label_values_are_escaped() {
    let gauges = PromGauges::default();
    let mut f = flow("q", "plain", 1);
    f.node_tid = "tid \"quoted\"\\".into();
    gauges.set_flow(&f, T0);
    let text = gauges.render();
    assert!(text.contains(r#"node_tid="tid \"quoted\"\\""#), "{text}");
}

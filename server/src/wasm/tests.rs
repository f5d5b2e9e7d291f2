//! Host tests against the real guests (built from `guests/` on first use): encoding agreement
//! with the SDK, validation, the awsflowlogs guest's records, each hostile guest stopped by its
//! limit, quarantine, and a pipeline beside a hostile one delivering every flow.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::config::{ExporterConfig, WasmOptions};
use crate::metrics::{DropReason, PipelineStats};
use crate::pipeline::Pipeline;
use crate::pipeline::encode::write_go_json;
use crate::pipeline::record::Record;
use crate::sinks::{MemorySink, Sink};
use crate::skydive::flow::Flow;

fn decode(batch: &[u8]) -> Result<Vec<record::WasmRecord>, encoding::DecodeError> {
    encoding::decode_records(batch.to_vec(), &mut Default::default())
}

fn host() -> &'static WasmHost {
    WasmHost::global()
}

fn guest(name: &str) -> Vec<u8> {
    std::fs::read(test_guests::path(name)).unwrap()
}

fn stage(
    name: &str,
    world: World,
    config: Value,
    tweak: impl FnOnce(&mut StageOptions),
) -> WasmStage {
    let module = host().load(&guest(name), Some(world)).unwrap();
    let mut options = StageOptions::resolve(host(), &WasmOptions::default()).unwrap();
    tweak(&mut options);
    let stage = match world {
        World::Transformer => "transform",
        World::Mangler => "mangle",
    };
    WasmStage::new(module, Some(&config), options, stage, Default::default()).unwrap()
}

fn vectors() -> Value {
    crate::test_vectors::json("exporter/awsflowlogs_transform.json")
}

fn tcp_flow(i: usize) -> Flow {
    serde_json::from_value(json!({
        "UUID": format!("uuid-{i}"), "LayersPath": "Ethernet/IPv4/TCP", "Application": "TCP",
        "Link": {"Protocol": "ETHERNET", "A": "fa:16:3e:29:e0:82", "B": "fa:16:3e:96:06:e8", "ID": i},
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": format!("10.0.{}.{}", i / 250, i % 250), "ID": 0},
        "Transport": {"Protocol": "TCP", "A": 40000 + i, "B": 443, "ID": 0},
        "Metric": {"ABPackets": 6, "ABBytes": 516, "BAPackets": 4, "BABytes": 760, "Start": 0, "Last": 0},
        "Start": 1546338030000i64, "Last": 1546338032500i64, "NodeTID": "probe-tid"
    }))
    .unwrap()
}

// ---- encoding: one codec (sluice-wire), the host's and the SDK's models agree on it ----

/// The host's parsed `Flow` and the SDK's `FlowData` (from the same analyzer JSON) lend the
/// same fields to the one flow writer: the same bytes, apart from the extra layers' JSON text
/// (the host passes the analyzer's text through, the SDK re-serializes it), which must be the
/// same JSON. And the SDK reads back what the host wrote.
#[test]
fn flows_encoded_by_the_host_decode_in_the_sdk() {
    let mut flows = Vec::new();
    for name in [
        "flow-tcp4-3b-expired-with-tcpmetric-ipmetric.json",
        "flow-icmp4-echo.json",
        "flow-udp-dns-extra-layer-v0.28.json",
        "flow-tcp6.json",
    ] {
        let text = crate::test_vectors::text(&format!("skydive/{name}"));
        let flow: Flow = serde_json::from_str(&text).unwrap();
        flows.push((
            flow,
            sluice_guest::testing::FlowData::from_skydive_json(&text).unwrap(),
        ));
    }
    let mut host_bytes = Vec::new();
    encoding::encode_flows(
        &flows.iter().map(|(f, _)| f.clone()).collect::<Vec<_>>(),
        &mut host_bytes,
    );
    let decoded = sluice_guest::Flows::new(&host_bytes).unwrap();
    assert_eq!(decoded.len(), 4);
    let json = |text: Option<&str>| text.map(|t| serde_json::from_str::<Value>(t).unwrap());
    for (got, (flow, data)) in decoded.iter().zip(&flows) {
        let got = got.unwrap();
        assert_eq!(got.uuid(), flow.uuid);
        assert_eq!(
            got.tcp_metric().map(|m| m.values),
            data.tcp_metric.map(|m| m.values)
        );
        assert_eq!(got.ip_metric(), data.ip_metric);
        assert_eq!(got.icmp(), data.icmp);
        assert_eq!(got.metric(), data.metric);
        assert_eq!(got.last_update_metric(), data.last_update_metric);
        assert_eq!(
            got.network().map(|n| (n.a, n.b, n.protocol)),
            data.network
                .as_ref()
                .map(|n| (n.a.as_str(), n.b.as_str(), n.protocol))
        );
        assert_eq!(got.transport(), data.transport);
        assert_eq!(got.finish_type(), data.finish_type);
        assert_eq!(json(got.dns()), json(data.dns.as_deref()));
        assert_eq!(json(got.dhcpv4()), json(data.dhcpv4.as_deref()));
        assert_eq!(json(got.vrrpv2()), json(data.vrrpv2.as_deref()));
    }
    // Byte for byte, once the extra layers' texts are the SDK's on both sides.
    let mut host_flows = Vec::new();
    let mut sdk_flows = Vec::new();
    for (flow, data) in &flows {
        let mut flow = flow.clone();
        let raw = |text: &Option<String>| {
            text.as_ref()
                .map(|t| serde_json::value::RawValue::from_string(t.clone()).unwrap())
        };
        flow.dns = raw(&data.dns);
        flow.dhcpv4 = raw(&data.dhcpv4);
        flow.vrrpv2 = raw(&data.vrrpv2);
        host_flows.push(flow);
        sdk_flows.push(data.clone());
    }
    assert!(sdk_flows.iter().any(|d| d.dns.is_some()));
    encoding::encode_flows(&host_flows, &mut host_bytes);
    assert_eq!(
        host_bytes,
        sluice_guest::testing::encode_flows(&sdk_flows),
        "the host's Flow and the SDK's FlowData encode differently"
    );
}

#[test]
fn records_round_trip_between_host_and_sdk() {
    use sluice_guest::testing::{RecordData, ValueData};
    let sdk = vec![
        RecordData {
            fields: vec![
                ("a".into(), ValueData::Int(-1)),
                ("b".into(), ValueData::Str("x\"y".into())),
                ("c".into(), ValueData::Json(r#"{"k":[1,2]}"#.into())),
            ],
            columns: None,
        },
        RecordData {
            fields: vec![
                ("z".into(), ValueData::Null),
                ("y".into(), ValueData::UInt(u64::MAX)),
                ("f".into(), ValueData::Float(0.5)),
                ("t".into(), ValueData::Bool(true)),
            ],
            columns: None,
        },
    ];
    let bytes = sluice_guest::testing::encode_records(&sdk);
    let host_records = decode(&bytes).unwrap();
    let text: Vec<String> = host_records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap())
        .collect();
    assert_eq!(
        text,
        [
            r#"{"a":-1,"b":"x\"y","c":{"k":[1,2]}}"#,
            r#"{"z":null,"y":18446744073709551615,"f":0.5,"t":true}"#
        ]
    );
    // And back: the host's encoding of them reads the same in the SDK.
    let records: Vec<Record> = host_records.into_iter().map(Record::Wasm).collect();
    let host_bytes = encoding::encode_records(&records);
    assert_eq!(host_bytes, bytes, "the host's schemas write as the SDK's");
    let again = sluice_guest::testing::decode_records(&host_bytes).unwrap();
    assert_eq!(again, sdk);
}

/// Records of every value tag, two schemas used twice, CSV column names and a CSV text: the
/// records of `tests/vectors/wire/records.bin`.
fn wire_vector_records() -> Vec<sluice_guest::testing::RecordData> {
    use sluice_guest::testing::{RecordData, ValueData};
    let field = |name: &str, value| (name.to_owned(), value);
    vec![
        RecordData {
            fields: vec![
                field("a", ValueData::Int(-1)),
                field("b", ValueData::Str("x\"y".into())),
                field("c", ValueData::Json(r#"{"k":[1,2]}"#.into())),
            ],
            columns: None,
        },
        RecordData {
            fields: vec![
                field("z", ValueData::Null),
                field("y", ValueData::UInt(u64::MAX)),
                field("f", ValueData::Float(0.5)),
                field("i", ValueData::Float(f64::INFINITY)),
                field("t", ValueData::Bool(true)),
                field("u", ValueData::Bool(false)),
            ],
            columns: None,
        },
        RecordData {
            fields: vec![
                field("a", ValueData::Int(i64::MIN)),
                field("b", ValueData::Str("é".into())),
                field("c", ValueData::Json("[]".into())),
            ],
            columns: None,
        },
        RecordData {
            fields: vec![
                field(
                    "SrcAddr",
                    ValueData::WithCsv(Box::new(ValueData::Str(String::new())), "-".into()),
                ),
                field("Port", ValueData::Int(80)),
            ],
            columns: Some(vec!["srcaddr".into(), "Port".into()]),
        },
    ]
}

/// Batches as the host and the SDK wrote them before they shared `sluice-wire`
/// (`tests/vectors/wire/`): a guest keeps the SDK it was built with, so the encoding can't
/// change under it (ENCODING.md §1).
#[test]
fn batches_are_written_byte_for_byte_as_the_wire_vectors() {
    let mut names: Vec<String> = std::fs::read_dir(crate::test_vectors::path("skydive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("flow-") && n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 10, "{names:?}");
    let flows: Vec<Flow> = names
        .iter()
        .map(|n| serde_json::from_str(&crate::test_vectors::text(&format!("skydive/{n}"))))
        .collect::<Result<_, _>>()
        .unwrap();
    let mut host = Vec::new();
    encoding::encode_flows(&flows, &mut host);
    let want = std::fs::read(crate::test_vectors::path("wire/skydive-flows.bin")).unwrap();
    assert!(
        host == want,
        "the host's flow batch differs from skydive-flows.bin"
    );

    let records = wire_vector_records();
    let want = std::fs::read(crate::test_vectors::path("wire/records.bin")).unwrap();
    let sdk = sluice_guest::testing::encode_records(&records);
    assert!(
        sdk == want,
        "the SDK's record batch differs from records.bin"
    );
    assert_eq!(
        sluice_guest::testing::decode_records(&want).unwrap(),
        records
    );
    let host_records: Vec<Record> = decode(&want)
        .unwrap()
        .into_iter()
        .map(Record::Wasm)
        .collect();
    assert!(
        encoding::encode_records(&host_records) == want,
        "the host's record batch differs from records.bin"
    );
}

#[test]
fn malformed_record_batches_are_refused_not_panicked_on() {
    let good = sluice_guest::testing::encode_records(&[sluice_guest::testing::RecordData {
        fields: vec![(
            "a".into(),
            sluice_guest::testing::ValueData::Str("v".into()),
        )],
        columns: None,
    }]);
    for cut in 0..good.len() {
        assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
    }
    let mut bad = good.clone();
    bad[4] = 0xff; // count far larger than the bytes
    assert!(decode(&bad).is_err());
    let mut bad = good;
    bad[0] = 9;
    assert!(matches!(
        decode(&bad),
        Err(encoding::DecodeError::Header { version: 9, .. })
    ));
}

// ---- validation ----

#[test]
fn validation_says_what_is_wrong() {
    let err = validate_component(b"definitely not wasm").unwrap_err();
    assert!(matches!(err, WasmError::NotWasm), "{err}");
    let core = b"\0asm\x01\0\0\0";
    let err = validate_component(core).unwrap_err();
    assert!(matches!(err, WasmError::CoreModule), "{err}");
    assert!(err.to_string().contains("wasm32-wasip2"));
    let empty_component = b"\0asm\x0d\0\x01\0";
    let err = validate_component(empty_component).unwrap_err();
    assert!(matches!(err, WasmError::WrongWorld { .. }), "{err}");
    let big = vec![0u8; host().settings().max_module_bytes + 1];
    assert!(matches!(
        validate_component(&big).unwrap_err(),
        WasmError::TooLarge { .. }
    ));
    assert_eq!(
        validate_component(&guest("awsflowlogs")).unwrap(),
        World::Transformer
    );
    assert_eq!(
        validate_component(&guest("enrich")).unwrap(),
        World::Mangler
    );
    let err = host()
        .load(&guest("enrich"), Some(World::Transformer))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("transformer world: it implements mangler"),
        "{err}"
    );
}

#[test]
fn limits_above_the_servers_are_refused() {
    let max = host().settings().limits;
    let options = WasmOptions {
        fuel: Some(max.fuel + 1),
        ..Default::default()
    };
    let err = StageOptions::resolve(host(), &options).unwrap_err();
    assert!(
        matches!(err, WasmError::AboveServerLimit { what: "fuel", .. }),
        "{err}"
    );
    let options = WasmOptions {
        fuel: Some(1000),
        memory_bytes: Some(1 << 20),
        ..Default::default()
    };
    let o = StageOptions::resolve(host(), &options).unwrap();
    assert_eq!((o.limits.fuel, o.limits.memory_bytes), (1000, 1 << 20));
}

#[test]
fn a_bad_guest_config_fails_the_build() {
    let module = host()
        .load(&guest("anonymize"), Some(World::Transformer))
        .unwrap();
    let options = StageOptions::resolve(host(), &WasmOptions::default()).unwrap();
    let err = WasmStage::new(
        module,
        Some(&json!({"ipv4_prefix": 40})),
        options,
        "transform",
        Default::default(),
    )
    .unwrap_err();
    assert!(
        matches!(&err, WasmError::Init(m) if m.contains("prefix out of range")),
        "{err}"
    );
}

// ---- the awsflowlogs guest ----

/// The spec's records (vectors) with sluice's fix: IANA protocol numbers (TCP 6, UDP 17,
/// ICMPv4 1) in place of Skydive's ordinals. An expectation independent of any transform code.
#[tokio::test]
async fn awsflowlogs_guest_writes_the_specs_records_with_iana_numbers() {
    let v = vectors();
    let mut checked = 0;
    for case in v["cases"].as_array().unwrap() {
        let Some(input) = case.get("input_flow") else {
            continue;
        };
        let name = case["name"].as_str().unwrap();
        let flow: Flow = serde_json::from_value(input.clone()).unwrap();
        let version = case["config_version"].as_u64().unwrap();
        let mut want = case["expected_record"].clone();
        want["Protocol"] = match input["Transport"]["Protocol"].as_str() {
            Some("TCP") => 6,
            Some("UDP") => 17,
            _ if input["LayersPath"].as_str().unwrap().contains("ICMPv4") => 1,
            _ => 0,
        }
        .into();
        let mut s = stage(
            "awsflowlogs",
            World::Transformer,
            json!({"version": version}),
            |_| {},
        );
        let stats = PipelineStats::default();
        let records = s.transform(&[flow], &stats).await;
        assert_eq!(records.len(), 1, "{name}");
        let mut text = Vec::new();
        write_go_json(&mut text, false, &Record::Wasm(records[0].clone())).unwrap();
        let got: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(got, want, "{name}");
        // Field order is the Go struct's.
        let keys: Vec<&str> = records[0].names().iter().map(|n| &**n).collect();
        let want_keys: Vec<&str> = want
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        let mut want_sorted = want_keys.clone();
        want_sorted.sort_unstable();
        assert_eq!(sorted, want_sorted, "{name}");
        if let Some(compact) = case.get("expected_json_compact") {
            let compact = compact
                .as_str()
                .unwrap()
                .replace("\"Protocol\":2", "\"Protocol\":6");
            assert_eq!(String::from_utf8(text).unwrap(), compact, "{name}");
        }
        assert!(
            stats
                .wasm_fuel_used
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[tokio::test]
async fn enrich_mangler_adds_config_fields_to_builtin_records() {
    let mut s = stage(
        "enrich",
        World::Mangler,
        json!({"fields": {"env": "prod"}, "tag_field": "Tag"}),
        |_| {},
    );
    let stats = PipelineStats::default();
    let records = vec![Record::Flow(Box::new(Flow::new("u1", 1, 2)))];
    let out = s.mangle("ingress", &records, &stats).await;
    let text = serde_json::to_string(&out[0]).unwrap();
    assert_eq!(
        text,
        r#"{"UUID":"u1","Start":1,"Last":2,"ParentUUID":"","RawPacketsCaptured":0,"env":"prod","Tag":"ingress"}"#
    );
}

// ---- hostile guests: each stopped by its limit ----

async fn fails_with(
    name: &str,
    config: Value,
    tweak: impl FnOnce(&mut StageOptions),
    reason: DropReason,
) -> Duration {
    let mut s = stage(name, World::Transformer, config, tweak);
    let stats = PipelineStats::default();
    let flows: Vec<Flow> = (0..10).map(tcp_flow).collect();
    let started = std::time::Instant::now();
    let out = s.transform(&flows, &stats).await;
    let took = started.elapsed();
    assert!(out.is_empty(), "{name}");
    assert_eq!(stats.dropped(reason), 10, "{name}: {:?}", stats.snapshot());
    took
}

#[tokio::test]
async fn spin_runs_out_of_fuel() {
    fails_with(
        "spin",
        Value::Null,
        |o| o.limits.fuel = 5_000_000,
        DropReason::Fuel,
    )
    .await;
}

#[tokio::test]
async fn spin_passes_its_deadline() {
    let took = fails_with(
        "spin",
        Value::Null,
        |o| {
            o.limits.fuel = u64::MAX / 2;
            o.limits.deadline = Duration::from_millis(100);
        },
        DropReason::Deadline,
    )
    .await;
    assert!(took < Duration::from_secs(2), "stopped after {took:?}");
}

#[tokio::test]
async fn balloon_hits_the_memory_cap() {
    fails_with(
        "balloon",
        Value::Null,
        |o| o.limits.memory_bytes = 16 << 20,
        DropReason::Memory,
    )
    .await;
}

#[tokio::test]
async fn trap_is_a_trap() {
    fails_with("trap", Value::Null, |_| {}, DropReason::Trap).await;
}

#[tokio::test]
async fn flood_is_over_the_output_limit() {
    fails_with(
        "flood",
        json!({"bytes": 4 << 20}),
        |o| o.limits.output_bytes = 1 << 20,
        DropReason::OutputLimit,
    )
    .await;
}

/// Records out and fuel used by one transform call.
async fn transform_fuel(s: &mut WasmStage, flows: &[Flow], stats: &PipelineStats) -> (usize, u64) {
    let before = stats
        .wasm_fuel_used
        .load(std::sync::atomic::Ordering::Relaxed);
    let records = s.transform(flows, stats).await.len();
    let after = stats
        .wasm_fuel_used
        .load(std::sync::atomic::Ordering::Relaxed);
    (records, after - before)
}

/// The tag batches of one message run in one instance: after the first, a call spends no fuel
/// on instantiation and `init`. A failed call's instance is dropped (the next call starts a
/// fresh one, at a fresh instance's cost), and so is the instance when the message ends.
#[tokio::test]
async fn a_messages_batches_share_an_instance_until_one_fails() {
    let small: Vec<Flow> = (0..2).map(tcp_flow).collect();
    let large: Vec<Flow> = (0..50).map(tcp_flow).collect();
    // Room for two records' output, not for fifty.
    let mut s = stage("awsflowlogs", World::Transformer, Value::Null, |o| {
        o.limits.output_bytes = 2_000
    });
    let stats = PipelineStats::default();
    let (records, fresh) = transform_fuel(&mut s, &small, &stats).await;
    assert_eq!(records, 2);
    let (_, fresh_again) = transform_fuel(&mut s, &small, &stats).await;
    assert_eq!(
        fresh_again, fresh,
        "outside a message, every call is a fresh instance"
    );

    s.begin_message();
    let (_, first) = transform_fuel(&mut s, &small, &stats).await;
    assert_eq!(
        first, fresh,
        "a message's first batch starts a fresh instance"
    );
    let (records, reused) = transform_fuel(&mut s, &small, &stats).await;
    assert_eq!(records, 2);
    assert!(
        reused + 1_000 < fresh,
        "a reused instance skips instantiation and init: {reused} vs {fresh} fuel"
    );
    assert_eq!(transform_fuel(&mut s, &large, &stats).await.0, 0);
    assert_eq!(stats.dropped(DropReason::OutputLimit), 50);
    let (records, after_failure) = transform_fuel(&mut s, &small, &stats).await;
    assert_eq!(records, 2);
    assert_eq!(
        after_failure, fresh,
        "the failed call's instance was dropped"
    );
    s.end_message();

    s.begin_message();
    assert_eq!(transform_fuel(&mut s, &small, &stats).await.1, fresh);
    s.end_message();
}

#[test]
fn kept_instances_stop_at_their_budget() {
    static BUDGET: stage::KeptBudget = stage::KeptBudget::new(2);
    let first = BUDGET.take();
    let second = BUDGET.take();
    assert!(first.is_some() && second.is_some());
    assert!(BUDGET.take().is_none(), "a third is over the budget");
    drop(first);
    assert!(
        BUDGET.take().is_some(),
        "a dropped one gives its place back"
    );
}

#[tokio::test]
async fn repeated_failures_quarantine_with_backoff() {
    let mut s = stage("trap", World::Transformer, Value::Null, |o| {
        o.quarantine_after = 2;
        o.quarantine_backoff = Duration::from_millis(200);
    });
    let stats = PipelineStats::default();
    let flows = [tcp_flow(1)];
    s.transform(&flows, &stats).await;
    assert!(!s.is_quarantined());
    s.transform(&flows, &stats).await;
    assert!(s.is_quarantined());
    s.transform(&flows, &stats).await;
    assert_eq!(stats.dropped(DropReason::Trap), 2);
    assert_eq!(stats.dropped(DropReason::Quarantined), 1);
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The retry fails: straight back into quarantine, for twice as long.
    s.transform(&flows, &stats).await;
    assert_eq!(stats.dropped(DropReason::Trap), 3);
    assert!(s.is_quarantined());
    assert_eq!(stats.snapshot().wasm_quarantines, 2);
}

// ---- isolation: a pipeline beside a hostile one delivers every flow ----

fn wasm_pipeline_config(module: &std::path::Path, extra: &str) -> ExporterConfig {
    let text = format!(
        "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8]\n  transform:\n    type: wasm\n    wasm:\n      module: {}\n{extra}  store:\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 100\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 100000\n  compress:\n    type: none\n",
        module.display()
    );
    ExporterConfig::load(&text).unwrap()
}

fn records_in(sink: &MemorySink) -> Vec<Value> {
    sink.take()
        .iter()
        .flat_map(|o| serde_json::from_slice::<Vec<Value>>(&o.body).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_beside_a_spinning_one_delivers_every_flow() {
    let good_sink = MemorySink::default();
    let bad_sink = MemorySink::default();
    let good_config = wasm_pipeline_config(&test_guests::path("awsflowlogs"), "");
    let bad_config = wasm_pipeline_config(&test_guests::path("spin"), "      deadline_ms: 50\n");
    let mut good = Pipeline::build(
        &good_config,
        Some(Sink::Memory(good_sink.clone())),
        Arc::new(PipelineStats::default()),
    )
    .await
    .unwrap();
    let mut bad = Pipeline::build(
        &bad_config,
        Some(Sink::Memory(bad_sink.clone())),
        Arc::new(PipelineStats::default()),
    )
    .await
    .unwrap();
    let t0 = 1_546_338_030_000;
    let messages = 20;
    let per_message = 50;
    let bad_task = tokio::spawn(async move {
        for m in 0..messages {
            bad.process(
                (0..per_message)
                    .map(|i| tcp_flow(m * per_message + i))
                    .collect(),
                t0,
            )
            .await;
        }
        bad.flush_all(t0).await;
        bad.stats().snapshot()
    });
    for m in 0..messages {
        good.process(
            (0..per_message)
                .map(|i| tcp_flow(m * per_message + i))
                .collect(),
            t0,
        )
        .await;
    }
    good.flush_all(t0).await;
    let bad_stats = bad_task.await.unwrap();
    let delivered = records_in(&good_sink);
    assert_eq!(delivered.len(), messages * per_message);
    assert_eq!(delivered[0]["Protocol"], 6);
    let s = good.stats().snapshot();
    assert_eq!(s.records_written, (messages * per_message) as u64);
    assert!(s.dropped.is_empty(), "{:?}", s.dropped);
    assert!(s.wasm_fuel_used > 0);
    // The spinning pipeline lost its flows, by deadline and then quarantine, and wrote nothing.
    assert!(records_in(&bad_sink).is_empty());
    let lost: u64 = bad_stats.dropped.iter().map(|(_, n)| n).sum();
    assert_eq!(
        lost,
        (messages * per_message) as u64,
        "{:?}",
        bad_stats.dropped
    );
    assert!(bad_stats.dropped.iter().any(|(r, _)| *r == "deadline"));
    assert!(bad_stats.dropped.iter().any(|(r, _)| *r == "quarantined"));
}

#[test]
fn compiled_modules_are_cached_on_disk_by_digest_and_engine() {
    let Some(dir) = host().settings().cache_dir.clone() else {
        return;
    };
    let bytes = guest("anonymize");
    host().precompile(&bytes).unwrap();
    let digest = digest(&bytes);
    let found = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{digest}-wasmtime"))
        });
    assert!(found, "no cache file for {digest} in {}", dir.display());
}

#[test]
fn guest_records_encode_as_csv_with_a_header_from_their_fields() {
    use crate::pipeline::encode::Encoder;
    use crate::pipeline::storeheader::StoreObject;
    use sluice_guest::testing::{RecordData, ValueData};
    let rows = |fields: Vec<(&str, ValueData)>| RecordData {
        fields: fields
            .into_iter()
            .map(|(n, v)| (n.to_string(), v))
            .collect(),
        columns: None,
    };
    let batch = sluice_guest::testing::encode_records(&[
        rows(vec![
            ("Src", ValueData::Str("10.0.0.1".into())),
            ("Port", ValueData::Int(443)),
            ("Note", ValueData::Str("a,\"b\"".into())),
        ]),
        rows(vec![
            ("Src", ValueData::Str("10.0.0.2".into())),
            ("Port", ValueData::Int(80)),
            ("Note", ValueData::Null),
        ]),
    ]);
    let records: Vec<Record> = decode(&batch)
        .unwrap()
        .into_iter()
        .map(Record::Wasm)
        .collect();
    let mut out = Vec::new();
    Encoder::Csv { delimiter: ',' }
        .encode(&StoreObject::Records(&records), &mut out)
        .unwrap();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "Src,Port,Note\n10.0.0.1,443,\"a,\"\"b\"\"\"\n10.0.0.2,80,\n"
    );
    // Two shapes can't share a CSV object: the error names both headers.
    let other =
        sluice_guest::testing::encode_records(&[rows(vec![("Other", ValueData::Bool(true))])]);
    let mut mixed = records;
    mixed.extend(decode(&other).unwrap().into_iter().map(Record::Wasm));
    let err = Encoder::Csv { delimiter: ',' }
        .encode(&StoreObject::Records(&mixed), &mut Vec::new())
        .unwrap_err();
    assert!(err.to_string().contains("\"Other\""), "{err}");
}

/// Batches of every size from empty up come back whole. (The e2e test caught output once read
/// through a view of guest memory that the export's post-return had freed; see `stage.rs`.)
#[tokio::test]
async fn every_batch_size_returns_intact_output() {
    let mut s = stage(
        "anonymize",
        World::Transformer,
        json!({"ipv4_prefix": 16}),
        |_| {},
    );
    let stats = PipelineStats::default();
    for n in 0..60 {
        let flows: Vec<Flow> = (0..n).map(tcp_flow).collect();
        let out = s.transform(&flows, &stats).await;
        assert_eq!(out.len(), n, "batch of {n}: {:?}", stats.snapshot().dropped);
    }
}

/// Flows for comparing the awsflowlogs guest with the builtin: the spec's vectors, varied TCP
/// and UDP flows, and flows lacking what a record can't fill (no link, no network, no
/// transport, ICMP, no metrics, an empty address, TCP flags, IPv6).
fn aws_flows() -> Vec<Flow> {
    let mut flows: Vec<Flow> = vectors()["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.get("input_flow"))
        .map(|f| serde_json::from_value(f.clone()).unwrap())
        .collect();
    for i in 0..300 {
        let mut f = tcp_flow(i);
        if i % 3 == 0 {
            f.last_update_metric = f.metric.map(|m| crate::skydive::flow::FlowMetric {
                ab_packets: 1,
                ab_bytes: 60 + i as i64,
                start: 1546338031000,
                last: 1546338032000,
                ..m
            });
        }
        match i % 11 {
            1 => f.link = None,
            2 => f.transport = None,
            3 => {
                f.transport = None;
                f.layers_path = "Ethernet/IPv4/ICMPv4".into();
            }
            4 => {
                f.metric = None;
                f.last_update_metric = None;
            }
            5 => f.network.as_mut().unwrap().a = String::new(),
            6 => {
                f.tcp_metric = Some(crate::skydive::flow::TcpMetric {
                    ab_syn_start: 1,
                    ba_syn_start: 1,
                    ab_rst_start: 1,
                    ..Default::default()
                })
            }
            7 => {
                let n = f.network.as_mut().unwrap();
                n.protocol = crate::skydive::flow::FlowProtocol::Ipv6;
                n.a = "fd00::1".into();
                n.b = "fd00::2".into();
            }
            8 => {
                f.network = None;
                f.link = None;
                f.transport = None;
            }
            _ => {}
        }
        flows.push(f);
    }
    flows
}

/// The awsflowlogs guest and the builtin awsflowlogs transform, run as whole pipelines on the
/// same flows, write the same objects byte for byte: keys, metadata and content, in JSON and in
/// CSV (AWS's columns and `-` for absent data), with and without gzip, for versions 2 and 3 and
/// upstream's column names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awsflowlogs_guest_objects_equal_the_builtin_objects() {
    let flows = aws_flows();
    let cases = [
        ("json", "gzip", json!(null), ""),
        ("csv", "gzip", json!(null), ""),
        ("csv", "none", json!({"version": 3}), "      version: 3\n"),
        ("json", "none", json!({"version": 3}), "      version: 3\n"),
        (
            "csv",
            "gzip",
            json!({"upstream_names": true, "account_id": "42"}),
            "      upstream_names: true\n      account_id: \"42\"\n",
        ),
    ];
    for (encode, compress, guest_config, builtin_options) in cases {
        let case = format!("{encode}+{compress} {guest_config}");
        let mut objects = Vec::new();
        for transform in [
            format!(
                "  transform:\n    type: wasm\n    wasm:\n      module: {}\n      config: {guest_config}\n",
                test_guests::path("awsflowlogs").display()
            ),
            if builtin_options.is_empty() {
                "  transform:\n    type: awsflowlogs\n".to_string()
            } else {
                format!("  transform:\n    type: awsflowlogs\n    awsflowlogs:\n{builtin_options}")
            },
        ] {
            let text = format!(
                "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 192.168.0.0/16]\n{transform}  mangle:\n    type: logstatus\n  encode:\n    type: {encode}\n  store:\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 100\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 100000\n  compress:\n    type: {compress}\n"
            );
            let config = ExporterConfig::load(&text).unwrap();
            let sink = MemorySink::default();
            let mut p = Pipeline::build(&config, Some(Sink::Memory(sink.clone())), Arc::default())
                .await
                .unwrap();
            for chunk in flows.chunks(50) {
                p.process(chunk.to_vec(), 1_546_338_040_000).await;
            }
            p.flush_all(1_546_338_050_000).await;
            assert!(p.stats().snapshot().dropped.is_empty(), "{case}");
            objects.push(sink.take());
        }
        let (guest, builtin) = (&objects[0], &objects[1]);
        assert!(builtin.len() >= 4, "{case}: {} objects", builtin.len());
        assert_eq!(guest.len(), builtin.len(), "{case}");
        for (g, b) in guest.iter().zip(builtin) {
            assert_eq!(g.key, b.key, "{case}");
            assert_eq!(g.metadata, b.metadata, "{case}: {}", b.key);
            assert_eq!(g.content_type, b.content_type, "{case}");
            let unzip = |body: &[u8]| {
                if compress == "none" {
                    return body.to_vec();
                }
                let mut out = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out)
                    .unwrap();
                out
            };
            let (g_body, b_body) = (unzip(&g.body), unzip(&b.body));
            assert_eq!(
                String::from_utf8_lossy(&g_body),
                String::from_utf8_lossy(&b_body),
                "{case}: {}",
                b.key
            );
            // Compressed bytes too: same input, same compressor.
            assert_eq!(g.body, b.body, "{case}: {}", b.key);
        }
        // The comparison saw every kind of field: absent ones included.
        if encode == "csv" {
            let all: Vec<u8> = builtin.iter().flat_map(|o| unzip_any(&o.body)).collect();
            assert!(String::from_utf8_lossy(&all).contains(",-,"), "{case}");
        }
    }
}

fn unzip_any(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out) {
        Ok(_) => out,
        Err(_) => body.to_vec(),
    }
}

#[test]
fn csv_columns_and_texts_round_trip_between_host_and_sdk() {
    use sluice_guest::testing::{RecordData, ValueData};
    let dash = |v: ValueData| ValueData::WithCsv(Box::new(v), "-".into());
    let sdk = vec![
        RecordData {
            fields: vec![
                ("SrcAddr".into(), dash(ValueData::Str(String::new()))),
                ("Packets".into(), dash(ValueData::Int(0))),
                ("Note".into(), ValueData::Str("x".into())),
            ],
            columns: Some(vec!["srcaddr".into(), "packets".into(), "Note".into()]),
        },
        RecordData {
            fields: vec![("Other".into(), ValueData::Int(1))],
            columns: None,
        },
    ];
    let bytes = sluice_guest::testing::encode_records(&sdk);
    // Cut anywhere (in a CSV text, in the column lists), it is refused, never panicked on.
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let host = decode(&bytes).unwrap();
    assert_eq!(&*host[0].columns()[0], "srcaddr");
    assert_eq!(&*host[1].columns()[0], "Other");
    assert_eq!(
        serde_json::to_string(&host[0]).unwrap(),
        r#"{"SrcAddr":"","Packets":0,"Note":"x"}"#
    );
    let mut row = crate::pipeline::record::CsvRow::default();
    host[0].csv_row(&mut row);
    assert_eq!(row.fields, ["-", "-", "x"]);
    // A mangler's input: the host writes them back as they came.
    let records: Vec<Record> = host.into_iter().map(Record::Wasm).collect();
    let host_bytes = encoding::encode_records(&records);
    assert_eq!(host_bytes, bytes, "the host's schemas write as the SDK's");
    let again = sluice_guest::testing::decode_records(&host_bytes).unwrap();
    assert_eq!(again, sdk);
    // A CSV text must be followed by a plain value.
    let mut nested = sluice_guest::testing::encode_records(&[RecordData {
        fields: vec![("a".into(), dash(ValueData::Null))],
        columns: None,
    }]);
    let tag = 16 + 4;
    assert_eq!(nested[tag], 8);
    nested[tag + 4 + 1 + 1] = 8;
    assert!(decode(&nested).is_err());
}

/// A stage of `name` writing to its own guest log.
fn logged_stage(name: &str, config: Value) -> (WasmStage, Arc<crate::guest_log::GuestLog>) {
    let module = host().load(&guest(name), Some(World::Transformer)).unwrap();
    let options = StageOptions::resolve(host(), &WasmOptions::default()).unwrap();
    let log = Arc::new(crate::guest_log::GuestLog::new());
    let stage = WasmStage::new(module, Some(&config), options, "transform", log.clone()).unwrap();
    (stage, log)
}

fn record_json(record: &record::WasmRecord) -> Value {
    let mut text = Vec::new();
    write_go_json(&mut text, false, &Record::Wasm(record.clone())).unwrap();
    serde_json::from_slice(&text).unwrap()
}

#[tokio::test]
async fn a_guest_written_with_std_runs_and_its_output_reaches_the_guest_log() {
    let (mut s, log) = logged_stage("stdlib", Value::Null);
    assert!(!s.is_json());
    let stats = PipelineStats::default();
    let before = crate::now_ms();
    let records = s
        .transform(&[tcp_flow(1), tcp_flow(2), tcp_flow(3)], &stats)
        .await;
    assert_eq!(
        records.len(),
        3,
        "{:?} {:?}",
        stats.snapshot(),
        log.since(0)
    );
    let last = record_json(&records[2]);
    assert_eq!(last["SamePath"], 3, "the HashMap counted: {last}");
    let now = last["NowMs"].as_i64().unwrap();
    assert!(
        now >= before - 1000 && now <= crate::now_ms() + 1000,
        "{last}"
    );
    assert!(
        last["File"].as_str().unwrap().starts_with("refused"),
        "{last}"
    );
    let (lines, dropped) = log.since(0);
    let texts: Vec<(&str, crate::guest_log::Level)> =
        lines.iter().map(|l| (l.text.as_str(), l.level)).collect();
    assert_eq!(
        texts,
        [
            (
                "stdlib guest: 3 flows, 1 layers paths",
                crate::guest_log::Level::Info
            ),
            ("stdlib guest: done", crate::guest_log::Level::Warn),
        ]
    );
    assert_eq!(dropped, 0);
    assert!(lines.iter().all(|l| l.stage == "transform"));
}

#[tokio::test]
async fn a_guest_trying_files_env_sockets_and_a_stdout_flood_is_contained() {
    let (mut s, log) = logged_stage("escape", json!({"flood_lines": 20000}));
    let stats = PipelineStats::default();
    let records = s.transform(&[tcp_flow(1)], &stats).await;
    assert_eq!(records.len(), 1, "{:?}", stats.snapshot());
    let got = record_json(&records[0]);
    for key in ["Read", "Write", "List", "Metadata", "Loopback", "Lookup"] {
        assert!(
            got[key].as_str().unwrap().starts_with("refused"),
            "{key}: {got}"
        );
    }
    assert_eq!(got["Env"], 0);
    assert_eq!(got["Args"], 0);
    assert!(!std::path::Path::new("/tmp/sluice-escape").exists());
    // 20,000 stdout lines: the batch's budget is kept, the rest counted.
    let (lines, dropped) = log.since(0);
    let budget = host().settings().log_lines_per_batch as usize;
    assert_eq!(lines.len(), budget);
    assert_eq!(dropped, 20_000 - budget as u64);
    assert!(lines[0].text.starts_with("flood line 0 yyy"));
}

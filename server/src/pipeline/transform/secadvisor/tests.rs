//! Golden tests: `secadvisor_transform.json`, `resolvers.json` (over a real local HTTP
//! analyzer), `secadvisor_encode.json` and `json_encoding.json`, plus a whole pipeline.

use std::sync::Arc;

use serde_json::{Value, json};

use super::extend::{Extender, Template};
use super::record::{PeerContext, PeerType, SecAdvisorRecord, clean_legacy_name};
use super::resolve::{Backend, Resolver};
use super::*;
use crate::pipeline::encode::Encoder;
use crate::pipeline::record::Record;
use crate::pipeline::storeheader::StoreObject;
use crate::skydive::topology::mock::MockAnalyzer;

const NOW: i64 = 1_546_338_030_000;

fn vectors(name: &str) -> Value {
    crate::test_vectors::json(&format!("exporter/{name}"))
}

fn case<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

fn flow(v: &Value) -> Flow {
    serde_json::from_value(v.clone()).unwrap()
}

/// `NAME=<template>` texts as parsed entries.
fn entries(texts: &[String]) -> Vec<super::extend::ExtendEntry> {
    use crate::config::ParseText as _;
    texts
        .iter()
        .map(|t| super::extend::ExtendEntry::parse_text(t).unwrap())
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn client(mock: &MockAnalyzer) -> Arc<TopologyClient> {
    Arc::new(TopologyClient::new(&mock.addr, None).unwrap())
}

/// The transform with upstream's fake resolver (seeded caches) and seeded extend cache; the
/// analyzer is real but knows nothing, so any uncached lookup would find nothing.
async fn fake_resolver_transform(mock: &MockAnalyzer, exclude_started: bool) -> SecAdvisor {
    let v = vectors("secadvisor_transform.json");
    let common = &v["common"];
    let client = client(mock);
    let extender = Extender::new(client.clone(), &entries(&strings(&common["extend_config"])));
    let mut t = SecAdvisor::new(Resolver::new(client), extender, exclude_started);
    let fake = &common["fake_resolver"];
    for (ip, context) in fake["ip_to_context"].as_object().unwrap() {
        let context: PeerContext = serde_json::from_value(context.clone()).unwrap();
        t.resolver_mut()
            .seed_context(ip, "probe-tid", Some(context), NOW);
    }
    t.resolver_mut()
        .seed_type("probe-tid", "fake_node_type", NOW);
    for (query, value) in common["extend_cache_seed"].as_object().unwrap() {
        t.extender_mut().seed(query, value.as_str().unwrap(), NOW);
    }
    t
}

fn compact(record: &SecAdvisorRecord) -> String {
    let mut out = Vec::new();
    crate::pipeline::encode::write_go_json(&mut out, false, record).unwrap();
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn golden_basic_flow() {
    let v = vectors("secadvisor_transform.json");
    let c = case(&v, "Test_Transform_basic_flow");
    let mock = MockAnalyzer::start([]).await;
    let mut t = fake_resolver_transform(&mock, false).await;
    let r = t.transform(flow(&c["input_flow"]), NOW).await.unwrap();
    assert_eq!(
        compact(&r),
        c["derived_compact_json_bytes"].as_str().unwrap()
    );
    let full: SecAdvisorRecord = serde_json::from_value(c["derived_full_record"].clone()).unwrap();
    assert_eq!(r, full);
    assert_eq!(
        r.link_id,
        c["derived_internal_fields"]["LinkID"].as_i64().unwrap()
    );
    assert_eq!(
        r.l3_tracking_id.as_str(),
        c["derived_internal_fields"]["L3TrackingID"]
    );
    let a = &c["asserted"];
    assert_eq!(*r.version, a["Version"]);
    assert_eq!(r.update_count, a["UpdateCount"].as_i64().unwrap());
    assert_eq!(*r.status, a["Status"]);
    assert_eq!(r.node_type.as_str(), a["NodeType"]);
    let network = r.network.as_ref().unwrap();
    assert_eq!(network.a_name.as_str(), a["Network.A_Name"]);
    assert_eq!(network.b_name.as_str(), a["Network.B_Name"]);
    let transport = r.transport.as_ref().unwrap();
    assert_eq!(transport.a.as_str(), a["Transport.A"]);
    assert_eq!(transport.b.as_str(), a["Transport.B"]);
    let context = serde_json::to_value(r.context.as_ref().unwrap()).unwrap();
    assert_eq!(context["A"], a["Context.A"]);
    assert_eq!(context["B"], a["Context.B"]);
    assert!(mock.queries().is_empty(), "everything came from the caches");
}

#[tokio::test]
async fn golden_update_count_and_status_sequence() {
    let v = vectors("secadvisor_transform.json");
    let c = case(&v, "Test_Transform_UpdateCount_increses");
    let mock = MockAnalyzer::start([]).await;
    let mut t = fake_resolver_transform(&mock, false).await;
    let statuses = strings(&c["derived_status_sequence"]);
    for (i, step) in c["asserted_sequence"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let r = t.transform(flow(&c["input_flow"]), NOW).await.unwrap();
        assert_eq!(r.update_count, step["UpdateCount"].as_i64().unwrap());
        assert_eq!(*r.status, statuses[i]);
    }
    assert_eq!(statuses.len(), c["calls"].as_u64().unwrap() as usize);
}

#[tokio::test]
async fn golden_status_updates_and_count_ttls() {
    let v = vectors("secadvisor_transform.json");
    let c = case(&v, "Test_Transform_Status_updates");
    let mock = MockAnalyzer::start([]).await;
    let mut t = fake_resolver_transform(&mock, false).await;
    let mut input = Value::Null;
    for step in c["steps"].as_array().unwrap() {
        if let Some(f) = step.get("input_flow") {
            input = f.clone();
        }
        if let Some(patch) = step.get("input_flow_patch") {
            for (k, val) in patch.as_object().unwrap() {
                input[k] = val.clone();
            }
        }
        let r = t.transform(flow(&input), NOW).await.unwrap();
        assert_eq!(*r.status, step["asserted"]["Status"]);
        assert_eq!(
            r.update_count,
            step["derived"]["UpdateCount"].as_i64().unwrap()
        );
        assert_eq!(*r.finish_type, step["derived"]["FinishType"]);
    }
    // After TCP_FIN the count (3) lives one minute, not ten.
    let uuid = input["UUID"].as_str().unwrap();
    let mut probe = flow(&input);
    probe.finish_type = FinishType::NotFinished;
    let r = t.transform(probe.clone(), NOW + 60_000).await.unwrap();
    assert_eq!((r.update_count, &*r.status), (3, "UPDATED"));
    let r = t
        .transform(probe.clone(), NOW + 60_000 + 10 * 60_000 + 1)
        .await
        .unwrap();
    assert_eq!(
        (r.update_count, &*r.status),
        (0, "STARTED"),
        "{uuid} expired"
    );
    // TIMEOUT reports ENDED and forgets the flow.
    let mut timeout = probe.clone();
    timeout.finish_type = FinishType::Timeout;
    let later = NOW + 20 * 60_000;
    let r = t.transform(timeout, later).await.unwrap();
    assert_eq!(
        (r.update_count, &*r.status, &*r.finish_type),
        (1, "ENDED", "Timeout")
    );
    let r = t.transform(probe, later).await.unwrap();
    assert_eq!(r.update_count, 0);
}

#[tokio::test]
async fn exclude_started_flows_drops_the_first_sighting_only() {
    let v = vectors("secadvisor_transform.json");
    let c = case(&v, "Test_Transform_basic_flow");
    let mock = MockAnalyzer::start([]).await;
    let mut t = fake_resolver_transform(&mock, true).await;
    assert!(t.transform(flow(&c["input_flow"]), NOW).await.is_none());
    let r = t.transform(flow(&c["input_flow"]), NOW).await.unwrap();
    assert_eq!((r.update_count, &*r.status), (1, "UPDATED"));
    // Already finished at first sighting: ENDED, reported.
    let mut ended = flow(&c["input_flow"]);
    ended.uuid = "other".into();
    ended.finish_type = FinishType::TcpRst;
    let r = t.transform(ended, NOW).await.unwrap();
    assert_eq!((&*r.status, &*r.finish_type), ("ENDED", "SYN_RST"));
}

/// The mock analyzer answers of one `resolvers.json` case.
fn resolver_answers(c: &Value) -> Vec<(String, Value)> {
    c.get("derived_queries")
        .and_then(Value::as_array)
        .map(|qs| {
            qs.iter()
                .map(|q| {
                    (
                        q["query"].as_str().unwrap().to_string(),
                        q["mock_response"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn golden_runc_context_through_the_whole_chain() {
    let v = vectors("secadvisor_transform.json");
    let c = case(&v, "TestTransformShouldResolveRuncContainerContext");
    let resolvers = vectors("resolvers.json");
    let rc = case(
        &resolvers,
        "(used by TestTransformShouldResolveRuncContainerContext)",
    );
    let mock = MockAnalyzer::start(resolver_answers(rc)).await;
    let client = client(&mock);
    let resolver = Resolver::with_backends(client.clone(), vec![Backend::Runc, Backend::Docker]);
    let mut t = SecAdvisor::new(resolver, Extender::new(client, &[]), false);
    let input = flow(&c["input_flow"]);
    let r = t.transform(input.clone(), NOW).await.unwrap();
    let a = &c["asserted"];
    assert_eq!(r.node_type.as_str(), a["NodeType"]);
    let network = r.network.as_ref().unwrap();
    assert_eq!(network.a_name.as_str(), a["Network.A_Name"]);
    assert_eq!(network.b_name.as_str(), a["Network.B_Name"]);
    let context = r.context.as_ref().unwrap();
    assert_eq!(serde_json::to_value(&context.a).unwrap(), a["Context.A"]);
    assert_eq!(serde_json::to_value(&context.b).unwrap(), a["Context.B"]);
    // Every query the vector lists was sent verbatim.
    let sent = mock.queries();
    for (query, _) in resolver_answers(rc) {
        assert!(sent.contains(&query), "{query} not in {sent:#?}");
    }
    // Cached (found and not found) for 5 minutes: a second flow sends nothing.
    let before = sent.len();
    t.transform(input.clone(), NOW + 1000).await.unwrap();
    assert_eq!(mock.queries().len(), before);
    t.transform(input, NOW + 5 * 60_000 + 1001).await.unwrap();
    assert!(
        mock.queries().len() > before,
        "expired entries are queried again"
    );
}

#[tokio::test]
async fn golden_resolver_cases_over_http() {
    let v = vectors("resolvers.json");
    let mut checked = 0;
    for c in v["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let backend = match c["resolver"].as_str().unwrap() {
            "runc" => Backend::Runc,
            "docker" => Backend::Docker,
            "vm" => Backend::Vm,
            other => panic!("{other}"),
        };
        let answers = resolver_answers(c);
        let tids: Vec<String> = match c.get("node_tids") {
            Some(tids) => strings(tids),
            None => vec![c["node_tid"].as_str().unwrap().to_string()],
        };
        for tid in &tids {
            // Other TIDs render the first query with their own TID ("derived_queries_note").
            let first_tid = &tids[0];
            let answers: Vec<(String, Value)> = answers
                .iter()
                .map(|(q, a)| (q.replace(first_tid.as_str(), tid), a.clone()))
                .collect();
            let mock = MockAnalyzer::start(answers.clone()).await;
            let client = TopologyClient::new(&mock.addr, None).unwrap();
            let failed = c.get("expected_error") == Some(&Value::Bool(true));
            match c["call"].as_str().unwrap() {
                "ip_to_context" => {
                    let ip = c["ip"].as_str().unwrap();
                    let got = backend.ip_to_context(&client, ip, tid).await;
                    if failed {
                        assert!(got.is_err(), "{name}: {got:?}");
                    } else {
                        let got = serde_json::to_value(got.unwrap()).unwrap();
                        assert_eq!(got, c["expected"], "{name}");
                    }
                }
                "tid_to_type" => {
                    let got = backend.tid_to_type(&client, tid).await;
                    if failed {
                        assert!(got.is_err(), "{name}");
                    } else {
                        assert_eq!(got.unwrap().as_str(), c["expected"], "{name}");
                    }
                }
                other => panic!("{other}"),
            }
            let sent = mock.queries();
            // Queries with a "purpose" belong to another step (NodeType of the transform).
            let expected: Vec<String> = c
                .get("derived_queries")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|q| q.get("purpose").is_none())
                .map(|q| {
                    q["query"]
                        .as_str()
                        .unwrap()
                        .replace(first_tid.as_str(), tid)
                })
                .collect();
            if !expected.is_empty() {
                assert_eq!(sent, expected, "{name}: exact gremlin strings");
            }
            checked += 1;
        }
    }
    assert!(checked >= 14);
}

#[tokio::test]
async fn chain_falls_back_to_none_and_caches_it() {
    let resolvers = vectors("resolvers.json");
    let vm = case(&resolvers, "TestResolveVMShouldFindHostContext");
    let mut answers = resolver_answers(vm);
    // A broken analyzer answer for runc: an error, so the next resolver is tried.
    answers.push((
        "G.V().Has(\"Runc.Hosts.IP\", \"100.101.102.103\").ShortestPathTo(Metadata(\"TID\", \"09dcdca2-4259-5df9-47fc-e4bed4eac0ed\"))".into(),
        json!("not a node list"),
    ));
    let mock = MockAnalyzer::start(answers).await;
    let mut chain = Resolver::new(client(&mock));
    let tid = vm["node_tid"].as_str().unwrap();
    let got = chain.ip_to_context("100.101.102.103", tid, NOW).await;
    assert_eq!(serde_json::to_value(got).unwrap(), vm["expected"]);
    assert_eq!(mock.queries().len(), 3, "runc, docker, then vm");
    assert_eq!(chain.ip_to_context("9.9.9.9", tid, NOW).await, None);
    let sent = mock.queries().len();
    assert_eq!(chain.ip_to_context("9.9.9.9", tid, NOW + 1).await, None);
    assert_eq!(chain.ip_to_context("", tid, NOW).await, None);
    assert_eq!(chain.tid_to_type("", NOW).await, "");
    assert_eq!(
        mock.queries().len(),
        sent,
        "none and empty inputs send nothing more"
    );
    assert_eq!(chain.tid_to_type("unknown", NOW).await, "");
    let sent = mock.queries().len();
    assert_eq!(chain.tid_to_type("unknown", NOW).await, "");
    assert_eq!(mock.queries().len(), sent, "'' is cached");
}

#[tokio::test]
async fn golden_extend_gremlin() {
    let v = vectors("secadvisor_transform.json");
    let c = case(&v, "TestExtendGremlin");
    let mock = MockAnalyzer::start([]).await;
    let mut t = fake_resolver_transform(&mock, false).await;
    let r = t.transform(flow(&c["input_flow"]), NOW).await.unwrap();
    assert_eq!(r.extend["CA_Name"], c["asserted"]["Extend.CA_Name"]);
    assert_eq!(r.extend["CB_Name"], c["asserted"]["Extend.CB_Name"]);
    let rendered: Vec<String> = strings(&v["common"]["extend_config"])
        .iter()
        .map(|e| {
            let template = Template::parse(e.split_once('=').unwrap().1).unwrap();
            template.render(&r).unwrap()
        })
        .collect();
    assert_eq!(rendered, strings(&c["derived_rendered_queries"]));
    assert!(mock.queries().is_empty());
}

#[tokio::test]
async fn extend_queries_the_analyzer_and_caches_failures_too() {
    let mock = MockAnalyzer::start([
        ("host of 10.0.0.1".to_string(), json!(["node-a", "node-b"])),
        ("host of 10.0.0.2".to_string(), json!([1, 2])),
        ("chained node-a".to_string(), json!(null)),
    ])
    .await;
    let client = client(&mock);
    let entries = [
        "H=host of {{.Network.A}}".to_string(),
        "BAD=host of {{.Network.B}}".to_string(),
        "CHAIN=chained {{.Extend.H}}".to_string(),
        "NOTCP={{.Transport.A}}".to_string(),
        "FAIL=G.V().Fail(){{.Extend.nothing}}".to_string(),
    ];
    let extender = Extender::new(client.clone(), &self::entries(&entries));
    let mut t = SecAdvisor::new(Resolver::new(client), extender, false);
    let f: Flow = serde_json::from_value(json!({
        "UUID": "u", "Start": 1, "Last": 2,
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2", "ID": 0}
    }))
    .unwrap();
    let r = t.transform(f.clone(), NOW).await.unwrap();
    let expected: std::collections::BTreeMap<String, String> =
        [("H", "node-a"), ("BAD", ""), ("CHAIN", "")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    let mut with_fail = expected.clone();
    with_fail.insert("FAIL".into(), String::new());
    assert_eq!(r.extend, with_fail, "NOTCP skipped: no transport layer");
    let extend_queries = |mock: &MockAnalyzer| {
        mock.queries()
            .into_iter()
            .filter(|q| !q.starts_with("G.V().Has("))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        extend_queries(&mock),
        [
            "host of 10.0.0.1",
            "host of 10.0.0.2",
            "chained node-a",
            "G.V().Fail()<no value>"
        ]
    );
    // Within 10 minutes every answer, "" included, comes from the cache.
    t.transform(f.clone(), NOW + 9 * 60_000).await.unwrap();
    assert_eq!(extend_queries(&mock).len(), 4);
    t.transform(f, NOW + 10 * 60_000 + 1).await.unwrap();
    assert_eq!(extend_queries(&mock).len(), 8);
}

#[test]
fn golden_clean_legacy_name() {
    let v = vectors("secadvisor_transform.json");
    let c = case(&v, "TestCleanLegacyNameShouldRemoveSlashesAndUnderscores");
    for list in ["pairs", "derived_extra_pairs"] {
        for pair in c[list].as_array().unwrap() {
            assert_eq!(clean_legacy_name(pair["in"].as_str().unwrap()), pair["out"]);
        }
    }
}

fn records(v: &Value) -> Vec<Record> {
    v.as_array()
        .map(|list| {
            list.iter()
                .map(|r| Record::SecAdvisor(Box::new(serde_json::from_value(r.clone()).unwrap())))
                .collect()
        })
        .unwrap_or_default()
}

fn encode(encoder: &Encoder, records: &[Record]) -> String {
    let mut out = Vec::new();
    encoder
        .encode(&StoreObject::Records(records), &mut out)
        .unwrap();
    String::from_utf8(out).unwrap()
}

#[test]
fn golden_secadvisor_encode() {
    let v = vectors("secadvisor_encode.json");
    for c in v["cases"].as_array().unwrap() {
        let input = records(&c["input_records"]);
        for (pretty, key) in [
            (false, "derived_exact_bytes"),
            (true, "derived_exact_bytes_pretty"),
        ] {
            let got = encode(&Encoder::Secadvisor { pretty }, &input);
            assert_eq!(got, c[key].as_str().unwrap(), "{} {key}", c["name"]);
            let parsed: Value = serde_json::from_str(&got).unwrap();
            assert_eq!(parsed, c["expected_json"]);
        }
    }
}

/// The hand-written JSON, compact and indented, equals serde's with the Go formatter, on every
/// shape: empty fields left out, all optional parts present or absent, strings needing each of
/// Go's escapes.
#[test]
fn hand_written_json_equals_serde() {
    let hard = "a\"b\\c<d>&e\u{2028}f\u{2029}é\n\t\u{1}\u{7f}";
    let full = json!({
        "UUID": hard, "LinkID": 3, "L3TrackingID": "l3", "LayersPath": "Ethernet/IPv4/TCP",
        "Version": "1.1.0", "Status": "ENDED", "FinishType": "SYN_FIN",
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": hard, "A_Name": "0_0_x_0", "B_Name": "n"},
        "Transport": {"Protocol": "TCP", "A": "1", "B": "2"},
        "Context": {"A": {"Type": "pod", "Name": "ns/p", "Set": "ReplicaSet:ns/r"}, "B": {"Type": "host"}},
        "LastUpdateMetric": {"ABPackets": -1, "ABBytes": i64::MAX, "BAPackets": 0, "BABytes": 0, "Start": i64::MIN, "Last": 0, "RTT": 5},
        "Metric": {"ABPackets": 1, "ABBytes": 2, "BAPackets": 3, "BABytes": 4, "Start": 5, "Last": 6},
        "Start": 7, "Last": 8, "UpdateCount": 9, "NodeType": "host", "LogStatus": "OK",
        "Extend": {"b": "2", hard: hard, "a": ""}
    });
    let mut shapes = vec![
        json!({}),
        full.clone(),
        json!({"Context": {"B": {"Type": "container", "Set": "s"}}, "Network": {}, "Transport": {"B": "443"}}),
        json!({"UUID": "u", "Start": 1, "Last": 1, "LogStatus": "SKIPDATA", "Network": {"Protocol": "IPV6", "A": "::1", "B": "fe80::1"}}),
    ];
    // One hazard per string, so no escape rides on another's slow path.
    for hazard in [
        "<", ">", "&", "\"", "\\", "\n", "\u{1}", "\u{7f}", "é", "\u{2028}", "\u{2029}",
    ] {
        let s = format!("x{hazard}y");
        shapes.push(json!({"UUID": s, "Network": {"A": s}, "Extend": {s.clone(): s}}));
    }
    for c in vectors("secadvisor_encode.json")["cases"]
        .as_array()
        .unwrap()
    {
        shapes.extend(c["input_records"].as_array().unwrap().iter().cloned());
    }
    #[derive(serde::Serialize)]
    struct Wrapper<'a> {
        data: &'a [Record],
    }
    let by_serde = |pretty: bool, records: &[Record]| {
        let mut out = Vec::new();
        crate::pipeline::encode::write_go_json(&mut out, pretty, &Wrapper { data: records })
            .unwrap();
        String::from_utf8(out).unwrap()
    };
    for shape in &shapes {
        let record: SecAdvisorRecord = serde_json::from_value(shape.clone()).unwrap();
        let mut serde = Vec::new();
        crate::pipeline::encode::write_go_json(&mut serde, false, &record).unwrap();
        serde.pop(); // the trailing newline
        let mut hand = Vec::new();
        record.write_json(&mut hand, None);
        assert_eq!(
            String::from_utf8(hand).unwrap(),
            String::from_utf8(serde).unwrap(),
            "{shape}"
        );
        let records = [Record::SecAdvisor(Box::new(record))];
        for pretty in [false, true] {
            assert_eq!(
                encode(&Encoder::Secadvisor { pretty }, &records),
                by_serde(pretty, &records),
                "pretty {pretty}: {shape}"
            );
        }
    }
    // Several records, and records of another kind among them; and none.
    let full: SecAdvisorRecord = serde_json::from_value(full).unwrap();
    let mixed = [
        Record::SecAdvisor(Box::new(full.clone())),
        Record::Flow(Box::new(
            serde_json::from_value(json!({"UUID": "f", "Start": 1, "Last": 2})).unwrap(),
        )),
        Record::SecAdvisor(Box::new(full)),
    ];
    for records in [&mixed[..], &[]] {
        for pretty in [false, true] {
            assert_eq!(
                encode(&Encoder::Secadvisor { pretty }, records),
                by_serde(pretty, records),
                "pretty {pretty}, {} records",
                records.len()
            );
        }
    }
}

#[test]
fn golden_json_encoding() {
    let v = vectors("json_encoding.json");
    let mut checked = 0;
    for c in v["cases"].as_array().unwrap() {
        if c["input_records"].is_null() {
            // Go's nil list (`null`) has no Rust counterpart: a batch is always a list, and
            // a mangler returning nothing gives `[]`.
            continue;
        }
        let pretty = c["encoder"].as_str().unwrap().contains("pretty=true");
        let encoder = if c["encoder"].as_str().unwrap().starts_with("secadvisor") {
            Encoder::Secadvisor { pretty }
        } else {
            Encoder::Json { pretty }
        };
        let got = encode(&encoder, &records(&c["input_records"]));
        assert_eq!(got, c["expected_bytes"].as_str().unwrap(), "{}", c["name"]);
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn csv_flattens_nested_fields_in_fixed_columns() {
    let v = vectors("secadvisor_transform.json");
    let c = case(&v, "Test_Transform_basic_flow");
    let mut full: SecAdvisorRecord =
        serde_json::from_value(c["derived_full_record"].clone()).unwrap();
    let sparse = Record::SecAdvisor(Box::default());
    full.metric.as_mut().unwrap().rtt = 9;
    let text = encode(
        &Encoder::Csv { delimiter: ',' },
        &[Record::SecAdvisor(Box::new(full)), sparse],
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], record::CSV_HEADER.join(","));
    assert_eq!(
        lines[1],
        "66724f5d-718f-47a2-93a7-c807cd54241e,Ethernet/IPv4/TCP,1.1.0,STARTED,,IPV4,192.168.0.5,173.194.40.147,0_0_one-namespace-fake-pod-one_0,0_0_two-namespace-fake-pod-two_0,TCP,47838,80,pod,one-namespace/fake-pod-one,one-namespace/replica-set-one,pod,two-namespace/fake-pod-two,two-namespace/replica-set-two,,,,,,,,6,516,4,760,0,0,9,1546338030000,1546338030000,0,fake_node_type,,\"{\"\"CA_Name\"\":\"\"one-namespace/fake-pod-one\"\",\"\"CB_Name\"\":\"\"two-namespace/fake-pod-two\"\"}\""
    );
    assert_eq!(lines[2], format!("{}0,0,0,,,", ",".repeat(33)));
}

#[tokio::test]
async fn pipeline_with_secadvisor_logstatus_and_autodiscovery() {
    use crate::config::ExporterConfig;
    use crate::pipeline::Pipeline;
    use crate::sinks::{MemorySink, Sink};

    let nodes = json!([{"ID": "n1", "Metadata": {"K8s": {"Extra": {"Status": {"Addresses": [
        {"Type": "InternalIP", "Address": "10.1.0.1"}]}}}}}]);
    let mock = MockAnalyzer::start([
        (
            super::super::super::classify::autodiscovery::NODES_QUERY.to_string(),
            nodes,
        ),
        (
            "G.V().Has(\"TID\", \"tid-1\")".to_string(),
            json!([{"ID": "x", "Metadata": {"Type": "netns"}}]),
        ),
        (
            "G.V().Has('RoutingTables.Src','10.1.0.1').Values('Host')".to_string(),
            json!(["node-1"]),
        ),
    ])
    .await;
    let text = format!(
        "analyzers: [{}]\nanalyzer:\n  auth:\n    cluster:\n      username: u\n      password: p\npipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  classify:\n    type: subnet_autodiscovery\n    cluster_net_masks: [10.0.0.0/16]\n  transform:\n    type: secadvisor\n    secadvisor:\n      extend:\n        - AA_Name=G.V().Has('RoutingTables.Src','{{{{.Network.A}}}}').Values('Host')\n  mangle:\n    type: logstatus\n  encode:\n    type: secadvisor\n  store:\n    type: direct\n",
        mock.addr
    );
    let config = ExporterConfig::load(&text).unwrap();
    let sink = MemorySink::default();
    let mut p = Pipeline::build(
        &config,
        Some(Sink::Memory(sink.clone())),
        Default::default(),
    )
    .await
    .unwrap();
    let f: Flow = serde_json::from_value(json!({
        "UUID": "u1", "Start": 1, "Last": 2, "NodeTID": "tid-1",
        "Network": {"Protocol": "IPV4", "A": "10.1.0.1", "B": "10.0.0.9", "ID": 0}
    }))
    .unwrap();
    p.process(vec![f], NOW).await;
    let written = sink.take();
    assert_eq!(written.len(), 1);
    // 10.1.0.1 is inside only thanks to the discovered node: the flow is internal.
    assert!(
        written[0].key.split('/').any(|part| part == "internal"),
        "{}",
        written[0].key
    );
    let body: Value = serde_json::from_slice(&written[0].body).unwrap();
    let record = &body["data"][0];
    assert_eq!(record["Status"], "STARTED");
    assert_eq!(record["NodeType"], "netns");
    assert_eq!(record["LogStatus"], "OK");
    assert_eq!(record["Extend"]["AA_Name"], "node-1");
    assert!(
        mock.requests()
            .iter()
            .all(|r| r.authorization == "Basic dTpw")
    );
    // A template that doesn't parse is refused with the file (so `sluice check` says so),
    // naming the entry and its line.
    let err = ExporterConfig::load(&text.replace("}}').Values", "').Values"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("pipeline.transform.secadvisor.extend[0] (line 17): 'AA_Name="),
        "{err}"
    );
}

/// The simulator over a [`crate::sim::topology::Cluster`]: its address and a way to read how
/// many topology queries it answered.
async fn cluster_analyzer(
    cluster: &crate::sim::topology::Cluster,
) -> (
    String,
    tempfile::TempDir,
    tokio_util::sync::CancellationToken,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("topology.json");
    std::fs::write(&file, cluster.graph().to_string()).unwrap();
    let args = crate::sim::SimArgs::try_parse_from([
        "--listen",
        "127.0.0.1:0",
        "--topology",
        file.to_str().unwrap(),
    ])
    .unwrap();
    let bound = crate::sim::bind(args).await.unwrap();
    let addr = bound.local_addr().to_string();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(bound.run(stop.clone()));
    (addr, dir, stop)
}

async fn topology_queries(addr: &str) -> u64 {
    let sent: Value = reqwest::get(format!("http://{addr}/sim/sent"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    sent["topology_queries"].as_u64().unwrap()
}

#[tokio::test]
async fn batched_lookups_give_the_records_of_sequential_ones() {
    let ips = |prefix: &str, n: usize| -> Vec<String> {
        (1..=n).map(|i| format!("{prefix}.{i}")).collect()
    };
    let cluster = crate::sim::topology::Cluster {
        capture_tids: vec!["tid-0".into(), "tid-1".into()],
        runc: ips("10.1.0", 12),
        docker: ips("10.2.0", 12),
        vm: ips("10.3.0", 6),
    };
    let (addr, _dir, stop) = cluster_analyzer(&cluster).await;
    // Known addresses of every kind, unknown ones, an unknown capture node and a flow without
    // a network layer; some pairs repeat.
    let mut known: Vec<String> = [&cluster.runc, &cluster.docker, &cluster.vm]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    known.extend(ips("8.8.8", 10));
    let flows: Vec<Flow> = (0..120)
        .map(|i| {
            let tid = ["tid-0", "tid-1", "tid-unknown"][i % 3];
            let mut flow = json!({"UUID": format!("u{i}"), "Start": 1, "Last": 2, "NodeTID": tid});
            if i % 17 != 0 {
                flow["Network"] = json!({"Protocol": "IPV4", "ID": 0,
                    "A": known[i % known.len()], "B": known[(i * 7 + 3) % known.len()]});
            }
            serde_json::from_value(flow).unwrap()
        })
        .collect();
    let new_transform = || {
        let client = Arc::new(TopologyClient::new(&addr, None).unwrap());
        SecAdvisor::new(
            Resolver::new(client.clone()),
            Extender::new(client, &[]),
            false,
        )
    };

    let mut sequential = new_transform();
    let mut expected = Vec::new();
    for flow in flows.clone() {
        expected.push(compact(&sequential.transform(flow, NOW).await.unwrap()));
    }
    let sequential_queries = topology_queries(&addr).await;

    let mut batched = new_transform();
    batched
        .prepare(&flows.iter().collect::<Vec<_>>(), NOW)
        .await;
    let batched_queries = topology_queries(&addr).await - sequential_queries;
    let mut got = Vec::new();
    for flow in flows.clone() {
        got.push(compact(&batched.transform(flow, NOW).await.unwrap()));
    }
    assert_eq!(
        topology_queries(&addr).await - sequential_queries,
        batched_queries,
        "after prepare, transforming asks the analyzer nothing"
    );
    assert_eq!(got, expected);
    let all = expected.join("\n");
    for found in [
        "shop/pod-0",
        "docker-0",
        "vm-0",
        "runc-host-1",
        "\"NodeType\":\"host\"",
    ] {
        assert!(all.contains(found), "{found} resolved in {all}");
    }
    // Runc's own queries and the pod lookups go in batches: 62 against 336 when written.
    assert!(
        batched_queries * 4 < sequential_queries,
        "{batched_queries} batched queries vs {sequential_queries} one at a time"
    );
    stop.cancel();
}

#[tokio::test]
async fn batched_answers_that_cannot_be_explained_fall_back_to_single_queries() {
    let runc = |id: &str, ip: &str| {
        json!({"ID": id, "Metadata": {"Type": "container", "Runc": {
            "ContainerID": id, "Hosts": {"IP": ip, "Hostname": format!("host-of-{id}")}}}})
    };
    let pod = |name: &str, container: &str| {
        json!({"ID": name, "Metadata": {"Type": "pod", "K8s": {"Namespace": "ns", "Name": name,
            "Extra": {"Status": {"ContainerStatuses": [{"ContainerID": container}]}}}}})
    };
    let capture = json!({"ID": "capture", "Metadata": {"Type": "host", "TID": "t"}});
    let runc_query = |ip: &str| {
        format!("G.V().Has(\"Runc.Hosts.IP\", {ip}).ShortestPathTo(Metadata(\"TID\", \"t\"))")
    };
    let pod_query =
        |id: &str| format!("G.V().Has(\"K8s.Extra.Status.ContainerStatuses.ContainerID\", {id})");
    let both_ips = "Within(\"10.0.0.1\", \"10.0.0.2\")";
    let answers = vec![
        // Both addresses could be runc containers...
        (
            format!("G.V().Has(\"Runc.Hosts.IP\", {both_ips})"),
            json!([runc("a", "10.0.0.1"), runc("b", "10.0.0.2")]),
        ),
        // ...but the batched runc query answers a path from a container not asked about,
        (
            runc_query(both_ips),
            json!([[runc("z", "10.9.9.9"), capture]]),
        ),
        (
            runc_query("\"10.0.0.1\""),
            json!([[runc("a", "10.0.0.1"), capture]]),
        ),
        (
            runc_query("\"10.0.0.2\""),
            json!([[runc("b", "10.0.0.2"), capture]]),
        ),
        // and the batched pod query a pod of another container.
        (
            pod_query("Within(\"containerd://a\", \"containerd://b\")"),
            json!([pod("pod-z", "containerd://z")]),
        ),
        (
            pod_query("\"containerd://a\""),
            json!([pod("pod-a", "containerd://a")]),
        ),
    ];
    let mock = MockAnalyzer::start(answers).await;
    let mut resolver = Resolver::new(client(&mock));
    let flow: Flow =
        serde_json::from_value(json!({"UUID": "u", "NodeTID": "t", "Start": 1, "Last": 2,
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2", "ID": 0}}))
        .unwrap();
    resolver.prepare(&[&flow], NOW).await;
    let sent = mock.queries();
    for single in [
        runc_query("\"10.0.0.1\""),
        runc_query("\"10.0.0.2\""),
        pod_query("\"containerd://a\""),
        pod_query("\"containerd://b\""),
    ] {
        assert!(sent.contains(&single), "{single} not in {sent:#?}");
    }
    let a = resolver.ip_to_context("10.0.0.1", "t", NOW).await.unwrap();
    assert_eq!((a.kind, a.name.as_str()), (PeerType::Pod, "ns/pod-a"));
    let b = resolver.ip_to_context("10.0.0.2", "t", NOW).await.unwrap();
    assert_eq!(
        (b.kind, b.name.as_str()),
        (PeerType::Container, "host-of-b")
    );
    assert_eq!(mock.queries().len(), sent.len(), "prepare cached both");
}

//! The `prom_sky_con` store end to end (docs/stages.md §9.3): upstream's `prom_sky_con.yml`,
//! unchanged, run by `sluice run` with `SKYDIVE_*` variables pointing it at the simulator, and the
//! same file as a tenant's pipeline in `sluice serve`. The gauges are scraped over HTTP, parsed
//! with a Prometheus text-format parser (the `prometheus-parse` crate), and checked against the
//! flows the simulator sent and the interfaces of its topology.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use prometheus_parse::{Scrape, Value as Sample};
use serde_json::{Value, json};
use sluice_tests::s3::{free_port, start_run_env};
use sluice_tests::{Serve, Sim, http_request, received_total, wait_for};

const WAIT: Duration = Duration::from_secs(90);
const TOTAL: usize = 240;
const ADMIN: &str = "admin-secret-for-prom-tests";

/// Upstream's file, as shipped.
fn upstream_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/prom_sky_con.yml")
}

/// Two interfaces the store must report, and a node it must not (not `EncapType: ether`).
fn write_topology(dir: &Path) -> PathBuf {
    let topology = json!({
        "Nodes": [
            {"ID": "n1", "Host": "node-a", "Metadata": {"Name": "eth0", "Type": "device",
                "EncapType": "ether", "TID": "tid-eth0", "IPV4": ["10.0.0.12/24", "10.0.0.13/24"],
                "Metric": {"RxBytes": 1000, "TxBytes": 2000, "RxPackets": 10, "TxPackets": 20,
                    "RxDropped": 1, "Collisions": 3}}},
            {"ID": "n2", "Host": "node-b", "Metadata": {"Name": "veth1", "Type": "veth",
                "EncapType": "ether", "TID": "tid-veth1", "IPV6": ["fd00::1/64"]}},
            {"ID": "n3", "Host": "node-a", "Metadata": {"Name": "lo", "Type": "device",
                "EncapType": "loopback", "TID": "tid-lo"}},
        ],
        "Edges": [],
    });
    let path = dir.join("topology.json");
    std::fs::write(&path, topology.to_string()).unwrap();
    path
}

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text format")
}

/// (metric, labels sorted) → value, for the gauges of `scrape`.
type Gauges = BTreeMap<(String, Vec<(String, String)>), f64>;

fn gauges(scrape: &Scrape) -> Gauges {
    scrape
        .samples
        .iter()
        .map(|s| {
            let Sample::Gauge(v) = s.value else {
                panic!("{} is not a gauge: {:?}", s.metric, s.value)
            };
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            ((s.metric.clone(), labels), v)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut l: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    l
}

/// The connection gauges the sent flows must give: per (L3TrackingID, NodeTID), the last flow's
/// counters, labelled with its first flow's addresses and ports. Flows without a transport layer
/// show nothing. Returns the gauges and the number of flows without one.
fn expected_connections(sent: &[Value]) -> (Gauges, usize) {
    let mut last: BTreeMap<(String, String), (&Value, &Value)> = BTreeMap::new();
    let mut skipped = 0;
    for flow in sent {
        if flow.get("Transport").is_none() || flow.get("Metric").is_none() {
            skipped += 1;
            continue;
        }
        let key = (
            flow["L3TrackingID"].as_str().unwrap().to_string(),
            flow["NodeTID"].as_str().unwrap().to_string(),
        );
        last.entry(key).or_insert((flow, flow)).1 = flow;
    }
    let mut out = Gauges::new();
    for (first, flow) in last.values() {
        let n = |k: &str| first["Network"][k].as_str().unwrap().to_string();
        let t = |k: &str| first["Transport"][k].as_i64().unwrap().to_string();
        let m = |k: &str| flow["Metric"][k].as_i64().unwrap_or(0) as f64;
        let (a, b, pa, pb) = (n("A"), n("B"), t("A"), t("B"));
        let tid = first["NodeTID"].as_str().unwrap();
        let protocol = first["Transport"]["Protocol"].as_str().unwrap();
        let l = |direction: &str| {
            labels(&[
                ("initiator_ip", &a),
                ("target_ip", &b),
                ("initiator_port", &pa),
                ("target_port", &pb),
                ("direction", direction),
                ("node_tid", tid),
                ("protocol", protocol),
            ])
        };
        let (i2t, t2i) = ("initiator_to_target", "target_to_initiator");
        for (metric, direction, value) in [
            ("skydive_network_connection_total_bytes", i2t, m("ABBytes")),
            ("skydive_network_connection_total_bytes", t2i, m("BABytes")),
            (
                "skydive_network_connection_total_packets",
                i2t,
                m("ABPackets"),
            ),
            (
                "skydive_network_connection_total_packets",
                t2i,
                m("BAPackets"),
            ),
            ("skydive_network_connection_rtt_nanoseconds", i2t, m("RTT")),
        ] {
            out.insert((metric.to_string(), l(direction)), value);
        }
    }
    (out, skipped)
}

/// The interface gauges of the topology of [`write_topology`].
fn expected_interfaces() -> Gauges {
    let eth0 = labels(&[
        ("interface_name", "eth0"),
        ("host", "node-a"),
        ("interface_type", "device"),
        ("ipv4", "10.0.0.12/24"),
        ("ipv6", ""),
        ("node_tid", "tid-eth0"),
    ]);
    let veth = labels(&[
        ("interface_name", "veth1"),
        ("host", "node-b"),
        ("interface_type", "veth"),
        ("ipv4", ""),
        ("ipv6", "fd00::1/64"),
        ("node_tid", "tid-veth1"),
    ]);
    let mut out = Gauges::new();
    for (suffix, eth0_value) in [
        ("rx_bytes", 1000.0),
        ("tx_bytes", 2000.0),
        ("rx_packets", 10.0),
        ("tx_packets", 20.0),
        ("rx_dropped", 1.0),
        ("tx_dropped", 0.0),
        ("rx_errors", 0.0),
        ("tx_errors", 0.0),
        ("rx_missed_errors", 0.0),
        ("tx_missed_errors", 0.0),
        ("collisions", 3.0),
    ] {
        let metric = format!("skydive_network_interface_{suffix}");
        out.insert((metric.clone(), eth0.clone()), eth0_value);
        // No `Metric` at all: every counter reads 0.
        out.insert((metric, veth.clone()), 0.0);
    }
    out
}

/// Checks a scrape against the sent flows and the topology; `Err` says what differs (the caller
/// may retry while the store catches up).
fn check(text: &str, sent: &[Value]) -> Result<(), String> {
    let got = gauges(&scrape(text));
    let (mut want, skipped) = expected_connections(sent);
    if skipped == sent.len() {
        return Err("no flow with a transport layer was sent".into());
    }
    want.extend(expected_interfaces());
    if got == want {
        Ok(())
    } else {
        let missing = want.iter().filter(|(k, v)| got.get(*k) != Some(v)).count();
        let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
        Err(format!(
            "{missing} expected series missing or different, {extra} unexpected, of {}",
            want.len()
        ))
    }
}

fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> sluice_tests::Response {
    http_request(addr, "GET", path, token, None).unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

#[test]
fn upstream_file_in_run_serves_the_gauges_on_its_port() {
    let dir = tempfile::tempdir().unwrap();
    let topology = write_topology(dir.path());
    let sim = Sim::start_fast_with(
        dir.path(),
        20,
        300,
        TOTAL as u32,
        71,
        &["--topology", topology.to_str().unwrap()],
    )
    .unwrap();
    let port = free_port();
    let analyzers = sim.addr.to_string();
    let url = sim.ws_url();
    let port_text = port.to_string();
    let state = dir.path().join("state");
    // The file is upstream's, unchanged: the environment points it at the simulator.
    let mut run = start_run_env(
        &upstream_file(),
        &[
            ("SKYDIVE_ANALYZERS", Path::new(&analyzers)),
            ("SKYDIVE_PIPELINE_SUBSCRIBER_URL", Path::new(&url)),
            (
                "SKYDIVE_PIPELINE_STORE_PROM_SKY_CON_PORT",
                Path::new(&port_text),
            ),
            ("SKYDIVE_HOST_ID", Path::new("prom-e2e")),
            ("XDG_STATE_HOME", &state),
        ],
    )
    .unwrap();
    wait_for("the simulator to send every flow", WAIT, || {
        (sim.sent().len() >= TOTAL).then_some(())
    })
    .unwrap();
    wait_for("sluice to receive every flow", WAIT, || {
        (received_total(&run.stderr()) == TOTAL as u64).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {}", run.stderr()));
    let sent = sim.sent();
    assert_eq!(sent.len(), TOTAL);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut last = String::new();
    let text = wait_for("the gauges to show every flow and interface", WAIT, || {
        let r = get(addr, "/metrics", None);
        assert_eq!(r.status, 200);
        let text = r.text();
        match check(&text, &sent) {
            Ok(()) => Some(text),
            Err(why) => {
                last = why;
                None
            }
        }
    })
    .unwrap_or_else(|e| panic!("{e}: {last}\n{}", run.stderr()));
    assert!(text.contains("# TYPE skydive_network_connection_total_bytes gauge"));
    let stderr = run.stderr();
    assert!(
        stderr.contains("SKYDIVE_PIPELINE_STORE_PROM_SKY_CON_PORT"),
        "the overrides are logged: {stderr}"
    );
    // Nothing else is served there, and nothing was written.
    assert_eq!(get(addr, "/", None).status, 404);
    assert!(
        !state.exists(),
        "no spool folder for a store that writes nothing"
    );
    run.signal("TERM").unwrap();
    assert!(run.wait(WAIT).unwrap(), "{}", run.stderr());
}

#[test]
fn a_port_in_use_fails_the_run_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut run = start_run_env(
        &upstream_file(),
        &[
            ("SKYDIVE_PIPELINE_STORE_PROM_SKY_CON_PORT", Path::new(&port)),
            ("XDG_STATE_HOME", dir.path()),
        ],
    )
    .unwrap();
    assert!(!run.wait(WAIT).unwrap(), "the run must fail");
    let stderr = run.stderr();
    assert!(
        stderr.contains("pipeline.store.prom_sky_con.port") && stderr.contains(&port),
        "{stderr}"
    );
}

#[test]
fn serve_shows_a_tenants_gauges_to_that_tenant_only() {
    let dir = tempfile::tempdir().unwrap();
    let topology = write_topology(dir.path());
    let sim = Sim::start_fast_with(
        dir.path(),
        20,
        300,
        TOTAL as u32,
        72,
        &["--topology", topology.to_str().unwrap()],
    )
    .unwrap();
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (_, a) = serve.tenant("alpha");
    let (_, b) = serve.tenant("beta");
    // Upstream's file with the simulator's addresses; its `port` opens nothing in serve.
    let yaml = std::fs::read_to_string(upstream_file())
        .unwrap()
        .replace("127.0.0.1:8082", &sim.addr.to_string())
        .replace("host_id: \"\"", "host_id: \"prom-serve\"");
    let r = serve.yaml("POST", "/v1/pipelines", Some(&a), &yaml);
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let path = format!("/v1/pipelines/{id}/metrics");

    wait_for("the simulator to send every flow", WAIT, || {
        (sim.sent().len() >= TOTAL).then_some(())
    })
    .unwrap();
    let sent = sim.sent();
    let mut last = String::new();
    wait_for("the gauges to show every flow and interface", WAIT, || {
        let r = serve.request("GET", &path, Some(&a), None);
        assert_eq!(r.status, 200, "{}", r.text());
        match check(&r.text(), &sent) {
            Ok(()) => Some(()),
            Err(why) => {
                last = why;
                None
            }
        }
    })
    .unwrap_or_else(|e| panic!("{e}: {last}\n{}", serve.process.stderr()));
    // Its flows without transport are counted, not lost.
    let (_, skipped) = expected_connections(&sent);
    let status = serve
        .request("GET", &format!("/v1/pipelines/{id}/status"), Some(&a), None)
        .json();
    assert_eq!(
        status["counters"]["dropped"]["unsupported"].as_u64(),
        Some(skipped as u64),
        "{status}"
    );
    // Only its owner reads them.
    let r = serve.request("GET", &path, Some(&b), None);
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(serve.request("GET", &path, None, None).status, 401);
    assert_eq!(
        serve
            .request("GET", "/v1/pipelines/nope/metrics", Some(&a), None)
            .status,
        404
    );
    // The route is in the OpenAPI document.
    let doc = serve
        .request("GET", "/v1/openapi.json", Some(&a), None)
        .json();
    assert!(
        doc["paths"]["/v1/pipelines/{id}/metrics"]["get"].is_object(),
        "{}",
        doc["paths"]
    );
}

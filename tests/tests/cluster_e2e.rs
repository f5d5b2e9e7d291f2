//! Scale-out end to end (docs/service.md §9): three `sluice serve` nodes on one PostgreSQL
//! database (the server `scripts/postgres-server` starts), `sluice sim` as the analyzer (which
//! refuses a second subscriber for a host_id with 409 and logs every attempt at
//! `/sim/subscriptions`) and the moto S3 server.
//!
//! 24 pipelines spread over the nodes (each runs at least 4). SIGKILL one node: all 24 are
//! subscribed again within 30 s of the kill. SIGSTOP another for 45 s and resume it: no 409
//! from the analyzer after it resumes, and no pipeline subscribes twice; through any live node
//! all 24 are listed as running, their status (forwarded to their owner) counts flows, and
//! every pipeline has objects in the bucket. Then a drain through one node moves every pipeline
//! off another, and a SIGTERM hands them over to a node restarted on its old data folder.
//!
//! The analyzer's log and the cluster's own answers are the evidence: which host_id was
//! subscribed when, by which peer, and with what answer.
//!
//! A second test: objects a node spooled while the store was down, and that it still held when
//! it was killed, are uploaded when that node comes back, although its pipeline runs on another
//! node by then.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sluice_tests::s3::{Bucket, MotoServer, TcpProxy};
use sluice_tests::{Serve, Sim, http_request, multiset, wait_for, wall_ms};

const ADMIN: &str = "admin-secret-for-the-cluster";
/// 32 bytes in base64: every node opens the secrets the others sealed.
const SECRET_KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
const PIPELINES: usize = 24;
const BUCKET: &str = "cluster-flows";
/// The bound on failover, from the kill to the last pipeline subscribed again.
const FAILOVER_BOUND_MS: i64 = 30_000;
/// Every other wait is bounded by this.
const WAIT: Duration = Duration::from_secs(90);

/// The PostgreSQL server of the tests; `None` (the test is skipped) only when CI did not ask
/// for it (`SLUICE_REQUIRE_POSTGRES=1` makes a missing server a failure).
fn postgres_server() -> Option<String> {
    let url = std::env::var("SLUICE_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    if url.is_none() {
        assert!(
            std::env::var("SLUICE_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "SLUICE_REQUIRE_POSTGRES=1 but SLUICE_TEST_POSTGRES_URL is not set (scripts/postgres-server)"
        );
        eprintln!("cluster_e2e: no SLUICE_TEST_POSTGRES_URL, skipped (scripts/test starts one)");
    }
    url
}

fn psql() -> PathBuf {
    let found = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin/psql"))
        .find(|p| p.exists());
    found.unwrap_or_else(|| PathBuf::from("psql"))
}

/// A new database on `server`; returns its URL.
fn fresh_database(server: &str) -> String {
    // Two tests of this binary may start in the same millisecond.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!(
        "sluice_cluster_{}_{}_{n}",
        std::process::id(),
        wall_ms() % 100_000
    );
    let out = Command::new(psql())
        .arg(server)
        .args([
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            &format!("CREATE DATABASE {name}"),
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "CREATE DATABASE: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (base, _) = server.rsplit_once('/').expect("a URL with a database path");
    format!("{base}/{name}")
}

fn start_node(dir: &Path, id: &str, database: &str) -> Serve {
    Serve::start_env(
        "127.0.0.1:0",
        &dir.join(id),
        ADMIN,
        &["--node-id", id, "--database", database],
        &[("SLUICE_SECRET_KEY", SECRET_KEY)],
    )
    .unwrap_or_else(|e| panic!("node {id}: {e:#}"))
}

fn pipeline_yaml(sim: &Sim, moto: &MotoServer, i: usize) -> String {
    pipeline_to(sim, &moto.endpoint(), BUCKET, i)
}

fn pipeline_to(sim: &Sim, endpoint: &str, bucket: &str, i: usize) -> String {
    format!(
        "host_id: cluster-h{i}\npipeline:\n  subscriber:\n    url: {url}\n  encode:\n    type: json\n  compress:\n    type: gzip\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: p{i}\n      dirname: {bucket}\n      max_flows_per_object: 1000\n      max_seconds_per_object: 1\n      max_seconds_per_stream: 3600\n      max_flow_array_size: 100000\n  write:\n    type: s3\n    spool:\n      max_bytes: 10000000\n    s3:\n      endpoint: {endpoint}\n      region: us-east-1\n      access_key: test\n      secret_key: test\n",
        url = sim.ws_url(),
    )
}

/// One subscription attempt the analyzer answered.
#[derive(Debug, Clone)]
struct Attempt {
    host_id: String,
    at_ms: i64,
    status: u64,
}

fn attempts(sim: &Sim) -> Vec<Attempt> {
    let r = http_request(sim.addr, "GET", "/sim/subscriptions", None, None).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["subscriptions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| Attempt {
            host_id: a["host_id"].as_str().unwrap().to_string(),
            at_ms: a["at_ms"].as_i64().unwrap(),
            status: a["status"].as_u64().unwrap(),
        })
        .filter(|a| a.host_id.starts_with("cluster-h"))
        .collect()
}

/// When each of `hosts` was last subscribed (accepted) at or after `since`, once all were.
fn resubscribed(sim: &Sim, hosts: &BTreeSet<String>, since: i64) -> Option<BTreeMap<String, i64>> {
    let mut at = BTreeMap::new();
    for a in attempts(sim) {
        if a.status == 101 && a.at_ms >= since && hosts.contains(&a.host_id) {
            at.insert(a.host_id, a.at_ms);
        }
    }
    (at.len() == hosts.len()).then_some(at)
}

/// host_id → the node holding its lease, as a node answers `/v1/admin/leases`.
fn holders(node: &Serve) -> BTreeMap<String, String> {
    let r = node.request("GET", "/v1/admin/leases", Some(ADMIN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["host_id"].as_str().unwrap().to_string(),
                l["node"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// node id → pipelines it holds, as a node answers `/v1/admin/nodes`.
fn node_counts(node: &Serve) -> BTreeMap<String, i64> {
    let r = node.request("GET", "/v1/admin/nodes", Some(ADMIN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["pipelines"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn all_running(node: &Serve, token: &str) -> bool {
    let r = node.request("GET", "/v1/pipelines", Some(token), None);
    if r.status != 200 {
        return false;
    }
    let list = r.json()["pipelines"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.len() == PIPELINES && list.iter().all(|p| p["state"] == "running")
}

fn hosts_of(holders: &BTreeMap<String, String>, node: &str) -> BTreeSet<String> {
    holders
        .iter()
        .filter(|(_, n)| n.as_str() == node)
        .map(|(h, _)| h.clone())
        .collect()
}

fn logs(nodes: &[&Serve]) -> String {
    nodes
        .iter()
        .map(|n| n.process.stderr())
        .collect::<Vec<_>>()
        .join("\n----\n")
}

#[test]
fn three_nodes_fail_over_fence_and_hand_over_on_one_postgres() {
    let Some(server) = postgres_server() else {
        return;
    };
    let database = fresh_database(&server);
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    moto.create_bucket(BUCKET).unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--rate",
            "40",
            "--flows",
            "20",
            "--update-secs",
            "0.5",
            "--expire-secs",
            "2",
            "--batch-secs",
            "0.3",
        ],
    )
    .unwrap();
    let n1 = start_node(dir.path(), "n1", &database);
    let n2 = start_node(dir.path(), "n2", &database);
    let n3 = start_node(dir.path(), "n3", &database);
    let (_, token) = n1.tenant("acme");

    // 24 pipelines, created through the three nodes in turn: placement spreads them.
    let nodes = [&n1, &n2, &n3];
    let mut ids = Vec::new();
    for i in 0..PIPELINES {
        let r = nodes[i % 3].yaml(
            "POST",
            "/v1/pipelines",
            Some(&token),
            &pipeline_yaml(&sim, &moto, i),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        ids.push(r.json()["id"].as_str().unwrap().to_string());
    }
    let every: BTreeSet<String> = (0..PIPELINES).map(|i| format!("cluster-h{i}")).collect();
    wait_for("all 24 pipelines subscribed", WAIT, || {
        resubscribed(&sim, &every, 0)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&nodes)));
    let counts = node_counts(&n2);
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|&n| n >= 4),
        "each node runs at least 4: {counts:?}"
    );
    assert_eq!(counts.values().sum::<i64>(), PIPELINES as i64, "{counts:?}");
    for node in nodes {
        wait_for("every pipeline listed as running", WAIT, || {
            all_running(node, &token).then_some(())
        })
        .unwrap();
    }

    // SIGKILL n1: its pipelines are subscribed again, by the others, within 30 s.
    let before = holders(&n2);
    let victims = hosts_of(&before, "n1");
    assert!(victims.len() >= 4, "{before:?}");
    let killed_at = wall_ms();
    n1.process.signal("KILL").unwrap();
    let again = wait_for("n1's pipelines subscribed again", WAIT, || {
        resubscribed(&sim, &victims, killed_at)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&n2, &n3])));
    let failover_ms = again.values().max().unwrap() - killed_at;
    println!(
        "failover after SIGKILL: {failover_ms} ms for {} pipelines",
        victims.len()
    );
    assert!(
        failover_ms <= FAILOVER_BOUND_MS,
        "the last of n1's pipelines was subscribed {failover_ms} ms after the kill"
    );
    let after_kill = holders(&n2);
    assert!(after_kill.values().all(|n| n != "n1"), "{after_kill:?}");

    // SIGSTOP n2 for 45 s: n3 takes its pipelines over meanwhile; once n2 resumes it neither
    // subscribes again nor gets a 409, and no host_id is subscribed twice.
    let paused = hosts_of(&after_kill, "n2");
    assert!(!paused.is_empty(), "{after_kill:?}");
    let stopped_at = wall_ms();
    n2.process.signal("STOP").unwrap();
    std::thread::sleep(Duration::from_secs(45));
    n2.process.signal("CONT").unwrap();
    let resumed_at = wall_ms();
    let during = resubscribed(&sim, &paused, stopped_at).unwrap_or_else(|| {
        panic!(
            "n3 did not take n2's pipelines over during the pause\n{}",
            logs(&[&n3])
        )
    });
    assert!(during.values().all(|&at| at < resumed_at), "{during:?}");
    // n2 answers again, and both live nodes list all 24 as running (n3 runs them all).
    for node in [&n2, &n3] {
        wait_for(
            "every pipeline listed as running after the pause",
            WAIT,
            || all_running(node, &token).then_some(()),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&n2, &n3])));
    }
    // Long enough for every resumed task of n2 to have run (its holds lapsed at once).
    std::thread::sleep(Duration::from_secs(5));
    let since_pause: Vec<Attempt> = attempts(&sim)
        .into_iter()
        .filter(|a| a.at_ms >= stopped_at)
        .collect();
    let refused: Vec<&Attempt> = since_pause.iter().filter(|a| a.status == 409).collect();
    assert!(
        refused.is_empty(),
        "409s since the pause: {refused:?}\n{}",
        logs(&[&n2, &n3])
    );
    let mut accepted: BTreeMap<&str, usize> = BTreeMap::new();
    for a in since_pause.iter().filter(|a| a.status == 101) {
        *accepted.entry(&a.host_id).or_default() += 1;
    }
    assert!(
        accepted.values().all(|&n| n == 1),
        "a host_id subscribed twice since the pause: {accepted:?}"
    );
    assert!(
        since_pause
            .iter()
            .filter(|a| a.status == 101)
            .all(|a| a.at_ms < resumed_at),
        "a subscription after n2 resumed: {since_pause:?}"
    );
    assert_eq!(node_counts(&n2).get("n3"), Some(&(PIPELINES as i64)));

    // Through n2 (forwarded to n3, the owner): every pipeline counts flows, and every one has
    // objects in the bucket.
    for id in &ids {
        wait_for("the pipeline's status counts flows", WAIT, || {
            let r = n2.request(
                "GET",
                &format!("/v1/pipelines/{id}/status"),
                Some(&token),
                None,
            );
            let v: Value = r.json();
            (r.status == 200
                && v["state"] == "running"
                && v["counters"]["received"].as_u64() > Some(0))
            .then_some(())
        })
        .unwrap_or_else(|e| panic!("{id}: {e}\n{}", logs(&[&n2, &n3])));
    }
    wait_for("objects of every pipeline in the bucket", WAIT, || {
        let keys = moto.keys(BUCKET);
        (0..PIPELINES)
            .all(|i| keys.iter().any(|k| k.starts_with(&format!("p{i}/"))))
            .then_some(())
    })
    .unwrap();

    // Drain n3 through n2: every pipeline moves to n2 (the only other live node).
    let drained_at = wall_ms();
    let r = n2.request("POST", "/v1/admin/nodes/n3/drain", Some(ADMIN), None);
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["draining"], true);
    let moved = wait_for("every pipeline moved to n2", WAIT, || {
        resubscribed(&sim, &every, drained_at)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&n2, &n3])));
    println!(
        "drain handover: {} ms for {PIPELINES} pipelines",
        moved.values().max().unwrap() - drained_at
    );
    wait_for("n2 holds every pipeline", WAIT, || {
        (node_counts(&n3).get("n2") == Some(&(PIPELINES as i64))).then_some(())
    })
    .unwrap();

    // n1 comes back on its data folder; SIGTERM n2: it hands everything over to n1 at once.
    let n1 = start_node(dir.path(), "n1", &database);
    let termed_at = wall_ms();
    let mut n2 = n2;
    n2.process.signal("TERM").unwrap();
    let handed = wait_for("every pipeline handed over to n1", WAIT, || {
        resubscribed(&sim, &every, termed_at)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", logs(&[&n1, &n2, &n3])));
    println!(
        "SIGTERM handover: {} ms for {PIPELINES} pipelines",
        handed.values().max().unwrap() - termed_at
    );
    assert!(
        n2.process.wait(WAIT).unwrap(),
        "n2 exits cleanly after SIGTERM"
    );
    wait_for("every pipeline listed as running through n1", WAIT, || {
        all_running(&n1, &token).then_some(())
    })
    .unwrap();
    let refused: Vec<Attempt> = attempts(&sim)
        .into_iter()
        .filter(|a| a.status == 409 && a.at_ms >= stopped_at)
        .collect();
    assert!(refused.is_empty(), "409s: {refused:?}");
    assert_eq!(
        holders(&n1).values().filter(|n| *n == "n1").count(),
        PIPELINES
    );
}

/// Spool files (`*.obj`) under a node's folder of a pipeline.
fn spooled(node: &Serve, id: &str) -> usize {
    std::fs::read_dir(node.data_dir.join("pipelines").join(id).join("spool"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "obj"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn a_dead_nodes_spool_is_uploaded_when_it_comes_back() {
    let Some(server) = postgres_server() else {
        return;
    };
    let database = fresh_database(&server);
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    moto.create_bucket("spooled").unwrap();
    let relay = TcpProxy::start(moto.addr).unwrap();
    let total = 600;
    let sim = Sim::start_fast(dir.path(), 20, 200, total, 7).unwrap();
    let n1 = start_node(dir.path(), "n1", &database);
    let (_, token) = n1.tenant("acme");
    // The store is unreachable from the start: everything stays in n1's spool.
    relay.cut();
    let r = n1.yaml(
        "POST",
        "/v1/pipelines",
        Some(&token),
        &pipeline_to(&sim, &relay.endpoint(), "spooled", 0),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    // Killed only once every record sent is in the spool (records in memory at a SIGKILL are
    // lost by nature, docs/service.md §9).
    wait_for("every record sent spooled on n1", WAIT, || {
        let v = n1.status(&token, &id);
        let received = v["counters"]["received"].as_u64().unwrap_or(0);
        (sim.sent().len() == total as usize
            && received == total as u64
            && v["counters"]["records_written"].as_u64() == Some(received))
        .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", n1.process.stderr()));
    let files = spooled(&n1, &id);
    assert!(files >= 1);
    let mut n1 = n1;
    n1.process.signal("KILL").unwrap();
    let _ = n1.process.wait(WAIT);

    // n2 takes the pipeline over; the store comes back; nothing new is sent.
    let n2 = start_node(dir.path(), "n2", &database);
    wait_for("n2 holds the pipeline", WAIT, || {
        (holders(&n2).get("cluster-h0").map(String::as_str) == Some("n2")).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", n2.process.stderr()));
    relay.restore();
    assert_eq!(Bucket::new(&moto, "spooled").refresh(), 0);

    // n1 comes back: it uploads what its spool kept, for a pipeline that runs on n2.
    let n1 = start_node(dir.path(), "n1", &database);
    let mut bucket = Bucket::new(&moto, "spooled");
    bucket.wait_records(total as usize, WAIT, || n1.process.stderr());
    wait_for("n1's spool to empty", WAIT, || {
        (spooled(&n1, &id) == 0).then_some(())
    })
    .unwrap();
    assert_eq!(
        multiset(bucket.all_records()),
        multiset(sim.sent()),
        "every record sent is in the bucket exactly once"
    );
    assert_eq!(
        holders(&n1).get("cluster-h0").map(String::as_str),
        Some("n2")
    );
}

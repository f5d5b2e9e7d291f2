//! Each shipped pipeline file (`config/secadvisor.yml`, `awsflowlogs.yml`, `vpclogs.yml`,
//! `allinone.yml`) run as it ships by `sluice run` against `sluice sim`, its objects read back and
//! checked record by record against what the test computes itself from the flows the simulator
//! sent (its `--sent-log`).
//!
//! The files write to S3; the test copies each to a temp dir and rewrites only the analyzer
//! address (`analyzers`, `pipeline.subscriber.url`), the write section (the `file` writer) and
//! vpclogs' account file path. Every other key is as shipped.
//!
//! The expected records are computed here from the format descriptions (docs/stages.md
//! §5–8 and §10, `docs/awsflowlogs.md`, `docs/vpclogs.md`), never by calling sluice's pipeline
//! code. The only sluice code used is the simulator's flow generator, to learn which capture
//! node TIDs the simulator will use so the topology file can describe them.
//!
//! The simulator gets a topology (`--topology`) that exercises the analyzer lookups:
//! - a Kubernetes node whose ExternalIP is 8.8.8.8: `subnet_autodiscovery` (secadvisor.yml) adds
//!   8.8.8.8/32 to the cluster masks, so flows with 8.8.8.8 change tag (e.g. egress → internal,
//!   other → egress/ingress);
//! - a host `worker-1` with routing-table source 10.0.0.12: the secadvisor VM resolver gives
//!   `Context.{A,B} = {Type: host, Name: worker-1}` for that address;
//! - a node per capture TID, with `Type` (secadvisor `NodeType`) and `IPV4` addresses (vpclogs
//!   `direction`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sluice::sim::DEFAULT_CAPTURE_ID;
use sluice::sim::generator::{Generator, Timing};
use sluice_tests::{Sim, StoredObject, read_objects, run_until_drained, wall_ms};

const WAIT: Duration = Duration::from_secs(90);
const TOTAL: usize = 400;
const FLOWS: usize = 30;

// ---------------------------------------------------------------------------------------------
// JSON with key order kept (serde_json's map sorts keys), and Go's encoder layout.

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq)]
enum J {
    Null,
    Bool(bool),
    Num(serde_json::Number),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = J;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_unit<E>(self) -> Result<J, E> {
                Ok(J::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<J, E> {
                Ok(J::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<J, E> {
                Ok(J::Num(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<J, E> {
                Ok(J::Num(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<J, E> {
                serde_json::Number::from_f64(v)
                    .map(J::Num)
                    .ok_or_else(|| E::custom("non-finite number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<J, E> {
                Ok(J::Str(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = a.next_element()? {
                    out.push(v);
                }
                Ok(J::Arr(out))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut a: A) -> Result<J, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = a.next_entry::<String, J>()? {
                    out.push((k, v));
                }
                Ok(J::Obj(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl J {
    fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn str(&self, key: &str) -> Option<&str> {
        match self.get(key)? {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
    fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            J::Num(n) => n.as_i64(),
            _ => None,
        }
    }
    fn keys(&self) -> Vec<&str> {
        match self {
            J::Obj(kv) => kv.iter().map(|(k, _)| k.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

fn s(v: &str) -> J {
    J::Str(v.to_string())
}

fn n(v: i64) -> J {
    J::Num(v.into())
}

/// An object from `(key, Some(value))` pairs; `None` values are left out (Go's `omitempty`).
fn obj(pairs: Vec<(&str, Option<J>)>) -> J {
    J::Obj(
        pairs
            .into_iter()
            .filter_map(|(k, v)| Some((k.to_string(), v?)))
            .collect(),
    )
}

fn parse(bytes: &[u8]) -> J {
    serde_json::from_slice(bytes).unwrap_or_else(|e| {
        panic!(
            "object is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// Go `json.Marshal` layout (no HTML-special characters occur in the simulator's data).
fn compact(j: &J, out: &mut String) {
    match j {
        J::Null => out.push_str("null"),
        J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        J::Num(v) => out.push_str(&v.to_string()),
        J::Str(v) => out.push_str(&serde_json::to_string(v).unwrap()),
        J::Arr(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                compact(v, out);
            }
            out.push(']');
        }
        J::Obj(kv) => {
            out.push('{');
            for (i, (k, v)) in kv.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push(':');
                compact(v, out);
            }
            out.push('}');
        }
    }
}

/// Go `json.MarshalIndent(v, "", "\t")` layout.
fn pretty(j: &J, depth: usize, out: &mut String) {
    let pad = |out: &mut String, d: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n('\t', d));
    };
    match j {
        J::Arr(items) if !items.is_empty() => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                pretty(v, depth + 1, out);
            }
            pad(out, depth);
            out.push(']');
        }
        J::Obj(kv) if !kv.is_empty() => {
            out.push('{');
            for (i, (k, v)) in kv.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                pad(out, depth + 1);
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(": ");
                pretty(v, depth + 1, out);
            }
            pad(out, depth);
            out.push('}');
        }
        other => compact(other, out),
    }
}

// ---------------------------------------------------------------------------------------------
// The simulator's world: its topology, and the classification of its flows.

const HOST_IP: &str = "10.0.0.12";
const HOST_NAME: &str = "worker-1";
const K8S_EXTERNAL_IP: &str = "8.8.8.8";

/// What the test's topology says about the simulator's two capture nodes.
struct World {
    tids: [String; 2],
}

impl World {
    /// The simulator's capture TIDs for `seed` (its generator is deterministic).
    fn new(seed: u64) -> World {
        let timing = Timing {
            update_ms: 500,
            expire_ms: 2000,
            app_timeout_ms: 10_000,
        };
        let mut generator = Generator::new(seed, &[DEFAULT_CAPTURE_ID.to_string()], 64, timing);
        let mut tids: Vec<String> = generator
            .tick(1_700_000_000_000)
            .into_iter()
            .map(|f| f.node_tid)
            .collect();
        tids.sort();
        tids.dedup();
        assert_eq!(tids.len(), 2, "the simulator uses two TIDs per capture");
        World {
            tids: [tids[0].clone(), tids[1].clone()],
        }
    }

    /// Topology `Type` of a capture node.
    fn node_type(&self, tid: &str) -> Option<&'static str> {
        if tid == self.tids[0] {
            Some("host")
        } else if tid == self.tids[1] {
            Some("netns")
        } else {
            None
        }
    }

    /// A capture node's addresses (its `IPV4` metadata without the prefix lengths).
    fn node_ips(&self, tid: &str) -> &'static [&'static str] {
        if tid == self.tids[0] {
            &["10.0.0.12", "192.168.0.1"]
        } else if tid == self.tids[1] {
            &["10.1.4.20"]
        } else {
            &[]
        }
    }

    /// The secadvisor peer context of an address: only `HOST_IP` is known (a VM).
    fn context(&self, ip: &str) -> Option<J> {
        (ip == HOST_IP).then(|| {
            obj(vec![
                ("Type", Some(s("host"))),
                ("Name", Some(s(HOST_NAME))),
            ])
        })
    }

    fn write_topology(&self, dir: &Path) -> PathBuf {
        let topology = serde_json::json!({
            "Nodes": [
                {"ID": "k8s-node", "Metadata": {"Manager": "k8s", "Type": "node", "Name": HOST_NAME,
                    "K8s": {"Extra": {"Status": {"Addresses": [
                        {"Type": "InternalIP", "Address": "10.9.9.9"},
                        {"Type": "ExternalIP", "Address": K8S_EXTERNAL_IP},
                        {"Type": "Hostname", "Address": HOST_NAME}]}}}}},
                {"ID": "host", "Metadata": {"Type": "host", "Name": HOST_NAME}},
                {"ID": "host-eth0", "Metadata": {"Type": "device", "Name": "eth0",
                    "RoutingTables": [{"Src": HOST_IP}]}},
                {"ID": "capture-a", "Metadata": {"Type": "host", "Name": "capture-a",
                    "TID": self.tids[0], "IPV4": ["10.0.0.12/24", "192.168.0.1/24"]}},
                {"ID": "capture-b", "Metadata": {"Type": "netns", "Name": "capture-b",
                    "TID": self.tids[1], "IPV4": ["10.1.4.20/16"]}},
            ],
            "Edges": [
                {"ID": "e1", "Metadata": {"RelationType": "ownership"}, "Parent": "host", "Child": "host-eth0"},
            ],
        });
        let path = dir.join("topology.json");
        std::fs::write(&path, topology.to_string()).unwrap();
        path
    }
}

/// The shipped cluster masks (10/8, 172.16/12, 192.168/16), plus host masks.
fn in_masks(ip: &str, masks: &[(Ipv4Addr, u32)]) -> Option<bool> {
    let ip: IpAddr = ip.parse().ok()?;
    let v4 = match ip {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return Some(false), // only IPv4 masks are configured
        },
    };
    Some(masks.iter().any(|&(net, len)| {
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        u32::from(v4) & mask == u32::from(net) & mask
    }))
}

fn private_masks() -> Vec<(Ipv4Addr, u32)> {
    vec![
        (Ipv4Addr::new(10, 0, 0, 0), 8),
        (Ipv4Addr::new(172, 16, 0, 0), 12),
        (Ipv4Addr::new(192, 168, 0, 0), 16),
    ]
}

/// The subnet classifier (docs/stages.md §5.1).
fn tag(flow: &Value, masks: &[(Ipv4Addr, u32)]) -> &'static str {
    let network = &flow["Network"];
    let side = |k: &str| network[k].as_str().and_then(|ip| in_masks(ip, masks));
    match (side("A"), side("B")) {
        (Some(true), Some(true)) => "internal",
        (Some(true), Some(false)) => "egress",
        (Some(false), Some(true)) => "ingress",
        _ => "other",
    }
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Running a shipped file.

/// `config/<name>` with only the analyzer address, the writer and the account file path
/// changed.
fn shipped_config(name: &str, sim: &Sim, dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config")
        .join(name);
    let original: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&shipped).unwrap()).unwrap();
    let mut doc = original.clone();
    doc["analyzers"] = serde_yaml::to_value(vec![sim.addr.to_string()]).unwrap();
    doc["pipeline"]["subscriber"]["url"] = sim.ws_url().into();
    let out = dir.join("out");
    doc["pipeline"]["write"] = serde_yaml::from_str(&format!(
        "{{type: file, file: {{dir: {:?}}}}}",
        out.display().to_string()
    ))
    .unwrap();
    if doc["pipeline"]["account"]["file"]["filename"].is_string() {
        doc["pipeline"]["account"]["file"]["filename"] =
            dir.join("account.json").display().to_string().into();
    }
    // Everything else is as shipped.
    let strip = |mut d: serde_yaml::Value| {
        d["analyzers"] = serde_yaml::Value::Null;
        d["pipeline"]["subscriber"]["url"] = serde_yaml::Value::Null;
        d["pipeline"]["write"] = serde_yaml::Value::Null;
        if d["pipeline"]["account"]["file"]["filename"].is_string() {
            d["pipeline"]["account"]["file"]["filename"] = serde_yaml::Value::Null;
        }
        d
    };
    assert_eq!(strip(original), strip(doc.clone()));
    let path = dir.join(name);
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    path
}

struct Outcome {
    sent: Vec<Value>,
    objects: Vec<StoredObject>,
    /// Wall clock just before `sluice run` started and just after it exited.
    window: (i64, i64),
}

fn run_shipped(name: &str, seed: u64, dir: &Path) -> (World, Outcome) {
    let world = World::new(seed);
    let topology = world.write_topology(dir);
    let topology = topology.display().to_string();
    let sim = Sim::start_fast_with(
        dir,
        FLOWS as u32,
        400,
        TOTAL as u32,
        seed as u32,
        &["--topology", &topology],
    )
    .unwrap();
    let config = shipped_config(name, &sim, dir);
    let start = wall_ms();
    run_until_drained(&sim, &config, TOTAL, WAIT).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    let end = wall_ms();
    let sent = sim.sent();
    assert_eq!(sent.len(), TOTAL);
    let objects = read_objects(&dir.join("out")).unwrap();
    assert!(!objects.is_empty(), "{name}: no object written");
    (
        world,
        Outcome {
            sent,
            objects,
            window: (start, end),
        },
    )
}

/// Checks the upstream key layout `logs/<tag>/<stream>/<seq>.<ext>` (bucket `bucket`), that
/// each stream's seqs are 0..n, and the metadata; returns each tag's objects in write order.
fn objects_by_tag<'a>(
    objects: &'a [StoredObject],
    ext: &str,
    content_type: &str,
    gzip: bool,
) -> BTreeMap<String, Vec<&'a StoredObject>> {
    let mut by_stream: BTreeMap<(String, String), Vec<(u64, &StoredObject)>> = BTreeMap::new();
    for o in objects {
        assert_eq!(o.bucket, "bucket", "{}", o.key);
        let parts: Vec<&str> = o.key.split('/').collect();
        assert_eq!(parts.len(), 4, "{}", o.key);
        assert_eq!(parts[0], "logs", "{}", o.key);
        let stream = parts[2];
        assert!(
            stream.len() == 16
                && stream.as_bytes()[8] == b'T'
                && stream.ends_with('Z')
                && stream[..8].bytes().all(|b| b.is_ascii_digit())
                && stream[9..15].bytes().all(|b| b.is_ascii_digit()),
            "stream {stream} is not YYYYMMDDTHHMMSSZ"
        );
        let (seq, suffix) = parts[3].split_once('.').unwrap();
        assert_eq!((seq.len(), suffix), (8, ext), "{}", o.key);
        by_stream
            .entry((parts[1].to_string(), stream.to_string()))
            .or_default()
            .push((seq.parse().unwrap(), o));
        assert_eq!(o.meta["content_type"], content_type, "{}", o.key);
        assert_eq!(
            o.meta["content_encoding"].as_str().unwrap_or(""),
            if gzip { "gzip" } else { "" },
            "{}: {}",
            o.key,
            o.meta
        );
        let m = &o.meta["metadata"];
        let first: i64 = m["first-timestamp"].as_str().unwrap().parse().unwrap();
        let last: i64 = m["last-timestamp"].as_str().unwrap().parse().unwrap();
        assert!(first <= last && first > 1_500_000_000_000, "{}", o.meta);
    }
    let mut out: BTreeMap<String, Vec<&StoredObject>> = BTreeMap::new();
    for ((tag, stream), mut seqs) in by_stream {
        seqs.sort_by_key(|(seq, _)| *seq);
        let numbers: Vec<u64> = seqs.iter().map(|(seq, _)| *seq).collect();
        assert_eq!(
            numbers,
            (0..seqs.len() as u64).collect::<Vec<_>>(),
            "{tag}/{stream}: seqs must be 0..n"
        );
        out.entry(tag)
            .or_default()
            .extend(seqs.into_iter().map(|(_, o)| o));
    }
    out
}

fn num_records(o: &StoredObject) -> usize {
    o.meta["metadata"]["num-records"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn assert_same_records(what: &str, got: &[J], want: &[J]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "{what}: record {i} differs");
    }
    assert_eq!(got.len(), want.len(), "{what}: record count");
}

// ---------------------------------------------------------------------------------------------
// secadvisor records (docs/stages.md §6.2, §7.2, §10.3).

/// Status and UpdateCount of each sent flow, from the order of sightings per UUID: the count
/// before this sighting; TIMEOUT forgets the flow, anything else counts the sighting. (The
/// 10-minute and 1-minute TTLs don't expire within a test.)
fn sightings(sent: &[Value]) -> Vec<(&'static str, i64)> {
    let mut counts: HashMap<String, i64> = HashMap::new();
    sent.iter()
        .map(|flow| {
            let uuid = flow["UUID"].as_str().unwrap().to_string();
            let count = counts.get(&uuid).copied().unwrap_or(0);
            let finish = int(&flow["FinishType"]);
            if finish == 1 {
                counts.remove(&uuid);
            } else {
                counts.insert(uuid, count + 1);
            }
            let status = match (finish, count) {
                (0, 0) => "STARTED",
                (0, _) => "UPDATED",
                _ => "ENDED",
            };
            (status, count)
        })
        .collect()
}

/// Skydive's FlowMetric JSON: counters, Start, Last, RTT only when non-zero.
fn flow_metric(m: &Value) -> Option<J> {
    if m.is_null() {
        return None;
    }
    let rtt = int(&m["RTT"]);
    Some(obj(vec![
        ("ABPackets", Some(n(int(&m["ABPackets"])))),
        ("ABBytes", Some(n(int(&m["ABBytes"])))),
        ("BAPackets", Some(n(int(&m["BAPackets"])))),
        ("BABytes", Some(n(int(&m["BABytes"])))),
        ("Start", Some(n(int(&m["Start"])))),
        ("Last", Some(n(int(&m["Last"])))),
        ("RTT", (rtt != 0).then(|| n(rtt))),
    ]))
}

fn non_empty(v: &Value) -> Option<J> {
    v.as_str().filter(|t| !t.is_empty()).map(s)
}

/// The record a sent flow becomes, with LogStatus OK.
fn secadvisor_record(flow: &Value, (status, count): (&str, i64), world: &World) -> J {
    let finish = match int(&flow["FinishType"]) {
        1 => Some(s("Timeout")),
        2 => Some(s("SYN_FIN")),
        3 => Some(s("SYN_RST")),
        _ => None,
    };
    let network = &flow["Network"];
    let (ctx_a, ctx_b) = if network.is_null() {
        (None, None)
    } else {
        (
            world.context(network["A"].as_str().unwrap_or("")),
            world.context(network["B"].as_str().unwrap_or("")),
        )
    };
    let context = (ctx_a.is_some() || ctx_b.is_some())
        .then(|| obj(vec![("A", ctx_a.clone()), ("B", ctx_b.clone())]));
    // No pod contexts in this topology, so no legacy A_Name / B_Name.
    let network = (!network.is_null()).then(|| {
        obj(vec![
            ("Protocol", non_empty(&network["Protocol"])),
            ("A", non_empty(&network["A"])),
            ("B", non_empty(&network["B"])),
        ])
    });
    let transport = &flow["Transport"];
    let transport = (!transport.is_null()).then(|| {
        obj(vec![
            ("Protocol", non_empty(&transport["Protocol"])),
            ("A", Some(s(&int(&transport["A"]).to_string()))),
            ("B", Some(s(&int(&transport["B"]).to_string()))),
        ])
    });
    let node_type = world
        .node_type(flow["NodeTID"].as_str().unwrap_or(""))
        .map(s);
    obj(vec![
        ("UUID", non_empty(&flow["UUID"])),
        ("LayersPath", non_empty(&flow["LayersPath"])),
        ("Version", Some(s("1.1.0"))),
        ("Status", Some(s(status))),
        ("FinishType", finish),
        ("Network", network),
        ("Transport", transport),
        ("Context", context),
        ("LastUpdateMetric", flow_metric(&flow["LastUpdateMetric"])),
        ("Metric", flow_metric(&flow["Metric"])),
        ("Start", Some(n(int(&flow["Start"])))),
        ("Last", Some(n(int(&flow["Last"])))),
        ("UpdateCount", Some(n(count))),
        ("NodeType", node_type),
        ("LogStatus", Some(s("OK"))),
    ])
}

/// Checks one tag's record stream (objects concatenated in write order) against the expected
/// OK records, and the logstatus additions. Returns the number of SKIPDATA records.
///
/// The logstatus mangler runs once per (message, tag) and appends, after that batch's OK
/// records, a NODATA record per link seen earlier in the tag but absent from the batch, then a
/// SKIPDATA record per OK record whose UUID an earlier batch of the tag reported (both carry
/// `now`). The test does not see message boundaries, so:
/// - NODATA: every simulated flow has `Link.ID` 0 and the mangler only runs on batches with at
///   least one record, so every batch contains link 0 and there is never a NODATA record.
/// - SKIPDATA: the stream splits into segments `OK+ SKIPDATA*`. A segment's OK run may hold
///   several batches, but only its last batch can have SKIPDATA records (any other would have
///   ended the run). Hence, as multisets of UUIDs, with L = the run's records whose UUID is in
///   an earlier segment and E = those whose UUID appears earlier in the same run:
///   L ⊆ SKIPDATA ⊆ L + E. SKIPDATA records come in the order of their OK records, carry that
///   record's UUID and Network, `Start` = `Last` = the batch's wall-clock time (the same for
///   the segment, and within the run's time window), and `UpdateCount` 0.
fn check_logstatus(tag: &str, records: Vec<J>, expected_ok: &[J], window: (i64, i64)) -> usize {
    let mut ok = Vec::new();
    let mut earlier: HashSet<String> = HashSet::new();
    let mut skips_total = 0;
    let mut run: Vec<J> = Vec::new();
    let mut skips: Vec<J> = Vec::new();
    let mut close = |run: &mut Vec<J>, skips: &mut Vec<J>, earlier: &mut HashSet<String>| {
        if run.is_empty() {
            assert!(
                skips.is_empty(),
                "{tag}: SKIPDATA without an OK record before it"
            );
            return;
        }
        let uuid = |r: &J| r.str("UUID").unwrap().to_string();
        let mut lower: BTreeMap<String, usize> = BTreeMap::new();
        let mut upper: BTreeMap<String, usize> = BTreeMap::new();
        let mut in_run: HashSet<String> = HashSet::new();
        for r in run.iter() {
            let u = uuid(r);
            if earlier.contains(&u) {
                *lower.entry(u.clone()).or_default() += 1;
                *upper.entry(u.clone()).or_default() += 1;
            } else if in_run.contains(&u) {
                *upper.entry(u.clone()).or_default() += 1;
            }
            in_run.insert(u);
        }
        let mut got: BTreeMap<String, usize> = BTreeMap::new();
        let now = skips.first().and_then(|r| r.int("Start"));
        let mut cursor = 0;
        for skip in skips.iter() {
            let u = uuid(skip);
            *got.entry(u.clone()).or_default() += 1;
            // In OK-record order: find this UUID's OK record at or after the cursor.
            let at = run[cursor..]
                .iter()
                .position(|r| uuid(r) == u)
                .unwrap_or_else(|| {
                    panic!("{tag}: SKIPDATA {u} has no OK record in its batch, in order")
                });
            let source = &run[cursor + at];
            cursor += at + 1;
            let now = now.unwrap();
            let want = obj(vec![
                ("UUID", Some(s(&u))),
                ("Network", source.get("Network").cloned()),
                ("Start", Some(n(now))),
                ("Last", Some(n(now))),
                ("UpdateCount", Some(n(0))),
                ("LogStatus", Some(s("SKIPDATA"))),
            ]);
            assert_eq!(skip, &want, "{tag}: SKIPDATA record");
            assert!(
                window.0 <= now && now <= window.1,
                "{tag}: SKIPDATA time {now} outside the run {window:?}"
            );
        }
        for (u, &min) in &lower {
            assert!(
                got.get(u).copied().unwrap_or(0) >= min,
                "{tag}: {u} was reported by an earlier batch but has no SKIPDATA"
            );
        }
        for (u, &count) in &got {
            assert!(
                count <= upper.get(u).copied().unwrap_or(0),
                "{tag}: SKIPDATA for {u}, which no earlier batch reported"
            );
        }
        skips_total += skips.len();
        earlier.extend(in_run);
        run.clear();
        skips.clear();
    };
    for r in records {
        match r.str("LogStatus") {
            Some("OK") => {
                if !skips.is_empty() {
                    close(&mut run, &mut skips, &mut earlier);
                }
                ok.push(r.clone());
                run.push(r);
            }
            Some("SKIPDATA") => skips.push(r),
            Some("NODATA") => panic!("{tag}: unexpected NODATA record (every flow has link 0)"),
            other => panic!("{tag}: record with LogStatus {other:?}"),
        }
    }
    close(&mut run, &mut skips, &mut earlier);
    assert_same_records(tag, &ok, expected_ok);
    skips_total
}

/// The OK records expected per tag: sent flows in sent order (one connection, so the order
/// sluice received them), classified, excluded tags dropped, STARTED dropped when excluded.
fn expected_secadvisor(
    sent: &[Value],
    world: &World,
    masks: &[(Ipv4Addr, u32)],
    excluded: &[&str],
    exclude_started: bool,
) -> BTreeMap<String, Vec<J>> {
    let mut out: BTreeMap<String, Vec<J>> = BTreeMap::new();
    for (flow, sighting) in sent.iter().zip(sightings(sent)) {
        let tag = tag(flow, masks);
        if excluded.contains(&tag) || (exclude_started && sighting.0 == "STARTED") {
            continue;
        }
        out.entry(tag.to_string())
            .or_default()
            .push(secadvisor_record(flow, sighting, world));
    }
    out
}

#[test]
fn secadvisor_yml() {
    let dir = tempfile::tempdir().unwrap();
    let (world, run) = run_shipped("secadvisor.yml", 21, dir.path());
    // subnet_autodiscovery: the k8s node's ExternalIP joins the masks.
    let mut masks = private_masks();
    masks.push((K8S_EXTERNAL_IP.parse().unwrap(), 32));
    let expected = expected_secadvisor(&run.sent, &world, &masks, &["other"], true);
    let retagged = run
        .sent
        .iter()
        .filter(|f| tag(f, &masks) != tag(f, &private_masks()))
        .count();
    assert!(
        retagged > 0,
        "some flow must involve {K8S_EXTERNAL_IP} (seed choice)"
    );

    let by_tag = objects_by_tag(&run.objects, "gz", "application/json", true);
    let mut skipdata = 0;
    for (tag, objects) in &by_tag {
        let mut records = Vec::new();
        for o in objects {
            let text = std::str::from_utf8(&o.content).unwrap();
            let doc = parse(&o.content);
            // The secadvisor encoder: {"data": [...]}, Go's pretty layout (tabs), newline.
            let mut layout = String::new();
            pretty(&doc, 0, &mut layout);
            layout.push('\n');
            assert_eq!(text, layout, "{}: not Go's tab-indented layout", o.key);
            assert_eq!(doc.keys(), ["data"], "{}", o.key);
            let Some(J::Arr(data)) = doc.get("data") else {
                panic!("{}: data is not an array", o.key)
            };
            assert_eq!(num_records(o), data.len(), "{}: num-records", o.key);
            records.extend(data.iter().cloned());
        }
        let want = expected.get(tag).map_or(&[][..], Vec::as_slice);
        skipdata += check_logstatus(tag, records, want, run.window);
    }
    let tags: Vec<&String> = by_tag.keys().collect();
    assert_eq!(tags, expected.keys().collect::<Vec<_>>(), "tags written");
    assert!(skipdata > 0, "flows are updated, so some SKIPDATA records");
    eprintln!(
        "secadvisor.yml: {} objects, OK records per tag {:?}, {skipdata} SKIPDATA, {retagged} flows retagged by autodiscovery",
        run.objects.len(),
        expected
            .iter()
            .map(|(t, r)| (t, r.len()))
            .collect::<Vec<_>>()
    );
    // The topology lookups took effect.
    let all: Vec<&J> = expected.values().flatten().collect();
    assert!(all.iter().any(|r| r.get("Context").is_some()));
    assert!(all.iter().any(|r| r.str("NodeType") == Some("netns")));
    assert!(all.iter().any(|r| r.str("Status") == Some("ENDED")));
    assert!(all.iter().any(|r| r.str("Status") == Some("UPDATED")));
}

#[test]
fn allinone_yml() {
    let dir = tempfile::tempdir().unwrap();
    let (world, run) = run_shipped("allinone.yml", 22, dir.path());
    // No masks: every flow is `other`, nothing excluded, STARTED kept.
    let expected = expected_secadvisor(&run.sent, &world, &[], &[], false);
    assert_eq!(expected.keys().collect::<Vec<_>>(), ["other"]);
    let by_tag = objects_by_tag(&run.objects, "json", "application/json", false);
    assert_eq!(by_tag.keys().collect::<Vec<_>>(), ["other"]);
    let mut records = Vec::new();
    for o in &by_tag["other"] {
        // The json encoder: a plain compact array and a newline.
        let doc = parse(&o.content);
        let mut layout = String::new();
        compact(&doc, &mut layout);
        layout.push('\n');
        assert_eq!(
            std::str::from_utf8(&o.content).unwrap(),
            layout,
            "{}",
            o.key
        );
        let J::Arr(items) = doc else {
            panic!("{}: not a JSON array", o.key)
        };
        assert_eq!(num_records(o), items.len(), "{}: num-records", o.key);
        records.extend(items);
    }
    let skipdata = check_logstatus("other", records, &expected["other"], run.window);
    assert!(skipdata > 0);
    eprintln!(
        "allinone.yml: {} objects, {} OK records, {skipdata} SKIPDATA",
        run.objects.len(),
        expected["other"].len()
    );
    assert!(
        expected["other"]
            .iter()
            .any(|r| r.str("Status") == Some("STARTED"))
    );
}

// ---------------------------------------------------------------------------------------------
// awsflowlogs (docs/awsflowlogs.md §1, §2).

/// The IANA protocol number of a flow.
fn iana_protocol(flow: &Value) -> Option<i64> {
    match flow["Transport"]["Protocol"].as_str() {
        Some("TCP") => return Some(6),
        Some("UDP") => return Some(17),
        Some("SCTP") => return Some(132),
        _ => {}
    }
    let layers = flow["LayersPath"].as_str().unwrap_or("");
    if layers.contains("ICMPv6") {
        Some(58)
    } else if layers.contains("ICMPv4") {
        Some(1)
    } else {
        None
    }
}

/// One AWS v2 line (comma-separated, as the shipped file keeps the CSV default) for a flow.
fn aws_row(flow: &Value) -> String {
    let window = &flow["LastUpdateMetric"];
    assert!(!window.is_null(), "simulated flows carry LastUpdateMetric");
    let transport = &flow["Transport"];
    let port = |k: &str| {
        if transport.is_null() {
            "0".to_string() // ICMP: AWS writes 0
        } else {
            int(&transport[k]).to_string()
        }
    };
    let fields = [
        "2".to_string(),
        "12345678".to_string(),
        int(&flow["Link"]["ID"]).to_string(),
        flow["Network"]["A"].as_str().unwrap().to_string(),
        flow["Network"]["B"].as_str().unwrap().to_string(),
        port("A"),
        port("B"),
        iana_protocol(flow).map_or("-".into(), |p| p.to_string()),
        (int(&window["ABPackets"]) + int(&window["BAPackets"])).to_string(),
        (int(&window["ABBytes"]) + int(&window["BABytes"])).to_string(),
        (int(&window["Start"]) / 1000).to_string(),
        (int(&window["Last"]) / 1000).to_string(),
        "ACCEPT".to_string(),
        "OK".to_string(),
    ];
    fields.join(",")
}

#[test]
fn awsflowlogs_yml() {
    let dir = tempfile::tempdir().unwrap();
    let (_, run) = run_shipped("awsflowlogs.yml", 23, dir.path());
    let masks = private_masks();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for flow in &run.sent {
        let tag = tag(flow, &masks);
        if tag != "other" {
            expected
                .entry(tag.to_string())
                .or_default()
                .push(aws_row(flow));
        }
    }
    let by_tag = objects_by_tag(&run.objects, "gz", "text/csv", true);
    assert_eq!(
        by_tag.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    let header = "version,account-id,interface-id,srcaddr,dstaddr,srcport,dstport,protocol,packets,bytes,start,end,action,log-status";
    for (tag, objects) in &by_tag {
        let mut rows = Vec::new();
        for o in objects {
            let text = std::str::from_utf8(&o.content).unwrap();
            assert!(text.ends_with('\n'), "{}", o.key);
            let mut lines = text.lines();
            assert_eq!(lines.next(), Some(header), "{}: header", o.key);
            let body: Vec<String> = lines.map(String::from).collect();
            // logstatus passes AWS records through: no NODATA/SKIPDATA lines.
            assert_eq!(num_records(o), body.len(), "{}: num-records", o.key);
            rows.extend(body);
        }
        let want = &expected[tag];
        for (i, (g, w)) in rows.iter().zip(want).enumerate() {
            assert_eq!(g, w, "{tag}: row {i}");
        }
        assert_eq!(rows.len(), want.len(), "{tag}: one row per flow");
    }
    eprintln!(
        "awsflowlogs.yml: {} objects, rows per tag {:?}",
        run.objects.len(),
        expected
            .iter()
            .map(|(t, r)| (t, r.len()))
            .collect::<Vec<_>>()
    );
    assert!(
        expected
            .values()
            .flatten()
            .any(|r| r.split(',').nth(7) == Some("1")),
        "an ICMP flow is covered"
    );
}

// ---------------------------------------------------------------------------------------------
// vpclogs (docs/vpclogs.md, docs/stages.md §6.4, §8.2).

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp(ms.div_euclid(1000), 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The flow-log record of a flow; `None` without a transport layer.
fn vpclogs_record(flow: &Value, world: &World) -> Option<J> {
    let transport = &flow["Transport"];
    if transport.is_null() {
        return None;
    }
    assert!(
        flow["TCPMetric"].is_null(),
        "the simulator sends no TCPMetric"
    );
    let window = &flow["LastUpdateMetric"];
    let metric = &flow["Metric"];
    let initiator = flow["Network"]["A"].as_str().unwrap();
    let target = flow["Network"]["B"].as_str().unwrap();
    // Walk the capture node's addresses in order: the first equal to either end decides.
    let direction = world
        .node_ips(flow["NodeTID"].as_str().unwrap())
        .iter()
        .find_map(|ip| {
            if *ip == initiator {
                Some("O")
            } else if *ip == target {
                Some("I")
            } else {
                None
            }
        });
    let protocol = match transport["Protocol"].as_str().unwrap() {
        "TCP" => 6,
        "UDP" => 17,
        "SCTP" => 132,
        other => panic!("transport {other}"),
    };
    let ether = match flow["Network"]["Protocol"].as_str() {
        Some("IPV4") => Some(s("IPv4")),
        Some("IPV6") => Some(s("IPv6")),
        _ => None,
    };
    Some(obj(vec![
        ("start_time", Some(s(&rfc3339(int(&window["Start"]))))),
        ("end_time", Some(s(&rfc3339(int(&window["Last"]))))),
        (
            "connection_start_time",
            Some(s(&rfc3339(int(&metric["Start"])))),
        ),
        ("direction", direction.map(s)),
        ("initiator_ip", Some(s(initiator))),
        ("target_ip", Some(s(target))),
        ("initiator_port", Some(n(int(&transport["A"])))),
        ("target_port", Some(n(int(&transport["B"])))),
        ("transport_protocol", Some(n(protocol))),
        ("ether_type", ether),
        (
            "was_initiated",
            Some(J::Bool(int(&metric["Start"]) >= int(&window["Start"]))),
        ),
        (
            "was_terminated",
            Some(J::Bool(int(&flow["FinishType"]) != 0)),
        ),
        (
            "cumulative_bytes_from_initiator",
            Some(n(int(&metric["ABBytes"]))),
        ),
        (
            "cumulative_packets_from_initiator",
            Some(n(int(&metric["ABPackets"]))),
        ),
        (
            "cumulative_bytes_from_target",
            Some(n(int(&metric["BABytes"]))),
        ),
        (
            "cumulative_packets_from_target",
            Some(n(int(&metric["BAPackets"]))),
        ),
        ("bytes_from_initiator", Some(n(int(&window["ABBytes"])))),
        ("packets_from_initiator", Some(n(int(&window["ABPackets"])))),
        ("bytes_from_target", Some(n(int(&window["BABytes"])))),
        ("packets_from_target", Some(n(int(&window["BAPackets"])))),
    ]))
}

#[test]
fn vpclogs_yml() {
    let dir = tempfile::tempdir().unwrap();
    let (world, run) = run_shipped("vpclogs.yml", 24, dir.path());
    // No masks, no filter: everything is `other`; flows without transport are dropped.
    let expected: Vec<J> = run
        .sent
        .iter()
        .filter_map(|f| vpclogs_record(f, &world))
        .collect();
    assert!(expected.len() < run.sent.len(), "ICMP flows are dropped");
    let by_tag = objects_by_tag(&run.objects, "json", "application/json", false);
    assert_eq!(by_tag.keys().collect::<Vec<_>>(), ["other"]);
    let mut records = Vec::new();
    let mut bytes = 0;
    for o in &by_tag["other"] {
        bytes += o.content.len();
        let doc = parse(&o.content);
        let mut layout = String::new();
        compact(&doc, &mut layout);
        layout.push('\n');
        assert_eq!(
            std::str::from_utf8(&o.content).unwrap(),
            layout,
            "{}",
            o.key
        );
        assert_eq!(
            doc.keys(),
            [
                "capture_end_time",
                "capture_start_time",
                "flow_logs",
                "number_of_flow_logs",
                "state",
                "version"
            ],
            "{}: header keys, sorted",
            o.key
        );
        let m = &o.meta["metadata"];
        let ts = |k: &str| m[k].as_str().unwrap().parse::<i64>().unwrap();
        assert_eq!(
            doc.str("capture_start_time"),
            Some(rfc3339(ts("first-timestamp")).as_str())
        );
        assert_eq!(
            doc.str("capture_end_time"),
            Some(rfc3339(ts("last-timestamp")).as_str())
        );
        assert_eq!(doc.str("state"), Some("ok"));
        assert_eq!(doc.str("version"), Some("0.0.1"));
        let Some(J::Arr(logs)) = doc.get("flow_logs") else {
            panic!("{}: flow_logs is not an array", o.key)
        };
        assert_eq!(doc.int("number_of_flow_logs"), Some(logs.len() as i64));
        assert_eq!(num_records(o), logs.len(), "{}: num-records", o.key);
        records.extend(logs.iter().cloned());
    }
    assert_same_records("vpclogs", &records, &expected);
    eprintln!(
        "vpclogs.yml: {} objects, {} flow logs of {} flows sent",
        run.objects.len(),
        records.len(),
        run.sent.len()
    );
    for d in ["O", "I"] {
        assert!(
            expected.iter().any(|r| r.str("direction") == Some(d)),
            "direction {d} is covered"
        );
    }
    assert!(expected.iter().any(|r| r.get("direction").is_none()));
    // The account file counts every byte written.
    let account: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("account.json")).unwrap()).unwrap();
    assert_eq!(account["version"], "1.1.0");
    assert_eq!(account["accumulate-bytes"], bytes, "{account}");
}

//! The `prom_sky_con` store (docs/stages.md §9.3): instead of objects, Prometheus gauges per
//! connection (from the flows) and per network interface (from the analyzer's topology), with
//! upstream's names, labels and cleanup, and its bugs decided (§16 item 16).
//!
//! The gauges are shared with whoever serves them: `sluice run` on `/metrics` at the
//! configured port, as upstream; `sluice serve` on `GET /v1/pipelines/{id}/metrics`, with no
//! port of the tenant's. Both hold at most [`MAX_CONNECTIONS`] connections and
//! [`MAX_INTERFACES`] interfaces (the oldest go first), so a scrape stays bounded.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::config::PromSkyConOptions;
use crate::metrics::{DropReason, PipelineStats, escape_label};
use crate::pipeline::record::Record;
use crate::skydive::flow::Flow;
use crate::skydive::topology::TopologyClient;

/// Seconds without a flow before a connection's series go, when the file says 0 or nothing.
pub const DEFAULT_CONNECTION_TIMEOUT_S: u64 = 60;
/// How often expired connections and interfaces are removed (upstream's period).
pub const CLEANUP_EVERY_MS: i64 = 120_000;
/// How often the interfaces are read from the analyzer (upstream's period).
pub const INTERFACE_POLL_EVERY: Duration = Duration::from_secs(20);
/// Connections kept at most; past it the least recently seen goes.
pub const MAX_CONNECTIONS: usize = 10_000;
/// Interfaces kept at most; past it the least recently seen goes.
pub const MAX_INTERFACES: usize = 2_000;
/// Upstream's query for the interfaces, sent as it wrote it.
pub const INTERFACE_QUERY: &str = "G.V().Has('EncapType', 'ether')";

const INITIATOR_TO_TARGET: &str = "initiator_to_target";
const TARGET_TO_INITIATOR: &str = "target_to_initiator";

/// The interface gauges: name suffix and the `Metadata.Metric` member it shows.
const INTERFACE_GAUGES: [(&str, &str); 11] = [
    ("rx_bytes", "RxBytes"),
    ("tx_bytes", "TxBytes"),
    ("rx_packets", "RxPackets"),
    ("tx_packets", "TxPackets"),
    ("rx_dropped", "RxDropped"),
    ("tx_dropped", "TxDropped"),
    ("rx_errors", "RxErrors"),
    ("tx_errors", "TxErrors"),
    ("rx_missed_errors", "RxMissedErrors"),
    ("tx_missed_errors", "TxMissedErrors"),
    ("collisions", "Collisions"),
];

/// Entries kept in the order they were last seen, at most `cap`.
#[derive(Debug)]
struct Aged<K, V> {
    entries: HashMap<K, (V, (i64, u64))>,
    order: BTreeMap<(i64, u64), K>,
    next: u64,
    cap: usize,
}

impl<K: Clone + Eq + Hash, V> Aged<K, V> {
    fn new(cap: usize) -> Self {
        Aged {
            entries: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            cap,
        }
    }

    /// The entry of `key` seen at `seconds`, made by `make` if new (the least recently seen
    /// entry goes if the map is full).
    fn touch(&mut self, key: &K, seconds: i64, make: impl FnOnce() -> V) -> &mut V {
        let age = (seconds, self.next);
        self.next += 1;
        if let Some((_, old)) = self.entries.get(key) {
            self.order.remove(old);
        } else if self.entries.len() >= self.cap
            && let Some((_, oldest)) = self.order.pop_first()
        {
            self.entries.remove(&oldest);
        }
        self.order.insert(age, key.clone());
        let entry = self
            .entries
            .entry(key.clone())
            .or_insert_with(|| (make(), age));
        entry.1 = age;
        &mut entry.0
    }

    /// Removes the entries last seen at or before `seconds`.
    fn expire(&mut self, seconds: i64) {
        while let Some(entry) = self.order.first_entry() {
            if entry.key().0 > seconds {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }

    fn values(&self) -> impl Iterator<Item = &V> {
        self.order
            .values()
            .filter_map(|k| self.entries.get(k).map(|e| &e.0))
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }
}

/// A connection's labels, fixed when it is first seen: the initiator is the flow's A side.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConnectionLabels {
    initiator_ip: String,
    target_ip: String,
    initiator_port: String,
    target_port: String,
    node_tid: String,
    protocol: String,
}

#[derive(Debug, Clone)]
struct Connection {
    labels: ConnectionLabels,
    ab_bytes: i64,
    ba_bytes: i64,
    ab_packets: i64,
    ba_packets: i64,
    rtt: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct InterfaceLabels {
    interface_name: String,
    host: String,
    interface_type: String,
    ipv4: String,
    ipv6: String,
    node_tid: String,
}

#[derive(Debug, Clone)]
struct Interface {
    labels: InterfaceLabels,
    values: [f64; 11],
}

#[derive(Debug)]
struct Gauges {
    /// By (L3TrackingID, NodeTID): each capture point of a connection has its own series.
    connections: Aged<(String, String), Connection>,
    /// By the interface's TID.
    interfaces: Aged<String, Interface>,
}

impl Default for Gauges {
    fn default() -> Self {
        Gauges {
            connections: Aged::new(MAX_CONNECTIONS),
            interfaces: Aged::new(MAX_INTERFACES),
        }
    }
}

/// One pipeline's gauges, shared between its store and whoever serves them.
#[derive(Debug, Default)]
pub struct PromGauges {
    gauges: Mutex<Gauges>,
}

impl PromGauges {
    fn lock(&self) -> std::sync::MutexGuard<'_, Gauges> {
        self.gauges.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets a flow's connection series at `now_ms`; false for a flow they can't show (no
    /// transport layer, as upstream, or no counters).
    pub fn set_flow(&self, flow: &Flow, now_ms: i64) -> bool {
        let (Some(transport), Some(metric)) = (&flow.transport, &flow.metric) else {
            return false;
        };
        let network = flow.network.as_ref();
        let key = (flow.l3_tracking_id.clone(), flow.node_tid.clone());
        let mut g = self.lock();
        let connection = g
            .connections
            .touch(&key, now_ms.div_euclid(1000), || Connection {
                labels: ConnectionLabels {
                    initiator_ip: network.map(|n| n.a.clone()).unwrap_or_default(),
                    target_ip: network.map(|n| n.b.clone()).unwrap_or_default(),
                    initiator_port: transport.a.to_string(),
                    target_port: transport.b.to_string(),
                    node_tid: flow.node_tid.clone(),
                    protocol: transport.protocol.as_str().to_string(),
                },
                ab_bytes: 0,
                ba_bytes: 0,
                ab_packets: 0,
                ba_packets: 0,
                rtt: 0,
            });
        connection.ab_bytes = metric.ab_bytes;
        connection.ba_bytes = metric.ba_bytes;
        connection.ab_packets = metric.ab_packets;
        connection.ba_packets = metric.ba_packets;
        connection.rtt = metric.rtt;
        true
    }

    /// Sets the interface series from the analyzer's answer to [`INTERFACE_QUERY`] at
    /// `now_ms`. A node without `Host`, `Metadata.Name`, `Metadata.Type` or `Metadata.TID` is
    /// skipped (upstream crashed); a missing counter is 0. Returns the interfaces set.
    pub fn set_interfaces(&self, answer: &Value, now_ms: i64) -> usize {
        let mut nodes = Vec::new();
        collect_nodes(answer, &mut nodes);
        let mut g = self.lock();
        let mut set = 0;
        for node in nodes {
            let Ok(node) = InterfaceNode::deserialize(node) else {
                continue;
            };
            let m = &node.metadata;
            let (Some(name), Some(kind), Some(tid)) = (&m.name, &m.kind, &m.tid) else {
                continue;
            };
            let first = |list: &Option<Vec<Value>>| {
                list.as_ref()
                    .and_then(|l| l.first())
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            // Labels follow the node: an address or a name that changes shows as it is now
            // (upstream kept the first ones it saw).
            let labels = InterfaceLabels {
                interface_name: name.clone(),
                host: node.host.clone(),
                interface_type: kind.clone(),
                ipv4: first(&m.ipv4),
                ipv6: first(&m.ipv6),
                node_tid: tid.clone(),
            };
            let mut values = [0.0; 11];
            for (value, (_, member)) in values.iter_mut().zip(INTERFACE_GAUGES) {
                *value = m
                    .metric
                    .as_ref()
                    .and_then(|metric| metric.get(member))
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
            }
            let interface = g
                .interfaces
                .touch(tid, now_ms.div_euclid(1000), || Interface {
                    labels: labels.clone(),
                    values,
                });
            interface.labels = labels;
            interface.values = values;
            set += 1;
        }
        set
    }

    /// Removes the connections and interfaces not seen for `timeout_s` (upstream: last seen at
    /// or before now − timeout, in seconds).
    pub fn expire(&self, now_ms: i64, timeout_s: i64) {
        let before = now_ms.div_euclid(1000) - timeout_s;
        let mut g = self.lock();
        g.connections.expire(before);
        g.interfaces.expire(before);
    }

    /// Forgets every series (the pipeline no longer has this store).
    pub fn clear(&self) {
        let mut g = self.lock();
        g.connections.clear();
        g.interfaces.clear();
    }

    /// How many connections and interfaces are shown.
    pub fn counts(&self) -> (usize, usize) {
        let g = self.lock();
        (g.connections.len(), g.interfaces.len())
    }

    /// The Prometheus text format (0.0.4) of every gauge, series sorted by labels.
    pub fn render(&self) -> String {
        let g = self.lock();
        let mut out = String::new();
        let connections: Vec<&Connection> = {
            let mut c: Vec<&Connection> = g.connections.values().collect();
            c.sort_by(|a, b| connection_order(&a.labels).cmp(&connection_order(&b.labels)));
            c
        };
        type Pick = fn(&Connection) -> [Option<i64>; 2];
        let families: [(&str, &str, Pick); 3] = [
            (
                "skydive_network_connection_total_bytes",
                "Bytes transmitted on the connection, per direction.",
                |c| [Some(c.ab_bytes), Some(c.ba_bytes)],
            ),
            (
                "skydive_network_connection_total_packets",
                "Packets transmitted on the connection, per direction.",
                |c| [Some(c.ab_packets), Some(c.ba_packets)],
            ),
            (
                "skydive_network_connection_rtt_nanoseconds",
                "Round-trip time of the connection (initiator to target only).",
                |c| [Some(c.rtt), None],
            ),
        ];
        for (name, help, pick) in families {
            family(&mut out, name, help);
            for c in &connections {
                let directions = [INITIATOR_TO_TARGET, TARGET_TO_INITIATOR];
                for (value, direction) in pick(c).into_iter().zip(directions) {
                    if let Some(value) = value {
                        let labels = connection_labels(&c.labels, direction);
                        sample(&mut out, name, &labels, value as f64);
                    }
                }
            }
        }
        let mut interfaces: Vec<&Interface> = g.interfaces.values().collect();
        interfaces.sort_by(|a, b| a.labels.node_tid.cmp(&b.labels.node_tid));
        for (i, (suffix, member)) in INTERFACE_GAUGES.iter().enumerate() {
            let name = format!("skydive_network_interface_{suffix}");
            family(
                &mut out,
                &name,
                &format!("The interface's {member} counter, from the analyzer's topology."),
            );
            for interface in &interfaces {
                sample(
                    &mut out,
                    &name,
                    &interface_labels(&interface.labels),
                    interface.values[i],
                );
            }
        }
        out
    }
}

fn connection_order(l: &ConnectionLabels) -> (&str, &str, &str, &str, &str) {
    (
        &l.node_tid,
        &l.initiator_ip,
        &l.target_ip,
        &l.initiator_port,
        &l.target_port,
    )
}

fn family(out: &mut String, name: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n");
}

fn sample(out: &mut String, name: &str, labels: &str, value: f64) {
    let _ = writeln!(out, "{name}{{{labels}}} {value}");
}

fn connection_labels(l: &ConnectionLabels, direction: &str) -> String {
    format!(
        "initiator_ip=\"{}\",target_ip=\"{}\",initiator_port=\"{}\",target_port=\"{}\",direction=\"{direction}\",node_tid=\"{}\",protocol=\"{}\"",
        escape_label(&l.initiator_ip),
        escape_label(&l.target_ip),
        escape_label(&l.initiator_port),
        escape_label(&l.target_port),
        escape_label(&l.node_tid),
        escape_label(&l.protocol),
    )
}

fn interface_labels(l: &InterfaceLabels) -> String {
    format!(
        "interface_name=\"{}\",host=\"{}\",interface_type=\"{}\",ipv4=\"{}\",ipv6=\"{}\",node_tid=\"{}\"",
        escape_label(&l.interface_name),
        escape_label(&l.host),
        escape_label(&l.interface_type),
        escape_label(&l.ipv4),
        escape_label(&l.ipv6),
        escape_label(&l.node_tid),
    )
}

/// An interface node of the topology, the parts the gauges read.
#[derive(Debug, Deserialize)]
struct InterfaceNode {
    #[serde(rename = "Host", default)]
    host: String,
    #[serde(rename = "Metadata", default)]
    metadata: InterfaceMetadata,
}

#[derive(Debug, Default, Deserialize)]
struct InterfaceMetadata {
    #[serde(rename = "Name", default, deserialize_with = "lenient")]
    name: Option<String>,
    #[serde(rename = "Type", default, deserialize_with = "lenient")]
    kind: Option<String>,
    #[serde(rename = "TID", default, deserialize_with = "lenient")]
    tid: Option<String>,
    #[serde(rename = "IPV4", default, deserialize_with = "lenient")]
    ipv4: Option<Vec<Value>>,
    #[serde(rename = "IPV6", default, deserialize_with = "lenient")]
    ipv6: Option<Vec<Value>>,
    #[serde(rename = "Metric", default, deserialize_with = "lenient")]
    metric: Option<serde_json::Map<String, Value>>,
}

/// A value of the expected type, else `None` (the analyzer's metadata is free-form).
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let value = Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// The node objects of an answer; paths (nested arrays) are flattened.
fn collect_nodes<'a>(answer: &'a Value, out: &mut Vec<&'a Value>) {
    match answer {
        Value::Array(items) => {
            for item in items {
                collect_nodes(item, out);
            }
        }
        Value::Object(_) => out.push(answer),
        _ => {}
    }
}

/// The configured store: it feeds the gauges and cleans them up on the pipeline's clock.
#[derive(Debug)]
pub struct PromSkyConStore {
    gauges: Arc<PromGauges>,
    timeout_s: i64,
    next_cleanup_ms: i64,
    /// Stops the interface poller when the store goes.
    _poller: Option<DropGuard>,
}

impl PromSkyConStore {
    /// A store feeding `gauges`; the first cleanup runs at once, as upstream's. With `client`
    /// the interfaces are read from the analyzer every [`INTERFACE_POLL_EVERY`], on a task that
    /// ends with the store (needs a tokio runtime).
    pub fn new(
        options: &PromSkyConOptions,
        gauges: Arc<PromGauges>,
        client: Option<TopologyClient>,
        now_ms: i64,
    ) -> Self {
        let timeout_s = match options.connection_timeout {
            0 => DEFAULT_CONNECTION_TIMEOUT_S,
            t => t,
        };
        let poller = client.map(|client| {
            let cancel = CancellationToken::new();
            tokio::spawn(poll_interfaces(client, gauges.clone(), cancel.clone()));
            cancel.drop_guard()
        });
        PromSkyConStore {
            gauges,
            timeout_s: i64::try_from(timeout_s).unwrap_or(i64::MAX),
            next_cleanup_ms: now_ms,
            _poller: poller,
        }
    }

    /// The gauges it feeds.
    pub fn gauges(&self) -> &Arc<PromGauges> {
        &self.gauges
    }

    /// Sets the series of one message's flows; what they can't show is dropped as
    /// `unsupported`. Tags don't matter (as upstream).
    pub fn store(
        &mut self,
        now_ms: i64,
        input: Vec<(&'static str, Vec<Record>)>,
        stats: &PipelineStats,
    ) {
        let (mut shown, mut unsupported) = (0, 0);
        for (_, records) in input {
            for record in records {
                match &record {
                    Record::Flow(flow) if self.gauges.set_flow(flow, now_ms) => shown += 1,
                    _ => unsupported += 1,
                }
            }
        }
        stats
            .records_written
            .fetch_add(shown, std::sync::atomic::Ordering::Relaxed);
        stats.count_drop(DropReason::Unsupported, unsupported);
        self.tick(now_ms);
    }

    /// Cleans up when due.
    pub fn tick(&mut self, now_ms: i64) {
        if now_ms >= self.next_cleanup_ms {
            self.gauges.expire(now_ms, self.timeout_s);
            self.next_cleanup_ms = now_ms + CLEANUP_EVERY_MS;
        }
    }

    /// When [`PromSkyConStore::tick`] should next run.
    pub fn next_deadline_ms(&self) -> i64 {
        self.next_cleanup_ms
    }
}

/// Reads the interfaces now and every [`INTERFACE_POLL_EVERY`] until cancelled; a failed
/// query is logged (at most once a minute) and tried again at the next period.
async fn poll_interfaces(
    client: TopologyClient,
    gauges: Arc<PromGauges>,
    cancel: CancellationToken,
) {
    let mut ticks = tokio::time::interval(INTERFACE_POLL_EVERY);
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match client.query(INTERFACE_QUERY).await {
            Ok(answer) => {
                let set = gauges.set_interfaces(&answer, crate::now_ms());
                tracing::debug!(interfaces = set, "prom_sky_con: interfaces read");
            }
            Err(e) => {
                if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    last_warning = Some(tokio::time::Instant::now());
                    tracing::warn!(analyzer = %client.url(), error = %e, "prom_sky_con: cannot read the interfaces");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

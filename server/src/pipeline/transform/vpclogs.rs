//! `vpclogs`: IBM Cloud VPC Flow Logs records (docs/stages.md §6.4, docs/vpclogs.md §1).
//!
//! Values follow IBM's published format where upstream departed from it (direction `I`/`O`,
//! action `accepted`/`rejected`, zero counters written); `docs/vpclogs.md` lists every
//! difference. Direction needs the capturing node's addresses, asked of the analyzer's topology
//! API through [`NodeIps`] and cached for 10 minutes per TID.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::DateTime;
use futures_util::future::BoxFuture;
use serde::ser::{Serialize, SerializeStruct, Serializer};
use tokio::time::Instant;

use crate::config::ExporterConfig;
use crate::pipeline::record::CsvRow;
use crate::skydive::flow::{Flow, FlowMetric, FlowProtocol};
use crate::skydive::topology::{TopologyClient, TopologyError};

/// How long a TID's addresses are trusted (upstream's cache TTL).
pub const NODE_IPS_TTL: Duration = Duration::from_secs(600);

/// How long a failed lookup is remembered, so a down analyzer doesn't stall every flow.
pub const NODE_IPS_FAILURE_TTL: Duration = Duration::from_secs(30);

/// Cached TIDs above which expired entries are swept.
const CACHE_SWEEP_AT: usize = 4096;

/// Why the addresses of a capture node could not be found.
#[derive(Debug, thiserror::Error)]
pub enum NodeIpsError {
    /// The TID would have to be escaped inside the gremlin string.
    #[error("TID {0:?} can't be used in a gremlin query")]
    BadTid(String),
    /// The query failed.
    #[error("topology query failed: {0}")]
    Topology(TopologyError),
    /// The query matched no node.
    #[error("no node has TID {0}")]
    NotFound(String),
}

/// Finds the addresses of the node with a given TID (its `IPV4` metadata, as given).
pub trait NodeIps: Send + Sync + fmt::Debug {
    /// The node's `IPV4` list, possibly with `/prefix` suffixes; empty when it has none.
    fn node_ips<'a>(&'a self, tid: &'a str) -> BoxFuture<'a, Result<Vec<String>, NodeIpsError>>;
}

/// [`NodeIps`] over the analyzer's gremlin REST API (`POST /api/topology`, docs/stages.md §14),
/// with the same client (TLS, egress policy, answer size cap) as every other topology query.
impl NodeIps for TopologyClient {
    fn node_ips<'a>(&'a self, tid: &'a str) -> BoxFuture<'a, Result<Vec<String>, NodeIpsError>> {
        Box::pin(async move {
            if tid.contains(['"', '\\']) {
                return Err(NodeIpsError::BadTid(tid.to_string()));
            }
            let node = match self
                .first_node(&format!("G.V().Has(\"TID\", \"{tid}\")"))
                .await
            {
                Ok(node) => node,
                Err(TopologyError::NoResult) => return Err(NodeIpsError::NotFound(tid.into())),
                Err(e) => return Err(NodeIpsError::Topology(e)),
            };
            Ok(match node.get("IPV4") {
                Some(serde_json::Value::Array(ips)) => ips
                    .iter()
                    .filter_map(|ip| ip.as_str().map(str::to_string))
                    .collect(),
                Some(serde_json::Value::String(ip)) => vec![ip.clone()],
                _ => Vec::new(),
            })
        })
    }
}

/// Which side the first packet of the connection came from, seen from the capture node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received by the node (`I`; upstream `inbound`).
    Inbound,
    /// Sent by the node (`O`; upstream `outbound`).
    Outbound,
}

impl Direction {
    /// IBM's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "I",
            Direction::Outbound => "O",
        }
    }
}

/// What the two capture points agreed on (set by the `action` mangler).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Seen on both sides (`accepted`; upstream `A`).
    Accepted,
    /// Not confirmed by the other side in time (`rejected`; upstream `R`).
    Rejected,
}

impl Action {
    /// IBM's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accepted => "accepted",
            Action::Rejected => "rejected",
        }
    }
}

/// One IBM VPC Flow Logs record (`flow_logs[]` element), with what the `action` mangler needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcLog {
    /// The flow's UUID (not written).
    pub uuid: String,
    /// The capturing interface's TID (not written).
    pub node_tid: String,
    /// Pairs the two capture points' flows (not written).
    pub l3_tracking_id: String,
    /// `direction`, when the node's addresses were found.
    pub direction: Option<Direction>,
    /// `action`, when the `action` mangler decided it.
    pub action: Option<Action>,
    /// `initiator_ip`: `Network.A`.
    pub initiator_ip: String,
    /// `target_ip`: `Network.B`.
    pub target_ip: String,
    /// `initiator_port`: `Transport.A`.
    pub initiator_port: i64,
    /// `target_port`: `Transport.B`.
    pub target_port: i64,
    /// `transport_protocol`: the IANA number.
    pub transport_protocol: Option<u8>,
    /// `ether_type`: `IPv4` or `IPv6`.
    pub ether_type: Option<&'static str>,
    /// `was_initiated`: the connection started in this window.
    pub was_initiated: bool,
    /// `was_terminated`: the connection ended in this window.
    pub was_terminated: bool,
    /// Cumulative counters; `Start` is the connection start.
    pub metric: FlowMetric,
    /// This window's counters and bounds.
    pub last_update_metric: FlowMetric,
}

const CSV_HEADER: &[&str] = &[
    "start_time",
    "end_time",
    "connection_start_time",
    "direction",
    "action",
    "initiator_ip",
    "target_ip",
    "initiator_port",
    "target_port",
    "transport_protocol",
    "ether_type",
    "was_initiated",
    "was_terminated",
    "cumulative_bytes_from_initiator",
    "cumulative_packets_from_initiator",
    "cumulative_bytes_from_target",
    "cumulative_packets_from_target",
    "bytes_from_initiator",
    "packets_from_initiator",
    "bytes_from_target",
    "packets_from_target",
];

/// RFC 3339 UTC with whole seconds, as upstream (`time.Unix(ms/1000, 0)`).
pub fn rfc3339(ms: i64) -> String {
    DateTime::from_timestamp(ms / 1000, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

impl VpcLog {
    /// Builds a record from a flow with a transport layer (others give `None`). `node_ips` are
    /// the capture node's addresses without `/prefix`.
    pub fn from_flow(flow: &Flow, node_ips: &[String]) -> Option<Self> {
        let transport = flow.transport.as_ref()?;
        let network = flow.network.as_ref();
        let initiator_ip = network.map(|n| n.a.clone()).unwrap_or_default();
        let target_ip = network.map(|n| n.b.clone()).unwrap_or_default();
        let direction = node_ips.iter().find_map(|ip| {
            if !initiator_ip.is_empty() && *ip == initiator_ip {
                Some(Direction::Outbound)
            } else if !target_ip.is_empty() && *ip == target_ip {
                Some(Direction::Inbound)
            } else {
                None
            }
        });
        // Without counters, the flow so far stands for the window (and the reverse).
        let whole = FlowMetric {
            start: flow.start,
            last: flow.last,
            ..FlowMetric::default()
        };
        let metric = flow.metric.or(flow.last_update_metric).unwrap_or(whole);
        let last_update_metric = flow.last_update_metric.unwrap_or(metric);
        let tcp_ended = flow.tcp_metric.is_some_and(|m| {
            m.ab_fin_start != 0 || m.ba_fin_start != 0 || m.ab_rst_start != 0 || m.ba_rst_start != 0
        });
        Some(VpcLog {
            uuid: flow.uuid.clone(),
            node_tid: flow.node_tid.clone(),
            l3_tracking_id: flow.l3_tracking_id.clone(),
            direction,
            action: None,
            initiator_ip,
            target_ip,
            initiator_port: transport.a,
            target_port: transport.b,
            transport_protocol: transport.protocol.iana_number(),
            ether_type: match network.map(|n| n.protocol) {
                Some(FlowProtocol::Ipv4) => Some("IPv4"),
                Some(FlowProtocol::Ipv6) => Some("IPv6"),
                _ => None,
            },
            // The connection's first packet falls inside this window.
            was_initiated: metric.start >= last_update_metric.start,
            was_terminated: tcp_ended || !flow.finish_type.is_not_finished(),
            metric,
            last_update_metric,
        })
    }

    /// The CSV header (IBM's field names).
    pub fn csv_header(&self) -> &'static [&'static str] {
        CSV_HEADER
    }

    /// The CSV fields, matching [`VpcLog::csv_header`]; absent values are empty.
    pub fn csv_row(&self, row: &mut CsvRow) {
        let (m, l) = (&self.metric, &self.last_update_metric);
        row.push(rfc3339(l.start));
        row.push(rfc3339(l.last));
        row.push(rfc3339(m.start));
        row.push(self.direction.map_or("", Direction::as_str));
        row.push(self.action.map_or("", Action::as_str));
        row.push(&self.initiator_ip);
        row.push(&self.target_ip);
        row.push(self.initiator_port);
        row.push(self.target_port);
        row.push(
            self.transport_protocol
                .map_or(String::new(), |p| p.to_string()),
        );
        row.push(self.ether_type.unwrap_or(""));
        row.push(self.was_initiated);
        row.push(self.was_terminated);
        for v in [
            m.ab_bytes,
            m.ab_packets,
            m.ba_bytes,
            m.ba_packets,
            l.ab_bytes,
            l.ab_packets,
            l.ba_bytes,
            l.ba_packets,
        ] {
            row.push(v);
        }
    }
}

impl Serialize for VpcLog {
    /// Upstream's key order; unknown direction, action and addresses are left out, counters
    /// are always written (IBM's format).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (m, l) = (&self.metric, &self.last_update_metric);
        let mut st = s.serialize_struct("VpcLog", 21)?;
        st.serialize_field("start_time", &rfc3339(l.start))?;
        st.serialize_field("end_time", &rfc3339(l.last))?;
        st.serialize_field("connection_start_time", &rfc3339(m.start))?;
        match self.direction {
            Some(d) => st.serialize_field("direction", d.as_str())?,
            None => st.skip_field("direction")?,
        }
        match self.action {
            Some(a) => st.serialize_field("action", a.as_str())?,
            None => st.skip_field("action")?,
        }
        for (key, ip) in [
            ("initiator_ip", &self.initiator_ip),
            ("target_ip", &self.target_ip),
        ] {
            if ip.is_empty() {
                st.skip_field(key)?;
            } else {
                st.serialize_field(key, ip)?;
            }
        }
        st.serialize_field("initiator_port", &self.initiator_port)?;
        st.serialize_field("target_port", &self.target_port)?;
        match self.transport_protocol {
            Some(p) => st.serialize_field("transport_protocol", &p)?,
            None => st.skip_field("transport_protocol")?,
        }
        match self.ether_type {
            Some(e) => st.serialize_field("ether_type", e)?,
            None => st.skip_field("ether_type")?,
        }
        st.serialize_field("was_initiated", &self.was_initiated)?;
        st.serialize_field("was_terminated", &self.was_terminated)?;
        st.serialize_field("cumulative_bytes_from_initiator", &m.ab_bytes)?;
        st.serialize_field("cumulative_packets_from_initiator", &m.ab_packets)?;
        st.serialize_field("cumulative_bytes_from_target", &m.ba_bytes)?;
        st.serialize_field("cumulative_packets_from_target", &m.ba_packets)?;
        st.serialize_field("bytes_from_initiator", &l.ab_bytes)?;
        st.serialize_field("packets_from_initiator", &l.ab_packets)?;
        st.serialize_field("bytes_from_target", &l.ba_bytes)?;
        st.serialize_field("packets_from_target", &l.ba_packets)?;
        st.end()
    }
}

#[derive(Debug)]
struct CachedIps {
    ips: Arc<[String]>,
    expires: Instant,
}

/// The configured `vpclogs` transform.
#[derive(Debug)]
pub struct VpcLogs {
    lookup: Arc<dyn NodeIps>,
    cache: HashMap<String, CachedIps>,
}

impl VpcLogs {
    /// A transform asking `lookup` for capture nodes' addresses.
    pub fn new(lookup: Arc<dyn NodeIps>) -> Self {
        VpcLogs {
            lookup,
            cache: HashMap::new(),
        }
    }

    /// From the pipeline file (the analyzer's topology API, as the other topology queries:
    /// the first of `analyzers`; upstream picked one at random).
    pub fn from_config(
        config: &ExporterConfig,
        egress: &crate::egress::EgressPolicy,
    ) -> Result<Self, TopologyError> {
        Ok(VpcLogs::new(Arc::new(TopologyClient::from_config(
            config, egress,
        )?)))
    }

    /// One flow in; flows without a transport layer give nothing.
    pub async fn transform(&mut self, flow: &Flow) -> Option<VpcLog> {
        flow.transport.as_ref()?;
        let ips = self.node_ips(&flow.node_tid).await;
        VpcLog::from_flow(flow, &ips)
    }

    /// The node's addresses without `/prefix`, from the cache when fresh. The stripped list is
    /// what is both cached and returned, so the first lookup already gives the direction.
    async fn node_ips(&mut self, tid: &str) -> Arc<[String]> {
        let now = Instant::now();
        if let Some(hit) = self.cache.get(tid)
            && hit.expires > now
        {
            return hit.ips.clone();
        }
        let (ips, ttl): (Arc<[String]>, _) = match self.lookup.node_ips(tid).await {
            Ok(ips) => (
                ips.iter()
                    .map(|ip| ip.split('/').next().unwrap_or(ip).to_string())
                    .collect(),
                NODE_IPS_TTL,
            ),
            Err(e) => {
                tracing::warn!(%tid, error = %e, "capture node addresses unknown: direction left out");
                (Arc::from([]), NODE_IPS_FAILURE_TTL)
            }
        };
        if self.cache.len() >= CACHE_SWEEP_AT {
            self.cache.retain(|_, c| c.expires > now);
        }
        self.cache.insert(
            tid.to_string(),
            CachedIps {
                ips: ips.clone(),
                expires: now + ttl,
            },
        );
        ips
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::Json;
    use axum::extract::State;
    use serde_json::Value;

    use super::*;

    pub(crate) fn vectors() -> Value {
        crate::test_vectors::json("exporter/vpclogs.json")
    }

    /// Upstream's expected JSON mapped to IBM's values: `outbound`→`O`, `inbound`→`I`,
    /// `A`→`accepted`, `R`→`rejected`; upstream leaves zero counters out, so ours are
    /// compared only where upstream has them, and must be 0 elsewhere.
    pub(crate) fn assert_matches_upstream(got: &Value, upstream: &Value, what: &str) {
        let mut want = upstream.clone();
        let w = want.as_object_mut().unwrap();
        if let Some(d) = w.get_mut("direction") {
            *d = match d.as_str().unwrap() {
                "outbound" => "O",
                "inbound" => "I",
                other => panic!("{other}"),
            }
            .into();
        }
        if let Some(a) = w.get_mut("action") {
            *a = match a.as_str().unwrap() {
                "A" => "accepted",
                "R" => "rejected",
                other => panic!("{other}"),
            }
            .into();
        }
        let g = got.as_object().unwrap();
        for (k, v) in g {
            match w.get(k) {
                Some(want) => assert_eq!(v, want, "{what}: {k}"),
                None => assert_eq!(
                    v,
                    &Value::from(0),
                    "{what}: {k} is not in upstream's output"
                ),
            }
        }
        for k in w.keys() {
            assert!(g.contains_key(k), "{what}: {k} missing");
        }
    }

    /// Upstream's key order (that of the CSV header), checked on the written bytes.
    fn assert_upstream_key_order(r: &VpcLog) {
        let text = serde_json::to_string(r).unwrap();
        let keys = crate::pipeline::transform::awsflowlogs::tests::flat_keys(&text);
        let order: Vec<&str> = CSV_HEADER
            .iter()
            .copied()
            .filter(|k| keys.iter().any(|g| g == k))
            .collect();
        assert_eq!(keys, order);
    }

    /// A real HTTP analyzer on 127.0.0.1 answering `G.V().Has("TID", "<tid>")` from a table.
    pub(crate) async fn fake_analyzer(table: Value) -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let state = (table, hits.clone());
        async fn topology(
            State((table, hits)): State<(Value, Arc<AtomicUsize>)>,
            Json(body): Json<Value>,
        ) -> Json<Value> {
            hits.fetch_add(1, Ordering::SeqCst);
            let query = body["GremlinQuery"].as_str().unwrap_or_default();
            let tid = query
                .strip_prefix("G.V().Has(\"TID\", \"")
                .and_then(|q| q.strip_suffix("\")"))
                .unwrap_or_default();
            Json(match table.get(tid) {
                Some(ips) => serde_json::json!([{
                    "ID": "n1",
                    "Metadata": {"TID": tid, "Type": "device", "IPV4": ips},
                    "Host": "node-1", "Origin": "agent.node-1",
                    "CreatedAt": 1, "UpdatedAt": 1, "DeletedAt": null, "Revision": 1
                }]),
                None => serde_json::json!([]),
            })
        }
        let app = axum::Router::new()
            .route("/api/topology", axum::routing::post(topology))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await.ok() });
        (addr, hits)
    }

    fn to_json(r: &VpcLog) -> Value {
        serde_json::to_value(r).unwrap()
    }

    #[tokio::test]
    async fn golden_direction_is_right_on_the_first_lookup_against_a_real_analyzer() {
        let v = vectors();
        let case = &v["transform_cases"][0];
        let (addr, hits) = fake_analyzer(case["node_ipv4_for_tid"].clone()).await;
        let mut t = VpcLogs::new(Arc::new(TopologyClient::new(&addr, None).unwrap()));
        let flow: Flow = serde_json::from_value(case["input_flow"].clone()).unwrap();
        for lookup in ["first", "second"] {
            let record = t.transform(&flow).await.unwrap();
            assert_upstream_key_order(&record);
            assert_matches_upstream(
                &to_json(&record),
                &case["expected_json_second_and_later_lookup"],
                lookup,
            );
        }
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "the second lookup is cached"
        );
        // An unknown TID: no direction, and upstream's output without it.
        let mut other = flow.clone();
        other.node_tid = "tid-unknown".into();
        let record = t.transform(&other).await.unwrap();
        assert_eq!(record.direction, None);
        assert_matches_upstream(
            &to_json(&record),
            &case["expected_json_first_lookup_upstream"],
            "unknown tid",
        );
    }

    #[tokio::test]
    async fn inbound_when_the_node_is_the_target_and_no_analyzer_means_no_direction() {
        let (addr, _) =
            fake_analyzer(serde_json::json!({"t": ["10.9.9.9/16", "10.0.0.2/24"]})).await;
        let mut t = VpcLogs::new(Arc::new(TopologyClient::new(&addr, None).unwrap()));
        let v = vectors();
        let mut flow: Flow =
            serde_json::from_value(v["transform_cases"][0]["input_flow"].clone()).unwrap();
        flow.node_tid = "t".into();
        assert_eq!(
            t.transform(&flow).await.unwrap().direction,
            Some(Direction::Inbound)
        );
        let mut none = VpcLogs::new(Arc::new(TopologyClient::new("127.0.0.1:1", None).unwrap()));
        assert_eq!(none.transform(&flow).await.unwrap().direction, None);
    }

    #[tokio::test]
    async fn udp_without_tcp_metric_or_counters_is_not_terminated() {
        let mut t = VpcLogs::new(Arc::new(TopologyClient::new("127.0.0.1:1", None).unwrap()));
        let mut flow: Flow = serde_json::from_str(
            r#"{"UUID":"u","Network":{"Protocol":"IPV4","A":"10.0.0.1","B":"10.0.0.2","ID":0},
                "Transport":{"Protocol":"UDP","A":5353,"B":53,"ID":0},
                "Start":1546338030000,"Last":1546338031000,"NodeTID":"x"}"#,
        )
        .unwrap();
        let r = t.transform(&flow).await.unwrap();
        assert!(!r.was_terminated);
        assert!(r.was_initiated);
        let json = to_json(&r);
        assert_eq!(json["transport_protocol"], 17);
        assert_eq!(json["start_time"], "2019-01-01T10:20:30Z");
        assert_eq!(json["end_time"], "2019-01-01T10:20:31Z");
        // Zero counters are written (IBM), not left out (upstream).
        assert_eq!(json["bytes_from_target"], 0);
        assert_eq!(json["cumulative_packets_from_initiator"], 0);
        flow.transport = None;
        assert!(
            t.transform(&flow).await.is_none(),
            "no transport, no record"
        );
    }

    #[test]
    fn csv_row_matches_header() {
        let v = vectors();
        let flow: Flow =
            serde_json::from_value(v["transform_cases"][0]["input_flow"].clone()).unwrap();
        let r = VpcLog::from_flow(&flow, &["10.0.0.1".to_string()]).unwrap();
        let mut row = CsvRow::default();
        r.csv_row(&mut row);
        assert_eq!(row.fields.len(), r.csv_header().len());
        assert_eq!(row.fields[3], "O");
    }
}

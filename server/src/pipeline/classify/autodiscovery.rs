//! `subnet_autodiscovery` (docs/stages.md §5.2): the configured masks plus one host mask
//! per Kubernetes node found in the analyzer's topology.
//!
//! Differences from upstream, on purpose: the query is retried with backoff for a bounded
//! time ([`DISCOVERY_BUDGET`]) rather than forever, after which the pipeline starts with the
//! configured masks only; and IPv6 node addresses get `/128` (upstream's `/32` made a very
//! wide IPv6 network).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::skydive::topology::{Node, TopologyClient};
use ipnet::IpNet;

/// The query for the cluster's nodes.
pub const NODES_QUERY: &str = "G.V().Has(\"Manager\", \"k8s\", \"Type\", \"node\")";

/// How long pipeline build keeps retrying the query.
pub const DISCOVERY_BUDGET: Duration = Duration::from_secs(30);

/// One address per node: the first `ExternalIP`, else the last `InternalIP`; nodes with
/// neither are skipped, as are malformed entries.
pub fn node_ips(nodes: &[Node]) -> Vec<String> {
    let mut ips = Vec::new();
    for node in nodes {
        let Some(addresses) = node
            .get("K8s.Extra.Status.Addresses")
            .and_then(|a| a.as_array())
        else {
            continue;
        };
        let mut external = None;
        let mut internal = None;
        for entry in addresses {
            let (Some(kind), Some(address)) = (
                entry.get("Type").and_then(|t| t.as_str()),
                entry.get("Address").and_then(|a| a.as_str()),
            ) else {
                continue;
            };
            match kind {
                "ExternalIP" if external.is_none() => external = Some(address),
                "InternalIP" => internal = Some(address),
                _ => {}
            }
        }
        if let Some(ip) = external.or(internal) {
            ips.push(ip.to_string());
        }
    }
    ips
}

/// `<ip>/32` for IPv4, `<ip>/128` for IPv6; `None` for text that is not an address.
pub fn host_mask(ip: &str) -> Option<IpNet> {
    Some(IpNet::from(ip.parse::<IpAddr>().ok()?))
}

/// Queries the nodes, retrying with backoff (1 s doubling to 8 s) until `budget` is spent;
/// then gives up with a warning and returns no mask.
pub async fn discover_node_masks(client: &TopologyClient, budget: Duration) -> Vec<IpNet> {
    let deadline = Instant::now() + budget;
    let mut delay = Duration::from_secs(1);
    loop {
        match client.nodes(NODES_QUERY).await {
            Ok(nodes) => {
                let masks: Vec<IpNet> = node_ips(&nodes)
                    .iter()
                    .filter_map(|ip| {
                        let mask = host_mask(ip);
                        if mask.is_none() {
                            tracing::warn!(ip, "ignoring unparsable Kubernetes node address");
                        }
                        mask
                    })
                    .collect();
                let shown: Vec<String> = masks.iter().map(ToString::to_string).collect();
                tracing::info!(masks = ?shown, "adding Kubernetes cluster nodes net masks");
                return masks;
            }
            Err(e) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    tracing::warn!(
                        analyzer = client.url(),
                        error = %e,
                        budget_s = budget.as_secs(),
                        "cannot discover Kubernetes nodes; continuing with the configured cluster_net_masks only"
                    );
                    return Vec::new();
                }
                tracing::info!(error = %e, "Kubernetes node discovery failed, retrying");
                tokio::time::sleep(delay.min(left)).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::skydive::topology::mock::{FAIL_QUERY, MockAnalyzer};
    use serde_json::{Value, json};

    fn vectors() -> Value {
        crate::test_vectors::json("exporter/cluster_ips.json")
    }

    fn strings(v: &Value) -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    }

    #[tokio::test]
    async fn golden_node_ips_over_http() {
        let v = vectors();
        assert_eq!(v["gremlin_query"], NODES_QUERY);
        for case in v["cases"].as_array().unwrap() {
            let Some(metadata) = case.get("nodes_metadata") else {
                continue;
            };
            let nodes: Vec<Value> = metadata
                .as_array()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, m)| json!({"ID": format!("node-{i}"), "Metadata": m}))
                .collect();
            let mock = MockAnalyzer::start([(NODES_QUERY.to_string(), Value::from(nodes))]).await;
            let client = TopologyClient::new(&mock.addr, None).unwrap();
            let mut ips = node_ips(&client.nodes(NODES_QUERY).await.unwrap());
            ips.sort();
            assert_eq!(
                ips,
                strings(&case["expected_sorted_ips"]),
                "{}",
                case["name"]
            );
            let masks = discover_node_masks(&client, Duration::ZERO).await;
            assert_eq!(masks.len(), ips.len());
            assert_eq!(mock.queries()[0], NODES_QUERY);
        }
    }

    #[test]
    fn golden_host_masks() {
        let v = vectors();
        let case = v["cases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "TestConvertIPsToNetmasks")
            .unwrap();
        let masks: Vec<String> = strings(&case["input"])
            .iter()
            .map(|ip| host_mask(ip).unwrap().to_string())
            .collect();
        assert_eq!(masks, strings(&case["expected"]));
        // Fixed: IPv6 gets a host mask, not /32.
        assert_eq!(host_mask("fd00::1").unwrap().to_string(), "fd00::1/128");
        assert!(host_mask("node-1").is_none());
    }

    #[test]
    fn malformed_entries_are_ignored() {
        let node: Node = serde_json::from_value(json!({"ID": "n", "Metadata": {"K8s": {"Extra": {"Status": {"Addresses": [
            "x", {"Type": 1, "Address": "1.1.1.1"}, {"Type": "InternalIP", "Address": "10.0.0.1"},
            {"Type": "InternalIP", "Address": "10.0.0.2"}, {"Type": "Hostname", "Address": "h"}
        ]}}}}}))
        .unwrap();
        let empty = Node::default();
        assert_eq!(node_ips(&[node, empty]), vec!["10.0.0.2"]);
    }

    #[tokio::test]
    async fn gives_up_after_the_budget() {
        let mock = MockAnalyzer::start([]).await;
        let client = TopologyClient::new(&mock.addr, None).unwrap();
        // A failing analyzer: the budget bounds the wait.
        let down = TopologyClient::new("127.0.0.1:1", None).unwrap();
        let started = Instant::now();
        assert!(
            discover_node_masks(&down, Duration::from_millis(300))
                .await
                .is_empty()
        );
        assert!(started.elapsed() < Duration::from_secs(3));
        // An empty answer is a success with no mask.
        assert!(
            discover_node_masks(&client, Duration::ZERO)
                .await
                .is_empty()
        );
        assert!(client.query(FAIL_QUERY).await.is_err());
    }
}

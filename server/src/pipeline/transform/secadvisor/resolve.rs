//! Who is behind an address, and what a capture node is: the resolver chain
//! Cache(Fallback(Multi(Runc, Docker, VM))) over the analyzer's topology
//! (docs/stages.md §6.2.1–6.2.2), and the batched, concurrent resolution of a batch's cache
//! misses before its flows are transformed (§6.2.4).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use futures_util::future::join_all;

use super::record::{PeerContext, PeerType, Short};
use crate::pipeline::ttl_cache::{DEFAULT_CAPACITY, TtlCache};
use crate::skydive::flow::Flow;
use crate::skydive::topology::{Node, TopologyClient, TopologyError, quote};

/// Most addresses or TIDs named by one batched query, so a query stays a few kilobytes.
pub const MAX_BATCH_KEYS: usize = 256;

/// How long a context or node type is reused (upstream: 5 min).
pub const RESOLVE_TTL_MS: i64 = 5 * 60 * 1000;

/// Why one resolver found nothing.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The query failed or matched nothing.
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// The node lacks a field the resolver needs.
    #[error("node {node} has no {field}")]
    Missing {
        /// Node id.
        node: String,
        /// Dotted metadata path.
        field: &'static str,
    },
}

/// One way of finding a peer in the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// runc containers (`Runc.Hosts.IP`), pods via `containerd://` ids.
    Runc,
    /// Docker containers (interface `IPV4`), pods via `docker://` ids.
    Docker,
    /// Hosts by routing-table source address.
    Vm,
}

fn required<'a>(node: &'a Node, field: &'static str) -> Result<&'a str, ResolveError> {
    node.get_str(field).ok_or_else(|| ResolveError::Missing {
        node: node.id.clone(),
        field,
    })
}

impl Backend {
    /// Resolves `ip` as seen from the capture node `node_tid`.
    pub async fn ip_to_context(
        self,
        client: &TopologyClient,
        ip: &str,
        node_tid: &str,
    ) -> Result<PeerContext, ResolveError> {
        match self {
            Backend::Runc => {
                let query = format!(
                    "G.V().Has(\"Runc.Hosts.IP\", {}).ShortestPathTo(Metadata(\"TID\", {}))",
                    quote(ip),
                    quote(node_tid)
                );
                let node = client.first_node(&query).await?;
                let name = node.get_str("Runc.Hosts.Hostname").unwrap_or_default();
                let container_id = node.get_str("Runc.ContainerID").unwrap_or_default();
                Ok(pod_or_container(client, "containerd", container_id, name).await)
            }
            Backend::Docker => {
                // The address goes into the regex unescaped, as upstream does.
                let query = format!(
                    "G.V().Has(\"IPV4\", Regex({})).ShortestPathTo(Metadata(\"TID\", {})).Dedup().In(\"Type\", \"netns\").Out(\"Type\", \"container\")",
                    quote(&format!("{ip}/.*")),
                    quote(node_tid)
                );
                let node = client.first_node(&query).await?;
                let name = required(&node, "Name")?;
                let container_id = required(&node, "Docker.ContainerID")?;
                Ok(pod_or_container(client, "docker", container_id, name).await)
            }
            Backend::Vm => {
                let query = format!(
                    "G.V().Has(\"RoutingTables.Src\", {}).In().Has(\"Type\", \"host\")",
                    quote(ip)
                );
                let node = client.first_node(&query).await?;
                Ok(PeerContext {
                    kind: PeerType::Host,
                    name: required(&node, "Name")?.to_string(),
                    set: String::new(),
                })
            }
        }
    }

    /// One query for the nodes that could answer [`Backend::ip_to_context`] for any of `ips`
    /// (its first step, without the path to the capture node).
    fn candidates_query(self, ips: &[&str]) -> String {
        let within = |key: &str| {
            let list: Vec<String> = ips.iter().map(|ip| quote(ip)).collect();
            format!("G.V().Has(\"{key}\", Within({}))", list.join(", "))
        };
        match self {
            Backend::Runc => within("Runc.Hosts.IP"),
            Backend::Vm => within("RoutingTables.Src"),
            Backend::Docker => {
                let alternatives: Vec<String> = ips.iter().map(|ip| format!("{ip}/.*")).collect();
                format!(
                    "G.V().Has(\"IPV4\", Regex({}))",
                    quote(&alternatives.join("|"))
                )
            }
        }
    }

    /// Whether `node`, an answer to [`Backend::candidates_query`], matches the first step of
    /// the exact query for `ip`; `docker` is that query's `Regex("<ip>/.*")`, compiled once.
    fn first_step_matches(self, node: &Node, ip: &str, docker: Option<&regex::Regex>) -> bool {
        let key = match self {
            Backend::Runc => "Runc.Hosts.IP",
            Backend::Vm => "RoutingTables.Src",
            Backend::Docker => "IPV4",
        };
        node.values(key)
            .iter()
            .filter_map(|v| v.as_str())
            .any(|text| match docker {
                Some(pattern) => pattern.is_match(text),
                None => text == ip,
            })
    }

    /// Which of `ips` this backend could resolve at all: `None` when it can't tell (a failed
    /// query, an answer it can't explain, or too few addresses to save a round trip), so
    /// that only a certain miss skips the exact query.
    async fn could_resolve(self, client: &TopologyClient, ips: &[&str]) -> Option<HashSet<usize>> {
        if ips.len() < 2 {
            return None;
        }
        let mut possible = HashSet::new();
        for (chunk_index, chunk) in ips.chunks(MAX_BATCH_KEYS).enumerate() {
            // Unanchored and unescaped, as the exact query's regex; only addresses (digits,
            // dots, colons) are safe to join into one alternation.
            let docker: Vec<regex::Regex> = if self == Backend::Docker {
                let patterns = chunk.iter().map(|ip| {
                    ip.parse::<IpAddr>().ok()?;
                    regex::Regex::new(&format!("{ip}/.*")).ok()
                });
                patterns.collect::<Option<_>>()?
            } else {
                Vec::new()
            };
            let nodes = match client.nodes(&self.candidates_query(chunk)).await {
                Ok(nodes) => nodes,
                Err(e) => {
                    tracing::debug!(backend = ?self, error = %e, "batched lookup failed; querying one address at a time");
                    return None;
                }
            };
            for node in &nodes {
                let mut explained = false;
                for (i, ip) in chunk.iter().enumerate() {
                    if self.first_step_matches(node, ip, docker.get(i)) {
                        possible.insert(chunk_index * MAX_BATCH_KEYS + i);
                        explained = true;
                    }
                }
                if !explained {
                    tracing::debug!(backend = ?self, node = %node.id, "batched lookup gave a node it can't explain; querying one address at a time");
                    return None;
                }
            }
        }
        Some(possible)
    }

    /// The topology `Type` of the node with this TID (the same query for every backend).
    pub async fn tid_to_type(
        self,
        client: &TopologyClient,
        tid: &str,
    ) -> Result<Short, ResolveError> {
        let node = client
            .first_node(&format!("G.V().Has(\"TID\", {})", quote(tid)))
            .await?;
        Ok(required(&node, "Type")?.into())
    }
}

/// The first of `backends` that resolves `ip` from `node_tid`, in order.
async fn first_context(
    client: &TopologyClient,
    backends: impl IntoIterator<Item = Backend>,
    ip: &str,
    node_tid: &str,
) -> Option<PeerContext> {
    for backend in backends {
        match backend.ip_to_context(client, ip, node_tid).await {
            Ok(context) => return Some(context),
            Err(e) => tracing::trace!(ip, node_tid, ?backend, error = %e, "not resolved"),
        }
    }
    None
}

/// The pod running a container, else the container itself.
async fn pod_or_container(
    client: &TopologyClient,
    prefix: &str,
    container_id: &str,
    name: &str,
) -> PeerContext {
    match pod_of_container(client, prefix, container_id).await {
        Ok(pod) => pod,
        Err(e) => {
            tracing::trace!(container_id, error = %e, "no pod for container");
            PeerContext {
                kind: PeerType::Container,
                name: name.to_string(),
                set: String::new(),
            }
        }
    }
}

/// The pod whose status lists `<prefix>://<container_id>`.
pub async fn pod_of_container(
    client: &TopologyClient,
    prefix: &str,
    container_id: &str,
) -> Result<PeerContext, ResolveError> {
    let query = format!(
        "G.V().Has(\"K8s.Extra.Status.ContainerStatuses.ContainerID\", {})",
        quote(&format!("{prefix}://{container_id}"))
    );
    let node = client.first_node(&query).await?;
    let namespace = required(&node, "K8s.Namespace")?;
    let name = required(&node, "K8s.Name")?;
    let set = node
        .get("K8s.Extra.ObjectMeta.OwnerReferences")
        .and_then(|refs| refs.as_array()?.first())
        .and_then(|owner| {
            let kind = owner.get("Kind")?.as_str()?;
            let owner_name = owner.get("Name")?.as_str()?;
            Some(format!("{kind}:{namespace}/{owner_name}"))
        })
        .unwrap_or_default();
    Ok(PeerContext {
        kind: PeerType::Pod,
        name: format!("{namespace}/{name}"),
        set,
    })
}

/// The cached chain: results (including "nothing found") are kept for [`RESOLVE_TTL_MS`].
#[derive(Debug)]
pub struct Resolver {
    client: Arc<TopologyClient>,
    backends: Vec<Backend>,
    contexts: TtlCache<Option<PeerContext>>,
    types: TtlCache<Short>,
    /// Scratch for building `contexts` keys without allocating on every lookup.
    key: String,
}

impl Resolver {
    /// Runc, then Docker, then VM.
    pub fn new(client: Arc<TopologyClient>) -> Self {
        Self::with_backends(client, vec![Backend::Runc, Backend::Docker, Backend::Vm])
    }

    /// A chain over the given backends, tried in order.
    pub fn with_backends(client: Arc<TopologyClient>, backends: Vec<Backend>) -> Self {
        Resolver {
            client,
            backends,
            contexts: TtlCache::new(DEFAULT_CAPACITY),
            types: TtlCache::new(DEFAULT_CAPACITY),
            key: String::new(),
        }
    }

    /// The context of `ip` seen from `node_tid`: the first backend that succeeds wins;
    /// none succeeding (or an empty `ip`) gives `None`. Either way the answer is cached.
    pub async fn ip_to_context(
        &mut self,
        ip: &str,
        node_tid: &str,
        now_ms: i64,
    ) -> Option<PeerContext> {
        if ip.is_empty() {
            return None;
        }
        self.set_key(ip, node_tid);
        if let Some(hit) = self.contexts.get(self.key.as_str(), now_ms) {
            return hit.clone();
        }
        let found = first_context(&self.client, self.backends.iter().copied(), ip, node_tid).await;
        self.contexts
            .insert(self.key.as_str(), found.clone(), RESOLVE_TTL_MS, now_ms);
        found
    }

    /// The node type of `tid`; "" (cached too) when unknown or `tid` is empty.
    pub async fn tid_to_type(&mut self, tid: &str, now_ms: i64) -> Short {
        if let Some(hit) = self.types.get(tid, now_ms) {
            return hit.clone();
        }
        let mut found = Short::default();
        if !tid.is_empty() {
            for backend in &self.backends {
                match backend.tid_to_type(&self.client, tid).await {
                    Ok(kind) => {
                        found = kind;
                        break;
                    }
                    Err(e) => tracing::trace!(tid, ?backend, error = %e, "type not resolved"),
                }
            }
        }
        self.types
            .insert(tid, found.clone(), RESOLVE_TTL_MS, now_ms);
        found
    }

    /// Resolves what `flows` will ask for and the caches lack, so that transforming them one
    /// by one finds every answer cached (docs/stages.md §6.2.4). The answers are the ones
    /// [`Resolver::ip_to_context`] and [`Resolver::tid_to_type`] would give: batched queries
    /// only rule out lookups that certainly find nothing, or answer the node type exactly;
    /// the rest run concurrently, each through the chain in order.
    pub async fn prepare(&mut self, flows: &[&Flow], now_ms: i64) {
        let mut tids: Vec<&str> = Vec::new();
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let (mut seen_tids, mut seen_pairs) = (HashSet::new(), HashSet::new());
        for flow in flows {
            let tid = flow.node_tid.as_str();
            if !tid.is_empty() && seen_tids.insert(tid) && self.types.get(tid, now_ms).is_none() {
                tids.push(tid);
            }
            let Some(network) = &flow.network else {
                continue;
            };
            for ip in [network.a.as_str(), network.b.as_str()] {
                if ip.is_empty() || !seen_pairs.insert((ip, tid)) {
                    continue;
                }
                self.set_key(ip, tid);
                if self.contexts.get(self.key.as_str(), now_ms).is_none() {
                    pairs.push((ip, tid));
                }
            }
        }
        self.prepare_types(&tids, now_ms).await;
        self.prepare_contexts(&pairs, now_ms).await;
    }

    /// Node types: one `Has("TID", Within(...))` query per [`MAX_BATCH_KEYS`] TIDs; one at a
    /// time when the batched query fails or gives a node that was not asked for.
    async fn prepare_types(&mut self, tids: &[&str], now_ms: i64) {
        if tids.len() < 2 {
            for tid in tids {
                self.tid_to_type(tid, now_ms).await;
            }
            return;
        }
        for chunk in tids.chunks(MAX_BATCH_KEYS) {
            let list: Vec<String> = chunk.iter().map(|tid| quote(tid)).collect();
            let query = format!("G.V().Has(\"TID\", Within({}))", list.join(", "));
            let mut found: HashMap<&str, Short> = HashMap::new();
            let explained = match self.client.nodes(&query).await {
                Ok(nodes) => nodes.iter().all(|node| {
                    let Some(tid) = node
                        .get_str("TID")
                        .and_then(|t| chunk.iter().find(|c| **c == t))
                    else {
                        return false;
                    };
                    // The first node of a TID answers, as the single query's first node does.
                    found
                        .entry(tid)
                        .or_insert_with(|| node.get_str("Type").unwrap_or_default().into());
                    true
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "batched node type lookup failed");
                    false
                }
            };
            for tid in chunk {
                if !explained {
                    self.tid_to_type(tid, now_ms).await;
                    continue;
                }
                let kind = found.remove(tid).unwrap_or_default();
                self.types.insert(tid, kind, RESOLVE_TTL_MS, now_ms);
            }
        }
    }

    /// Peer contexts: each backend rules out the addresses it certainly can't resolve (one
    /// query for all), then every (address, capture node) pair left runs through the chain,
    /// concurrently (bounded by the client's [`MAX_IN_FLIGHT`](crate::skydive::topology::MAX_IN_FLIGHT)).
    async fn prepare_contexts(&mut self, pairs: &[(&str, &str)], now_ms: i64) {
        if pairs.is_empty() {
            return;
        }
        let mut ips: Vec<&str> = pairs.iter().map(|(ip, _)| *ip).collect();
        ips.sort_unstable();
        ips.dedup();
        let client = &self.client;
        let possible = join_all(
            self.backends
                .iter()
                .map(|backend| backend.could_resolve(client, &ips)),
        )
        .await;
        let index: HashMap<&str, usize> = ips.iter().enumerate().map(|(i, ip)| (*ip, i)).collect();
        let backends = &self.backends;
        let found = join_all(pairs.iter().map(|&(ip, tid)| {
            let i = index[ip];
            let chain: Vec<Backend> = backends
                .iter()
                .zip(&possible)
                .filter(|(_, possible)| possible.as_ref().is_none_or(|set| set.contains(&i)))
                .map(|(backend, _)| *backend)
                .collect();
            first_context(client, chain, ip, tid)
        }))
        .await;
        for (&(ip, tid), context) in pairs.iter().zip(found) {
            self.set_key(ip, tid);
            self.contexts
                .insert(self.key.as_str(), context, RESOLVE_TTL_MS, now_ms);
        }
    }

    /// Caches a context as if resolved (tests use it as upstream's fake resolver).
    pub fn seed_context(
        &mut self,
        ip: &str,
        node_tid: &str,
        context: Option<PeerContext>,
        now_ms: i64,
    ) {
        self.set_key(ip, node_tid);
        self.contexts
            .insert(self.key.as_str(), context, RESOLVE_TTL_MS, now_ms);
    }

    /// `ip,node_tid` into `self.key`: the `contexts` key.
    fn set_key(&mut self, ip: &str, node_tid: &str) {
        self.key.clear();
        self.key.push_str(ip);
        self.key.push(',');
        self.key.push_str(node_tid);
    }

    /// Caches a node type as if resolved.
    pub fn seed_type(&mut self, tid: &str, kind: &str, now_ms: i64) {
        self.types.insert(tid, kind.into(), RESOLVE_TTL_MS, now_ms);
    }
}

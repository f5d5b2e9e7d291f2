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

/// Where a runc container lists its addresses.
const RUNC_IP: &str = "Runc.Hosts.IP";

/// Where a pod lists its containers, as `<runtime>://<container id>`.
const POD_CONTAINER_ID: &str = "K8s.Extra.Status.ContainerStatuses.ContainerID";

/// What a backend's own query found, before the pod lookup.
#[derive(Debug, Clone)]
enum Found {
    /// A container; the pod that runs it, if any, is the peer.
    Container {
        /// Its reference in pod statuses: `<runtime>://<id>`.
        reference: String,
        /// Its name, the peer when no pod runs it.
        name: String,
    },
    /// A host: the peer itself.
    Host(PeerContext),
}

impl Found {
    fn container(runtime: &str, id: &str, name: &str) -> Found {
        Found::Container {
            reference: format!("{runtime}://{id}"),
            name: name.to_string(),
        }
    }

    /// A runc container node (the start of a runc query's path).
    fn runc(node: &Node) -> Found {
        Found::container(
            "containerd",
            node.get_str("Runc.ContainerID").unwrap_or_default(),
            node.get_str("Runc.Hosts.Hostname").unwrap_or_default(),
        )
    }

    /// The pod reference to look up, for a container.
    fn reference(&self) -> Option<&str> {
        match self {
            Found::Container { reference, .. } => Some(reference),
            Found::Host(_) => None,
        }
    }

    /// The peer, given the pod found for the container (if any).
    fn into_context(self, pod: Option<PeerContext>) -> PeerContext {
        match self {
            Found::Host(context) => context,
            Found::Container { name, .. } => pod.unwrap_or(PeerContext {
                kind: PeerType::Container,
                name,
                set: String::new(),
            }),
        }
    }
}

impl Backend {
    /// Resolves `ip` as seen from the capture node `node_tid`.
    pub async fn ip_to_context(
        self,
        client: &TopologyClient,
        ip: &str,
        node_tid: &str,
    ) -> Result<PeerContext, ResolveError> {
        let found = self.find(client, ip, node_tid).await?;
        let pod = match found.reference() {
            Some(reference) => pod_of_container(client, reference).await,
            None => None,
        };
        Ok(found.into_context(pod))
    }

    /// The backend's own query for `ip` from `node_tid` (upstream's, verbatim).
    async fn find(
        self,
        client: &TopologyClient,
        ip: &str,
        node_tid: &str,
    ) -> Result<Found, ResolveError> {
        match self {
            Backend::Runc => {
                let query = format!(
                    "G.V().Has(\"{RUNC_IP}\", {}).ShortestPathTo(Metadata(\"TID\", {}))",
                    quote(ip),
                    quote(node_tid)
                );
                Ok(Found::runc(&client.first_node(&query).await?))
            }
            Backend::Docker => {
                // The address goes into the regex unescaped, as upstream does.
                let query = format!(
                    "G.V().Has(\"IPV4\", Regex({})).ShortestPathTo(Metadata(\"TID\", {})).Dedup().In(\"Type\", \"netns\").Out(\"Type\", \"container\")",
                    quote(&format!("{ip}/.*")),
                    quote(node_tid)
                );
                let node = client.first_node(&query).await?;
                Ok(Found::container(
                    "docker",
                    required(&node, "Docker.ContainerID")?,
                    required(&node, "Name")?,
                ))
            }
            Backend::Vm => {
                let query = format!(
                    "G.V().Has(\"RoutingTables.Src\", {}).In().Has(\"Type\", \"host\")",
                    quote(ip)
                );
                let node = client.first_node(&query).await?;
                Ok(Found::Host(PeerContext {
                    kind: PeerType::Host,
                    name: required(&node, "Name")?.to_string(),
                    set: String::new(),
                }))
            }
        }
    }

    /// One query for the nodes that could answer [`Backend::find`] for any of `ips` (its
    /// first step, without the path to the capture node).
    fn candidates_query(self, ips: &[&str]) -> String {
        match self {
            Backend::Runc => format!("G.V().Has(\"{RUNC_IP}\", {})", within(ips)),
            Backend::Vm => format!("G.V().Has(\"RoutingTables.Src\", {})", within(ips)),
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
    /// the exact query for `ip` (for Docker, `ip` holds only address characters).
    fn first_step_matches(self, node: &Node, ip: &str) -> bool {
        let key = match self {
            Backend::Runc => RUNC_IP,
            Backend::Vm => "RoutingTables.Src",
            Backend::Docker => "IPV4",
        };
        node.values(key)
            .iter()
            .filter_map(|v| v.as_str())
            .any(|text| match self {
                Backend::Docker => address_regex_matches(ip, text),
                _ => text == ip,
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
            // Only addresses (digits, hex letters, dots, colons) are safe to join into one
            // alternation, unescaped as the exact query has them.
            if self == Backend::Docker && chunk.iter().any(|ip| ip.parse::<IpAddr>().is_err()) {
                return None;
            }
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
                    if self.first_step_matches(node, ip) {
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

/// Whether `text` matches the Docker query's regex `<ip>/.*`, unanchored and unescaped, for
/// an `ip` of address characters only: each `.` of it matches any character but a newline,
/// the rest literally. Written out because compiling that regex for each of a batch's
/// addresses took a quarter of a cold pipeline's CPU (`cargo bench -p sluice --bench
/// pipeline -- analyzer`, docs/stages.md §6.2.4).
fn address_regex_matches(ip: &str, text: &str) -> bool {
    text.char_indices().any(|(start, _)| {
        let mut rest = text[start..].chars();
        ip.bytes().all(|want| match rest.next() {
            Some(c) if want == b'.' => c != '\n',
            Some(c) => c == char::from(want),
            None => false,
        }) && rest.next() == Some('/')
    })
}

/// `Within("a", "b", ...)`.
fn within(values: &[&str]) -> String {
    let list: Vec<String> = values.iter().map(|v| quote(v)).collect();
    format!("Within({})", list.join(", "))
}

/// The runc containers of several addresses seen from one capture node, in one query:
/// `Has("Runc.Hosts.IP", Within(...)).ShortestPathTo(...)` answers a path per container
/// that reaches the node, starting at the container, so each path is the answer of the exact
/// query for the addresses its first node lists; an address's first such path is the one
/// the exact query would give first. `None` when the query fails or a path starts at a node
/// that lists none of `ips` (then each address is queried alone).
async fn runc_containers<'a>(
    client: &TopologyClient,
    ips: &[&'a str],
    node_tid: &str,
) -> Option<HashMap<&'a str, Found>> {
    let query = format!(
        "G.V().Has(\"{RUNC_IP}\", {}).ShortestPathTo(Metadata(\"TID\", {}))",
        within(ips),
        quote(node_tid)
    );
    let paths = client
        .paths(&query)
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "batched runc lookup failed"))
        .ok()?;
    let mut found = HashMap::new();
    for path in &paths {
        let Some(start) = path.first() else {
            continue;
        };
        let mut explained = false;
        for ip in ips {
            if Backend::Runc.first_step_matches(start, ip) {
                found.entry(*ip).or_insert_with(|| Found::runc(start));
                explained = true;
            }
        }
        if !explained {
            tracing::debug!(node = %start.id, "batched runc lookup gave a path it can't explain");
            return None;
        }
    }
    Some(found)
}

/// The first of `backends` that finds `ip` from `node_tid`, in order; `known_runc` is the
/// runc backend's answer when a batch already looked it up (`None` inside: nothing found).
async fn first_found(
    client: &TopologyClient,
    backends: impl IntoIterator<Item = Backend>,
    ip: &str,
    node_tid: &str,
    known_runc: Option<&Option<Found>>,
) -> Option<Found> {
    for backend in backends {
        if let (Backend::Runc, Some(known)) = (backend, known_runc) {
            if known.is_some() {
                return known.clone();
            }
            continue;
        }
        match backend.find(client, ip, node_tid).await {
            Ok(found) => return Some(found),
            Err(e) => tracing::trace!(ip, node_tid, ?backend, error = %e, "not resolved"),
        }
    }
    None
}

/// The pod whose status lists `reference` (`<runtime>://<container id>`); `None` when no
/// pod does or the first that does lacks its namespace or name.
pub async fn pod_of_container(client: &TopologyClient, reference: &str) -> Option<PeerContext> {
    let query = format!("G.V().Has(\"{POD_CONTAINER_ID}\", {})", quote(reference));
    client
        .first_node(&query)
        .await
        .map_err(ResolveError::from)
        .and_then(|node| pod_context(&node))
        .inspect_err(|e| tracing::trace!(reference, error = %e, "no pod for container"))
        .ok()
}

/// The pods of several containers: one `Has(..., Within(...))` query per [`MAX_BATCH_KEYS`]
/// references (the first node listing a reference is the one its own query gives first),
/// one query per reference where a batch fails or answers a node it can't explain.
async fn pods_of_containers(
    client: &TopologyClient,
    references: &[&str],
) -> HashMap<String, Option<PeerContext>> {
    let chunks: Vec<&[&str]> = if references.len() < 2 {
        Vec::new()
    } else {
        references.chunks(MAX_BATCH_KEYS).collect()
    };
    let batches = join_all(chunks.iter().map(|chunk| pods_batch(client, chunk))).await;
    let mut pods = HashMap::new();
    let mut alone: Vec<&str> = if chunks.is_empty() {
        references.to_vec()
    } else {
        Vec::new()
    };
    for (chunk, answer) in chunks.into_iter().zip(batches) {
        match answer {
            Some(found) => pods.extend(found),
            None => alone.extend(chunk),
        }
    }
    let singles = join_all(alone.iter().map(|r| pod_of_container(client, r))).await;
    pods.extend(alone.iter().map(|r| r.to_string()).zip(singles));
    pods
}

/// One batch of [`pods_of_containers`]; `None` when the query fails or answers a node that
/// lists none of `references`.
async fn pods_batch(
    client: &TopologyClient,
    references: &[&str],
) -> Option<HashMap<String, Option<PeerContext>>> {
    let query = format!("G.V().Has(\"{POD_CONTAINER_ID}\", {})", within(references));
    let nodes = client
        .nodes(&query)
        .await
        .inspect_err(|e| tracing::debug!(error = %e, "batched pod lookup failed"))
        .ok()?;
    let mut pods = HashMap::new();
    for node in &nodes {
        let listed = node.values(POD_CONTAINER_ID);
        let mut explained = false;
        for reference in references {
            if listed.iter().any(|v| v.as_str() == Some(reference)) {
                explained = true;
                pods.entry(reference.to_string())
                    .or_insert_with(|| pod_context(node).ok());
            }
        }
        if !explained {
            tracing::debug!(node = %node.id, "batched pod lookup gave a node it can't explain");
            return None;
        }
    }
    Some(pods)
}

/// A pod node's peer context: `namespace/name`, its first owner as `Kind:namespace/name`.
fn pod_context(node: &Node) -> Result<PeerContext, ResolveError> {
    let namespace = required(node, "K8s.Namespace")?;
    let name = required(node, "K8s.Name")?;
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

/// The node types of `tids`: one `Has("TID", Within(...))` query per [`MAX_BATCH_KEYS`] TIDs;
/// one at a time when the batched query fails or gives a node that was not asked for.
async fn node_types<'a>(
    client: &TopologyClient,
    backends: &[Backend],
    tids: &[&'a str],
) -> Vec<(&'a str, Short)> {
    if tids.len() < 2 {
        let types = join_all(tids.iter().map(|tid| node_type(client, backends, tid))).await;
        return tids.iter().copied().zip(types).collect();
    }
    let mut out = Vec::new();
    for chunk in tids.chunks(MAX_BATCH_KEYS) {
        let query = format!("G.V().Has(\"TID\", {})", within(chunk));
        let mut found: HashMap<&str, Short> = HashMap::new();
        let explained = match client.nodes(&query).await {
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
        if explained {
            out.extend(
                chunk
                    .iter()
                    .map(|tid| (*tid, found.remove(tid).unwrap_or_default())),
            );
        } else {
            let types = join_all(chunk.iter().map(|tid| node_type(client, backends, tid))).await;
            out.extend(chunk.iter().copied().zip(types));
        }
    }
    out
}

/// The node type of `tid` from the first backend that finds it; "" when none does.
async fn node_type(client: &TopologyClient, backends: &[Backend], tid: &str) -> Short {
    if tid.is_empty() {
        return Short::default();
    }
    for backend in backends {
        match backend.tid_to_type(client, tid).await {
            Ok(kind) => return kind,
            Err(e) => tracing::trace!(tid, ?backend, error = %e, "type not resolved"),
        }
    }
    Short::default()
}

/// The contexts of (address, capture node) pairs, as [`Resolver::ip_to_context`] would find
/// them one by one (docs/stages.md §6.2.4):
/// 1. each backend rules out the addresses it certainly can't resolve, one query for all;
/// 2. runc's own query runs for many addresses of one capture node at once;
/// 3. every pair left runs through the rest of its chain, concurrently (bounded by the
///    client's [`MAX_IN_FLIGHT`](crate::skydive::topology::MAX_IN_FLIGHT));
/// 4. the pods of the containers found are looked up together.
async fn peer_contexts(
    client: &TopologyClient,
    backends: &[Backend],
    pairs: &[(&str, &str)],
) -> Vec<Option<PeerContext>> {
    if pairs.is_empty() {
        return Vec::new();
    }
    let mut ips: Vec<&str> = pairs.iter().map(|(ip, _)| *ip).collect();
    ips.sort_unstable();
    ips.dedup();
    let possible = join_all(
        backends
            .iter()
            .map(|backend| backend.could_resolve(client, &ips)),
    )
    .await;
    let index: HashMap<&str, usize> = ips.iter().enumerate().map(|(i, ip)| (*ip, i)).collect();
    let chains: Vec<Vec<Backend>> = pairs
        .iter()
        .map(|(ip, _)| {
            backends
                .iter()
                .zip(&possible)
                .filter(|(_, possible)| {
                    possible.as_ref().is_none_or(|set| set.contains(&index[ip]))
                })
                .map(|(backend, _)| *backend)
                .collect()
        })
        .collect();

    let mut runc_asks: HashMap<&str, Vec<&str>> = HashMap::new();
    for (&(ip, tid), chain) in pairs.iter().zip(&chains) {
        if chain.contains(&Backend::Runc) {
            runc_asks.entry(tid).or_default().push(ip);
        }
    }
    let batches: Vec<(&str, &[&str])> = runc_asks
        .iter()
        .filter(|(_, ips)| ips.len() >= 2)
        .flat_map(|(tid, ips)| ips.chunks(MAX_BATCH_KEYS).map(|chunk| (*tid, chunk)))
        .collect();
    let answers = join_all(
        batches
            .iter()
            .map(|(tid, chunk)| runc_containers(client, chunk, tid)),
    )
    .await;
    let mut known_runc: HashMap<(&str, &str), Option<Found>> = HashMap::new();
    for ((tid, chunk), answer) in batches.into_iter().zip(answers) {
        if let Some(mut found) = answer {
            for ip in chunk {
                known_runc.insert((*ip, tid), found.remove(ip));
            }
        }
    }

    let found = join_all(pairs.iter().zip(chains).map(|(&(ip, tid), chain)| {
        first_found(client, chain, ip, tid, known_runc.get(&(ip, tid)))
    }))
    .await;
    let mut references: Vec<&str> = found
        .iter()
        .flatten()
        .filter_map(Found::reference)
        .collect();
    references.sort_unstable();
    references.dedup();
    let pods = pods_of_containers(client, &references).await;
    found
        .into_iter()
        .map(|found| {
            let pod = found
                .as_ref()
                .and_then(Found::reference)
                .and_then(|r| pods.get(r).cloned().flatten());
            Some(found?.into_context(pod))
        })
        .collect()
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
        let client = &self.client;
        let context =
            match first_found(client, self.backends.iter().copied(), ip, node_tid, None).await {
                Some(found) => {
                    let pod = match found.reference() {
                        Some(reference) => pod_of_container(client, reference).await,
                        None => None,
                    };
                    Some(found.into_context(pod))
                }
                None => None,
            };
        self.contexts
            .insert(self.key.as_str(), context.clone(), RESOLVE_TTL_MS, now_ms);
        context
    }

    /// The node type of `tid`; "" (cached too) when unknown or `tid` is empty.
    pub async fn tid_to_type(&mut self, tid: &str, now_ms: i64) -> Short {
        if let Some(hit) = self.types.get(tid, now_ms) {
            return hit.clone();
        }
        let found = node_type(&self.client, &self.backends, tid).await;
        self.types
            .insert(tid, found.clone(), RESOLVE_TTL_MS, now_ms);
        found
    }

    /// Resolves what `flows` will ask for and the caches lack, so that transforming them one
    /// by one finds every answer cached (docs/stages.md §6.2.4). The answers are the ones
    /// [`Resolver::ip_to_context`] and [`Resolver::tid_to_type`] would give; node types and
    /// contexts are looked up at the same time.
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
        let (types, contexts) = futures_util::future::join(
            node_types(&self.client, &self.backends, &tids),
            peer_contexts(&self.client, &self.backends, &pairs),
        )
        .await;
        for (tid, kind) in types {
            self.types.insert(tid, kind, RESOLVE_TTL_MS, now_ms);
        }
        for (&(ip, tid), context) in pairs.iter().zip(contexts) {
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

#[cfg(test)]
mod tests {
    use super::address_regex_matches;

    #[test]
    fn the_written_out_docker_regex_matches_as_the_regex_does() {
        let ips = [
            "10.0.1.2",
            "0.0.0.0",
            "fe80::1",
            "::ffff:10.0.0.1",
            "1.2.3.4",
        ];
        let texts = [
            "10.0.1.2/24",
            "10.0.1.2",
            "110.0.1.2/24",
            "10a0b1c2/x",
            "10\n0.1.2/8",
            "10é0.1.2/8",
            "x10.0.1.2/",
            "10.0.1.2 /24",
            "fe80::1/64",
            "FE80::1/64",
            "::ffff:10.0.0.1/96",
            "1.2.3.45/8",
            "",
            "/",
        ];
        let mut matched = 0;
        for ip in ips {
            let regex = regex::Regex::new(&format!("{ip}/.*")).unwrap();
            for text in texts {
                let expected = regex.is_match(text);
                assert_eq!(
                    address_regex_matches(ip, text),
                    expected,
                    "{ip} on {text:?}"
                );
                matched += usize::from(expected);
            }
        }
        assert!(
            (5..ips.len() * texts.len() - 5).contains(&matched),
            "the cases hold matches and misses ({matched})"
        );
    }
}

//! Who is behind an address, and what a capture node is: the resolver chain
//! Cache(Fallback(Multi(Runc, Docker, VM))) over the analyzer's topology
//! (docs/stages.md §6.2.1–6.2.2).

use std::sync::Arc;

use super::record::{PeerContext, PeerType, Short};
use crate::pipeline::ttl_cache::{DEFAULT_CAPACITY, TtlCache};
use crate::skydive::topology::{Node, TopologyClient, TopologyError, quote};

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
        let mut found = None;
        for backend in &self.backends {
            match backend.ip_to_context(&self.client, ip, node_tid).await {
                Ok(context) => {
                    found = Some(context);
                    break;
                }
                Err(e) => tracing::trace!(ip, node_tid, ?backend, error = %e, "not resolved"),
            }
        }
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

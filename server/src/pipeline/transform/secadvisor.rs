//! Transform `secadvisor`: IBM Security Advisor records (docs/stages.md §6.2).

pub mod extend;
pub mod record;
pub mod resolve;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use compact_str::ToCompactString;

use crate::config::ExporterConfig;
use crate::pipeline::ttl_cache::{DEFAULT_CAPACITY, TtlCache};
use crate::skydive::flow::{FinishType, Flow};
use crate::skydive::topology::{TopologyClient, TopologyError};
use extend::Extender;
use record::{PeerContexts, SecAdvisorLayer, SecAdvisorRecord, Text, VERSION, legacy_name};
use resolve::Resolver;

/// How long a flow's update count lives after a sighting (upstream: 10 min).
pub const UPDATE_TTL_MS: i64 = 10 * 60 * 1000;

/// How long it lives after the flow finished with TCP FIN or RST (upstream: 1 min).
pub const FINISHED_TTL_MS: i64 = 60 * 1000;

/// Why the transform could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SecAdvisorBuildError {
    /// The topology client (TLS material).
    #[error(transparent)]
    Topology(#[from] TopologyError),
}

/// The `secadvisor` transform and its caches.
#[derive(Debug)]
pub struct SecAdvisor {
    exclude_started_flows: bool,
    counts: TtlCache<i64>,
    resolver: Resolver,
    extender: Extender,
}

impl SecAdvisor {
    /// From the whole pipeline file: options, analyzer address, credentials and TLS.
    pub fn from_config(
        config: &ExporterConfig,
        egress: &crate::egress::EgressPolicy,
    ) -> Result<Self, SecAdvisorBuildError> {
        let client = Arc::new(TopologyClient::from_config(config, egress)?);
        let options = &config.pipeline.transform.secadvisor;
        Ok(Self::new(
            Resolver::new(client.clone()),
            Extender::new(
                client,
                &options
                    .extend
                    .iter()
                    .filter_map(|e| e.get().cloned())
                    .collect::<Vec<_>>(),
            ),
            options.exclude_started_flows,
        ))
    }

    /// From its parts.
    pub fn new(resolver: Resolver, extender: Extender, exclude_started_flows: bool) -> Self {
        SecAdvisor {
            exclude_started_flows,
            counts: TtlCache::new(DEFAULT_CAPACITY),
            resolver,
            extender,
        }
    }

    /// The resolver chain (tests seed its caches).
    pub fn resolver_mut(&mut self) -> &mut Resolver {
        &mut self.resolver
    }

    /// The extend step (tests seed its cache).
    pub fn extender_mut(&mut self) -> &mut Extender {
        &mut self.extender
    }

    /// Brings the update counts of a batch's flows into the CPU cache before the batch is
    /// transformed one flow at a time (see [`TtlCache::prefetch`]).
    pub fn prefetch(&self, flows: &[Flow]) {
        self.counts.prefetch(flows.iter().map(|f| f.uuid.as_str()));
    }

    /// Resolves ahead, together and concurrently, the topology lookups these flows need
    /// ([`Resolver::prepare`]). With `exclude_started_flows`, a flow's first sighting is
    /// dropped before any lookup, so it is left out.
    pub async fn prepare(&mut self, flows: &[&Flow], now_ms: i64) {
        if !self.exclude_started_flows {
            return self.resolver.prepare(flows, now_ms).await;
        }
        let mut seen = std::collections::HashSet::new();
        let mut needed = Vec::with_capacity(flows.len());
        for flow in flows {
            let started = seen.insert(flow.uuid.as_str())
                && flow.finish_type == FinishType::NotFinished
                && self.counts.get(&flow.uuid, now_ms).is_none();
            if !started {
                needed.push(*flow);
            }
        }
        self.resolver.prepare(&needed, now_ms).await;
    }

    /// One flow in, at most one record out; `now_ms` drives every cache.
    pub async fn transform(&mut self, flow: Flow, now_ms: i64) -> Option<SecAdvisorRecord> {
        let update_count = self.update_count(&flow, now_ms);
        let status = match (flow.finish_type, update_count) {
            (FinishType::NotFinished, 0) => "STARTED",
            (FinishType::NotFinished, _) => "UPDATED",
            _ => "ENDED",
        };
        if self.exclude_started_flows && status == "STARTED" {
            return None;
        }
        let node_type = self.resolver.tid_to_type(&flow.node_tid, now_ms).await;
        let context = match &flow.network {
            Some(n) => {
                let a = self
                    .resolver
                    .ip_to_context(&n.a, &flow.node_tid, now_ms)
                    .await;
                let b = self
                    .resolver
                    .ip_to_context(&n.b, &flow.node_tid, now_ms)
                    .await;
                (a.is_some() || b.is_some()).then_some(PeerContexts { a, b })
            }
            None => None,
        };
        let network = flow.network.map(|n| SecAdvisorLayer {
            protocol: n.protocol.as_str().into(),
            a: n.a.into(),
            b: n.b.into(),
            a_name: legacy_name(context.as_ref().and_then(|c| c.a.as_ref())),
            b_name: legacy_name(context.as_ref().and_then(|c| c.b.as_ref())),
        });
        let transport = flow.transport.map(|t| SecAdvisorLayer {
            protocol: t.protocol.as_str().into(),
            a: t.a.to_compact_string(),
            b: t.b.to_compact_string(),
            ..Default::default()
        });
        let mut record = SecAdvisorRecord {
            uuid: flow.uuid.into(),
            link_id: flow.link.map_or(0, |l| l.id),
            l3_tracking_id: flow.l3_tracking_id.into(),
            layers_path: flow.layers_path.into(),
            version: VERSION.into(),
            status: status.into(),
            finish_type: finish_type_name(flow.finish_type).into(),
            network,
            transport,
            context,
            last_update_metric: flow.last_update_metric,
            metric: flow.metric,
            start: flow.start,
            last: flow.last,
            update_count,
            node_type,
            log_status: Text::default(),
            extend: Default::default(),
        };
        self.extender.apply(&mut record, now_ms).await;
        Some(record)
    }

    /// The count before this sighting; then stores count+1 (or forgets the flow on timeout).
    fn update_count(&mut self, flow: &Flow, now_ms: i64) -> i64 {
        let ttl_ms = match flow.finish_type {
            FinishType::Timeout => {
                let count = self.counts.get(&flow.uuid, now_ms).copied().unwrap_or(0);
                self.counts.remove(&flow.uuid);
                return count;
            }
            FinishType::NotFinished => UPDATE_TTL_MS,
            FinishType::TcpFin | FinishType::TcpRst => FINISHED_TTL_MS,
        };
        self.counts.update(&flow.uuid, ttl_ms, now_ms, |count| {
            count.map_or(1, |c| c + 1)
        }) - 1
    }
}

/// `FinishType` as the record names it.
pub fn finish_type_name(finish_type: FinishType) -> &'static str {
    match finish_type {
        FinishType::NotFinished => "",
        FinishType::Timeout => "Timeout",
        FinishType::TcpFin => "SYN_FIN",
        FinishType::TcpRst => "SYN_RST",
    }
}

//! Everything that talks to a Skydive analyzer, with one TLS, egress and size policy: the flow
//! model ([`flow`]), the WebSocket flow subscriber ([`subscriber`]) and the topology (gremlin)
//! client ([`topology`]) used by secadvisor, vpclogs and subnet autodiscovery.

pub mod flow;
pub mod subscriber;
pub mod topology;

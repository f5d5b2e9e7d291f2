//! Typed, zero-copy views of the flows in a batch (ENCODING.md §2).
//!
//! A [`Flow`] is a small view of its bytes: reading it finds where its sections are, and each
//! accessor decodes its part when called (strings are checked as UTF-8 then). A guest pays,
//! in fuel, only for what it reads, and moving a flow around copies a few words, not every
//! decoded field.

use sluice_wire::flow::{
    FINISH_TYPE_AT, FlowBatch, FlowBodies, FlowSections, LAST_AT, RAW_PACKETS_AT, START_AT,
    Section, body_i64, body_string, read_icmp, read_ip_metric, read_layer, read_metric,
    read_tcp_metric, read_transport,
};
pub use sluice_wire::flow::{
    FinishType, Icmp, IpMetric, Layer, Metric, Protocol, TcpMetric, Transport,
};

use crate::wire::{Reader, WireError};

/// One Skydive flow, borrowed from the batch.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow<'a> {
    body: &'a [u8],
    /// Where each present section starts in `body`.
    sections: FlowSections,
}

fn text(bytes: &[u8]) -> &str {
    // The host only sends UTF-8; bytes that are not read as empty.
    std::str::from_utf8(bytes).unwrap_or("")
}

impl<'a> Flow<'a> {
    /// A reader at `section`, if the flow has it.
    fn section(&self, section: Section) -> Option<Reader<'a>> {
        self.sections.reader(self.body, section)
    }

    /// The `i`th of the eight strings.
    fn string(&self, i: usize) -> &'a str {
        body_string(self.body, i).map_or("", text)
    }

    fn layer(&self, section: Section) -> Option<Layer<'a>> {
        read_layer(&mut self.section(section)?).ok()
    }

    fn metric_at(&self, section: Section) -> Option<Metric> {
        read_metric(&mut self.section(section)?).ok()
    }

    fn raw(&self, section: Section) -> Option<&'a str> {
        let mut r = self.section(section)?;
        Some(r.str().unwrap_or(""))
    }

    /// Flow id, unique per capture point.
    pub fn uuid(&self) -> &'a str {
        self.string(0)
    }
    /// Layers of the first packet, e.g. `Ethernet/IPv4/TCP`.
    pub fn layers_path(&self) -> &'a str {
        self.string(1)
    }
    /// Application name.
    pub fn application(&self) -> &'a str {
        self.string(2)
    }
    /// Direction-independent L2–L4 hash.
    pub fn tracking_id(&self) -> &'a str {
        self.string(3)
    }
    /// The same hash without the link layer.
    pub fn l3_tracking_id(&self) -> &'a str {
        self.string(4)
    }
    /// UUID of the outer flow for tunnelled traffic.
    pub fn parent_uuid(&self) -> &'a str {
        self.string(5)
    }
    /// Topology id of the capturing interface.
    pub fn node_tid(&self) -> &'a str {
        self.string(6)
    }
    /// The capture that produced the flow.
    pub fn capture_id(&self) -> &'a str {
        self.string(7)
    }
    /// First packet, ms since the epoch.
    pub fn start(&self) -> i64 {
        body_i64(self.body, START_AT)
    }
    /// Last packet, ms since the epoch.
    pub fn last(&self) -> i64 {
        body_i64(self.body, LAST_AT)
    }
    /// Raw packets kept.
    pub fn raw_packets_captured(&self) -> i64 {
        body_i64(self.body, RAW_PACKETS_AT)
    }
    /// How the flow ended.
    pub fn finish_type(&self) -> FinishType {
        FinishType::from_code(self.body.get(FINISH_TYPE_AT).copied().unwrap_or(0))
    }
    /// Ethernet layer.
    pub fn link(&self) -> Option<Layer<'a>> {
        self.layer(Section::Link)
    }
    /// The Ethernet layer's id (the interface), without reading its addresses: checking two
    /// strings costs a guest more fuel than the rest of the layer.
    pub fn link_id(&self) -> Option<i64> {
        let mut r = self.section(Section::Link)?;
        r.u8().and_then(|_| r.i64()).ok()
    }
    /// IP layer.
    pub fn network(&self) -> Option<Layer<'a>> {
        self.layer(Section::Network)
    }
    /// TCP/UDP/SCTP layer.
    pub fn transport(&self) -> Option<Transport> {
        read_transport(&mut self.section(Section::Transport)?).ok()
    }
    /// ICMP layer.
    pub fn icmp(&self) -> Option<Icmp> {
        read_icmp(&mut self.section(Section::Icmp)?).ok()
    }
    /// Counters of the last update window.
    pub fn last_update_metric(&self) -> Option<Metric> {
        self.metric_at(Section::LastUpdateMetric)
    }
    /// Cumulative counters.
    pub fn metric(&self) -> Option<Metric> {
        self.metric_at(Section::Metric)
    }
    /// Extra TCP counters.
    pub fn tcp_metric(&self) -> Option<TcpMetric> {
        read_tcp_metric(&mut self.section(Section::TcpMetric)?).ok()
    }
    /// Defragmentation counters.
    pub fn ip_metric(&self) -> Option<IpMetric> {
        read_ip_metric(&mut self.section(Section::IpMetric)?).ok()
    }
    /// The DHCPv4 layer's JSON text.
    pub fn dhcpv4(&self) -> Option<&'a str> {
        self.raw(Section::Dhcpv4)
    }
    /// The DNS layer's JSON text.
    pub fn dns(&self) -> Option<&'a str> {
        self.raw(Section::Dns)
    }
    /// The VRRPv2 layer's JSON text.
    pub fn vrrpv2(&self) -> Option<&'a str> {
        self.raw(Section::Vrrpv2)
    }
}

impl std::fmt::Debug for Flow<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("uuid", &self.uuid())
            .field("layers_path", &self.layers_path())
            .field("start", &self.start())
            .field("last", &self.last())
            .field("link", &self.link())
            .field("network", &self.network())
            .field("transport", &self.transport())
            .field("icmp", &self.icmp())
            .field("last_update_metric", &self.last_update_metric())
            .field("metric", &self.metric())
            .finish_non_exhaustive()
    }
}

/// The flows of one batch: iterate with [`Flows::iter`] (or `for flow in &flows`).
#[derive(Debug, Clone, Copy)]
pub struct Flows<'a> {
    batch: FlowBatch<'a>,
}

impl<'a> Flows<'a> {
    /// Reads a flow batch's header (ENCODING.md §2).
    pub fn new(batch: &'a [u8]) -> Result<Self, WireError> {
        Ok(Flows {
            batch: FlowBatch::parse(batch)?,
        })
    }

    /// How many flows the batch holds.
    pub fn len(&self) -> usize {
        self.batch.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.batch.is_empty()
    }

    /// The flows in order. A malformed flow ends the iteration with an error.
    pub fn iter(&self) -> FlowIter<'a> {
        FlowIter {
            bodies: self.batch.bodies(),
        }
    }
}

impl<'a> IntoIterator for &Flows<'a> {
    type Item = Result<Flow<'a>, WireError>;
    type IntoIter = FlowIter<'a>;
    fn into_iter(self) -> FlowIter<'a> {
        self.iter()
    }
}

/// Iterator over a batch's flows.
#[derive(Debug)]
pub struct FlowIter<'a> {
    bodies: FlowBodies<'a>,
}

impl<'a> Iterator for FlowIter<'a> {
    type Item = Result<Flow<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        let next = self.bodies.next()?;
        Some(next.map(|(body, sections)| Flow { body, sections }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.bodies.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{FlowData, encode_flows};

    #[test]
    fn link_id_is_the_link_layers_id_without_it() {
        let mut with_link = FlowData::tcp4("10.0.0.1", 40000, "10.0.0.2", 443);
        with_link.link.as_mut().unwrap().id = 7;
        let mut without = with_link.clone();
        without.link = None;
        let batch = encode_flows(&[with_link, without]);
        let flows = Flows::new(&batch).unwrap();
        let ids: Vec<(Option<i64>, Option<i64>)> = flows
            .iter()
            .map(|f| {
                let f = f.unwrap();
                (f.link_id(), f.link().map(|l| l.id))
            })
            .collect();
        assert_eq!(ids, [(Some(7), Some(7)), (None, None)]);
    }
}

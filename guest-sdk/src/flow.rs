//! Typed, zero-copy views of the flows in a batch (ENCODING.md §2).
//!
//! A [`Flow`] is a small view of its bytes: reading it finds where its sections are, and each
//! accessor decodes its part when called (strings are checked as UTF-8 then). A guest pays,
//! in fuel, only for what it reads, and moving a flow around copies a few words, not every
//! decoded field.

use crate::wire::{Reader, WireError};

/// Skydive's `FlowProtocol`, the protocol of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `ETHERNET`
    Ethernet,
    /// `IPV4`
    Ipv4,
    /// `TCP`
    Tcp,
    /// `UDP`
    Udp,
    /// `SCTP`
    Sctp,
    /// `IPV6`
    Ipv6,
    /// `ICMPV4`
    Icmpv4,
    /// `ICMPV6`
    Icmpv6,
    /// An ordinal this SDK version doesn't name.
    Other(u8),
}

impl Protocol {
    /// From Skydive's ordinal.
    pub fn from_ordinal(n: u8) -> Self {
        match n {
            0 => Protocol::Ethernet,
            1 => Protocol::Ipv4,
            2 => Protocol::Tcp,
            3 => Protocol::Udp,
            4 => Protocol::Sctp,
            5 => Protocol::Ipv6,
            6 => Protocol::Icmpv4,
            7 => Protocol::Icmpv6,
            n => Protocol::Other(n),
        }
    }

    /// Skydive's ordinal.
    pub fn ordinal(self) -> u8 {
        match self {
            Protocol::Ethernet => 0,
            Protocol::Ipv4 => 1,
            Protocol::Tcp => 2,
            Protocol::Udp => 3,
            Protocol::Sctp => 4,
            Protocol::Ipv6 => 5,
            Protocol::Icmpv4 => 6,
            Protocol::Icmpv6 => 7,
            Protocol::Other(n) => n,
        }
    }

    /// The name Skydive writes (`TCP`, `IPV4`...), `""` for an unknown ordinal.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ethernet => "ETHERNET",
            Protocol::Ipv4 => "IPV4",
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
            Protocol::Ipv6 => "IPV6",
            Protocol::Icmpv4 => "ICMPV4",
            Protocol::Icmpv6 => "ICMPV6",
            Protocol::Other(_) => "",
        }
    }

    /// The IANA protocol number of a transport or ICMP protocol (TCP 6, UDP 17, SCTP 132,
    /// ICMPv4 1, ICMPv6 58).
    pub fn iana_number(self) -> Option<u8> {
        match self {
            Protocol::Tcp => Some(6),
            Protocol::Udp => Some(17),
            Protocol::Sctp => Some(132),
            Protocol::Icmpv4 => Some(1),
            Protocol::Icmpv6 => Some(58),
            _ => None,
        }
    }
}

/// How a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FinishType {
    /// Still active.
    #[default]
    NotFinished,
    /// Expired after inactivity.
    Timeout,
    /// Ended by a TCP FIN.
    TcpFin,
    /// Ended by a TCP RST.
    TcpRst,
}

impl FinishType {
    fn from_code(n: u8) -> Self {
        match n {
            1 => FinishType::Timeout,
            2 => FinishType::TcpFin,
            3 => FinishType::TcpRst,
            _ => FinishType::NotFinished,
        }
    }

    /// Skydive's wire integer.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A link (MAC addresses) or network (IP addresses) layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layer<'a> {
    /// `ETHERNET`, `IPV4` or `IPV6`.
    pub protocol: Protocol,
    /// Source of the first packet.
    pub a: &'a str,
    /// Destination of the first packet.
    pub b: &'a str,
    /// VLAN id (link) or tunnel id (network).
    pub id: i64,
}

/// The transport layer (ports).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: Protocol,
    /// Source port of the first packet.
    pub a: i64,
    /// Destination port of the first packet.
    pub b: i64,
    /// Always 0 in practice.
    pub id: i64,
}

/// The ICMP layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp {
    /// Skydive's `ICMPType` ordinal (ENCODING.md §2).
    pub kind: u8,
    /// Code of the first packet.
    pub code: u32,
    /// Echo identifier.
    pub id: u32,
}

/// Packet and byte counters of a window (`last_update_metric`) or the flow's life (`metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Metric {
    /// Packets A→B.
    pub ab_packets: i64,
    /// Bytes A→B.
    pub ab_bytes: i64,
    /// Packets B→A.
    pub ba_packets: i64,
    /// Bytes B→A.
    pub ba_bytes: i64,
    /// Window start or first packet, ms.
    pub start: i64,
    /// Window end or last packet, ms.
    pub last: i64,
    /// Round-trip time, ns (0 when unknown).
    pub rtt: i64,
}

/// Skydive's extra TCP counters, in wire order (ENCODING.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TcpMetric {
    /// Every counter, in the order of [`TcpMetric::NAMES`].
    pub values: [i64; 22],
}

impl TcpMetric {
    /// Skydive's names of the counters, in wire order.
    pub const NAMES: [&'static str; 22] = [
        "ABSynStart",
        "BASynStart",
        "ABSynTTL",
        "BASynTTL",
        "ABFinStart",
        "BAFinStart",
        "ABRstStart",
        "BARstStart",
        "ABSegmentOutOfOrder",
        "ABSegmentSkipped",
        "ABSegmentSkippedBytes",
        "ABPackets",
        "ABBytes",
        "ABSawStart",
        "ABSawEnd",
        "BASegmentOutOfOrder",
        "BASegmentSkipped",
        "BASegmentSkippedBytes",
        "BAPackets",
        "BABytes",
        "BASawStart",
        "BASawEnd",
    ];

    /// A counter by its Skydive name (`"ABSynStart"`...).
    pub fn get(&self, name: &str) -> Option<i64> {
        Self::NAMES
            .iter()
            .position(|n| *n == name)
            .map(|i| self.values[i])
    }
}

/// IP defragmentation counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IpMetric {
    /// Fragments seen.
    pub fragments: i64,
    /// Fragments that could not be reassembled.
    pub fragment_errors: i64,
}

/// One Skydive flow, borrowed from the batch.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Flow<'a> {
    body: &'a [u8],
    present: u16,
    /// Where each present section (ENCODING.md §2 bits 0–10) starts in `body`.
    at: [u32; SECTIONS],
}

/// Optional sections of a flow.
const SECTIONS: usize = 11;
/// `present`, `finish_type`, `start`, `last`, `raw_packets_captured`.
const FIXED: usize = 27;
/// Bytes of a metric section.
const METRIC: usize = 56;

/// Bytes of the `str` at the start of `r`, skipped.
fn skip_str(r: &mut Reader<'_>) -> Result<(), WireError> {
    let n = r.u32()? as usize;
    r.bytes(n).map(drop)
}

fn text(bytes: &[u8]) -> &str {
    // The host only sends UTF-8; bytes that are not read as empty.
    std::str::from_utf8(bytes).unwrap_or("")
}

impl<'a> Flow<'a> {
    /// Finds the sections of a flow's body, checking every length once.
    fn new(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let present = r.u16()?;
        r.bytes(FIXED - 2)?;
        for _ in 0..8 {
            skip_str(&mut r)?;
        }
        let mut at = [0; SECTIONS];
        for (bit, slot) in at.iter_mut().enumerate() {
            if present & (1 << bit) == 0 {
                continue;
            }
            *slot = (body.len() - r.rest().len()) as u32;
            match bit {
                0 | 1 => {
                    r.bytes(9)?;
                    skip_str(&mut r)?;
                    skip_str(&mut r)?;
                }
                2 => drop(r.bytes(25)?),
                3 => drop(r.bytes(9)?),
                4 | 5 => drop(r.bytes(METRIC)?),
                6 => drop(r.bytes(22 * 8)?),
                7 => drop(r.bytes(16)?),
                _ => skip_str(&mut r)?,
            }
        }
        Ok(Flow { body, present, at })
    }

    /// A reader at section `bit`, if the flow has it.
    fn section(&self, bit: usize) -> Option<Reader<'a>> {
        if self.present & (1 << bit) == 0 {
            return None;
        }
        self.body.get(self.at[bit] as usize..).map(Reader::new)
    }

    /// The `i`th of the eight strings.
    fn string(&self, i: usize) -> &'a str {
        let mut r = Reader::new(self.body.get(FIXED..).unwrap_or_default());
        for _ in 0..i {
            if skip_str(&mut r).is_err() {
                return "";
            }
        }
        r.u32().and_then(|n| r.bytes(n as usize)).map_or("", text)
    }

    fn fixed_i64(&self, at: usize) -> i64 {
        self.body
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, i64::from_le_bytes)
    }

    fn layer(&self, bit: usize) -> Option<Layer<'a>> {
        let mut r = self.section(bit)?;
        let protocol = Protocol::from_ordinal(r.u8().ok()?);
        let id = r.i64().ok()?;
        let a = r.str().unwrap_or("");
        let b = r.str().unwrap_or("");
        Some(Layer { protocol, a, b, id })
    }

    fn metric_at(&self, bit: usize) -> Option<Metric> {
        metric(&mut self.section(bit)?).ok()
    }

    fn raw(&self, bit: usize) -> Option<&'a str> {
        let mut r = self.section(bit)?;
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
        self.fixed_i64(3)
    }
    /// Last packet, ms since the epoch.
    pub fn last(&self) -> i64 {
        self.fixed_i64(11)
    }
    /// Raw packets kept.
    pub fn raw_packets_captured(&self) -> i64 {
        self.fixed_i64(19)
    }
    /// How the flow ended.
    pub fn finish_type(&self) -> FinishType {
        FinishType::from_code(self.body.get(2).copied().unwrap_or(0))
    }
    /// Ethernet layer.
    pub fn link(&self) -> Option<Layer<'a>> {
        self.layer(0)
    }
    /// IP layer.
    pub fn network(&self) -> Option<Layer<'a>> {
        self.layer(1)
    }
    /// TCP/UDP/SCTP layer.
    pub fn transport(&self) -> Option<Transport> {
        let mut r = self.section(2)?;
        Some(Transport {
            protocol: Protocol::from_ordinal(r.u8().ok()?),
            a: r.i64().ok()?,
            b: r.i64().ok()?,
            id: r.i64().ok()?,
        })
    }
    /// ICMP layer.
    pub fn icmp(&self) -> Option<Icmp> {
        let mut r = self.section(3)?;
        Some(Icmp {
            kind: r.u8().ok()?,
            code: r.u32().ok()?,
            id: r.u32().ok()?,
        })
    }
    /// Counters of the last update window.
    pub fn last_update_metric(&self) -> Option<Metric> {
        self.metric_at(4)
    }
    /// Cumulative counters.
    pub fn metric(&self) -> Option<Metric> {
        self.metric_at(5)
    }
    /// Extra TCP counters.
    pub fn tcp_metric(&self) -> Option<TcpMetric> {
        let mut r = self.section(6)?;
        let mut values = [0; 22];
        for v in &mut values {
            *v = r.i64().ok()?;
        }
        Some(TcpMetric { values })
    }
    /// Defragmentation counters.
    pub fn ip_metric(&self) -> Option<IpMetric> {
        let mut r = self.section(7)?;
        Some(IpMetric {
            fragments: r.i64().ok()?,
            fragment_errors: r.i64().ok()?,
        })
    }
    /// The DHCPv4 layer's JSON text.
    pub fn dhcpv4(&self) -> Option<&'a str> {
        self.raw(8)
    }
    /// The DNS layer's JSON text.
    pub fn dns(&self) -> Option<&'a str> {
        self.raw(9)
    }
    /// The VRRPv2 layer's JSON text.
    pub fn vrrpv2(&self) -> Option<&'a str> {
        self.raw(10)
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
    count: u32,
    body: &'a [u8],
}

impl<'a> Flows<'a> {
    /// Reads a flow batch's header (ENCODING.md §2).
    pub fn new(batch: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(batch);
        let version = r.u8()?;
        if version != crate::ENCODING_VERSION {
            return Err(WireError::Version(version));
        }
        let kind = r.u8()?;
        if kind != crate::wire::KIND_FLOWS {
            return Err(WireError::Kind(kind));
        }
        r.u16()?;
        let count = r.u32()?;
        Ok(Flows {
            count,
            body: r.rest(),
        })
    }

    /// How many flows the batch holds.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The flows in order. A malformed flow ends the iteration with an error.
    pub fn iter(&self) -> FlowIter<'a> {
        FlowIter {
            left: self.count,
            r: Reader::new(self.body),
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
    left: u32,
    r: Reader<'a>,
}

impl<'a> Iterator for FlowIter<'a> {
    type Item = Result<Flow<'a>, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let result = self
            .r
            .u32()
            .and_then(|size| self.r.bytes(size as usize))
            .and_then(Flow::new);
        if result.is_err() {
            self.left = 0;
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

fn metric(r: &mut Reader<'_>) -> Result<Metric, WireError> {
    Ok(Metric {
        ab_packets: r.i64()?,
        ab_bytes: r.i64()?,
        ba_packets: r.i64()?,
        ba_bytes: r.i64()?,
        start: r.i64()?,
        last: r.i64()?,
        rtt: r.i64()?,
    })
}

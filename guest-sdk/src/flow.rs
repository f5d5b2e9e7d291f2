//! Typed, zero-copy views of the flows in a batch (ENCODING.md §2).
//!
//! A flow's strings are checked as UTF-8 when they are read, not when the flow is: a guest
//! pays only for the strings it uses (in wasm every byte checked costs fuel).

use crate::wire::{Reader, WireError};

/// A string's bytes in the batch, checked when read. The host only sends UTF-8; bytes that
/// are not read as empty.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Text<'a>(&'a [u8]);

impl<'a> Text<'a> {
    pub(crate) fn get(self) -> &'a str {
        std::str::from_utf8(self.0).unwrap_or("")
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, WireError> {
        let n = r.u32()? as usize;
        r.bytes(n).map(Text)
    }
}

impl std::fmt::Debug for Text<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.get(), f)
    }
}

/// A link or network layer as read, its addresses not checked yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawLayer<'a> {
    protocol: Protocol,
    id: i64,
    a: Text<'a>,
    b: Text<'a>,
}

impl<'a> RawLayer<'a> {
    fn get(self) -> Layer<'a> {
        Layer {
            protocol: self.protocol,
            a: self.a.get(),
            b: self.b.get(),
            id: self.id,
        }
    }
}

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
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flow<'a> {
    pub(crate) uuid: Text<'a>,
    pub(crate) layers_path: Text<'a>,
    pub(crate) application: Text<'a>,
    pub(crate) tracking_id: Text<'a>,
    pub(crate) l3_tracking_id: Text<'a>,
    pub(crate) parent_uuid: Text<'a>,
    pub(crate) node_tid: Text<'a>,
    pub(crate) capture_id: Text<'a>,
    pub(crate) start: i64,
    pub(crate) last: i64,
    pub(crate) raw_packets_captured: i64,
    pub(crate) finish_type: FinishType,
    pub(crate) link: Option<RawLayer<'a>>,
    pub(crate) network: Option<RawLayer<'a>>,
    pub(crate) transport: Option<Transport>,
    pub(crate) icmp: Option<Icmp>,
    pub(crate) last_update_metric: Option<Metric>,
    pub(crate) metric: Option<Metric>,
    pub(crate) tcp_metric: Option<TcpMetric>,
    pub(crate) ip_metric: Option<IpMetric>,
    pub(crate) dhcpv4: Option<Text<'a>>,
    pub(crate) dns: Option<Text<'a>>,
    pub(crate) vrrpv2: Option<Text<'a>>,
}

impl<'a> Flow<'a> {
    /// Flow id, unique per capture point.
    pub fn uuid(&self) -> &'a str {
        self.uuid.get()
    }
    /// Layers of the first packet, e.g. `Ethernet/IPv4/TCP`.
    pub fn layers_path(&self) -> &'a str {
        self.layers_path.get()
    }
    /// Application name.
    pub fn application(&self) -> &'a str {
        self.application.get()
    }
    /// Direction-independent L2–L4 hash.
    pub fn tracking_id(&self) -> &'a str {
        self.tracking_id.get()
    }
    /// The same hash without the link layer.
    pub fn l3_tracking_id(&self) -> &'a str {
        self.l3_tracking_id.get()
    }
    /// UUID of the outer flow for tunnelled traffic.
    pub fn parent_uuid(&self) -> &'a str {
        self.parent_uuid.get()
    }
    /// Topology id of the capturing interface.
    pub fn node_tid(&self) -> &'a str {
        self.node_tid.get()
    }
    /// The capture that produced the flow.
    pub fn capture_id(&self) -> &'a str {
        self.capture_id.get()
    }
    /// First packet, ms since the epoch.
    pub fn start(&self) -> i64 {
        self.start
    }
    /// Last packet, ms since the epoch.
    pub fn last(&self) -> i64 {
        self.last
    }
    /// Raw packets kept.
    pub fn raw_packets_captured(&self) -> i64 {
        self.raw_packets_captured
    }
    /// How the flow ended.
    pub fn finish_type(&self) -> FinishType {
        self.finish_type
    }
    /// Ethernet layer.
    pub fn link(&self) -> Option<Layer<'a>> {
        self.link.map(RawLayer::get)
    }
    /// IP layer.
    pub fn network(&self) -> Option<Layer<'a>> {
        self.network.map(RawLayer::get)
    }
    /// TCP/UDP/SCTP layer.
    pub fn transport(&self) -> Option<Transport> {
        self.transport
    }
    /// ICMP layer.
    pub fn icmp(&self) -> Option<Icmp> {
        self.icmp
    }
    /// Counters of the last update window.
    pub fn last_update_metric(&self) -> Option<Metric> {
        self.last_update_metric
    }
    /// Cumulative counters.
    pub fn metric(&self) -> Option<Metric> {
        self.metric
    }
    /// Extra TCP counters.
    pub fn tcp_metric(&self) -> Option<TcpMetric> {
        self.tcp_metric
    }
    /// Defragmentation counters.
    pub fn ip_metric(&self) -> Option<IpMetric> {
        self.ip_metric
    }
    /// The DHCPv4 layer's JSON text.
    pub fn dhcpv4(&self) -> Option<&'a str> {
        self.dhcpv4.map(Text::get)
    }
    /// The DNS layer's JSON text.
    pub fn dns(&self) -> Option<&'a str> {
        self.dns.map(Text::get)
    }
    /// The VRRPv2 layer's JSON text.
    pub fn vrrpv2(&self) -> Option<&'a str> {
        self.vrrpv2.map(Text::get)
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
            .and_then(decode_flow);
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

fn layer<'a>(r: &mut Reader<'a>) -> Result<RawLayer<'a>, WireError> {
    Ok(RawLayer {
        protocol: Protocol::from_ordinal(r.u8()?),
        id: r.i64()?,
        a: Text::read(r)?,
        b: Text::read(r)?,
    })
}

fn decode_flow(body: &[u8]) -> Result<Flow<'_>, WireError> {
    let mut r = Reader::new(body);
    let present = r.u16()?;
    let has = |bit: u16| present & (1 << bit) != 0;
    let finish_type = FinishType::from_code(r.u8()?);
    let start = r.i64()?;
    let last = r.i64()?;
    let raw_packets_captured = r.i64()?;
    let mut f = Flow {
        uuid: Text::read(&mut r)?,
        layers_path: Text::read(&mut r)?,
        application: Text::read(&mut r)?,
        tracking_id: Text::read(&mut r)?,
        l3_tracking_id: Text::read(&mut r)?,
        parent_uuid: Text::read(&mut r)?,
        node_tid: Text::read(&mut r)?,
        capture_id: Text::read(&mut r)?,
        start,
        last,
        raw_packets_captured,
        finish_type,
        ..Flow::default()
    };
    if has(0) {
        f.link = Some(layer(&mut r)?);
    }
    if has(1) {
        f.network = Some(layer(&mut r)?);
    }
    if has(2) {
        f.transport = Some(Transport {
            protocol: Protocol::from_ordinal(r.u8()?),
            a: r.i64()?,
            b: r.i64()?,
            id: r.i64()?,
        });
    }
    if has(3) {
        f.icmp = Some(Icmp {
            kind: r.u8()?,
            code: r.u32()?,
            id: r.u32()?,
        });
    }
    if has(4) {
        f.last_update_metric = Some(metric(&mut r)?);
    }
    if has(5) {
        f.metric = Some(metric(&mut r)?);
    }
    if has(6) {
        let mut values = [0; 22];
        for v in &mut values {
            *v = r.i64()?;
        }
        f.tcp_metric = Some(TcpMetric { values });
    }
    if has(7) {
        f.ip_metric = Some(IpMetric {
            fragments: r.i64()?,
            fragment_errors: r.i64()?,
        });
    }
    if has(8) {
        f.dhcpv4 = Some(Text::read(&mut r)?);
    }
    if has(9) {
        f.dns = Some(Text::read(&mut r)?);
    }
    if has(10) {
        f.vrrpv2 = Some(Text::read(&mut r)?);
    }
    Ok(f)
}

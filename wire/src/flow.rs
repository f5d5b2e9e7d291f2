//! The flow batch (ENCODING.md §2), host → guest: its vocabulary (Skydive's protocols, finish
//! types, layers and counters, as the guest SDK shows them), the writer of [`FlowFields`] (a
//! flow's fields, which each side borrows from its own flow model), and the reading of a
//! batch's flows and their sections.
//!
//! ```text
//! batch := version:u8 (=1)  kind:u8 (=1)  reserved:u16 (=0)  count:u32  flow × count
//! flow  := size:u32  body
//! body  := present:u16  finish_type:u8  start:i64  last:i64  raw_packets_captured:i64
//!          str × 8 (uuid ... capture_id)  then each section whose bit is set in `present`
//! ```

use crate::{KIND_FLOWS, Reader, VERSION, WireError};

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
    #[inline]
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
    #[inline]
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
    /// From Skydive's wire integer (an unknown one reads as not finished).
    #[inline]
    pub fn from_code(n: u8) -> Self {
        match n {
            1 => FinishType::Timeout,
            2 => FinishType::TcpFin,
            3 => FinishType::TcpRst,
            _ => FinishType::NotFinished,
        }
    }

    /// Skydive's wire integer.
    #[inline]
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

/// A flow as the writer takes it, its fields borrowed from either side's flow model (the
/// host's parsed `Flow`, the SDK's `FlowData` in tests); a section is `None` when the flow
/// lacks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowFields<'a> {
    /// `UUID`.
    pub uuid: &'a str,
    /// `LayersPath`.
    pub layers_path: &'a str,
    /// `Application`.
    pub application: &'a str,
    /// `TrackingID`.
    pub tracking_id: &'a str,
    /// `L3TrackingID`.
    pub l3_tracking_id: &'a str,
    /// `ParentUUID`.
    pub parent_uuid: &'a str,
    /// `NodeTID`.
    pub node_tid: &'a str,
    /// `CaptureID`.
    pub capture_id: &'a str,
    /// `Start`, ms.
    pub start: i64,
    /// `Last`, ms.
    pub last: i64,
    /// `RawPacketsCaptured`.
    pub raw_packets_captured: i64,
    /// `FinishType`.
    pub finish_type: FinishType,
    /// `Link` (section bit 0).
    pub link: Option<Layer<'a>>,
    /// `Network` (bit 1).
    pub network: Option<Layer<'a>>,
    /// `Transport` (bit 2).
    pub transport: Option<Transport>,
    /// `ICMP` (bit 3).
    pub icmp: Option<Icmp>,
    /// `LastUpdateMetric` (bit 4).
    pub last_update_metric: Option<Metric>,
    /// `Metric` (bit 5).
    pub metric: Option<Metric>,
    /// `TCPMetric` (bit 6).
    pub tcp_metric: Option<TcpMetric>,
    /// `IPMetric` (bit 7).
    pub ip_metric: Option<IpMetric>,
    /// `DHCPv4`, the layer's JSON text (bit 8).
    pub dhcpv4: Option<&'a str>,
    /// `DNS` JSON text (bit 9).
    pub dns: Option<&'a str>,
    /// `VRRPv2` JSON text (bit 10).
    pub vrrpv2: Option<&'a str>,
}

/// The optional sections of a flow body, by their bit in `present` (ENCODING.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Bit 0: protocol:u8 id:i64 str a str b.
    Link = 0,
    /// Bit 1: as `Link`.
    Network,
    /// Bit 2: protocol:u8 a:i64 b:i64 id:i64.
    Transport,
    /// Bit 3: type:u8 code:u32 id:u32.
    Icmp,
    /// Bit 4: a metric (7 × i64).
    LastUpdateMetric,
    /// Bit 5: a metric.
    Metric,
    /// Bit 6: 22 × i64.
    TcpMetric,
    /// Bit 7: fragments:i64 fragment_errors:i64.
    IpMetric,
    /// Bit 8: str (JSON text).
    Dhcpv4,
    /// Bit 9: str (JSON text).
    Dns,
    /// Bit 10: str (JSON text).
    Vrrpv2,
}

/// How many optional sections a flow has.
const SECTIONS: usize = 11;
/// Bytes of the fixed part of a body: `present`, `finish_type`, `start`, `last`,
/// `raw_packets_captured`.
const FIXED: usize = 27;
/// Where `finish_type` is in a body.
pub const FINISH_TYPE_AT: usize = 2;
/// Where `start` is in a body.
pub const START_AT: usize = 3;
/// Where `last` is in a body.
pub const LAST_AT: usize = 11;
/// Where `raw_packets_captured` is in a body.
pub const RAW_PACKETS_AT: usize = 19;
/// How many strings follow the fixed part (`uuid` ... `capture_id`).
const STRINGS: usize = 8;
/// Bytes of a metric section.
const METRIC: usize = 56;

impl Section {
    /// Every section, in bit order.
    const ALL: [Section; SECTIONS] = [
        Section::Link,
        Section::Network,
        Section::Transport,
        Section::Icmp,
        Section::LastUpdateMetric,
        Section::Metric,
        Section::TcpMetric,
        Section::IpMetric,
        Section::Dhcpv4,
        Section::Dns,
        Section::Vrrpv2,
    ];

    /// Its bit in `present`.
    #[inline]
    pub fn bit(self) -> u16 {
        1 << self as u16
    }

    /// Skips the section at `r`, checking its lengths.
    #[inline]
    fn skip(self, r: &mut Reader<'_>) -> Result<(), WireError> {
        match self {
            Section::Link | Section::Network => {
                r.bytes(9)?;
                r.skip_str()?;
                r.skip_str()
            }
            Section::Transport => r.bytes(25).map(drop),
            Section::Icmp => r.bytes(9).map(drop),
            Section::LastUpdateMetric | Section::Metric => r.bytes(METRIC).map(drop),
            Section::TcpMetric => r.bytes(22 * 8).map(drop),
            Section::IpMetric => r.bytes(16).map(drop),
            Section::Dhcpv4 | Section::Dns | Section::Vrrpv2 => r.skip_str(),
        }
    }
}

/// Where a flow body goes: counted first ([`Count`]), so that its room is made once, then
/// written ([`Fill`]). One description of the layout ([`flow_body`]) serves both.
trait Sink {
    fn bytes(&mut self, bytes: &[u8]);

    #[inline(always)]
    fn u8(&mut self, v: u8) {
        self.bytes(&[v]);
    }
    #[inline(always)]
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline(always)]
    fn i64(&mut self, v: i64) {
        self.bytes(&v.to_le_bytes());
    }
    #[inline(always)]
    fn str(&mut self, v: &str) {
        self.u32(v.len() as u32);
        self.bytes(v.as_bytes());
    }
}

/// Counts a body's bytes.
struct Count(usize);

impl Sink for Count {
    #[inline(always)]
    fn bytes(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Writes a body into the room made for it. Appending each field to the `Vec` instead took
/// the host's encoder about 1.8× as long a flow: the writes through the vector made the
/// compiler reload the flow's fields and the vector's length around every field.
struct Fill<'b> {
    out: &'b mut [u8],
    at: usize,
}

impl Sink for Fill<'_> {
    #[inline(always)]
    fn bytes(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

#[inline(always)]
fn layer<S: Sink>(s: &mut S, l: &Layer<'_>) {
    s.u8(l.protocol.ordinal());
    s.i64(l.id);
    s.str(l.a);
    s.str(l.b);
}

#[inline(always)]
fn metric<S: Sink>(s: &mut S, m: &Metric) {
    for v in [
        m.ab_packets,
        m.ab_bytes,
        m.ba_packets,
        m.ba_bytes,
        m.start,
        m.last,
        m.rtt,
    ] {
        s.i64(v);
    }
}

/// A flow's body (ENCODING.md §2).
#[inline(always)]
fn flow_body<S: Sink>(s: &mut S, f: &FlowFields<'_>) {
    let bits = [
        f.link.is_some(),
        f.network.is_some(),
        f.transport.is_some(),
        f.icmp.is_some(),
        f.last_update_metric.is_some(),
        f.metric.is_some(),
        f.tcp_metric.is_some(),
        f.ip_metric.is_some(),
        f.dhcpv4.is_some(),
        f.dns.is_some(),
        f.vrrpv2.is_some(),
    ];
    let present = bits
        .iter()
        .enumerate()
        .fold(0u16, |acc, (i, set)| acc | (u16::from(*set) << i));
    s.bytes(&present.to_le_bytes());
    s.u8(f.finish_type.code());
    s.i64(f.start);
    s.i64(f.last);
    s.i64(f.raw_packets_captured);
    for text in [
        f.uuid,
        f.layers_path,
        f.application,
        f.tracking_id,
        f.l3_tracking_id,
        f.parent_uuid,
        f.node_tid,
        f.capture_id,
    ] {
        s.str(text);
    }
    if let Some(l) = &f.link {
        layer(s, l);
    }
    if let Some(l) = &f.network {
        layer(s, l);
    }
    if let Some(t) = &f.transport {
        s.u8(t.protocol.ordinal());
        s.i64(t.a);
        s.i64(t.b);
        s.i64(t.id);
    }
    if let Some(i) = &f.icmp {
        s.u8(i.kind);
        s.u32(i.code);
        s.u32(i.id);
    }
    if let Some(m) = &f.last_update_metric {
        metric(s, m);
    }
    if let Some(m) = &f.metric {
        metric(s, m);
    }
    if let Some(m) = &f.tcp_metric {
        for v in m.values {
            s.i64(v);
        }
    }
    if let Some(m) = &f.ip_metric {
        s.i64(m.fragments);
        s.i64(m.fragment_errors);
    }
    for text in [f.dhcpv4, f.dns, f.vrrpv2].into_iter().flatten() {
        s.str(text);
    }
}

/// Writes `flows` as a flow batch, replacing `out`'s content.
///
/// Each flow's size is counted first, then the flow is written into room made for it. The
/// room is `out`'s old bytes, written over (a stage passes the same vector batch after batch),
/// and zeroed new bytes only past them: zeroing each flow's room first cost as much as the
/// two passes save. `out` is cut to the batch at the end.
#[inline]
pub fn encode_flows<'a, I>(flows: I, out: &mut Vec<u8>)
where
    I: IntoIterator<Item = FlowFields<'a>>,
    I::IntoIter: ExactSizeIterator,
{
    let flows = flows.into_iter();
    let mut header = [VERSION, KIND_FLOWS, 0, 0, 0, 0, 0, 0];
    header[4..].copy_from_slice(&(flows.len() as u32).to_le_bytes());
    let mut at = header.len();
    room(out, 0, at).copy_from_slice(&header);
    for f in flows {
        let mut size = Count(0);
        flow_body(&mut size, &f);
        let room = room(out, at, 4 + size.0);
        at += room.len();
        room[..4].copy_from_slice(&(size.0 as u32).to_le_bytes());
        let mut fill = Fill { out: room, at: 4 };
        flow_body(&mut fill, &f);
        debug_assert_eq!(
            fill.at,
            fill.out.len(),
            "a flow fills the room counted for it"
        );
    }
    out.truncate(at);
}

/// `out[at..at + n]`, `out` grown (zeroed) to hold it if it is shorter.
#[inline(always)]
fn room(out: &mut Vec<u8>, at: usize, n: usize) -> &mut [u8] {
    if out.len() < at + n {
        out.resize(at + n, 0);
    }
    &mut out[at..at + n]
}

/// A flow batch's header read: its count and the flows' bytes.
#[derive(Debug, Clone, Copy)]
pub struct FlowBatch<'a> {
    count: u32,
    flows: &'a [u8],
}

impl<'a> FlowBatch<'a> {
    /// Reads a flow batch's header.
    pub fn parse(batch: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(batch);
        crate::read_kind(&mut r, KIND_FLOWS)?;
        r.u16()?;
        let count = r.u32()?;
        Ok(FlowBatch {
            count,
            flows: r.rest(),
        })
    }

    /// How many flows the header says.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether it says none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Each flow's body, in order; a malformed one ends the iteration with an error.
    pub fn bodies(&self) -> FlowBodies<'a> {
        FlowBodies {
            left: self.count,
            r: Reader::new(self.flows),
        }
    }
}

/// The bodies of a batch's flows, each with its sections found.
#[derive(Debug, Clone)]
pub struct FlowBodies<'a> {
    left: u32,
    r: Reader<'a>,
}

impl<'a> Iterator for FlowBodies<'a> {
    type Item = Result<(&'a [u8], FlowSections), WireError>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let result = self
            .r
            .u32()
            .and_then(|size| self.r.bytes(size as usize))
            .and_then(|body| Ok((body, FlowSections::index(body)?)));
        if result.is_err() {
            self.left = 0;
        }
        Some(result)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

/// Where each present section of a flow body starts, found once (every length checked), so
/// that a reader goes straight to the part it wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowSections {
    present: u16,
    at: [u32; SECTIONS],
}

impl FlowSections {
    /// Finds the sections of `body`, checking the fixed part, the strings and every present
    /// section's length.
    #[inline]
    pub fn index(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let present = r.u16()?;
        r.bytes(FIXED - 2)?;
        for _ in 0..STRINGS {
            r.skip_str()?;
        }
        let mut at = [0; SECTIONS];
        // The present sections only, lowest bit first: a guest indexes every flow it reads, and
        // visiting the absent ones too cost it 150 fuel a flow (of 770 to index one).
        let mut bits = present & ((1 << SECTIONS) - 1);
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            at[bit] = (body.len() - r.rest().len()) as u32;
            Section::ALL[bit].skip(&mut r)?;
        }
        Ok(FlowSections { present, at })
    }

    /// A reader at `section` of `body` (the body these were found in), if the flow has it.
    #[inline]
    pub fn reader<'a>(&self, body: &'a [u8], section: Section) -> Option<Reader<'a>> {
        if self.present & section.bit() == 0 {
            return None;
        }
        body.get(self.at[section as usize] as usize..)
            .map(Reader::new)
    }
}

/// The `i`th of a body's eight strings (`uuid` ... `capture_id`), as bytes.
#[inline]
pub fn body_string(body: &[u8], i: usize) -> Result<&[u8], WireError> {
    let mut r = Reader::new(body.get(FIXED..).ok_or(WireError::Truncated)?);
    for _ in 0..i {
        r.skip_str()?;
    }
    let n = r.u32()? as usize;
    r.bytes(n)
}

/// The `i64` at `at` in a body (0 past its end).
#[inline]
pub fn body_i64(body: &[u8], at: usize) -> i64 {
    body.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i64::from_le_bytes)
}

// The readers below are `#[inline]`: a guest calls them for every flow, and without the hint
// its build (LTO) left them as calls: 12% more fuel a flow in the awsflowlogs guest.

/// A link or network section.
#[inline]
pub fn read_layer<'a>(r: &mut Reader<'a>) -> Result<Layer<'a>, WireError> {
    let protocol = Protocol::from_ordinal(r.u8()?);
    let id = r.i64()?;
    Ok(Layer {
        protocol,
        id,
        a: r.str()?,
        b: r.str()?,
    })
}

/// A transport section.
#[inline]
pub fn read_transport(r: &mut Reader<'_>) -> Result<Transport, WireError> {
    Ok(Transport {
        protocol: Protocol::from_ordinal(r.u8()?),
        a: r.i64()?,
        b: r.i64()?,
        id: r.i64()?,
    })
}

/// An ICMP section.
#[inline]
pub fn read_icmp(r: &mut Reader<'_>) -> Result<Icmp, WireError> {
    Ok(Icmp {
        kind: r.u8()?,
        code: r.u32()?,
        id: r.u32()?,
    })
}

/// A metric section.
#[inline]
pub fn read_metric(r: &mut Reader<'_>) -> Result<Metric, WireError> {
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

/// A TCP metric section.
#[inline]
pub fn read_tcp_metric(r: &mut Reader<'_>) -> Result<TcpMetric, WireError> {
    let mut values = [0; 22];
    for v in &mut values {
        *v = r.i64()?;
    }
    Ok(TcpMetric { values })
}

/// An IP metric section.
#[inline]
pub fn read_ip_metric(r: &mut Reader<'_>) -> Result<IpMetric, WireError> {
    Ok(IpMetric {
        fragments: r.i64()?,
        fragment_errors: r.i64()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> FlowFields<'static> {
        FlowFields {
            uuid: "u",
            application: "app",
            layers_path: "Ethernet/IPv4/TCP",
            capture_id: "c",
            start: 5,
            last: -6,
            raw_packets_captured: 7,
            finish_type: FinishType::TcpRst,
            link: Some(Layer {
                protocol: Protocol::Ethernet,
                a: "m1",
                b: "m2",
                id: 3,
            }),
            network: Some(Layer {
                protocol: Protocol::Ipv6,
                a: "fd00::1",
                b: "fd00::2",
                id: 0,
            }),
            transport: Some(Transport {
                protocol: Protocol::Other(200),
                a: 1,
                b: 2,
                id: 3,
            }),
            icmp: Some(Icmp {
                kind: 2,
                code: 9,
                id: 10,
            }),
            last_update_metric: Some(Metric {
                rtt: 11,
                ..Metric::default()
            }),
            metric: Some(Metric {
                ab_bytes: 12,
                ..Metric::default()
            }),
            tcp_metric: Some(TcpMetric {
                values: std::array::from_fn(|i| i as i64),
            }),
            ip_metric: Some(IpMetric {
                fragments: 1,
                fragment_errors: 2,
            }),
            dhcpv4: None,
            dns: Some(r#"{"ID":1}"#),
            vrrpv2: Some("{}"),
            ..FlowFields::default()
        }
    }

    #[test]
    fn every_section_reads_back() {
        let mut batch = Vec::new();
        encode_flows([full(), FlowFields::default()], &mut batch);
        // Into a vector holding an older, longer batch: the same bytes.
        let mut reused = vec![0xa5; batch.len() * 3];
        encode_flows([full(), FlowFields::default()], &mut reused);
        assert_eq!(reused, batch);
        assert_eq!(body_string(&batch[12..], 2).unwrap(), b"app");
        let parsed = FlowBatch::parse(&batch).unwrap();
        assert_eq!(parsed.len(), 2);
        let flows: Vec<_> = parsed.bodies().map(Result::unwrap).collect();
        let (body, s) = flows[0];
        let f = full();
        assert_eq!(body_string(body, 0).unwrap(), b"u");
        assert_eq!(body_string(body, 7).unwrap(), b"c");
        assert_eq!(
            (
                body_i64(body, START_AT),
                body_i64(body, LAST_AT),
                body_i64(body, RAW_PACKETS_AT)
            ),
            (5, -6, 7)
        );
        assert_eq!(FinishType::from_code(body[FINISH_TYPE_AT]), f.finish_type);
        let at = |section| s.reader(body, section).unwrap();
        assert_eq!(read_layer(&mut at(Section::Link)).ok(), f.link);
        assert_eq!(read_layer(&mut at(Section::Network)).ok(), f.network);
        assert_eq!(
            read_transport(&mut at(Section::Transport)).ok(),
            f.transport
        );
        assert_eq!(read_icmp(&mut at(Section::Icmp)).ok(), f.icmp);
        assert_eq!(
            read_metric(&mut at(Section::LastUpdateMetric)).ok(),
            f.last_update_metric
        );
        assert_eq!(read_metric(&mut at(Section::Metric)).ok(), f.metric);
        assert_eq!(
            read_tcp_metric(&mut at(Section::TcpMetric)).ok(),
            f.tcp_metric
        );
        assert_eq!(read_ip_metric(&mut at(Section::IpMetric)).ok(), f.ip_metric);
        assert!(s.reader(body, Section::Dhcpv4).is_none());
        assert_eq!(at(Section::Dns).str().ok(), f.dns);
        assert_eq!(at(Section::Vrrpv2).str().ok(), f.vrrpv2);
        let (empty, s) = flows[1];
        assert!(Section::ALL.iter().all(|&x| s.reader(empty, x).is_none()));
    }

    #[test]
    fn a_cut_batch_is_an_error_not_a_panic() {
        let mut batch = Vec::new();
        encode_flows([full()], &mut batch);
        for cut in 0..batch.len() {
            let ok = FlowBatch::parse(&batch[..cut])
                .map(|b| b.bodies().all(|f| f.is_ok()) && b.len() == 1)
                .unwrap_or(false);
            assert!(!ok, "cut at {cut}");
        }
        let mut bad = batch.clone();
        bad[0] = 2;
        assert_eq!(FlowBatch::parse(&bad).unwrap_err(), WireError::Version(2));
        bad[0] = 1;
        bad[1] = 2;
        assert_eq!(FlowBatch::parse(&bad).unwrap_err(), WireError::Kind(2));
    }
}

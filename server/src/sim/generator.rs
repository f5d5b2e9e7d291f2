//! A deterministic flow-table generator that follows an agent's life cycle
//! (docs/skydive-protocol.md §2.4): first seen → updates (window deltas in `LastUpdateMetric`,
//! cumulative `Metric`) → expiry with `FinishType` 1; DNS ends on the application timeout with a
//! stale window; RST-first flows start with `FinishType` 3.
//!
//! The generator never reads the clock: [`Generator::tick`] gets the tick time, so the same seed
//! and the same tick times give the same flows.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::skydive::flow::{
    FinishType, Flow, FlowLayer, FlowMetric, FlowProtocol, IcmpLayer, IcmpType, TransportLayer,
};

/// Timing of the simulated flow table, in ms.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `flow.update`: ticks.
    pub update_ms: i64,
    /// `flow.expire`: a flow idle this long is sent one last time and removed.
    pub expire_ms: i64,
    /// `flow.application_timeout.dns`.
    pub app_timeout_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    Dns,
    Udp,
    Icmp,
    Rst,
}

struct SimFlow {
    kind: Kind,
    flow: Flow,
    /// Start of the current update window.
    window_start: i64,
    /// Cumulative counters when the current window started.
    window_base: FlowMetric,
    /// The last window sent, repeated by the DNS application timeout.
    last_window: FlowMetric,
    /// After this time the flow sees no more packets.
    ends_at: i64,
    sent: bool,
}

/// Generates the flow records of one simulated analyzer (all its captures).
pub struct Generator {
    rng: StdRng,
    captures: Vec<(String, Vec<String>)>,
    target: usize,
    timing: Timing,
    active: Vec<SimFlow>,
    last_tick: Option<i64>,
    packets: Vec<i64>,
}

const PRIVATE_V4: &[&str] = &[
    "10.0.0.12",
    "10.0.0.138",
    "10.1.4.20",
    "10.1.7.3",
    "172.16.5.10",
    "172.16.9.44",
    "192.168.0.1",
    "192.168.0.2",
    "192.168.1.50",
];
const PUBLIC_V4: &[&str] = &[
    "8.8.8.8",
    "1.1.1.1",
    "93.184.216.34",
    "151.101.1.69",
    "104.16.132.229",
    "173.194.40.147",
    "52.95.110.1",
    "140.82.121.4",
];
const PRIVATE_V6: &[&str] = &[
    "fd49:37c8:5229::1",
    "fd49:37c8:5229::2",
    "fd00:10::7",
    "fd00:10::8",
];
const PUBLIC_V6: &[&str] = &[
    "2606:4700:4700::1111",
    "2a00:1450:4001:82b::200e",
    "2001:4860:4860::8888",
];
const TCP_PORTS: &[i64] = &[443, 80, 22, 3333, 5432, 3306, 6379, 8080, 9092];

impl Generator {
    /// A generator keeping about `target` flows alive over `captures` (two interfaces each).
    pub fn new(seed: u64, captures: &[String], target: usize, timing: Timing) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let captures = captures
            .iter()
            .map(|id| {
                let tids = (0..2).map(|_| uuid_like(&mut rng)).collect();
                (id.clone(), tids)
            })
            .collect::<Vec<_>>();
        let packets = vec![0; captures.len()];
        Generator {
            rng,
            captures,
            target: target.max(1),
            timing,
            active: Vec::new(),
            last_tick: None,
            packets,
        }
    }

    /// Active flows per capture id, and packets seen so far, for stats messages.
    pub fn capture_stats(&self) -> Vec<(String, usize, i64)> {
        self.captures
            .iter()
            .zip(&self.packets)
            .map(|((id, _), packets)| {
                let count = self
                    .active
                    .iter()
                    .filter(|f| f.flow.capture_id == *id)
                    .count();
                (id.clone(), count, *packets)
            })
            .collect()
    }

    /// Runs one update tick at `now` (ms) and returns the flows it sends, in table order.
    pub fn tick(&mut self, now: i64) -> Vec<Flow> {
        let previous = self.last_tick.replace(now);
        let window_floor = previous.unwrap_or(now - self.timing.update_ms);
        let mut out = Vec::new();

        // Expiry and application timeout.
        let timing = self.timing;
        let mut kept = Vec::with_capacity(self.active.len());
        for mut f in std::mem::take(&mut self.active) {
            let idle = now - f.flow.last;
            if f.kind == Kind::Dns && f.sent && idle > timing.app_timeout_ms {
                // The application-timeout path does not refresh LastUpdateMetric.
                f.flow.last_update_metric = Some(f.last_window);
                f.flow.finish_type = FinishType::Timeout;
                out.push(f.flow);
            } else if f.sent && idle > timing.expire_ms {
                let rtt = f.flow.metric.map_or(0, |m| m.rtt);
                f.flow.last_update_metric = Some(FlowMetric {
                    start: f.window_start,
                    last: now,
                    rtt,
                    ..FlowMetric::default()
                });
                f.flow.finish_type = FinishType::Timeout;
                out.push(f.flow);
            } else {
                kept.push(f);
            }
        }
        self.active = kept;

        // New flows replace those that went quiet, so about `target` flows see traffic. Their
        // first packets fall inside the window that ends now.
        let mut alive = self.active.iter().filter(|f| f.ends_at > now).count();
        while alive < self.target {
            let start = self.rng.random_range(window_floor..=now.max(window_floor));
            let f = self.new_flow(start, now);
            self.active.push(f);
            alive += 1;
        }

        // Update tick: flows that saw packets since the previous tick.
        for i in 0..self.active.len() {
            let first = !self.active[i].sent;
            let busy =
                first || (self.active[i].ends_at > window_floor && self.rng.random_bool(0.7));
            if busy {
                if !first {
                    self.add_packets(i, window_floor, now);
                }
                let f = &mut self.active[i];
                let metric = f.flow.metric.unwrap_or_default();
                let window = FlowMetric {
                    start: f.window_start,
                    last: now,
                    rtt: metric.rtt,
                    ..f.last_window_delta(metric)
                };
                f.flow.last_update_metric = Some(window);
                f.last_window = window;
                f.sent = true;
                out.push(f.flow.clone());
            }
            self.active[i].window_start = now;
            self.active[i].last_window_base();
        }
        // Flows sent with a finish type are removed without being sent again.
        self.active.retain(|f| f.flow.finish_type.is_not_finished());
        out
    }

    fn add_packets(&mut self, i: usize, window_floor: i64, now: i64) {
        let f = &self.active[i];
        let size = packet_size(f.kind);
        let at = self
            .rng
            .random_range(window_floor.max(f.flow.last)..=now.min(f.ends_at).max(f.flow.last));
        let ab = self.rng.random_range(1..20);
        let ba = self.rng.random_range(0..=ab);
        let (ab_bytes, ba_bytes) = (
            ab * self.rng.random_range(size.0..=size.1),
            ba * self.rng.random_range(size.0..=size.1),
        );
        let capture = self.capture_index(&self.active[i].flow.capture_id);
        self.packets[capture] += ab + ba;
        let f = &mut self.active[i];
        let metric = f.flow.metric.get_or_insert_with(FlowMetric::default);
        metric.ab_packets += ab;
        metric.ba_packets += ba;
        metric.ab_bytes += ab_bytes;
        metric.ba_bytes += ba_bytes;
        metric.last = at;
        f.flow.last = at;
    }

    fn capture_index(&self, id: &str) -> usize {
        self.captures.iter().position(|(c, _)| c == id).unwrap_or(0)
    }

    fn new_flow(&mut self, start: i64, now: i64) -> SimFlow {
        let rng = &mut self.rng;
        let kind = match rng.random_range(0..100) {
            0..55 => Kind::Tcp,
            55..75 => Kind::Dns,
            75..82 => Kind::Udp,
            82..92 => Kind::Icmp,
            _ => Kind::Rst,
        };
        let capture = rng.random_range(0..self.captures.len());
        let (capture_id, tids) = &self.captures[capture];
        let node_tid = tids[rng.random_range(0..tids.len())].clone();
        let v6 = matches!(kind, Kind::Tcp | Kind::Icmp) && rng.random_bool(0.2);
        let (a, b) = addresses(rng, v6, kind == Kind::Dns);
        let link = FlowLayer {
            protocol: FlowProtocol::Ethernet,
            a: mac(rng),
            b: mac(rng),
            id: 0,
        };
        let network = FlowLayer {
            protocol: if v6 {
                FlowProtocol::Ipv6
            } else {
                FlowProtocol::Ipv4
            },
            a,
            b,
            id: 0,
        };
        let ip = if v6 { "IPv6" } else { "IPv4" };
        let (layers_path, application, transport, icmp) = match kind {
            Kind::Tcp | Kind::Rst => (
                format!("Ethernet/{ip}/TCP"),
                "TCP",
                Some(TransportLayer {
                    protocol: FlowProtocol::Tcp,
                    a: rng.random_range(32768..61000),
                    b: TCP_PORTS[rng.random_range(0..TCP_PORTS.len())],
                    id: 0,
                }),
                None,
            ),
            Kind::Dns => (
                format!("Ethernet/{ip}/UDP/DNS"),
                "DNS",
                Some(TransportLayer {
                    protocol: FlowProtocol::Udp,
                    a: rng.random_range(32768..61000),
                    b: 53,
                    id: 0,
                }),
                None,
            ),
            Kind::Udp => (
                format!("Ethernet/{ip}/UDP"),
                "UDP",
                Some(TransportLayer {
                    protocol: FlowProtocol::Udp,
                    a: rng.random_range(1024..61000),
                    b: [123, 514, 4789, 5353][rng.random_range(0..4)],
                    id: 0,
                }),
                None,
            ),
            Kind::Icmp => {
                let icmp = if v6 { "ICMPv6" } else { "ICMPv4" };
                (
                    if v6 {
                        format!("Ethernet/{ip}/ICMPv6/ICMPv6Echo")
                    } else {
                        format!("Ethernet/{ip}/ICMPv4")
                    },
                    icmp,
                    None,
                    Some(IcmpLayer {
                        kind: IcmpType::Echo,
                        code: 0,
                        id: rng.random_range(1..65535),
                    }),
                )
            }
        };
        let size = packet_size(kind);
        let (ab, ba) = match kind {
            Kind::Rst => (1, 0),
            Kind::Dns | Kind::Icmp => (1, 1),
            _ => (rng.random_range(1..12), rng.random_range(1..10)),
        };
        let last = rng.random_range(start..=now.max(start));
        let rtt = match kind {
            Kind::Tcp | Kind::Icmp => rng.random_range(20_000..2_000_000),
            Kind::Rst => rng.random_range(10_000..200_000),
            _ => 0,
        };
        let metric = FlowMetric {
            ab_packets: ab,
            ab_bytes: ab * rng.random_range(size.0..=size.1),
            ba_packets: ba,
            ba_bytes: ba * rng.random_range(size.0..=size.1),
            start,
            last,
            rtt,
        };
        let lifetime = match kind {
            Kind::Tcp | Kind::Udp => rng.random_range(0..=4 * self.timing.update_ms),
            Kind::Icmp => rng.random_range(0..=2 * self.timing.update_ms),
            _ => 0,
        };
        self.packets[capture] += ab + ba;

        let l3_key = {
            let (x, y) = ordered(&network.a, &network.b);
            let (p, q) = transport.as_ref().map_or((0, 0), |t| {
                if network.a <= network.b {
                    (t.a, t.b)
                } else {
                    (t.b, t.a)
                }
            });
            format!("{x}|{y}|{layers_path}|{p}|{q}")
        };
        let l2_key = {
            let (x, y) = ordered(&link.a, &link.b);
            format!("{x}|{y}|{l3_key}")
        };
        let mut flow = Flow::new(
            format!("{:x}", fnv1a(&format!("{l2_key}|{start}|{node_tid}"))),
            start,
            last,
        );
        flow.layers_path = layers_path;
        flow.application = application.to_owned();
        flow.link = Some(link);
        flow.network = Some(network);
        flow.transport = transport;
        flow.icmp = icmp;
        flow.metric = Some(metric);
        flow.tracking_id = format!("{:x}", fnv1a(&l2_key));
        flow.l3_tracking_id = format!("{:x}", fnv1a(&l3_key));
        flow.node_tid = node_tid;
        flow.capture_id = capture_id.clone();
        if kind == Kind::Rst {
            flow.finish_type = FinishType::TcpRst;
        }
        SimFlow {
            kind,
            flow,
            window_start: start,
            window_base: FlowMetric::default(),
            last_window: FlowMetric::default(),
            ends_at: last + lifetime,
            sent: false,
        }
    }
}

impl SimFlow {
    /// Counters of the current window: cumulative minus what earlier windows covered.
    fn last_window_delta(&self, metric: FlowMetric) -> FlowMetric {
        let base = self.window_base;
        FlowMetric {
            ab_packets: metric.ab_packets - base.ab_packets,
            ab_bytes: metric.ab_bytes - base.ab_bytes,
            ba_packets: metric.ba_packets - base.ba_packets,
            ba_bytes: metric.ba_bytes - base.ba_bytes,
            ..FlowMetric::default()
        }
    }

    /// Remembers the cumulative counters at the start of the next window.
    fn last_window_base(&mut self) {
        self.window_base = self.flow.metric.unwrap_or_default();
    }
}

fn packet_size(kind: Kind) -> (i64, i64) {
    match kind {
        Kind::Tcp => (66, 1514),
        Kind::Dns => (74, 510),
        Kind::Udp => (60, 1200),
        Kind::Icmp => (98, 98),
        Kind::Rst => (54, 60),
    }
}

fn ordered<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Picks A and B so that flows classify as internal, ingress, egress and other.
fn addresses(rng: &mut StdRng, v6: bool, dns: bool) -> (String, String) {
    let (private, public) = if v6 {
        (PRIVATE_V6, PUBLIC_V6)
    } else {
        (PRIVATE_V4, PUBLIC_V4)
    };
    let pick = |rng: &mut StdRng, list: &[&str]| list[rng.random_range(0..list.len())].to_owned();
    let (a_private, b_private) = match rng.random_range(0..10) {
        0..4 => (true, true),
        4..6 => (false, true),
        6..9 => (true, false),
        _ => (false, false),
    };
    let a = pick(rng, if a_private { private } else { public });
    let mut b = pick(rng, if b_private { private } else { public });
    if dns && !b_private {
        b = if v6 {
            "2001:4860:4860::8888"
        } else {
            "8.8.8.8"
        }
        .to_owned();
    }
    if a == b {
        b = pick(rng, public);
    }
    (a, b)
}

fn mac(rng: &mut StdRng) -> String {
    let bytes: [u8; 6] = rng.random();
    // Locally administered, unicast.
    let first = (bytes[0] | 0x02) & 0xfe;
    format!(
        "{first:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        bytes[1], bytes[2], bytes[3], bytes[4], bytes[5]
    )
}

/// A random version-4 UUID in text form.
pub fn uuid_like<R: Rng + ?Sized>(rng: &mut R) -> String {
    let mut b: [u8; 16] = rng.random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[0],
        b[1],
        b[2],
        b[3],
        b[4],
        b[5],
        b[6],
        b[7],
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}

/// 64-bit FNV-1a: stands in for Skydive's xxHash (lowercase hex, not zero-padded).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMING: Timing = Timing {
        update_ms: 1_000,
        expire_ms: 3_000,
        app_timeout_ms: 1_000,
    };

    fn run(seed: u64, ticks: usize) -> Vec<Flow> {
        let captures = ["cap-a".to_owned(), "cap-b".to_owned()];
        let mut g = Generator::new(seed, &captures, 40, TIMING);
        (0..ticks as i64)
            .flat_map(|i| g.tick(1_700_000_000_000 + i * 1_000))
            .collect()
    }

    fn json(flows: &[Flow]) -> Vec<String> {
        flows
            .iter()
            .map(|f| serde_json::to_string(f).unwrap())
            .collect()
    }

    #[test]
    fn same_seed_same_flows_other_seed_other_flows() {
        let a = json(&run(7, 12));
        assert_eq!(a, json(&run(7, 12)));
        assert_ne!(a, json(&run(8, 12)));
        assert!(a.len() > 100, "{} records", a.len());
    }

    #[test]
    fn flows_follow_the_life_cycle() {
        let flows = run(1, 20);
        let mut seen: std::collections::HashMap<&str, &Flow> = Default::default();
        let (mut ended, mut rst, mut dns_timeouts, mut v6, mut icmp) = (0, 0, 0, 0, 0);
        for f in &flows {
            assert!(!f.uuid.is_empty() && f.uuid.len() <= 16);
            assert!(["cap-a", "cap-b"].contains(&f.capture_id.as_str()));
            let m = f.metric.unwrap();
            let w = f.last_update_metric.unwrap();
            assert!(m.start == f.start && m.last == f.last && f.start <= f.last);
            assert!(w.ab_packets <= m.ab_packets && w.ba_bytes <= m.ba_bytes);
            if let Some(prev) = seen.get(f.uuid.as_str()) {
                let pm = prev.metric.unwrap();
                assert!(prev.finish_type.is_not_finished(), "nothing after the end");
                assert!(m.ab_packets >= pm.ab_packets, "Metric is cumulative");
                if f.finish_type.is_not_finished() {
                    assert_eq!(w.ab_packets, m.ab_packets - pm.ab_packets, "window delta");
                }
            }
            match f.finish_type {
                FinishType::Timeout if f.application == "DNS" => {
                    dns_timeouts += 1;
                    assert_eq!(
                        w,
                        seen[f.uuid.as_str()].last_update_metric.unwrap(),
                        "stale window"
                    );
                }
                FinishType::Timeout => {
                    ended += 1;
                    assert_eq!((w.ab_packets, w.ba_bytes), (0, 0), "zeroed window");
                    assert_eq!(w.rtt, m.rtt, "RTT kept");
                }
                FinishType::TcpRst => {
                    rst += 1;
                    assert!(
                        !seen.contains_key(f.uuid.as_str()),
                        "RST on first appearance"
                    );
                }
                _ => {}
            }
            if f.network.as_ref().unwrap().protocol == FlowProtocol::Ipv6 {
                v6 += 1;
            }
            if f.icmp.is_some() {
                icmp += 1;
                assert!(f.transport.is_none());
            }
            seen.insert(&f.uuid, f);
        }
        assert!(ended > 0 && rst > 0 && dns_timeouts > 0 && v6 > 0 && icmp > 0);
    }
}

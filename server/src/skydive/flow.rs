//! The Skydive flow model (docs/skydive-protocol.md §3).
//!
//! Decoding is tolerant of unknown keys and strict about types: a string where a number belongs
//! is an error for that flow. Encoding reproduces Skydive's easyjson key order and omissions,
//! which is what the `none` transform writes out.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

/// Deserialize a JSON `null` as the type's default, as Go does for a nil field.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Defines a string-encoded Skydive enum that also accepts its ordinal as a number.
macro_rules! name_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name Skydive writes on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The protobuf ordinal.
            pub fn ordinal(self) -> u32 {
                self as u32
            }

            /// Parses a wire name.
            pub fn from_name(name: &str) -> Option<Self> {
                match name { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $name;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(concat!("a ", stringify!($name), " name or ordinal"))
                    }
                    fn visit_str<E: de::Error>(self, v: &str) -> Result<$name, E> {
                        $name::from_name(v).ok_or_else(|| {
                            E::custom(format!(concat!("unknown ", stringify!($name), " `{}`"), v))
                        })
                    }
                    fn visit_u64<E: de::Error>(self, v: u64) -> Result<$name, E> {
                        $name::ALL.get(v as usize).copied().ok_or_else(|| {
                            E::custom(format!(concat!("unknown ", stringify!($name), " ordinal {}"), v))
                        })
                    }
                    fn visit_i64<E: de::Error>(self, v: i64) -> Result<$name, E> {
                        u64::try_from(v)
                            .map_err(|_| E::custom(concat!("negative ", stringify!($name), " ordinal")))
                            .and_then(|v| self.visit_u64(v))
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

name_enum!(
    /// Skydive's `FlowProtocol`.
    FlowProtocol {
        Ethernet = "ETHERNET",
        Ipv4 = "IPV4",
        Tcp = "TCP",
        Udp = "UDP",
        Sctp = "SCTP",
        Ipv6 = "IPV6",
        Icmpv4 = "ICMPV4",
        Icmpv6 = "ICMPV6",
    }
);

impl FlowProtocol {
    /// The IANA protocol number of a transport protocol, where it has one.
    pub fn iana_number(self) -> Option<u8> {
        match self {
            FlowProtocol::Tcp => Some(6),
            FlowProtocol::Udp => Some(17),
            FlowProtocol::Sctp => Some(132),
            FlowProtocol::Icmpv4 => Some(1),
            FlowProtocol::Icmpv6 => Some(58),
            _ => None,
        }
    }
}

name_enum!(
    /// Skydive's `ICMPType`, shared by ICMPv4 and ICMPv6.
    IcmpType {
        Unknown = "UNKNOWN",
        DestinationUnreachable = "DESTINATION_UNREACHABLE",
        Echo = "ECHO",
        Neighbor = "NEIGHBOR",
        AddressMask = "ADDRESS_MASK",
        Info = "INFO",
        ParameterProblem = "PARAMETER_PROBLEM",
        Redirect = "REDIRECT",
        Router = "ROUTER",
        SourceQuench = "SOURCE_QUENCH",
        TimeExceeded = "TIME_EXCEEDED",
        Timestamp = "TIMESTAMP",
        PacketTooBig = "PACKET_TOO_BIG",
    }
);

/// How a flow ended; an integer on the wire, 0 (not finished) is omitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum FinishType {
    /// Still active.
    #[default]
    NotFinished,
    /// Expired after inactivity, or flushed at capture stop.
    Timeout,
    /// First packet carried FIN.
    TcpFin,
    /// First packet carried RST.
    TcpRst,
}

impl FinishType {
    /// The wire integer.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// From the wire integer.
    pub fn from_code(code: u64) -> Option<Self> {
        Some(match code {
            0 => FinishType::NotFinished,
            1 => FinishType::Timeout,
            2 => FinishType::TcpFin,
            3 => FinishType::TcpRst,
            _ => return None,
        })
    }

    /// Whether the wire omits it.
    pub fn is_not_finished(&self) -> bool {
        *self == FinishType::NotFinished
    }
}

impl Serialize for FinishType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.code())
    }
}

impl<'de> Deserialize<'de> for FinishType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = Option::<u64>::deserialize(d)?.unwrap_or(0);
        FinishType::from_code(code)
            .ok_or_else(|| de::Error::custom(format!("unknown FinishType {code}")))
    }
}

/// A link or network layer: `Link` (MACs) or `Network` (IPs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowLayer {
    /// `ETHERNET`, `IPV4` or `IPV6`.
    #[serde(rename = "Protocol")]
    pub protocol: FlowProtocol,
    /// Source of the first packet.
    #[serde(
        rename = "A",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub a: String,
    /// Destination of the first packet.
    #[serde(
        rename = "B",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub b: String,
    /// VLAN ids (link) or tunnel id (network).
    #[serde(rename = "ID", default)]
    pub id: i64,
}

/// The transport layer: TCP, UDP or SCTP ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportLayer {
    /// `TCP`, `UDP` or `SCTP` (NetFlow-sourced flows may carry others).
    #[serde(rename = "Protocol")]
    pub protocol: FlowProtocol,
    /// Source port of the first packet.
    #[serde(rename = "A", default)]
    pub a: i64,
    /// Destination port of the first packet.
    #[serde(rename = "B", default)]
    pub b: i64,
    /// Always 0 in practice.
    #[serde(rename = "ID", default)]
    pub id: i64,
}

/// The ICMP layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpLayer {
    /// Message type (request and reply share one).
    #[serde(rename = "Type")]
    pub kind: IcmpType,
    /// Code of the first packet.
    #[serde(rename = "Code", default, skip_serializing_if = "is_zero_u32")]
    pub code: u32,
    /// Echo identifier.
    #[serde(rename = "ID", default, skip_serializing_if = "is_zero_u32")]
    pub id: u32,
}

/// Packet and byte counters over a window (`LastUpdateMetric`) or the flow's life (`Metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FlowMetric {
    /// Packets A→B.
    #[serde(rename = "ABPackets", default)]
    pub ab_packets: i64,
    /// Bytes A→B.
    #[serde(rename = "ABBytes", default)]
    pub ab_bytes: i64,
    /// Packets B→A.
    #[serde(rename = "BAPackets", default)]
    pub ba_packets: i64,
    /// Bytes B→A.
    #[serde(rename = "BABytes", default)]
    pub ba_bytes: i64,
    /// Window start or first packet, ms.
    #[serde(default)]
    pub start: i64,
    /// Window end or last packet, ms.
    #[serde(default)]
    pub last: i64,
    /// Round-trip time in nanoseconds, omitted when 0.
    #[serde(rename = "RTT", default, skip_serializing_if = "is_zero_i64")]
    pub rtt: i64,
}

/// Extra TCP counters (capture option `ExtraTCPMetric`); all 22 keys on the wire.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TcpMetric {
    #[serde(rename = "ABSynStart", default)]
    pub ab_syn_start: i64,
    #[serde(rename = "BASynStart", default)]
    pub ba_syn_start: i64,
    #[serde(rename = "ABSynTTL", default, skip_serializing_if = "is_zero_u32")]
    pub ab_syn_ttl: u32,
    #[serde(rename = "BASynTTL", default, skip_serializing_if = "is_zero_u32")]
    pub ba_syn_ttl: u32,
    #[serde(rename = "ABFinStart", default)]
    pub ab_fin_start: i64,
    #[serde(rename = "BAFinStart", default)]
    pub ba_fin_start: i64,
    #[serde(rename = "ABRstStart", default)]
    pub ab_rst_start: i64,
    #[serde(rename = "BARstStart", default)]
    pub ba_rst_start: i64,
    #[serde(rename = "ABSegmentOutOfOrder", default)]
    pub ab_segment_out_of_order: i64,
    #[serde(rename = "ABSegmentSkipped", default)]
    pub ab_segment_skipped: i64,
    #[serde(rename = "ABSegmentSkippedBytes", default)]
    pub ab_segment_skipped_bytes: i64,
    #[serde(rename = "ABPackets", default)]
    pub ab_packets: i64,
    #[serde(rename = "ABBytes", default)]
    pub ab_bytes: i64,
    #[serde(rename = "ABSawStart", default)]
    pub ab_saw_start: i64,
    #[serde(rename = "ABSawEnd", default)]
    pub ab_saw_end: i64,
    #[serde(rename = "BASegmentOutOfOrder", default)]
    pub ba_segment_out_of_order: i64,
    #[serde(rename = "BASegmentSkipped", default)]
    pub ba_segment_skipped: i64,
    #[serde(rename = "BASegmentSkippedBytes", default)]
    pub ba_segment_skipped_bytes: i64,
    #[serde(rename = "BAPackets", default)]
    pub ba_packets: i64,
    #[serde(rename = "BABytes", default)]
    pub ba_bytes: i64,
    #[serde(rename = "BASawStart", default)]
    pub ba_saw_start: i64,
    #[serde(rename = "BASawEnd", default)]
    pub ba_saw_end: i64,
}

/// IP defragmentation counters (capture option `IPDefrag`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpMetric {
    /// Fragments seen.
    #[serde(default)]
    pub fragments: i64,
    /// Fragments that could not be reassembled.
    #[serde(default)]
    pub fragment_errors: i64,
}

/// One Skydive flow as the analyzer streams it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Flow {
    /// Flow id, unique per capture point.
    #[serde(
        rename = "UUID",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub uuid: String,
    /// Layers of the first packet, e.g. `Ethernet/IPv4/TCP`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub layers_path: String,
    /// Application name (last layer, or from the port map).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub application: String,
    /// Ethernet layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<FlowLayer>,
    /// IP layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<FlowLayer>,
    /// TCP/UDP/SCTP layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<TransportLayer>,
    /// ICMP layer.
    #[serde(rename = "ICMP", default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpLayer>,
    /// Extra layer, kept opaque (its keys differ between Skydive versions).
    #[serde(rename = "DHCPv4", default, skip_serializing_if = "Option::is_none")]
    pub dhcpv4: Option<Box<RawValue>>,
    /// Extra layer, kept opaque.
    #[serde(rename = "DNS", default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Box<RawValue>>,
    /// Extra layer, kept opaque.
    #[serde(rename = "VRRPv2", default, skip_serializing_if = "Option::is_none")]
    pub vrrpv2: Option<Box<RawValue>>,
    /// Counters of the last update window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update_metric: Option<FlowMetric>,
    /// Cumulative counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<FlowMetric>,
    /// Extra TCP counters.
    #[serde(rename = "TCPMetric", default, skip_serializing_if = "Option::is_none")]
    pub tcp_metric: Option<TcpMetric>,
    /// Defragmentation counters.
    #[serde(rename = "IPMetric", default, skip_serializing_if = "Option::is_none")]
    pub ip_metric: Option<IpMetric>,
    /// First packet, ms since the epoch.
    pub start: i64,
    /// Last packet, ms since the epoch.
    pub last: i64,
    /// Direction-independent L2–L4 hash.
    #[serde(
        rename = "TrackingID",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub tracking_id: String,
    /// The same hash without the link layer.
    #[serde(
        rename = "L3TrackingID",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub l3_tracking_id: String,
    /// UUID of the outer flow for tunnelled traffic; always written.
    #[serde(rename = "ParentUUID", default, deserialize_with = "null_as_default")]
    pub parent_uuid: String,
    /// Topology id of the capturing interface.
    #[serde(
        rename = "NodeTID",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub node_tid: String,
    /// The capture that produced the flow.
    #[serde(
        rename = "CaptureID",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub capture_id: String,
    /// Raw packets kept; always written.
    #[serde(default)]
    pub raw_packets_captured: i64,
    /// How the flow ended.
    #[serde(default, skip_serializing_if = "FinishType::is_not_finished")]
    pub finish_type: FinishType,
}

impl Flow {
    /// A minimal flow with the two required fields, for tests and generators.
    pub fn new(uuid: impl Into<String>, start: i64, last: i64) -> Self {
        Flow {
            uuid: uuid.into(),
            layers_path: String::new(),
            application: String::new(),
            link: None,
            network: None,
            transport: None,
            icmp: None,
            dhcpv4: None,
            dns: None,
            vrrpv2: None,
            last_update_metric: None,
            metric: None,
            tcp_metric: None,
            ip_metric: None,
            start,
            last,
            tracking_id: String::new(),
            l3_tracking_id: String::new(),
            parent_uuid: String::new(),
            node_tid: String::new(),
            capture_id: String::new(),
            raw_packets_captured: 0,
            finish_type: FinishType::NotFinished,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(name: &str) -> String {
        crate::test_vectors::text(&format!("skydive/{name}"))
    }

    #[test]
    fn every_flow_vector_round_trips_in_skydive_key_order() {
        for entry in std::fs::read_dir(crate::test_vectors::path("skydive")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if !name.starts_with("flow-") {
                continue;
            }
            let text = vector(&name);
            let flow: Flow = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let original: serde_json::Value = serde_json::from_str(&text).unwrap();
            let ours = serde_json::to_string(&flow).unwrap();
            let reparsed: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(reparsed, original, "{name}");
            // serde_json::Value sorts keys, so check Skydive's key order separately.
            let order_in_file: Vec<String> = text
                .lines()
                .filter(|l| l.starts_with("  \"") && !l.starts_with("   "))
                .map(|l| l.trim().split('"').nth(1).unwrap().to_string())
                .collect();
            assert_eq!(top_level_keys(&ours), order_in_file, "{name}: key order");
        }
    }

    fn top_level_keys(json: &str) -> Vec<String> {
        let mut de = serde_json::Deserializer::from_str(json);
        struct Keys(Vec<String>);
        impl<'de> Deserialize<'de> for Keys {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Keys;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str("object")
                    }
                    fn visit_map<A: de::MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                        let mut out = Vec::new();
                        while let Some((k, _)) = m.next_entry::<String, de::IgnoredAny>()? {
                            out.push(k);
                        }
                        Ok(Keys(out))
                    }
                }
                d.deserialize_map(V)
            }
        }
        Keys::deserialize(&mut de).unwrap().0
    }

    #[test]
    fn unknown_keys_are_ignored_and_numbers_accepted_for_enums() {
        let flow: Flow = serde_json::from_str(
            r#"{"Start":1,"Last":2,"Future":{"x":1},"Network":{"Protocol":1,"A":"10.0.0.1","B":"10.0.0.2","ID":0}}"#,
        )
        .unwrap();
        assert_eq!(flow.network.unwrap().protocol, FlowProtocol::Ipv4);
    }

    #[test]
    fn wrong_types_and_unknown_names_are_errors() {
        for bad in [
            r#"{"Start":"1","Last":2}"#,
            r#"{"Last":2}"#,
            r#"{"Start":1,"Last":2,"Transport":{"Protocol":"QUIC","A":1,"B":2,"ID":0}}"#,
            r#"{"Start":1,"Last":2,"Transport":{"Protocol":"TCP","A":"80","B":2,"ID":0}}"#,
            r#"{"Start":1,"Last":2,"FinishType":9}"#,
            r#"{"Start":1,"Last":2,"UUID":5}"#,
        ] {
            assert!(
                serde_json::from_str::<Flow>(bad).is_err(),
                "{bad} should fail"
            );
        }
    }
}

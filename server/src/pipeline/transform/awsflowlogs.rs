//! `awsflowlogs`: one AWS VPC Flow Logs record per flow (docs/stages.md §6.3, docs/awsflowlogs.md).
//!
//! The CSV form is the AWS text format: with `encode.csv.delimiter: " "` an object is exactly a
//! flow-log file (header line of AWS field names, `-` for a field that does not apply or cannot
//! be computed). The JSON form keeps upstream's Go field names and types, with Go zero values
//! (`""`, `0`) where the CSV writes `-`. Differences from upstream are listed in
//! `docs/awsflowlogs.md`.

use serde::ser::{Serialize, SerializeStruct, Serializer};

use crate::config::AwsFlowLogsOptions;
use crate::pipeline::record::CsvRow;
use crate::skydive::flow::{Flow, FlowMetric, FlowProtocol};

/// Upstream's constant account id, used when `transform.awsflowlogs.account_id` is not set.
pub const DEFAULT_ACCOUNT_ID: &str = "12345678";

/// AWS's marker for a field that does not apply or cannot be computed.
const ABSENT: &str = "-";

const HEADER_V3: [&str; 21] = [
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
    "vpc-id",
    "subnet-id",
    "instance-id",
    "tcp-flags",
    "type",
    "pkt-srcaddr",
    "pkt-dstaddr",
];

/// Upstream's header: AWS's with upstream's two misspellings (`upstream_names`).
const HEADER_V3_UPSTREAM: [&str; 21] = {
    let mut header = HEADER_V3;
    header[3] = "srcadr";
    header[19] = "pkt-srcadr";
    header
};

/// Version 2's fields are the first 14 of version 3's.
const V2_FIELDS: usize = 14;
const HEADER_V2: &[&str] = HEADER_V3.as_slice().split_at(V2_FIELDS).0;
const HEADER_V2_UPSTREAM: &[&str] = HEADER_V3_UPSTREAM.as_slice().split_at(V2_FIELDS).0;

/// The configured `awsflowlogs` transform.
#[derive(Debug, Clone)]
pub struct AwsFlowLogs {
    version: u8,
    account_id: String,
    upstream_names: bool,
}

impl AwsFlowLogs {
    /// From `pipeline.transform.awsflowlogs`: version 3 when asked, 2 otherwise (as upstream).
    pub fn from_options(options: &AwsFlowLogsOptions) -> Self {
        AwsFlowLogs {
            version: if options.version == 3 { 3 } else { 2 },
            account_id: options
                .account_id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| DEFAULT_ACCOUNT_ID.to_string()),
            upstream_names: options.upstream_names,
        }
    }

    /// One record per flow; never fails: what the flow lacks is written as absent.
    pub fn transform(&self, flow: &Flow) -> AwsFlowLog {
        let network = flow.network.as_ref();
        let icmp = icmp_protocol(flow);
        let (srcport, dstport, protocol) = match (&flow.transport, icmp) {
            (Some(t), _) => (Some(t.a), Some(t.b), t.protocol.iana_number()),
            // AWS writes ports 0 for ICMP.
            (None, Some(p)) => (Some(0), Some(0), p.iana_number()),
            (None, None) => (None, None, None),
        };
        // AWS counts what was seen in the aggregation interval: Skydive's update window.
        let (counters, start, end) = match (&flow.last_update_metric, &flow.metric) {
            (Some(m), _) => (Some(m), m.start, m.last),
            (None, Some(m)) => (Some(m), flow.start, flow.last),
            (None, None) => (None, flow.start, flow.last),
        };
        AwsFlowLog {
            version: self.version,
            account_id: self.account_id.clone(),
            interface_id: flow.link.as_ref().map(|l| l.id.to_string()),
            srcaddr: network.map(|n| n.a.clone()).filter(|a| !a.is_empty()),
            dstaddr: network.map(|n| n.b.clone()).filter(|b| !b.is_empty()),
            srcport,
            dstport,
            protocol,
            packets: counters.map(|m: &FlowMetric| m.ab_packets.saturating_add(m.ba_packets)),
            bytes: counters.map(|m: &FlowMetric| m.ab_bytes.saturating_add(m.ba_bytes)),
            start: start / 1000,
            end: end / 1000,
            action: "ACCEPT",
            log_status: "OK",
            tcp_flags: tcp_flags(flow),
            ip_type: match network.map(|n| n.protocol) {
                Some(FlowProtocol::Ipv4) => Some("IPv4"),
                Some(FlowProtocol::Ipv6) => Some("IPv6"),
                _ => None,
            },
            upstream_names: self.upstream_names,
        }
    }
}

/// ICMPv4 or ICMPv6 for a flow without a transport layer whose first packet was ICMP.
fn icmp_protocol(flow: &Flow) -> Option<FlowProtocol> {
    let path = flow.layers_path.as_str();
    if path.contains("ICMPv6") {
        return Some(FlowProtocol::Icmpv6);
    }
    if path.contains("ICMPv4") {
        return Some(FlowProtocol::Icmpv4);
    }
    flow.icmp.as_ref()?;
    match flow.network.as_ref().map(|n| n.protocol) {
        Some(FlowProtocol::Ipv6) => Some(FlowProtocol::Icmpv6),
        _ => Some(FlowProtocol::Icmpv4),
    }
}

/// AWS's `tcp-flags` from Skydive's extra TCP metrics: FIN 1, SYN 2, RST 4, SYN-ACK 18.
/// Only a TCP flow with `TCPMetric` has them; other flows leave the field absent.
fn tcp_flags(flow: &Flow) -> Option<u8> {
    let t = flow.transport.as_ref()?;
    if t.protocol != FlowProtocol::Tcp {
        return None;
    }
    let m = flow.tcp_metric.as_ref()?;
    let mut flags = 0;
    if m.ab_fin_start != 0 || m.ba_fin_start != 0 {
        flags |= 1;
    }
    if m.ab_syn_start != 0 {
        flags |= 2;
    }
    if m.ab_rst_start != 0 || m.ba_rst_start != 0 {
        flags |= 4;
    }
    if m.ba_syn_start != 0 {
        flags |= 18;
    }
    Some(flags)
}

/// One AWS VPC Flow Logs record. `None` is a field AWS writes as `-`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsFlowLog {
    /// 2 or 3.
    pub version: u8,
    /// `account-id`.
    pub account_id: String,
    /// `interface-id`: the Skydive link id (`Link.ID`), absent without a link layer.
    pub interface_id: Option<String>,
    /// `srcaddr`: `Network.A`.
    pub srcaddr: Option<String>,
    /// `dstaddr`: `Network.B`.
    pub dstaddr: Option<String>,
    /// `srcport`: `Transport.A`, 0 for ICMP.
    pub srcport: Option<i64>,
    /// `dstport`: `Transport.B`, 0 for ICMP.
    pub dstport: Option<i64>,
    /// `protocol`: the IANA number.
    pub protocol: Option<u8>,
    /// `packets` in the interval (both directions).
    pub packets: Option<i64>,
    /// `bytes` in the interval (both directions).
    pub bytes: Option<i64>,
    /// `start`, Unix seconds.
    pub start: i64,
    /// `end`, Unix seconds.
    pub end: i64,
    /// `action`: `ACCEPT` or `REJECT`.
    pub action: &'static str,
    /// `log-status`: `OK`, `NODATA` or `SKIPDATA`.
    pub log_status: &'static str,
    /// v3 `tcp-flags`.
    pub tcp_flags: Option<u8>,
    /// v3 `type`: `IPv4` or `IPv6`.
    pub ip_type: Option<&'static str>,
    /// Use upstream's misspelled CSV column names.
    pub upstream_names: bool,
}

impl AwsFlowLog {
    /// The CSV header: AWS field names (or upstream's with `upstream_names`).
    pub fn csv_header(&self) -> &'static [&'static str] {
        match (self.version == 3, self.upstream_names) {
            (false, false) => HEADER_V2,
            (true, false) => &HEADER_V3,
            (false, true) => HEADER_V2_UPSTREAM,
            (true, true) => &HEADER_V3_UPSTREAM,
        }
    }

    /// The CSV fields, `-` for absent ones.
    pub fn csv_row(&self, row: &mut CsvRow) {
        fn opt<T: ToString>(row: &mut CsvRow, v: Option<T>) {
            match v {
                Some(v) => row.push(v),
                None => row.push(ABSENT),
            }
        }
        row.push(self.version);
        row.push(&self.account_id);
        opt(row, self.interface_id.as_ref());
        opt(row, self.srcaddr.as_ref());
        opt(row, self.dstaddr.as_ref());
        opt(row, self.srcport);
        opt(row, self.dstport);
        opt(row, self.protocol);
        opt(row, self.packets);
        opt(row, self.bytes);
        row.push(self.start);
        row.push(self.end);
        row.push(self.action);
        row.push(self.log_status);
        if self.version == 3 {
            // vpc-id, subnet-id, instance-id: no Skydive equivalent.
            for _ in 0..3 {
                row.push(ABSENT);
            }
            opt(row, self.tcp_flags);
            opt(row, self.ip_type);
            // pkt-srcaddr, pkt-dstaddr: not computed (as upstream).
            row.push(ABSENT);
            row.push(ABSENT);
        }
    }
}

impl Serialize for AwsFlowLog {
    /// Upstream's Go JSON: field names and order of its structs, Go zero values for absent data.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let v3 = self.version == 3;
        let mut st = s.serialize_struct("AwsFlowLog", if v3 { 21 } else { 14 })?;
        st.serialize_field("Version", &self.version)?;
        st.serialize_field("AccountID", &self.account_id)?;
        st.serialize_field("InterfaceID", self.interface_id.as_deref().unwrap_or(""))?;
        st.serialize_field("SrcAddr", self.srcaddr.as_deref().unwrap_or(""))?;
        st.serialize_field("DstAddr", self.dstaddr.as_deref().unwrap_or(""))?;
        st.serialize_field("SrcPort", &self.srcport.unwrap_or(0))?;
        st.serialize_field("DstPort", &self.dstport.unwrap_or(0))?;
        st.serialize_field("Protocol", &self.protocol.unwrap_or(0))?;
        st.serialize_field("Packets", &self.packets.unwrap_or(0))?;
        st.serialize_field("Bytes", &self.bytes.unwrap_or(0))?;
        st.serialize_field("Start", &self.start)?;
        st.serialize_field("End", &self.end)?;
        st.serialize_field("Action", self.action)?;
        st.serialize_field("LogStatus", self.log_status)?;
        if v3 {
            st.serialize_field("VpcID", "")?;
            st.serialize_field("SubnetID", "")?;
            st.serialize_field("InstanceID", "")?;
            st.serialize_field("TCPFlags", &self.tcp_flags.unwrap_or(0))?;
            st.serialize_field("Type", self.ip_type.unwrap_or(""))?;
            st.serialize_field("PktSrcAddr", "")?;
            st.serialize_field("PktDstAddr", "")?;
        }
        st.end()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::Value;

    use super::*;
    use crate::pipeline::encode::{Encoder, write_go_json};
    use crate::pipeline::record::Record;
    use crate::pipeline::storeheader::StoreObject;

    const GO_KEYS_V3: &[&str] = &[
        "Version",
        "AccountID",
        "InterfaceID",
        "SrcAddr",
        "DstAddr",
        "SrcPort",
        "DstPort",
        "Protocol",
        "Packets",
        "Bytes",
        "Start",
        "End",
        "Action",
        "LogStatus",
        "VpcID",
        "SubnetID",
        "InstanceID",
        "TCPFlags",
        "Type",
        "PktSrcAddr",
        "PktDstAddr",
    ];

    /// The keys of a flat JSON object, in written order.
    pub(crate) fn flat_keys(text: &str) -> Vec<String> {
        text.trim()
            .trim_start_matches('{')
            .split(',')
            .filter_map(|kv| kv.split_once("\":"))
            .map(|(k, _)| k.trim_start_matches('"').to_string())
            .collect()
    }

    fn vectors() -> Value {
        crate::test_vectors::json("exporter/awsflowlogs_transform.json")
    }

    fn transformer(version: u32) -> AwsFlowLogs {
        AwsFlowLogs::from_options(&AwsFlowLogsOptions {
            version,
            ..Default::default()
        })
    }

    fn csv(delimiter: char, records: Vec<Record>) -> String {
        let mut out = Vec::new();
        Encoder::Csv { delimiter }
            .encode(&StoreObject::Records(&records), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Upstream's record with sluice's fix: IANA protocol numbers (docs/stages.md §16 item 7).
    fn fixed_expectation(case: &Value) -> Value {
        let mut want = case["expected_record"].clone();
        let flow = &case["input_flow"];
        let iana = match flow["Transport"]["Protocol"].as_str() {
            Some("TCP") => 6,
            Some("UDP") => 17,
            _ if flow["LayersPath"].as_str().unwrap_or("").contains("ICMPv4") => 1,
            _ => 0,
        };
        want["Protocol"] = iana.into();
        want
    }

    #[test]
    fn golden_records_with_iana_protocol_numbers() {
        let v = vectors();
        let mut checked = 0;
        for case in v["cases"].as_array().unwrap() {
            let Some(flow) = case.get("input_flow") else {
                continue;
            };
            let name = case["name"].as_str().unwrap();
            let flow: Flow = serde_json::from_value(flow.clone()).unwrap();
            let version = case["config_version"].as_u64().unwrap() as u32;
            let record = transformer(version).transform(&flow);
            let got: Value = serde_json::to_value(&record).unwrap();
            assert_eq!(got, fixed_expectation(case), "{name}");
            let mut bytes = Vec::new();
            write_go_json(&mut bytes, false, &record).unwrap();
            let text = String::from_utf8(bytes).unwrap();
            // Key order is the Go structs' (v3 embeds v2).
            let order = if version == 3 {
                GO_KEYS_V3
            } else {
                &GO_KEYS_V3[..14]
            };
            assert_eq!(flat_keys(&text), order, "{name}");
            if let Some(compact) = case.get("expected_json_compact") {
                let compact = compact
                    .as_str()
                    .unwrap()
                    .replace("\"Protocol\":2", "\"Protocol\":6");
                assert_eq!(text, compact, "{name}");
            }
            checked += 1;
        }
        assert_eq!(checked, 4);
    }

    #[test]
    fn icmp_has_protocol_1_and_ports_0() {
        let v = vectors();
        let case = &v["cases"][3];
        let flow: Flow = serde_json::from_value(case["input_flow"].clone()).unwrap();
        let r = transformer(2).transform(&flow);
        assert_eq!(
            (r.protocol, r.srcport, r.dstport),
            (Some(1), Some(0), Some(0))
        );
        let mut flow6 = flow.clone();
        flow6.layers_path = "Ethernet/IPv6/ICMPv6/ICMPv6Echo".into();
        assert_eq!(transformer(2).transform(&flow6).protocol, Some(58));
    }

    #[test]
    fn intended_csv_with_upstream_names_and_comma() {
        let v = vectors();
        let flow: Flow = serde_json::from_value(v["cases"][0]["input_flow"].clone()).unwrap();
        let t = AwsFlowLogs::from_options(&AwsFlowLogsOptions {
            upstream_names: true,
            ..Default::default()
        });
        let text = csv(',', vec![Record::AwsFlowLog(Box::new(t.transform(&flow)))]);
        let want = v["csv"]["intended_rows_tcp_v2"]
            .as_str()
            .unwrap()
            .replace(",80,2,", ",80,6,");
        assert_eq!(text, want);
        let t3 = AwsFlowLogs::from_options(&AwsFlowLogsOptions {
            version: 3,
            upstream_names: true,
            ..Default::default()
        });
        let text = csv(',', vec![Record::AwsFlowLog(Box::new(t3.transform(&flow)))]);
        assert_eq!(
            text.lines().next().unwrap(),
            v["csv"]["intended_header_v3"].as_str().unwrap()
        );
    }

    #[test]
    fn aws_v2_text_with_space_delimiter_is_an_aws_flow_log_file() {
        let v = vectors();
        let tcp: Flow = serde_json::from_value(v["cases"][0]["input_flow"].clone()).unwrap();
        // A flow with neither link, network, transport nor metrics: everything but the times
        // is absent.
        let bare = Flow::new("bare", 1546338030000, 1546338090999);
        let t = AwsFlowLogs::from_options(&AwsFlowLogsOptions {
            account_id: Some("123456789010".into()),
            ..Default::default()
        });
        let text = csv(
            ' ',
            vec![
                Record::AwsFlowLog(Box::new(t.transform(&tcp))),
                Record::AwsFlowLog(Box::new(t.transform(&bare))),
            ],
        );
        assert_eq!(
            text,
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status\n\
             2 123456789010 0 192.168.0.5 173.194.40.147 47838 80 6 10 1276 1546338030 1546338032 ACCEPT OK\n\
             2 123456789010 - - - - - - - - 1546338030 1546338090 ACCEPT OK\n"
        );
        assert!(text.lines().all(|l| l.split(' ').count() == 14));
    }

    #[test]
    fn aws_v3_text_header_and_absent_fields() {
        let mut flow = Flow::new("u", 2000, 5000);
        flow.network = Some(crate::skydive::flow::FlowLayer {
            protocol: FlowProtocol::Ipv6,
            a: "fd00::1".into(),
            b: "fd00::2".into(),
            id: 0,
        });
        flow.transport = Some(crate::skydive::flow::TransportLayer {
            protocol: FlowProtocol::Tcp,
            a: 1,
            b: 2,
            id: 0,
        });
        flow.tcp_metric = Some(crate::skydive::flow::TcpMetric {
            ab_syn_start: 1,
            ba_syn_start: 1,
            ab_fin_start: 1,
            ..Default::default()
        });
        flow.last_update_metric = Some(FlowMetric {
            ab_packets: 1,
            ab_bytes: 60,
            ba_packets: 2,
            ba_bytes: 120,
            start: 3000,
            last: 4999,
            rtt: 0,
        });
        let r = transformer(3).transform(&flow);
        let text = csv(' ', vec![Record::AwsFlowLog(Box::new(r))]);
        assert_eq!(
            text,
            "version account-id interface-id srcaddr dstaddr srcport dstport protocol packets bytes start end action log-status vpc-id subnet-id instance-id tcp-flags type pkt-srcaddr pkt-dstaddr\n\
             3 12345678 - fd00::1 fd00::2 1 2 6 3 180 3 4 ACCEPT OK - - - 19 IPv6 - -\n"
        );
    }
}

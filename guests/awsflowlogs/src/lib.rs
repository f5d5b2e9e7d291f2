//! The builtin `awsflowlogs` transform as a guest: one AWS VPC Flow Logs record per flow, with
//! the JSON fields, order and values of the builtin (`docs/flow-exporter-spec.md` §6.3 with
//! sluice's fixes: IANA protocol numbers, no crash without a link layer or metrics).
//!
//! Config: `{"version": 3, "account_id": "..."}`, both optional (version 2, account
//! `12345678`).

use std::fmt::Write;

use sluice_guest::{Config, Error, Flow, Flows, Output, Protocol, Transform};

/// Upstream's constant account id.
pub const DEFAULT_ACCOUNT_ID: &str = "12345678";

/// The configured transform.
pub struct AwsFlowLogs {
    version: i64,
    account_id: String,
    scratch: String,
}

impl Transform for AwsFlowLogs {
    fn init(config: &Config) -> Result<Self, Error> {
        Ok(AwsFlowLogs {
            version: if config.u64("version") == Some(3) {
                3
            } else {
                2
            },
            account_id: config
                .str("account_id")
                .filter(|id| !id.is_empty())
                .unwrap_or(DEFAULT_ACCOUNT_ID)
                .to_owned(),
            scratch: String::new(),
        })
    }

    fn transform(&mut self, flows: Flows<'_>, out: &mut Output) -> Result<(), Error> {
        for flow in &flows {
            self.record(&flow?, out);
        }
        Ok(())
    }
}

/// ICMPv4 or ICMPv6 for a flow without a transport layer whose first packet was ICMP.
fn icmp_protocol(flow: &Flow<'_>) -> Option<Protocol> {
    let path = flow.layers_path();
    if path.contains("ICMPv6") {
        return Some(Protocol::Icmpv6);
    }
    if path.contains("ICMPv4") {
        return Some(Protocol::Icmpv4);
    }
    flow.icmp()?;
    match flow.network().map(|n| n.protocol) {
        Some(Protocol::Ipv6) => Some(Protocol::Icmpv6),
        _ => Some(Protocol::Icmpv4),
    }
}

/// AWS `tcp-flags` from Skydive's extra TCP metrics: FIN 1, SYN 2, RST 4, SYN-ACK 18.
fn tcp_flags(flow: &Flow<'_>) -> i64 {
    let (Some(t), Some(m)) = (flow.transport(), flow.tcp_metric()) else {
        return 0;
    };
    if t.protocol != Protocol::Tcp {
        return 0;
    }
    let v = |name| m.get(name).unwrap_or(0) != 0;
    let mut flags = 0;
    if v("ABFinStart") || v("BAFinStart") {
        flags |= 1;
    }
    if v("ABSynStart") {
        flags |= 2;
    }
    if v("ABRstStart") || v("BARstStart") {
        flags |= 4;
    }
    if v("BASynStart") {
        flags |= 18;
    }
    flags
}

impl AwsFlowLogs {
    fn record(&mut self, flow: &Flow<'_>, out: &mut Output) {
        let network = flow.network();
        let (srcport, dstport, protocol) = match (flow.transport(), icmp_protocol(flow)) {
            (Some(t), _) => (t.a, t.b, t.protocol.iana_number().unwrap_or(0)),
            (None, Some(p)) => (0, 0, p.iana_number().unwrap_or(0)),
            (None, None) => (0, 0, 0),
        };
        // AWS counts what was seen in the aggregation interval: Skydive's update window.
        let (counters, start, end) = match (flow.last_update_metric(), flow.metric()) {
            (Some(m), _) => (Some(m), m.start, m.last),
            (None, Some(m)) => (Some(m), flow.start(), flow.last()),
            (None, None) => (None, flow.start(), flow.last()),
        };
        self.scratch.clear();
        if let Some(link) = flow.link() {
            let _ = write!(self.scratch, "{}", link.id);
        }
        let record = out
            .record()
            .int("Version", self.version)
            .str("AccountID", &self.account_id)
            .str("InterfaceID", &self.scratch)
            .str("SrcAddr", network.map_or("", |n| n.a))
            .str("DstAddr", network.map_or("", |n| n.b))
            .int("SrcPort", srcport)
            .int("DstPort", dstport)
            .int("Protocol", protocol.into())
            .int(
                "Packets",
                counters.map_or(0, |m| m.ab_packets.saturating_add(m.ba_packets)),
            )
            .int(
                "Bytes",
                counters.map_or(0, |m| m.ab_bytes.saturating_add(m.ba_bytes)),
            )
            .int("Start", start / 1000)
            .int("End", end / 1000)
            .str("Action", "ACCEPT")
            .str("LogStatus", "OK");
        if self.version == 3 {
            let ip_type = match network.map(|n| n.protocol) {
                Some(Protocol::Ipv4) => "IPv4",
                Some(Protocol::Ipv6) => "IPv6",
                _ => "",
            };
            record
                .str("VpcID", "")
                .str("SubnetID", "")
                .str("InstanceID", "")
                .int("TCPFlags", tcp_flags(flow))
                .str("Type", ip_type)
                .str("PktSrcAddr", "")
                .str("PktDstAddr", "");
        }
    }
}

sluice_guest::export_transform!(AwsFlowLogs);

#[cfg(test)]
mod tests {
    use sluice_guest::testing::{FlowData, run_transform};

    use super::*;

    /// The spec's v2 example (`shared/vectors/exporter/awsflowlogs_transform.json`, case
    /// `tcp_v2`) with sluice's IANA protocol number (6, not Skydive's ordinal 2).
    const TCP_V2: &str = r#"{"Version":2,"AccountID":"12345678","InterfaceID":"0","SrcAddr":"192.168.0.5","DstAddr":"173.194.40.147","SrcPort":47838,"DstPort":80,"Protocol":6,"Packets":10,"Bytes":1276,"Start":1546338030,"End":1546338032,"Action":"ACCEPT","LogStatus":"OK"}"#;

    #[test]
    fn v2_record_matches_the_spec_with_iana_numbers() {
        let flow = FlowData::tcp4("192.168.0.5", 47838, "173.194.40.147", 80);
        let records = run_transform::<AwsFlowLogs>("null", &[flow]).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].to_json_text(), TCP_V2);
    }

    #[test]
    fn v3_appends_its_fields_and_icmp_gets_protocol_1() {
        let mut flow = FlowData::tcp4("192.168.0.5", 47838, "173.194.40.147", 80);
        flow.transport = None;
        flow.layers_path = "Ethernet/IPv4/ICMPv4".into();
        let records =
            run_transform::<AwsFlowLogs>(r#"{"version":3,"account_id":"42"}"#, &[flow]).unwrap();
        let r = &records[0];
        assert_eq!(r.get_i64("Protocol"), Some(1));
        assert_eq!(r.get_str("AccountID"), Some("42"));
        assert_eq!(r.get_str("Type"), Some("IPv4"));
        assert_eq!(r.names().len(), 21);
        assert_eq!(
            r.names()[14..],
            [
                "VpcID",
                "SubnetID",
                "InstanceID",
                "TCPFlags",
                "Type",
                "PktSrcAddr",
                "PktDstAddr"
            ]
        );
    }
}

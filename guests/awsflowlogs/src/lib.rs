//! The builtin `awsflowlogs` transform as a guest: one AWS VPC Flow Logs record per flow, with
//! the builtin's fields, order and values in JSON and in CSV (`docs/stages.md` §6.3
//! with sluice's fixes: IANA protocol numbers, no crash without a link layer or metrics).
//!
//! As the builtin, a field that does not apply or cannot be computed is AWS's `-` in CSV and
//! upstream's Go zero value (`""`, `0`) in JSON, and CSV columns have AWS's names.
//!
//! Config: `{"version": 3, "account_id": "...", "upstream_names": true}`, all optional
//! (version 2, account `12345678`, AWS's column names).

use sluice_guest::{
    Config, Error, Flow, Flows, Output, Protocol, RowBuilder, Schema, Transform, Value,
};

/// Upstream's constant account id.
pub const DEFAULT_ACCOUNT_ID: &str = "12345678";

/// AWS's marker, in CSV, for a field that does not apply or cannot be computed.
const ABSENT: &str = "-";

/// JSON keys (upstream's Go struct fields) and AWS's CSV column names, version 3's order;
/// version 2 is the first 14.
const FIELDS: [(&str, &str); 21] = [
    ("Version", "version"),
    ("AccountID", "account-id"),
    ("InterfaceID", "interface-id"),
    ("SrcAddr", "srcaddr"),
    ("DstAddr", "dstaddr"),
    ("SrcPort", "srcport"),
    ("DstPort", "dstport"),
    ("Protocol", "protocol"),
    ("Packets", "packets"),
    ("Bytes", "bytes"),
    ("Start", "start"),
    ("End", "end"),
    ("Action", "action"),
    ("LogStatus", "log-status"),
    ("VpcID", "vpc-id"),
    ("SubnetID", "subnet-id"),
    ("InstanceID", "instance-id"),
    ("TCPFlags", "tcp-flags"),
    ("Type", "type"),
    ("PktSrcAddr", "pkt-srcaddr"),
    ("PktDstAddr", "pkt-dstaddr"),
];

/// The same with upstream's misspelled columns (`upstream_names`).
const FIELDS_UPSTREAM: [(&str, &str); 21] = {
    let mut f = FIELDS;
    f[3].1 = "srcadr";
    f[19].1 = "pkt-srcadr";
    f
};

/// The configured transform.
pub struct AwsFlowLogs {
    v3: bool,
    account_id: String,
    /// Version 2's or 3's fields: records are written by position.
    schema: Schema,
}

impl Transform for AwsFlowLogs {
    fn init(config: &Config) -> Result<Self, Error> {
        let v3 = config.u64("version") == Some(3);
        let fields = if config.bool("upstream_names") == Some(true) {
            &FIELDS_UPSTREAM
        } else {
            &FIELDS
        };
        Ok(AwsFlowLogs {
            v3,
            account_id: config
                .str("account_id")
                .filter(|id| !id.is_empty())
                .unwrap_or(DEFAULT_ACCOUNT_ID)
                .to_owned(),
            schema: Schema::new_static(&fields[..if v3 { 21 } else { 14 }]),
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

/// AWS `tcp-flags` from Skydive's extra TCP metrics: FIN 1, SYN 2, RST 4, SYN-ACK 18. Only a
/// TCP flow with `TCPMetric` has them.
fn tcp_flags(flow: &Flow<'_>) -> Option<i64> {
    let (t, m) = (flow.transport()?, flow.tcp_metric()?);
    if t.protocol != Protocol::Tcp {
        return None;
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
    Some(flags)
}

/// An integer, or `0` in JSON and `-` in CSV.
fn int(r: RowBuilder<'_>, v: Option<i64>) -> RowBuilder<'_> {
    match v {
        Some(v) => r.int(v),
        None => r.value_csv(Value::Int(0), ABSENT),
    }
}

/// A string, or `""` in JSON and `-` in CSV when missing or empty.
fn str<'o>(r: RowBuilder<'o>, v: Option<&str>) -> RowBuilder<'o> {
    match v.filter(|v| !v.is_empty()) {
        Some(v) => r.str(v),
        None => r.value_csv(Value::Str(""), ABSENT),
    }
}

/// `v` in decimal, in `buf` (no formatting machinery: it costs fuel on every flow).
fn decimal(v: i64, buf: &mut [u8; 20]) -> &str {
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        i -= 1;
        buf[i] = b'-';
    }
    std::str::from_utf8(&buf[i..]).unwrap_or("")
}

impl AwsFlowLogs {
    fn record(&self, flow: &Flow<'_>, out: &mut Output) {
        let network = flow.network();
        let (srcport, dstport, protocol) = match flow.transport() {
            Some(t) => (Some(t.a), Some(t.b), t.protocol.iana_number()),
            // AWS writes ports 0 for ICMP.
            None => match icmp_protocol(flow) {
                Some(p) => (Some(0), Some(0), p.iana_number()),
                None => (None, None, None),
            },
        };
        // AWS counts what was seen in the aggregation interval: Skydive's update window.
        let (counters, start, end) = match (flow.last_update_metric(), flow.metric()) {
            (Some(m), _) => (Some(m), m.start, m.last),
            (None, Some(m)) => (Some(m), flow.start(), flow.last()),
            (None, None) => (None, flow.start(), flow.last()),
        };
        let mut buf = [0; 20];
        let interface = flow.link_id().map(|id| decimal(id, &mut buf));
        let mut r = out
            .row(&self.schema)
            .int(if self.v3 { 3 } else { 2 })
            .str(&self.account_id);
        r = str(r, interface);
        r = str(r, network.map(|n| n.a));
        r = str(r, network.map(|n| n.b));
        r = int(r, srcport);
        r = int(r, dstport);
        r = int(r, protocol.map(i64::from));
        r = int(
            r,
            counters.map(|m| m.ab_packets.saturating_add(m.ba_packets)),
        );
        r = int(r, counters.map(|m| m.ab_bytes.saturating_add(m.ba_bytes)));
        r = r.int(start / 1000).int(end / 1000).str("ACCEPT").str("OK");
        if self.v3 {
            let ip_type = match network.map(|n| n.protocol) {
                Some(Protocol::Ipv4) => Some("IPv4"),
                Some(Protocol::Ipv6) => Some("IPv6"),
                _ => None,
            };
            // vpc-id, subnet-id, instance-id: no Skydive equivalent; pkt-srcaddr and
            // pkt-dstaddr are not computed (as upstream).
            r = str(str(str(r, None), None), None);
            r = int(r, tcp_flags(flow));
            r = str(r, ip_type);
            str(str(r, None), None);
        }
    }
}

sluice_guest::export_transform!(AwsFlowLogs);

#[cfg(test)]
mod tests {
    use sluice_guest::testing::{FlowData, run_transform};

    use super::*;

    /// The spec's v2 example (`tests/vectors/exporter/awsflowlogs_transform.json`, case
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

    #[test]
    fn csv_has_aws_columns_and_a_dash_where_json_has_a_zero_value() {
        let bare = FlowData {
            uuid: "bare".into(),
            start: 1546338030000,
            last: 1546338090999,
            ..FlowData::default()
        };
        let tcp = FlowData::tcp4("192.168.0.5", 47838, "173.194.40.147", 80);
        let records =
            run_transform::<AwsFlowLogs>(r#"{"upstream_names":true}"#, &[tcp, bare]).unwrap();
        assert_eq!(
            records[0].columns().join(" "),
            "version account-id interface-id srcadr dstaddr srcport dstport protocol packets bytes start end action log-status"
        );
        assert_eq!(
            records[0].to_csv_fields().join(" "),
            "2 12345678 0 192.168.0.5 173.194.40.147 47838 80 6 10 1276 1546338030 1546338032 ACCEPT OK"
        );
        assert_eq!(
            records[1].to_csv_fields().join(" "),
            "2 12345678 - - - - - - - - 1546338030 1546338090 ACCEPT OK"
        );
        assert_eq!(
            records[1].to_json_text(),
            r#"{"Version":2,"AccountID":"12345678","InterfaceID":"","SrcAddr":"","DstAddr":"","SrcPort":0,"DstPort":0,"Protocol":0,"Packets":0,"Bytes":0,"Start":1546338030,"End":1546338090,"Action":"ACCEPT","LogStatus":"OK"}"#
        );
        let v3 = run_transform::<AwsFlowLogs>(r#"{"version":3}"#, &[FlowData::default()]).unwrap();
        assert_eq!(v3[0].columns()[19], "pkt-srcaddr");
        assert_eq!(v3[0].to_csv_fields()[14..].join(" "), "- - - - - - -");
    }
}

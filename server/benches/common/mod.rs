//! What the benches share: the Skydive messages they feed pipelines and how the subscriber
//! parses them.

use sluice::skydive::flow::Flow;
use sluice::skydive::subscriber::decode::{Decoded, decode};

/// The capture node of every flow of [`messages`].
pub const NODE_TID: &str = "f0a6d3c1-5b2e-5a9e-6c4f-2d8b7e1a9c30";

/// `count` Skydive WebSocket messages of `flows_per_message` flows, as the subscriber receives them:
/// TCP and UDP flows with varied addresses, ports and counters, and some that lack what the
/// awsflowlogs record can't fill (ICMP without ports, no update window, no link layer).
pub fn messages(count: usize, flows_per_message: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(count);
    let mut n: u64 = 0;
    for _ in 0..count {
        let mut flows = Vec::with_capacity(flows_per_message);
        for _ in 0..flows_per_message {
            n += 1;
            let a = if n.is_multiple_of(3) {
                format!("8.8.{}.{}", n % 7, n % 251)
            } else {
                format!("10.0.{}.{}", n % 13, n % 249)
            };
            let b = if n.is_multiple_of(4) {
                format!("93.184.{}.{}", n % 5, n % 250)
            } else {
                format!("192.168.{}.{}", n % 11, n % 247)
            };
            let icmp = n.is_multiple_of(17);
            let proto = if n.is_multiple_of(5) { "UDP" } else { "TCP" };
            let path = if icmp {
                "Ethernet/IPv4/ICMPv4".to_string()
            } else {
                format!("Ethernet/IPv4/{proto}")
            };
            let link = if n.is_multiple_of(23) {
                String::new()
            } else {
                format!(
                    r#""Link":{{"Protocol":"ETHERNET","A":"46:9b:b0:e6:70:fb","B":"92:46:c1:21:00:ae","ID":{}}},"#,
                    n % 4
                )
            };
            let transport = if icmp {
                r#""ICMP":{"Type":"ECHO","Code":0,"ID":7},"#.to_string()
            } else {
                format!(
                    r#""Transport":{{"Protocol":"{proto}","A":{},"B":443,"ID":0}},"#,
                    30000 + n % 30000
                )
            };
            let update = if n.is_multiple_of(7) {
                String::new()
            } else {
                r#""LastUpdateMetric":{"ABPackets":3,"ABBytes":204,"BAPackets":2,"BABytes":132,"Start":1490086705000,"Last":1490086765000,"RTT":33000},"#.to_string()
            };
            flows.push(format!(
                r#"{{"UUID":"{n:x}","LayersPath":"{path}","Application":"{proto}",{link}"Network":{{"Protocol":"IPV4","A":"{a}","B":"{b}","ID":0}},{transport}{update}"Metric":{{"ABPackets":{n},"ABBytes":{bytes},"BAPackets":3,"BABytes":206,"Start":1490086703768,"Last":1490086707507,"RTT":33000}},"Start":1490086703768,"Last":1490086707507,"TrackingID":"c3a9d27e8f1b{n:x}","L3TrackingID":"5f2e9a1c{n:x}","ParentUUID":"","NodeTID":"{NODE_TID}","CaptureID":"3d1c7e52-9a8f-4b6e-7f21-0c5d9e8a4b17","RawPacketsCaptured":0}}"#,
                bytes = n * 64,
            ));
        }
        out.push(format!(
            r#"{{"Namespace":"flow","Type":"store","UUID":"00000000-0000-4000-8000-{n:012}","Status":200,"Obj":[{}]}}"#,
            flows.join(",")
        ));
    }
    out
}

/// What the subscriber does with a message (its decoder, one pass for a well-formed one).
pub fn parse(message: &str) -> Vec<Flow> {
    match decode(message, &["flow".to_string()]) {
        Decoded::Store { flows, .. } => flows,
        other => panic!("not a store message: {other:?}"),
    }
}

/// The smallest and the median of some measurements (at least one): what the benches print
/// of interleaved rounds, so that a noisy neighbour's burst shifts neither much.
pub fn min_and_median(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (values[0], values[values.len() / 2])
}

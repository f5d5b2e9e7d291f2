//! Pipeline throughput against a bare baseline, in one run (design §9).
//!
//! Both sides parse the same Skydive WebSocket messages into typed flows; the baseline then only
//! writes the flows as JSON and gzips them, the pipeline runs classify → filter → transform →
//! mangle → buffered store → encode → gzip into memory. Run: `cargo bench -p sluice --bench pipeline`.

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use serde::Deserialize;
use serde_json::value::RawValue;
use sluice::config::ExporterConfig;
use sluice::flow::Flow;
use sluice::pipeline::Pipeline;
use sluice::sinks::{MemorySink, Sink};

const MESSAGES: usize = 400;
const FLOWS_PER_MESSAGE: usize = 100;
const ROUNDS: usize = 5;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "Obj", borrow)]
    obj: Vec<&'a RawValue>,
}

fn parse(message: &str) -> Vec<Flow> {
    let envelope: Envelope = serde_json::from_str(message).expect("envelope");
    envelope
        .obj
        .iter()
        .filter_map(|raw| serde_json::from_str(raw.get()).ok())
        .collect()
}

/// Realistic TCP/UDP flows with varied addresses (private and public), ports and counters.
fn messages() -> Vec<String> {
    let mut out = Vec::with_capacity(MESSAGES);
    let mut n: u64 = 0;
    for _ in 0..MESSAGES {
        let mut flows = Vec::with_capacity(FLOWS_PER_MESSAGE);
        for _ in 0..FLOWS_PER_MESSAGE {
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
            let proto = if n.is_multiple_of(5) { "UDP" } else { "TCP" };
            flows.push(format!(
                r#"{{"UUID":"{n:x}","LayersPath":"Ethernet/IPv4/{proto}","Application":"{proto}","Link":{{"Protocol":"ETHERNET","A":"46:9b:b0:e6:70:fb","B":"92:46:c1:21:00:ae","ID":0}},"Network":{{"Protocol":"IPV4","A":"{a}","B":"{b}","ID":0}},"Transport":{{"Protocol":"{proto}","A":{pa},"B":443,"ID":0}},"LastUpdateMetric":{{"ABPackets":3,"ABBytes":204,"BAPackets":2,"BABytes":132,"Start":1490086705000,"Last":1490086765000,"RTT":33000}},"Metric":{{"ABPackets":{n},"ABBytes":{bytes},"BAPackets":3,"BABytes":206,"Start":1490086703768,"Last":1490086707507,"RTT":33000}},"Start":1490086703768,"Last":1490086707507,"TrackingID":"c3a9d27e8f1b{n:x}","L3TrackingID":"5f2e9a1c{n:x}","ParentUUID":"","NodeTID":"f0a6d3c1-5b2e-5a9e-6c4f-2d8b7e1a9c30","CaptureID":"3d1c7e52-9a8f-4b6e-7f21-0c5d9e8a4b17","RawPacketsCaptured":0}}"#,
                pa = 30000 + n % 30000,
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

/// The unavoidable work: parse, write JSON, gzip.
fn baseline(messages: &[String]) -> usize {
    let mut flows = 0;
    let mut json = Vec::new();
    for m in messages {
        let parsed = parse(m);
        flows += parsed.len();
        serde_json::to_writer(&mut json, &parsed).expect("json");
        json.push(b'\n');
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&json).expect("gzip");
    black_box(gz.finish().expect("gzip"));
    flows
}

fn pipeline_run(
    messages: &[String],
    config: &ExporterConfig,
    rt: &tokio::runtime::Runtime,
) -> usize {
    let sink = MemorySink::default();
    let mut p = rt
        .block_on(Pipeline::build(
            config,
            Some(Sink::Memory(sink.clone())),
            Default::default(),
        ))
        .expect("pipeline");
    let mut flows = 0;
    rt.block_on(async {
        for m in messages {
            let parsed = parse(m);
            flows += parsed.len();
            p.process(parsed, 1_546_338_030_000).await;
        }
        p.flush_all(1_546_338_090_000).await;
    });
    let written: usize = sink.take().iter().map(|o| o.records).sum();
    assert_eq!(written, flows, "every flow is written");
    flows
}

fn best_rate(mut f: impl FnMut() -> usize) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let n = f();
            n as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn main() {
    let messages = messages();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let configs = [(
        "none+json+gzip",
        "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  transform:\n    type: none\n  encode:\n    type: json\n  compress:\n    type: gzip\n  store:\n    buffered:\n      dirname: bucket\n      max_flows_per_object: 6000\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 100000\n",
    )];
    let total = MESSAGES * FLOWS_PER_MESSAGE;
    println!("{total} flows in {MESSAGES} messages, best of {ROUNDS} rounds, one core");
    let base = best_rate(|| baseline(&messages));
    println!(
        "{:<28} {:>12.0} flows/s",
        "baseline (parse+json+gzip)", base
    );
    for (name, yaml) in configs {
        let config = ExporterConfig::load(yaml).expect("bench config");
        let rate = best_rate(|| pipeline_run(&messages, &config, &rt));
        println!(
            "{name:<28} {rate:>12.0} flows/s   ratio {:.2}x of baseline (target >= 0.70)",
            rate / base
        );
    }
}

//! Pipeline throughput against a bare baseline, in one run (docs/service.md §8).
//!
//! Both sides parse the same Skydive WebSocket messages into typed flows; the baseline then only
//! writes the flows as JSON and gzips them, the pipeline runs classify → filter → transform →
//! mangle → buffered store → encode → gzip into memory. Run: `cargo bench -p sluice --bench pipeline`.
//!
//! The real configurations (issue 3): `secadvisor+json+gzip` (the secadvisor transform, the
//! logstatus mangler and the secadvisor encoder, as `config/secadvisor.yml` minus its filters)
//! and `awsflowlogs+csv+gzip` (as `config/awsflowlogs.yml` minus its filter).
//! `awsflowlogs+parquet` is the same with the Parquet encoder (snappy inside, no gzip around;
//! docs/parquet.md), `awsflowlogs+parquet+zstd` with zstd inside: their bytes per flow against
//! the CSV's say what a columnar object costs in storage, their flows/s what it costs in CPU.
//! `secadvisor+pretty+gzip` is the first with the tab-indented JSON that
//! `config/secadvisor.yml` asks for (`json.pretty: true`); the baseline stays compact, so the
//! indentation's extra bytes (about 40% more to gzip) count against it. The secadvisor
//! transform asks the analyzer who is behind every address and what the capture node is; here
//! the analyzer is an in-process HTTP server on its own thread that answers every topology
//! query with "no node" at once. Each configuration is measured two ways:
//! - `cold`: a new pipeline per round, so every distinct (address, node) pair costs three
//!   lookups (runc, docker, VM) and the node type one; this is a pipeline's first minutes.
//! - `warm`: one pipeline that has seen the messages once; lookups are answered by its caches
//!   (5 min TTL), flows are UPDATED and the logstatus mangler adds a SKIPDATA record for each.
//!   This is the steady state.
//!
//! `secadvisor+json+gzip (cold, 1 ms analyzer)` and `(cold, 5 ms analyzer)` put a network hop
//! between the pipeline and its analyzer: the simulator (`sluice sim`, on its own thread) over a
//! cluster where one private address in sixteen is a runc container, one a Docker container
//! and one a VM (about 1,100 of the 6,000 addresses), answering each topology query after that
//! delay. A new pipeline
//! per round is fed through its channel and driven by `Pipeline::run`, as the subscriber does,
//! so messages waiting behind a lookup are looked up together (docs/stages.md §6.2.4). Their
//! ratio is against the warm pipeline over the same analyzer, measured in alternating rounds.

// The binary's allocator (server/src/main.rs), so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::hint::black_box;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sluice::config::ExporterConfig;
use sluice::pipeline::Pipeline;
use sluice::sinks::{MemorySink, Sink};
use sluice::skydive::subscriber::FlowBatch;

const MESSAGES: usize = 400;
const FLOWS_PER_MESSAGE: usize = 100;
const ROUNDS: usize = 5;

/// The unavoidable work: parse, write JSON, gzip.
fn baseline(messages: &[String]) -> usize {
    let mut flows = 0;
    let mut json = Vec::new();
    for m in messages {
        let parsed = common::parse(m);
        flows += parsed.len();
        serde_json::to_writer(&mut json, &parsed).expect("json");
        json.push(b'\n');
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    gz.write_all(&json).expect("gzip");
    black_box(gz.finish().expect("gzip"));
    flows
}

/// Runs every message through `p` and flushes; returns (flows in, records written).
fn process_all(
    p: &mut Pipeline,
    sink: &MemorySink,
    messages: &[String],
    rt: &tokio::runtime::Runtime,
) -> (usize, usize) {
    let mut flows = 0;
    rt.block_on(async {
        for m in messages {
            let parsed = common::parse(m);
            flows += parsed.len();
            p.process(parsed, 1_546_338_030_000).await;
        }
        p.flush_all(1_546_338_090_000).await;
    });
    let objects = sink.take();
    let written: usize = objects.iter().map(|o| o.records).sum();
    BYTES.store(
        objects.iter().map(|o| o.body.len()).sum(),
        Ordering::Relaxed,
    );
    (flows, written)
}

fn build(config: &ExporterConfig, rt: &tokio::runtime::Runtime) -> (Pipeline, MemorySink) {
    let sink = MemorySink::default();
    let p = rt
        .block_on(Pipeline::build(
            config,
            Some(Sink::Memory(sink.clone())),
            Default::default(),
        ))
        .expect("pipeline");
    (p, sink)
}

/// A new pipeline per round (its build included). Returns (baseline, pipeline) flows/s and
/// the analyzer queries per measured round.
fn cold_rate(
    messages: &[String],
    config: &ExporterConfig,
    rt: &tokio::runtime::Runtime,
) -> (f64, f64, usize) {
    paired_rates(
        || baseline(messages),
        || {
            let (mut p, sink) = build(config, rt);
            let (flows, written) = process_all(&mut p, &sink, messages, rt);
            assert!(
                written >= flows,
                "every flow is written ({written} of {flows})"
            );
            flows
        },
    )
}

/// One pipeline, warmed by a first pass over the same messages.
fn warm_rate(
    messages: &[String],
    config: &ExporterConfig,
    rt: &tokio::runtime::Runtime,
) -> (f64, f64, usize) {
    let (mut p, sink) = build(config, rt);
    process_all(&mut p, &sink, messages, rt);
    paired_rates(
        || baseline(messages),
        || {
            let (flows, written) = process_all(&mut p, &sink, messages, rt);
            assert!(
                written >= flows,
                "every flow is written ({written} of {flows})"
            );
            flows
        },
    )
}

fn rate(f: &mut impl FnMut() -> usize) -> f64 {
    let start = Instant::now();
    let n = f();
    n as f64 / start.elapsed().as_secs_f64()
}

/// Best of [`ROUNDS`] rounds of each, the baseline and the pipeline alternating, so a change
/// in machine load during the run affects both sides of the ratio alike.
fn paired_rates(
    mut base: impl FnMut() -> usize,
    mut pipeline: impl FnMut() -> usize,
) -> (f64, f64, usize) {
    let queries = QUERIES.load(Ordering::Relaxed);
    let (mut best_base, mut best_pipeline) = (0.0_f64, 0.0_f64);
    for _ in 0..ROUNDS {
        best_base = best_base.max(rate(&mut base));
        best_pipeline = best_pipeline.max(rate(&mut pipeline));
    }
    let queries = (QUERIES.load(Ordering::Relaxed) - queries) / ROUNDS;
    (best_base, best_pipeline, queries)
}

/// The bytes of the objects of the last round.
static BYTES: AtomicUsize = AtomicUsize::new(0);

/// Topology queries the analyzer answered.
static QUERIES: AtomicUsize = AtomicUsize::new(0);

/// Runs a server on its own thread and current-thread runtime; `serve` sends its address.
fn on_own_thread<F, Fut>(serve: F) -> std::net::SocketAddr
where
    F: FnOnce(std::sync::mpsc::Sender<std::net::SocketAddr>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("analyzer runtime")
            .block_on(serve(tx));
    });
    rx.recv().expect("analyzer address")
}

/// An analyzer that answers every `/api/topology` query with no node, on its own thread.
fn empty_analyzer() -> std::net::SocketAddr {
    on_own_thread(|tx| async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        tx.send(listener.local_addr().expect("addr")).expect("send");
        let app = axum::Router::new().route(
            "/api/topology",
            axum::routing::post(|| async {
                QUERIES.fetch_add(1, Ordering::Relaxed);
                ([("content-type", "application/json")], "[]")
            }),
        );
        axum::serve(listener, app).await.expect("serve");
    })
}

/// Rounds of the latency lines, each a cold and a warm pass; min and median are reported.
const LATENCY_ROUNDS: usize = 5;

/// The simulator on its own thread over a cluster made of the benchmark's private
/// addresses, answering each topology query after `delay_ms`.
fn cluster_analyzer(messages: &[String], delay_ms: u64) -> std::net::SocketAddr {
    let mut private: Vec<String> = messages
        .iter()
        .flat_map(|m| common::parse(m))
        .filter_map(|f| f.network)
        .flat_map(|n| [n.a, n.b])
        .filter(|ip| ip.starts_with("10.") || ip.starts_with("192.168."))
        .collect();
    private.sort();
    private.dedup();
    let mut cluster = sluice::sim::topology::Cluster {
        capture_tids: vec![common::NODE_TID.to_string()],
        ..Default::default()
    };
    for (i, ip) in private.into_iter().enumerate() {
        match i % 16 {
            0 => cluster.runc.push(ip),
            1 => cluster.docker.push(ip),
            2 => cluster.vm.push(ip),
            _ => {}
        }
    }
    let file =
        std::env::temp_dir().join(format!("sluice-bench-topology-{}.json", std::process::id()));
    std::fs::write(&file, cluster.graph().to_string()).expect("topology file");
    let args = sluice::sim::SimArgs::try_parse_from([
        "--listen".to_string(),
        "127.0.0.1:0".to_string(),
        "--topology".to_string(),
        file.display().to_string(),
        "--topology-delay-ms".to_string(),
        delay_ms.to_string(),
    ])
    .expect("sim args");
    let addr = on_own_thread(|tx| async move {
        let bound = sluice::sim::bind(args).await.expect("bind the simulator");
        tx.send(bound.local_addr()).expect("send");
        bound
            .run(tokio_util::sync::CancellationToken::new())
            .await
            .expect("simulator");
    });
    let _ = std::fs::remove_file(&file);
    addr
}

/// A new pipeline fed through its channel and driven by `Pipeline::run`; returns
/// (flows in, records written).
fn run_through_channel(
    config: &ExporterConfig,
    messages: &[String],
    rt: &tokio::runtime::Runtime,
) -> (usize, usize) {
    let (p, sink) = build(config, rt);
    let mut flows = 0;
    rt.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(sluice::runner::CHANNEL_MESSAGES);
        let task = tokio::spawn(p.run(rx, tokio_util::sync::CancellationToken::new()));
        for m in messages {
            let parsed = common::parse(m);
            flows += parsed.len();
            tx.send(FlowBatch::new(parsed))
                .await
                .expect("pipeline running");
        }
        drop(tx);
        task.await.expect("pipeline task");
    });
    let written: usize = sink.take().iter().map(|o| o.records).sum();
    (flows, written)
}

/// Cold through the channel against a delayed analyzer, and warm over the same analyzer, in
/// alternating rounds: (cold flows/s, warm flows/s) per round.
fn latency_rounds(
    messages: &[String],
    config: &ExporterConfig,
    rt: &tokio::runtime::Runtime,
) -> Vec<(f64, f64)> {
    let (mut warm, warm_sink) = build(config, rt);
    process_all(&mut warm, &warm_sink, messages, rt);
    (0..LATENCY_ROUNDS)
        .map(|_| {
            let cold = rate(&mut || {
                let (flows, written) = run_through_channel(config, messages, rt);
                assert!(
                    written >= flows,
                    "every flow is written ({written} of {flows})"
                );
                flows
            });
            let warm = rate(&mut || process_all(&mut warm, &warm_sink, messages, rt).0);
            (cold, warm)
        })
        .collect()
}

const STORE: &str = "  compress:\n    type: gzip\n  store:\n    buffered:\n      dirname: bucket\n      max_flows_per_object: 6000\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 100000\n";

fn main() {
    let messages = common::messages(MESSAGES, FLOWS_PER_MESSAGE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let analyzer = empty_analyzer();
    let head = format!(
        "analyzers: [{analyzer}]\npipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n"
    );
    let configs = [
        (
            "none+json+gzip",
            format!("{head}  transform:\n    type: none\n  encode:\n    type: json\n{STORE}"),
        ),
        (
            "secadvisor+json+gzip",
            format!(
                "{head}  transform:\n    type: secadvisor\n  mangle:\n    type: logstatus\n  encode:\n    type: secadvisor\n{STORE}"
            ),
        ),
        (
            "secadvisor+pretty+gzip",
            format!(
                "{head}  transform:\n    type: secadvisor\n  mangle:\n    type: logstatus\n  encode:\n    type: secadvisor\n    json:\n      pretty: true\n{STORE}"
            ),
        ),
        (
            "awsflowlogs+csv+gzip",
            format!(
                "{head}  transform:\n    type: awsflowlogs\n  mangle:\n    type: logstatus\n  encode:\n    type: csv\n{STORE}"
            ),
        ),
        (
            "awsflowlogs+parquet",
            format!(
                "{head}  transform:\n    type: awsflowlogs\n  mangle:\n    type: logstatus\n  encode:\n    type: parquet\n{}",
                STORE.replace("type: gzip", "type: none")
            ),
        ),
        (
            "awsflowlogs+parquet+zstd",
            format!(
                "{head}  transform:\n    type: awsflowlogs\n  mangle:\n    type: logstatus\n  encode:\n    type: parquet\n    parquet:\n      compression: zstd\n{}",
                STORE.replace("type: gzip", "type: none")
            ),
        ),
    ];
    let total = MESSAGES * FLOWS_PER_MESSAGE;
    println!(
        "{total} flows in {MESSAGES} messages, best of {ROUNDS} rounds, one core; the baseline (parse+json+gzip) is measured in rounds alternating with each pipeline's"
    );
    // `cargo bench -p sluice --bench pipeline -- secadvisor warm` runs only what matches every
    // word given (a configuration name part, `cold` or `warm`).
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for delay_ms in [1, 5] {
        let label = format!("secadvisor+json+gzip (cold, {delay_ms} ms analyzer)");
        if !words.iter().all(|w| label.contains(w.as_str())) {
            continue;
        }
        let analyzer = cluster_analyzer(&messages, delay_ms);
        let yaml = format!(
            "analyzers: [{analyzer}]\npipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  transform:\n    type: secadvisor\n  mangle:\n    type: logstatus\n  encode:\n    type: secadvisor\n{STORE}"
        );
        let config = ExporterConfig::load(&yaml).expect("bench config");
        let rounds = latency_rounds(&messages, &config, &rt);
        let (cold_min, cold_median) = common::min_and_median(rounds.iter().map(|r| r.0).collect());
        let (_, warm_median) = common::min_and_median(rounds.iter().map(|r| r.1).collect());
        let (ratio_min, ratio_median) =
            common::min_and_median(rounds.iter().map(|r| r.0 / r.1).collect());
        println!(
            "{label:<44} {cold_median:>8.0} flows/s (min {cold_min:.0})  warm {warm_median:>8.0} flows/s  ratio to warm {ratio_median:.2}x median, {ratio_min:.2}x min (target >= 0.50)"
        );
    }
    for (name, yaml) in configs {
        let config = ExporterConfig::load(&yaml).expect("bench config");
        for mode in ["cold", "warm"] {
            let label = format!("{name} ({mode})");
            if !words.iter().all(|w| label.contains(w.as_str())) {
                continue;
            }
            let (base, rate, queries) = match mode {
                "cold" => cold_rate(&messages, &config, &rt),
                _ => warm_rate(&messages, &config, &rt),
            };
            let bytes_per_flow = BYTES.load(Ordering::Relaxed) as f64 / total as f64;
            println!(
                "{label:<32} {rate:>8.0} flows/s  baseline {base:>8.0} flows/s  ratio {:.2}x (target >= 0.70)  {bytes_per_flow:>6.1} B/flow  {queries} analyzer queries/round",
                rate / base
            );
        }
    }
}

//! `sluice run`'s whole path against the same pipeline in-process, in flows per CPU-second
//! (docs/service.md §8). Run: `cargo bench -p sluice --bench service`.
//!
//! A feeder in this process serves `/ws/subscriber/flow`: to each round's first connection it
//! sends the benchmark's Skydive messages, encoded beforehand, as fast as the socket takes
//! them, then closes; `/api/topology` answers "no node" at once. A round starts the sluice
//! binary (`sluice run`) on a pipeline file that writes objects to a temporary folder, waits
//! for its subscriber to connect again after the close (every message is then in the
//! pipeline), stops it with SIGTERM (it flushes what is pending) and reads the CPU time the
//! process used, from its `/proc/<pid>/stat` while it is a zombie. The in-process side builds
//! the same pipeline from the same file and runs the same messages through
//! `Pipeline::process`, parse included, timed by this process's CPU time. The two alternate
//! round by round; the ratio's min and median over the rounds are printed.

// The binary's allocator (server/src/main.rs), so the in-process numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use sluice::config::ExporterConfig;
use sluice::metrics::PipelineStats;
use sluice::pipeline::Pipeline;

const MESSAGES: usize = 400;
const FLOWS_PER_MESSAGE: usize = 100;
/// The messages are sent this many times per round, so a round is long against the kernel's
/// 10 ms accounting tick.
const PASSES: usize = 3;
const ROUNDS: usize = 5;

struct Feeder {
    messages: Vec<Utf8Bytes>,
    connections: AtomicUsize,
}

/// Serves the feeder on loopback from its own thread.
fn start_feeder(feeder: Arc<Feeder>) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("feeder runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let app = axum::Router::new()
                .route("/ws/subscriber/flow", axum::routing::get(subscriber))
                .route(
                    "/api/topology",
                    axum::routing::post(|| async {
                        ([("content-type", "application/json")], "[]")
                    }),
                )
                .with_state(feeder);
            axum::serve(listener, app).await.expect("serve");
        });
    });
    rx.recv().expect("feeder address")
}

/// Odd connections (a round's first) get every message and a close; even ones (the
/// subscriber back after the close) stay open and idle.
async fn subscriber(
    State(feeder): State<Arc<Feeder>>,
    upgrade: WebSocketUpgrade,
) -> axum::response::Response {
    upgrade.on_upgrade(move |mut socket| async move {
        let n = feeder.connections.fetch_add(1, Ordering::SeqCst);
        if n % 2 == 0 {
            for _ in 0..PASSES {
                for m in &feeder.messages {
                    if socket.send(Message::Text(m.clone())).await.is_err() {
                        return;
                    }
                }
            }
            let _ = socket.send(Message::Close(None)).await;
        }
        while let Some(Ok(_)) = socket.recv().await {}
    })
}

/// The CPU seconds (user + system) of `pid` from `/proc/<pid>/stat`, and its state letter.
fn cpu_seconds(pid: &str, ticks_per_second: f64) -> (f64, char) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("proc stat");
    // The command name may hold spaces; the fields after it are space-separated.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let state = fields[0].chars().next().unwrap_or('?');
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    (ticks / ticks_per_second, state)
}

/// One `sluice run` round: (flows per CPU-second, records written).
fn service_round(feeder: &Feeder, yaml: &str, flows: usize, ticks: f64) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("pipeline.yml");
    std::fs::write(
        &file,
        yaml.replace("OUT_DIR", &dir.path().join("out").display().to_string()),
    )
    .expect("pipeline file");
    let before = feeder.connections.load(Ordering::SeqCst);
    let child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("run")
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start sluice run");
    let pid = child.id().to_string();
    let started = Instant::now();
    while feeder.connections.load(Ordering::SeqCst) < before + 2 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the subscriber did not come back"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(status.success(), "SIGTERM to sluice run");
    let cpu = loop {
        let (cpu, state) = cpu_seconds(&pid, ticks);
        if state == 'Z' {
            break cpu;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let output = child.wait_with_output().expect("sluice run's end");
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "sluice run failed:\n{log}");
    let written = regex::Regex::new(r"records_written=(\d+)")
        .expect("regex")
        .captures(&log)
        .and_then(|c| c[1].parse().ok())
        .unwrap_or_else(|| panic!("no summary in sluice run's log:\n{log}"));
    (flows as f64 / cpu, written)
}

/// This process's CPU seconds.
fn own_cpu_seconds(ticks: f64) -> f64 {
    cpu_seconds("self", ticks).0
}

/// One in-process round: (flows per CPU-second, records written).
fn in_process_round(
    yaml: &str,
    messages: &[String],
    ticks: f64,
    rt: &tokio::runtime::Runtime,
) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = ExporterConfig::load(
        &yaml.replace("OUT_DIR", &dir.path().join("out").display().to_string()),
    )
    .expect("bench config");
    let stats = Arc::new(PipelineStats::default());
    let start = own_cpu_seconds(ticks);
    let mut flows = 0;
    rt.block_on(async {
        let mut p = Pipeline::build(&config, None, stats.clone())
            .await
            .expect("pipeline");
        for _ in 0..PASSES {
            for m in messages {
                let parsed = common::parse(m);
                flows += parsed.len();
                p.process(parsed, sluice::now_ms()).await;
            }
        }
        p.flush_all(sluice::now_ms()).await;
    });
    let cpu = own_cpu_seconds(ticks) - start;
    (
        flows as f64 / cpu,
        stats.records_written.load(Ordering::Relaxed),
    )
}

const STORE: &str = "  compress:\n    type: gzip\n  store:\n    buffered:\n      dirname: bucket\n      max_flows_per_object: 6000\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 100000\n  write:\n    type: file\n    file:\n      dir: OUT_DIR\n";

fn main() {
    let messages = common::messages(MESSAGES, FLOWS_PER_MESSAGE);
    let flows = MESSAGES * FLOWS_PER_MESSAGE * PASSES;
    let ticks: f64 = String::from_utf8(
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("getconf")
            .stdout,
    )
    .expect("utf-8")
    .trim()
    .parse()
    .expect("CLK_TCK");
    let feeder = Arc::new(Feeder {
        messages: messages
            .iter()
            .map(|m| Utf8Bytes::from(m.clone()))
            .collect(),
        connections: AtomicUsize::new(0),
    });
    let addr = start_feeder(feeder.clone());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let head = format!(
        "analyzers: [{addr}]\npipeline:\n  subscriber:\n    url: ws://{addr}/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n"
    );
    let configs = [
        (
            "none+json+gzip",
            "  transform:\n    type: none\n  encode:\n    type: json\n",
        ),
        (
            "secadvisor+json+gzip",
            "  transform:\n    type: secadvisor\n  mangle:\n    type: logstatus\n  encode:\n    type: secadvisor\n",
        ),
        (
            "secadvisor+pretty+gzip",
            "  transform:\n    type: secadvisor\n  mangle:\n    type: logstatus\n  encode:\n    type: secadvisor\n    json:\n      pretty: true\n",
        ),
        (
            "awsflowlogs+csv+gzip",
            "  transform:\n    type: awsflowlogs\n  mangle:\n    type: logstatus\n  encode:\n    type: csv\n",
        ),
    ];
    println!(
        "{flows} flows per round ({MESSAGES} messages of {FLOWS_PER_MESSAGE}, {PASSES} times), {ROUNDS} rounds each side, alternating; flows per CPU-second of `sluice run` (WebSocket on loopback, file writer) and of the same pipeline in-process"
    );
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for (name, stages) in configs {
        if !words.iter().all(|w| name.contains(w.as_str())) {
            continue;
        }
        let yaml = format!("{head}{stages}{STORE}");
        let mut service = Vec::new();
        let mut in_process = Vec::new();
        for _ in 0..ROUNDS {
            let (rate, written) = service_round(&feeder, &yaml, flows, ticks);
            assert!(
                written >= flows as u64,
                "sluice run wrote {written} records of {flows} flows"
            );
            service.push(rate);
            let (rate, written) = in_process_round(&yaml, &messages, ticks, &rt);
            assert!(
                written >= flows as u64,
                "in-process wrote {written} records of {flows} flows"
            );
            in_process.push(rate);
        }
        let ratios = service
            .iter()
            .zip(&in_process)
            .map(|(s, i)| s / i)
            .collect();
        let (ratio_min, ratio_median) = common::min_and_median(ratios);
        let (_, service_median) = common::min_and_median(service);
        let (_, in_process_median) = common::min_and_median(in_process);
        println!(
            "{name:<24} sluice run {service_median:>8.0} flows/CPU-s  in-process {in_process_median:>8.0} flows/CPU-s  ratio {ratio_median:.2}x median, {ratio_min:.2}x min (target >= 0.80)"
        );
    }
}

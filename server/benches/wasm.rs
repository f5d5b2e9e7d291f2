//! Wasm host benchmarks (`cargo bench -p sluice --bench wasm`): absolute figures and ratios
//! measured in the same run.
//!
//! 1. The `awsflowlogs` guest against the builtin `awsflowlogs` transform, end to end: the same
//!    pipeline (`config/awsflowlogs.yml` minus its filter: logstatus, gzip, a memory sink) fed
//!    the same Skydive WebSocket messages, parsed in the loop, in CSV (what that file runs) and
//!    in JSON (target ≥ 0.8× the builtin's flows/s: the median of the ratios of 21 rounds whose
//!    order alternates, with the minimum beside it). A diagnostic line splits the guest path per
//!    flow (host encode, call, host decode, JSON).
//! 2. Instantiation per batch: an empty batch (fresh store, instantiate, `init`, call).
//! 3. One pipeline's throughput while another pipeline's guest spins without end (quarantine
//!    off, so the spinning guest holds a core the whole time), against it running alone
//!    (target ≥ 0.9×).
//! 4. The `anonymize` guest in Rust, Python and JavaScript on the same batches: flows/s (min
//!    and median of interleaved rounds) against the Rust one, instantiation per batch, fuel per
//!    flow, component size. No target yet; the Python and JavaScript components are built with
//!    `sluice guest build` (which installs their toolchains on first use).
//!
//! The guests are built from `guests/` on first use. Words after `--` pick sections:
//! `cargo bench -p sluice --bench wasm -- csv` (`csv`, `json`, `breakdown`, `instantiation`,
//! `neighbour`, `languages`).

// The binary's allocator (server/src/main.rs), so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice::config::{ExporterConfig, WasmOptions};
use sluice::metrics::PipelineStats;
use sluice::pipeline::Pipeline;
use sluice::pipeline::encode::write_go_json;
use sluice::pipeline::record::Record;
use sluice::sinks::{MemorySink, Sink};
use sluice::skydive::flow::Flow;
use sluice::wasm::{HostSettings, StageOptions, WasmHost, WasmStage, World, test_guests};

const BATCH: usize = 1000;
const MESSAGES: usize = 200;
const FLOWS_PER_MESSAGE: usize = 100;
const ROUNDS: usize = 7;
/// Rounds of the builtin-against-guest sections (`csv`, `json`).
const HEADLINE_ROUNDS: usize = 21;

fn flow(i: usize) -> Flow {
    serde_json::from_value(serde_json::json!({
        "UUID": format!("66724f5d-718f-47a2-93a7-{i:012}"), "LayersPath": "Ethernet/IPv4/TCP",
        "Application": "TCP",
        "Link": {"Protocol": "ETHERNET", "A": "fa:16:3e:29:e0:82", "B": "fa:16:3e:96:06:e8", "ID": i % 7},
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": format!("10.0.{}.{}", i / 250 % 250, i % 250), "ID": 0},
        "Transport": {"Protocol": if i.is_multiple_of(3) { "UDP" } else { "TCP" }, "A": 40000 + i % 20000, "B": 443, "ID": 0},
        "Metric": {"ABPackets": 6, "ABBytes": 516, "BAPackets": 4, "BABytes": 760, "Start": 0, "Last": 0},
        "LastUpdateMetric": {"ABPackets": 1, "ABBytes": 100, "BAPackets": 1, "BABytes": 90, "Start": 1546338031000i64, "Last": 1546338032000i64},
        "Start": 1546338030000i64, "Last": 1546338032500i64, "NodeTID": "probe-tid",
        "TrackingID": "f745fe3d8e2a1f7d", "L3TrackingID": "1a3bd7a4ee3b0f0e", "ParentUUID": "",
        "RawPacketsCaptured": 0
    }))
    .unwrap()
}

fn best_of<F: FnMut() -> usize>(rounds: usize, mut f: F) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut n = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        n = f();
        best = best.min(t.elapsed());
    }
    (best, n)
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

/// `config/awsflowlogs.yml` without its filter (every flow goes through the transform), over
/// a memory sink, with the given transform and encoder.
fn aws_config(transform: &str, encode: &str) -> ExporterConfig {
    let text = format!(
        "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  transform:\n{transform}  mangle:\n    type: logstatus\n  encode:\n    type: {encode}\n  compress:\n    type: gzip\n  store:\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 6000\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 100000\n"
    );
    ExporterConfig::load(&text).expect("bench config")
}

/// Every message parsed and run through the pipeline, then flushed, in a task on a runtime
/// worker as `sluice run` drives a pipeline: (flows in, the objects written).
fn run_messages(
    side: &mut Side,
    messages: &Arc<[String]>,
    rt: &tokio::runtime::Runtime,
) -> (usize, Vec<sluice::sinks::Object>) {
    let mut p = side.pipeline.take().expect("pipeline");
    let messages = messages.clone();
    let (p, flows) = rt
        .block_on(rt.spawn(async move {
            let mut flows = 0;
            for m in messages.iter() {
                let parsed = common::parse(m);
                flows += parsed.len();
                p.process(parsed, 1_546_338_030_000).await;
            }
            p.flush_all(1_546_338_090_000).await;
            (p, flows)
        }))
        .expect("pipeline task");
    side.pipeline = Some(p);
    (flows, side.sink.take())
}

/// A pipeline over a memory sink.
struct Side {
    pipeline: Option<Pipeline>,
    sink: MemorySink,
}

fn unzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out).expect("gzip");
    out
}

/// The headline: the builtin `awsflowlogs` transform against the guest in the same pipeline,
/// end to end (Skydive messages as received → parse → classify → transform → logstatus →
/// store → encode → gzip → memory sink), in [`HEADLINE_ROUNDS`] rounds alternating the two.
fn builtin_vs_guest(rt: &tokio::runtime::Runtime, messages: &Arc<[String]>, encode: &str) -> f64 {
    let guest = format!(
        "    type: wasm\n    wasm:\n      module: {}\n",
        test_guests::path("awsflowlogs").display()
    );
    let mut sides = Vec::new();
    for transform in ["    type: awsflowlogs\n", guest.as_str()] {
        let sink = MemorySink::default();
        let p = rt
            .block_on(Pipeline::build(
                &aws_config(transform, encode),
                Some(Sink::Memory(sink.clone())),
                Arc::default(),
            ))
            .expect("pipeline");
        sides.push(Side {
            pipeline: Some(p),
            sink,
        });
    }
    // Warm-up round, and the guest's objects must be the builtin's.
    let mut objects = Vec::new();
    for side in &mut sides {
        objects.push(run_messages(side, messages, rt).1);
    }
    let same = objects[0].len() == objects[1].len()
        && objects[0]
            .iter()
            .zip(&objects[1])
            .all(|(b, g)| b.key == g.key && unzip(&b.body) == unzip(&g.body));
    // Many short rounds, each side's order swapped every round, and the ratio taken within
    // each round: a neighbour's burst then spoils a round or two, not the figure.
    let mut samples = [Vec::new(), Vec::new()];
    let mut flows = 0;
    for round in 0..HEADLINE_ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let t = Instant::now();
            let (n, written) = run_messages(&mut sides[i], messages, rt);
            samples[i].push(t.elapsed());
            let records: usize = written.iter().map(|o| o.records).sum();
            assert_eq!(records, n, "every flow is written");
            flows = n;
        }
    }
    let ratios: Vec<f64> = samples[0]
        .iter()
        .zip(&samples[1])
        .map(|(builtin, guest)| builtin.as_secs_f64() / guest.as_secs_f64())
        .collect();
    let (ratio_min, ratio) = common::min_and_median(ratios);
    let mut rates = |i: usize| {
        let best = samples[i].iter().copied().min().unwrap_or_default();
        (
            per_sec(flows, best),
            per_sec(flows, median(&mut samples[i])),
        )
    };
    let ((builtin, builtin_median), (guest, guest_median)) = (rates(0), rates(1));
    println!(
        "awsflowlogs+{encode}+gzip, end to end ({flows} flows in {MESSAGES} messages, {HEADLINE_ROUNDS} interleaved rounds):\n  builtin {builtin:>10.0} flows/s best, {builtin_median:>10.0} median\n  guest   {guest:>10.0} flows/s best, {guest_median:>10.0} median\n  ratio   {ratio:.2}× the builtin, median of the rounds' ratios (min {ratio_min:.2}×; target ≥ 0.8); objects {}",
        if same {
            "identical"
        } else {
            "DIFFER from the builtin's"
        }
    );
    ratio
}

/// Where the guest path's time goes, per flow, on 1,000-flow batches of parsed flows: the
/// host's parts measured alone, the call being the rest (store, instantiate, init, copy in,
/// guest decode/build/encode, copy out).
fn breakdown(rt: &tokio::runtime::Runtime, messages: &[String]) {
    let flows: Vec<Flow> = messages
        .iter()
        .take(BATCH / FLOWS_PER_MESSAGE)
        .flat_map(|m| common::parse(m))
        .collect();
    let batches = 20;
    let host = WasmHost::global();
    let module = host
        .load_file(&test_guests::path("awsflowlogs"), World::Transformer)
        .unwrap();
    let options = StageOptions::resolve(host, &WasmOptions::default()).unwrap();
    let mut stage = WasmStage::new(module, None, options, "transform", Default::default()).unwrap();
    let stats = PipelineStats::default();
    let (total, _) = best_of(5, || {
        let mut out = Vec::new();
        for _ in 0..batches {
            out.clear();
            let records: Vec<Record> = rt
                .block_on(stage.transform(&flows, &stats))
                .into_iter()
                .map(Record::Wasm)
                .collect();
            write_go_json(&mut out, false, &records).unwrap();
        }
        out.len()
    });
    let fuel_before = stats.wasm_fuel_used.load(Ordering::Relaxed);
    let records: Vec<Record> = rt
        .block_on(stage.transform(&flows, &stats))
        .into_iter()
        .map(Record::Wasm)
        .collect();
    let fuel =
        (stats.wasm_fuel_used.load(Ordering::Relaxed) - fuel_before) as f64 / flows.len() as f64;
    let mut buf = Vec::new();
    let (encode, _) = best_of(5, || {
        for _ in 0..batches {
            sluice::wasm::encoding::encode_flows(&flows, &mut buf);
        }
        buf.len()
    });
    let out_bytes = sluice::wasm::encoding::encode_records(&records);
    let mut cache = sluice::wasm::encoding::SchemaCache::default();
    let (decode, _) = best_of(5, || {
        let mut n = 0;
        for _ in 0..batches {
            n += sluice::wasm::encoding::decode_records(out_bytes.clone(), &mut cache)
                .unwrap()
                .len();
        }
        n
    });
    let (json, _) = best_of(5, || {
        let mut out = Vec::new();
        for _ in 0..batches {
            out.clear();
            write_go_json(&mut out, false, &records).unwrap();
        }
        out.len()
    });
    let n = batches * flows.len();
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "  guest path per flow (diagnostic): {:.2} µs = host encode {:.2} + call {:.2} + host decode {:.2} + JSON {:.2}; {fuel:.0} fuel/flow",
        us(total),
        us(encode),
        us(total.saturating_sub(encode + decode + json)),
        us(decode),
        us(json),
    );
}

fn instantiation(rt: &tokio::runtime::Runtime) {
    let host = WasmHost::global();
    let module = host
        .load_file(&test_guests::path("awsflowlogs"), World::Transformer)
        .unwrap();
    let options = StageOptions::resolve(host, &WasmOptions::default()).unwrap();
    let mut stage = WasmStage::new(module, None, options, "transform", Default::default()).unwrap();
    let stats = PipelineStats::default();
    let calls = 2000;
    let (d, _) = best_of(3, || {
        for _ in 0..calls {
            rt.block_on(stage.transform(&[], &stats));
        }
        calls
    });
    let fuel = stats.wasm_fuel_used.load(Ordering::Relaxed) / (3 * calls as u64);
    println!(
        "instantiation per batch (fresh store + instantiate + init + empty transform): {:.1} µs, {fuel} fuel",
        d.as_secs_f64() * 1e6 / calls as f64
    );
}

fn pipeline_config(module: &std::path::Path, extra: &str) -> ExporterConfig {
    let text = format!(
        "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8]\n  transform:\n    type: wasm\n    wasm:\n      module: {}\n{extra}  store:\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 1000\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 1000000\n  compress:\n    type: none\n",
        module.display()
    );
    ExporterConfig::load(&text).unwrap()
}

/// Flows/s of one awsflowlogs pipeline over `window`, with or without a spinning neighbour.
fn neighbour(rt: &tokio::runtime::Runtime, spinning: bool, window: Duration) -> f64 {
    rt.block_on(async {
        let stop = Arc::new(AtomicBool::new(false));
        let spin = if spinning {
            let config = pipeline_config(&test_guests::path("spin"), "      deadline_ms: 100\n");
            let mut p = Pipeline::build(
                &config,
                Some(Sink::Memory(MemorySink::default())),
                Arc::default(),
            )
            .await
            .unwrap();
            let stop = stop.clone();
            Some(tokio::spawn(async move {
                let flows: Vec<Flow> = (0..100).map(flow).collect();
                while !stop.load(Ordering::Relaxed) {
                    p.process(flows.clone(), 1_546_338_030_000).await;
                }
                p.stats().snapshot()
            }))
        } else {
            None
        };
        let config = pipeline_config(&test_guests::path("awsflowlogs"), "");
        let sink = MemorySink::default();
        let mut p = Pipeline::build(&config, Some(Sink::Memory(sink.clone())), Arc::default())
            .await
            .unwrap();
        // A task on a runtime worker, as `sluice run` and `sluice serve` drive a pipeline.
        let rate = tokio::spawn(async move {
            let flows: Vec<Flow> = (0..BATCH).map(flow).collect();
            let started = Instant::now();
            let mut n = 0;
            while started.elapsed() < window {
                p.process(flows.clone(), 1_546_338_030_000).await;
                sink.take();
                n += BATCH;
            }
            per_sec(n, started.elapsed())
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = spin {
            let s = h.await.unwrap();
            println!("  (spinning neighbour: dropped {:?})", s.dropped);
        }
        rate
    })
}

/// `sluice guest build <source> -o <bench tmp>/<name>`: the component, or why not.
fn guest_build(source: &str, name: &str) -> Result<PathBuf, String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(source);
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let built = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("guest")
        .arg("build")
        .arg(&source)
        .arg("-o")
        .arg(&out)
        .output()
        .map_err(|e| format!("cannot run sluice guest build: {e}"))?;
    if built.status.success() {
        Ok(out)
    } else {
        Err(String::from_utf8_lossy(&built.stderr).into_owned())
    }
}

/// The median of some durations.
fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// One language's `anonymize` stage and what was measured of it.
struct Language {
    name: &'static str,
    stage: WasmStage,
    bytes: u64,
    compile: Duration,
    /// Batches per round: a round takes about as long in every language.
    batches: usize,
    samples: Vec<Duration>,
}

/// The `anonymize` guest in three languages on the same 1,000-flow batches (section 4).
fn languages(rt: &tokio::runtime::Runtime, messages: &[String]) {
    let flows: Vec<Flow> = messages
        .iter()
        .take(BATCH / FLOWS_PER_MESSAGE)
        .flat_map(|m| common::parse(m))
        .collect();
    let host = WasmHost::global();
    let options = StageOptions::resolve(host, &WasmOptions::default()).unwrap();
    let config = serde_json::json!({"ipv4_prefix": 16});
    let sources = [
        ("rust", Ok(test_guests::path("anonymize")), 40),
        (
            "python",
            guest_build("guests/python/anonymize.py", "anonymize-py.wasm"),
            1,
        ),
        (
            "javascript",
            guest_build("guests/js/anonymize.js", "anonymize-js.wasm"),
            1,
        ),
    ];
    let mut langs = Vec::new();
    for (name, path, batches) in sources {
        let path = match path {
            Ok(path) => path,
            Err(e) => {
                println!("  {name}: not built, skipped:\n{e}");
                continue;
            }
        };
        let t = Instant::now();
        let module = host.load_file(&path, World::Transformer).unwrap();
        let compile = t.elapsed();
        let stage = WasmStage::new(
            module,
            Some(&config),
            options.clone(),
            "transform",
            Arc::default(),
        )
        .unwrap();
        langs.push(Language {
            name,
            stage,
            bytes: std::fs::metadata(&path).unwrap().len(),
            compile,
            batches,
            samples: Vec::new(),
        });
    }
    // Warm-up, and every language must write the Rust guest's records.
    let stats = PipelineStats::default();
    let mut first: Option<Vec<u8>> = None;
    for lang in &mut langs {
        let records: Vec<Record> = rt
            .block_on(lang.stage.transform(&flows, &stats))
            .into_iter()
            .map(Record::Wasm)
            .collect();
        let mut json = Vec::new();
        write_go_json(&mut json, false, &records).unwrap();
        assert_eq!(
            records.len(),
            flows.len(),
            "{}: a record per flow",
            lang.name
        );
        match &first {
            None => first = Some(json),
            Some(rust) => assert!(json == *rust, "{}: records differ from Rust's", lang.name),
        }
    }
    for _ in 0..ROUNDS {
        for lang in &mut langs {
            let t = Instant::now();
            for _ in 0..lang.batches {
                rt.block_on(lang.stage.transform(&flows, &stats));
            }
            lang.samples.push(t.elapsed() / lang.batches as u32);
        }
    }
    println!(
        "anonymize guest by language ({} flows a batch, {ROUNDS} interleaved rounds; records identical to Rust's):",
        flows.len()
    );
    let mut rust_rate = None;
    for lang in &mut langs {
        let best = lang.samples.iter().copied().min().unwrap();
        let (rate_best, rate_median) = (
            per_sec(flows.len(), best),
            per_sec(flows.len(), median(&mut lang.samples)),
        );
        let rust = *rust_rate.get_or_insert(rate_best);
        // Fuel of one batch, and the instantiation alone (an empty batch).
        let before = stats.wasm_fuel_used.load(Ordering::Relaxed);
        rt.block_on(lang.stage.transform(&flows, &stats));
        let fuel = (stats.wasm_fuel_used.load(Ordering::Relaxed) - before) / flows.len() as u64;
        let calls = if lang.name == "rust" { 2000 } else { 100 };
        let mut empty = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            for _ in 0..calls {
                rt.block_on(lang.stage.transform(&[], &stats));
            }
            empty.push(t.elapsed() / calls);
        }
        let instantiation = empty.iter().copied().min().unwrap();
        println!(
            "  {:<10} {rate_best:>9.0} flows/s (median {rate_median:>9.0}), {:.3}× Rust; instantiation {:>7.1} µs; {fuel:>7} fuel/flow; {:>5.1} MB, loaded (compiled or from the cache) in {:.1} s",
            lang.name,
            rate_best / rust,
            instantiation.as_secs_f64() * 1e6,
            lang.bytes as f64 / 1e6,
            lang.compile.as_secs_f64(),
        );
    }
}

fn main() {
    // Quarantine off: the spinning guest runs to its deadline on every batch, all the time.
    WasmHost::install(HostSettings {
        quarantine_after: u32::MAX,
        ..HostSettings::default()
    });
    let guests = test_guests::dir().unwrap_or_else(|e| panic!("{e}"));
    println!("guests: {}", guests.display());
    let words: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |section: &str| words.is_empty() || words.iter().any(|w| w == section);
    let messages: Arc<[String]> = common::messages(MESSAGES, FLOWS_PER_MESSAGE).into();
    // The runtime `sluice run` and `sluice serve` use: multi-thread, one worker per core.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for encode in ["csv", "json"] {
        if wanted(encode) {
            builtin_vs_guest(&rt, &messages, encode);
        }
    }
    if wanted("breakdown") {
        breakdown(&rt, &messages);
    }
    if wanted("instantiation") {
        instantiation(&rt);
    }
    if wanted("languages") {
        languages(&rt, &messages);
    }
    if wanted("neighbour") {
        // Best of three 1 s windows each, alternating, so a change in machine load hits both.
        let window = Duration::from_secs(1);
        let (mut alone, mut beside) = (0.0_f64, 0.0_f64);
        for _ in 0..3 {
            alone = alone.max(neighbour(&rt, false, window));
            beside = beside.max(neighbour(&rt, true, window));
        }
        println!(
            "pipeline throughput (awsflowlogs guest, JSON, no gzip):\n  alone        {alone:>10.0} flows/s\n  beside spin  {beside:>10.0} flows/s\n  ratio        {:.2}× (target ≥ 0.9)",
            beside / alone
        );
    }
}

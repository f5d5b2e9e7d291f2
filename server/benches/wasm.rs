//! Wasm host benchmarks (`cargo bench -p sluice --bench wasm`): absolute figures and ratios
//! measured in the same run.
//!
//! 1. The `awsflowlogs` guest against a native implementation of the same records, end to end
//!    from parsed flows to JSON bytes (target ≥ 0.8× native flows/s).
//! 2. Instantiation per batch: an empty batch (fresh store, instantiate, `init`, call).
//! 3. One pipeline's throughput while another pipeline's guest spins without end (quarantine
//!    off, so the spinning guest holds a core the whole time), against it running alone
//!    (target ≥ 0.9×).
//!
//! The guests are built from `guests/` on first use.

// The binary's allocator (server/src/main.rs), so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::ser::{Serialize, SerializeStruct, Serializer};
use sluice::config::{ExporterConfig, WasmOptions};
use sluice::flow::Flow;
use sluice::metrics::PipelineStats;
use sluice::pipeline::Pipeline;
use sluice::pipeline::encode::write_go_json;
use sluice::pipeline::record::Record;
use sluice::sinks::{MemorySink, Sink};
use sluice::wasm::{HostSettings, StageOptions, WasmHost, WasmStage, World, test_guests};

const BATCH: usize = 1000;

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

/// The same v2 record as the guest, natively (spec §6.3 with IANA numbers; the builtin
/// transform's semantics).
struct NativeAws<'a>(&'a Flow);

impl Serialize for NativeAws<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let f = self.0;
        let net = f.network.as_ref();
        let (sport, dport, proto) = match &f.transport {
            Some(t) => (t.a, t.b, t.protocol.iana_number().unwrap_or(0)),
            None => (0, 0, 0),
        };
        let (m, start, end) = match (&f.last_update_metric, &f.metric) {
            (Some(m), _) => (Some(m), m.start, m.last),
            (None, Some(m)) => (Some(m), f.start, f.last),
            (None, None) => (None, f.start, f.last),
        };
        let mut st = s.serialize_struct("AwsFlowLog", 14)?;
        st.serialize_field("Version", &2u8)?;
        st.serialize_field("AccountID", "12345678")?;
        st.serialize_field(
            "InterfaceID",
            &f.link
                .as_ref()
                .map(|l| l.id.to_string())
                .unwrap_or_default(),
        )?;
        st.serialize_field("SrcAddr", net.map_or("", |n| n.a.as_str()))?;
        st.serialize_field("DstAddr", net.map_or("", |n| n.b.as_str()))?;
        st.serialize_field("SrcPort", &sport)?;
        st.serialize_field("DstPort", &dport)?;
        st.serialize_field("Protocol", &proto)?;
        st.serialize_field("Packets", &m.map_or(0, |m| m.ab_packets + m.ba_packets))?;
        st.serialize_field("Bytes", &m.map_or(0, |m| m.ab_bytes + m.ba_bytes))?;
        st.serialize_field("Start", &(start / 1000))?;
        st.serialize_field("End", &(end / 1000))?;
        st.serialize_field("Action", "ACCEPT")?;
        st.serialize_field("LogStatus", "OK")?;
        st.end()
    }
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

fn guest_vs_native(rt: &tokio::runtime::Runtime) {
    let flows: Vec<Flow> = (0..BATCH).map(flow).collect();
    let batches = 20;
    let (native, _) = best_of(5, || {
        let mut out = Vec::new();
        for _ in 0..batches {
            out.clear();
            let records: Vec<NativeAws<'_>> = flows.iter().map(NativeAws).collect();
            write_go_json(&mut out, false, &records).unwrap();
        }
        out.len()
    });
    let host = WasmHost::global();
    let module = host
        .load_file(&test_guests::path("awsflowlogs"), World::Transformer)
        .unwrap();
    let options = StageOptions::resolve(host, &WasmOptions::default()).unwrap();
    let mut stage = WasmStage::new(module, None, options, "bench").unwrap();
    let stats = PipelineStats::default();
    let mut check = (Vec::new(), Vec::new());
    let (wasm, _) = best_of(5, || {
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
        check.1 = out.clone();
        out.len()
    });
    let records: Vec<NativeAws<'_>> = flows.iter().map(NativeAws).collect();
    write_go_json(&mut check.0, false, &records).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&check.0),
        String::from_utf8_lossy(&check.1),
        "guest and native output differ"
    );
    // Where the guest's time goes: the host's parts measured alone, the rest is the call
    // (store, instantiate, init, copy in, guest decode/build/encode, copy out).
    let mut buf = Vec::new();
    let (encode, _) = best_of(5, || {
        for _ in 0..batches {
            sluice::wasm::encoding::encode_flows(&flows, &mut buf);
        }
        buf.len()
    });
    let records: Vec<Record> = rt
        .block_on(stage.transform(&flows, &stats))
        .into_iter()
        .map(Record::Wasm)
        .collect();
    let out_bytes = sluice::wasm::encoding::encode_records(&records);
    let (decode, _) = best_of(5, || {
        let mut n = 0;
        for _ in 0..batches {
            n += sluice::wasm::encoding::decode_records(&out_bytes)
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
    let n = batches * BATCH;
    let us = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!(
        "  per flow: guest path {:.2} µs = host encode {:.2} + call {:.2} + host decode {:.2} + JSON {:.2}; native {:.2} µs",
        us(wasm),
        us(encode),
        us(wasm.saturating_sub(encode + decode + json)),
        us(decode),
        us(json),
        us(native)
    );
    let fuel = stats.wasm_fuel_used.load(Ordering::Relaxed) as f64 / (6 * n + BATCH) as f64;
    println!(
        "awsflowlogs, {BATCH}-flow batches, flows → JSON bytes:\n  native {:>10.0} flows/s\n  guest  {:>10.0} flows/s  ({:.0} fuel/flow)\n  ratio  {:.2}× native (target ≥ 0.8)",
        per_sec(n, native),
        per_sec(n, wasm),
        fuel,
        native.as_secs_f64() / wasm.as_secs_f64()
    );
}

fn instantiation(rt: &tokio::runtime::Runtime) {
    let host = WasmHost::global();
    let module = host
        .load_file(&test_guests::path("awsflowlogs"), World::Transformer)
        .unwrap();
    let options = StageOptions::resolve(host, &WasmOptions::default()).unwrap();
    let mut stage = WasmStage::new(module, None, options, "bench").unwrap();
    let stats = PipelineStats::default();
    let calls = 2000;
    let (d, _) = best_of(3, || {
        for _ in 0..calls {
            rt.block_on(stage.transform(&[], &stats));
        }
        calls
    });
    println!(
        "instantiation per batch (fresh store + instantiate + init + empty transform, incl. the blocking-thread hop): {:.1} µs",
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
        let flows: Vec<Flow> = (0..BATCH).map(flow).collect();
        let started = Instant::now();
        let mut n = 0;
        while started.elapsed() < window {
            p.process(flows.clone(), 1_546_338_030_000).await;
            sink.take();
            n += BATCH;
        }
        let rate = per_sec(n, started.elapsed());
        stop.store(true, Ordering::Relaxed);
        if let Some(h) = spin {
            let s = h.await.unwrap();
            println!("  (spinning neighbour: dropped {:?})", s.dropped);
        }
        rate
    })
}

fn main() {
    // Quarantine off: the spinning guest runs to its deadline on every batch, all the time.
    WasmHost::install(HostSettings {
        quarantine_after: u32::MAX,
        ..HostSettings::default()
    });
    let guests = test_guests::dir().unwrap_or_else(|e| panic!("{e}"));
    println!("guests: {}", guests.display());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    guest_vs_native(&rt);
    instantiation(&rt);
    let window = Duration::from_secs(3);
    let alone = neighbour(&rt, false, window);
    let beside = neighbour(&rt, true, window);
    println!(
        "pipeline throughput (awsflowlogs guest, JSON, no gzip):\n  alone        {alone:>10.0} flows/s\n  beside spin  {beside:>10.0} flows/s\n  ratio        {:.2}× (target ≥ 0.9)",
        beside / alone
    );
}

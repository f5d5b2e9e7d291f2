//! Density: resident memory of `sluice serve` per idle pipeline (docs/service.md §8).
//!
//! The server runs in this process (so `/proc/self/status` VmRSS is the server's), on a temp
//! data folder, and 1,000 pipelines are created through the REST API like a client would. Idle
//! means two things, both measured:
//! - **running, disconnected**: each pipeline's task, subscriber and stages are live and the
//!   subscriber keeps reconnecting (with backoff) to an analyzer address where nothing listens;
//!   this is the real per-pipeline footprint of a started pipeline with no traffic;
//! - **stopped**: the same pipelines after `POST /v1/pipelines/{id}/stop` (definition and
//!   counters kept, no task).
//!
//! Run: `cargo bench -p sluice --bench density` (optionally `-- 2000` for another count).

// The binary's allocator (server/src/main.rs), so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::Duration;

use sluice::serve::Server;
use sluice::serve::config::ServerConfig;
use tokio_util::sync::CancellationToken;

const DEFAULT_PIPELINES: usize = 1_000;
const ADMIN: &str = "density-admin";

/// Resident set size in KiB, from /proc/self/status.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn pipeline_yaml(i: usize) -> String {
    format!(
        "host_id: density-{i}\npipeline:\n  subscriber:\n    url: ws://127.0.0.1:9/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  transform:\n    type: awsflowlogs\n  encode:\n    type: csv\n  compress:\n    type: gzip\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 6000\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 100000\n  write:\n    type: file\n    file:\n      dir: out\n"
    )
}

fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(DEFAULT_PIPELINES);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(measure(count))
}

async fn measure(count: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::parse("")?;
    config.listen = "127.0.0.1:0".parse()?;
    config.data_dir = dir.path().to_path_buf();
    config.admin_token = Some(ADMIN.into());
    config.limits.pipelines_per_tenant = count as u64;
    let server = Server::bind(config).await?;
    let base = format!("http://{}", server.local_addr()?);
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.run(shutdown.clone()));
    let client = reqwest::Client::new();

    let tenant: serde_json::Value = client
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "density"}))
        .send()
        .await?
        .json()
        .await?;
    let token = tenant["token"].as_str().unwrap_or_default().to_string();
    // Warm up allocator arenas and the HTTP path with a few requests before the baseline.
    for _ in 0..20 {
        client
            .get(format!("{base}/v1/pipelines"))
            .bearer_auth(&token)
            .send()
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = rss_kib();

    let start = std::time::Instant::now();
    let mut ids = Vec::with_capacity(count);
    for i in 0..count {
        let r = client
            .post(format!("{base}/v1/pipelines"))
            .bearer_auth(&token)
            .header("content-type", "application/yaml")
            .body(pipeline_yaml(i))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "create {i}: {}", r.text().await?);
        let v: serde_json::Value = r.json().await?;
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
    }
    let created_in = start.elapsed();
    // Let every subscriber try, fail and settle into its backoff.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let running = rss_kib();

    for id in &ids {
        client
            .post(format!("{base}/v1/pipelines/{id}/stop"))
            .bearer_auth(&token)
            .send()
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stopped = rss_kib();

    shutdown.cancel();
    serving.await??;

    let per = |kib: u64| mib(kib.saturating_sub(baseline)) / count as f64;
    println!("density: {count} pipelines (created over REST in {created_in:.2?})");
    println!(
        "  baseline (server, 1 tenant, 0 pipelines): {:8.1} MiB",
        mib(baseline)
    );
    println!(
        "  running, analyzer absent:                  {:8.1} MiB  -> {:.3} MiB ({:.0} KiB) per pipeline",
        mib(running),
        per(running),
        per(running) * 1024.0
    );
    println!(
        "  stopped:                                   {:8.1} MiB  -> {:.3} MiB ({:.0} KiB) per pipeline",
        mib(stopped),
        per(stopped),
        per(stopped) * 1024.0
    );
    println!("  (stopped keeps what the allocator did not return to the OS: an upper bound)");
    Ok(())
}

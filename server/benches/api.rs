//! API latency: `GET /v1/pipelines` of a tenant with 100 pipelines, from 32 keep-alive
//! connections at once, against `GET /healthz` (the HTTP path alone) on the same connections,
//! in alternating rounds. Prints requests per second and the p50/p99/max latency of each, best
//! and median over the rounds (docs/service.md §8).
//!
//! The server runs in this process on a temp data folder, as `sluice serve` would.
//!
//! Run: `cargo bench -p sluice --bench api` (optionally `-- <pipelines> <connections>`).

// The binary's allocator (server/src/main.rs), so the numbers are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::time::{Duration, Instant};

use sluice::serve::Server;
use sluice::serve::config::ServerConfig;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "api-bench-admin";
const ROUNDS: usize = 5;
const ROUND: Duration = Duration::from_secs(2);

fn pipeline_yaml(i: usize) -> String {
    format!(
        "host_id: api-{i}\npipeline:\n  subscriber:\n    url: ws://127.0.0.1:9/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  transform:\n    type: awsflowlogs\n  encode:\n    type: csv\n  compress:\n    type: gzip\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 6000\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 86400\n      max_flow_array_size: 100000\n  write:\n    type: file\n    file:\n      dir: out\n"
    )
}

/// One round: `connections` clients requesting `url` back to back for [`ROUND`].
async fn round(clients: &[reqwest::Client], url: &str, token: &str) -> (f64, Vec<Duration>) {
    let start = Instant::now();
    let tasks: Vec<_> = clients
        .iter()
        .map(|client| {
            let (client, url, token) = (client.clone(), url.to_string(), token.to_string());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                while start.elapsed() < ROUND {
                    let sent = Instant::now();
                    let r = client.get(&url).bearer_auth(&token).send().await;
                    match r {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            latencies.push(sent.elapsed());
                        }
                        other => panic!("{url}: {other:?}"),
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let rate = all.len() as f64 / start.elapsed().as_secs_f64();
    all.sort();
    (rate, all)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

struct Stats {
    rate: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    max: Vec<f64>,
}

impl Stats {
    fn new() -> Self {
        Stats {
            rate: Vec::new(),
            p50: Vec::new(),
            p99: Vec::new(),
            max: Vec::new(),
        }
    }

    fn add(&mut self, (rate, lat): (f64, Vec<Duration>)) {
        self.rate.push(rate);
        self.p50.push(ms(percentile(&lat, 0.50)));
        self.p99.push(ms(percentile(&lat, 0.99)));
        self.max.push(ms(*lat.last().expect("requests")));
    }

    fn print(&self, what: &str) {
        let best_median = |v: &[f64], higher_is_better: bool| {
            let mut v = v.to_vec();
            v.sort_by(|a, b| a.total_cmp(b));
            let best = if higher_is_better {
                v[v.len() - 1]
            } else {
                v[0]
            };
            (best, v[v.len() / 2])
        };
        let (rate_best, rate_median) = best_median(&self.rate, true);
        let (p50_best, p50_median) = best_median(&self.p50, false);
        let (p99_best, p99_median) = best_median(&self.p99, false);
        let (max_best, max_median) = best_median(&self.max, false);
        println!(
            "  {what:<26} {rate_best:7.0} req/s (median {rate_median:6.0})   p50 {p50_best:5.2} ms ({p50_median:5.2})   p99 {p99_best:6.2} ms ({p99_median:6.2})   max {max_best:6.1} ms ({max_median:6.1})"
        );
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse::<usize>().ok());
    let pipelines = args.next().unwrap_or(100);
    let connections = args.next().unwrap_or(32);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(measure(pipelines, connections))
}

async fn measure(pipelines: usize, connections: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut config = ServerConfig::parse("")?;
    config.listen = "127.0.0.1:0".parse()?;
    config.data_dir = dir.path().to_path_buf();
    config.admin_token = Some(ADMIN.into());
    config.limits.pipelines_per_tenant = pipelines as u64;
    config.http.max_connections = connections * 2;
    let server = Server::bind(config).await?;
    let base = format!("http://{}", server.local_addr()?);
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.run(shutdown.clone()));
    let admin = reqwest::Client::new();
    let tenant: serde_json::Value = admin
        .post(format!("{base}/v1/tenants"))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"name": "api-bench"}))
        .send()
        .await?
        .json()
        .await?;
    let token = tenant["token"].as_str().unwrap_or_default().to_string();
    for i in 0..pipelines {
        let r = admin
            .post(format!("{base}/v1/pipelines?desired_state=stopped"))
            .bearer_auth(&token)
            .header("content-type", "application/yaml")
            .body(pipeline_yaml(i))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "create {i}: {}", r.text().await?);
    }
    // One client (one keep-alive connection) per simulated user.
    let clients: Vec<reqwest::Client> = (0..connections)
        .map(|_| {
            reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()
                .expect("client")
        })
        .collect();
    let list = format!("{base}/v1/pipelines");
    let health = format!("{base}/healthz");
    round(&clients, &list, &token).await; // warm-up
    let (mut listed, mut baseline) = (Stats::new(), Stats::new());
    for _ in 0..ROUNDS {
        baseline.add(round(&clients, &health, &token).await);
        listed.add(round(&clients, &list, &token).await);
    }
    shutdown.cancel();
    serving.await??;
    println!(
        "api: {pipelines} pipelines of one tenant, {connections} connections, {ROUNDS} alternating rounds of {ROUND:?} (best, then median)"
    );
    baseline.print("GET /healthz (baseline)");
    listed.print("GET /v1/pipelines");
    let best = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    println!(
        "  GET /v1/pipelines: {:.2}x the baseline's rate (best rounds); target p99 <= 10 ms",
        best(&listed.rate) / best(&baseline.rate)
    );
    Ok(())
}

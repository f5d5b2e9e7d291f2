//! `sluice sim`: a strict Skydive analyzer simulator (docs/skydive-protocol.md §1, §2, §5, §8
//! "Simulator").
//!
//! It serves `/ws/subscriber/flow` with generated or replayed flows, `/api/topology` from a
//! topology file, and `/api`. For tests it also serves `GET /sim/sent` (how many flow records
//! reached a subscriber socket, and how many topology queries it answered), `POST /sim/frame` (broadcast the body verbatim as one text frame)
//! and writes every record sent to `--sent-log`; `GET /sim/subscriptions` lists every
//! subscription attempt with its answer (`subscriptions.rs`).

mod analyzer;
pub mod generator;
pub mod gremlin;
mod hub;
mod subscriptions;
pub mod topology;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use hub::Hub;

/// The capture id used when `--captures` is not given.
pub const DEFAULT_CAPTURE_ID: &str = "3d1c7e52-9a8f-4b6e-7f21-0c5d9e8a4b17";

/// Options of `sluice sim`. Durations are seconds and accept fractions (`--update-secs 0.5`).
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    /// Most flow records emitted per second.
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Concurrent flows in the simulated flow table.
    #[arg(long, default_value_t = 50)]
    pub flows: usize,
    /// Seed of the flow generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Flow table update tick (`flow.update`).
    #[arg(long, default_value_t = 60.0)]
    pub update_secs: f64,
    /// Idle time after which a flow is sent ended (`flow.expire`).
    #[arg(long, default_value_t = 600.0)]
    pub expire_secs: f64,
    /// DNS application timeout (`flow.application_timeout.dns`).
    #[arg(long, default_value_t = 10.0)]
    pub app_timeout_secs: f64,
    /// Analyzer flush ticker (a batch is also flushed at 100 flows).
    #[arg(long, default_value_t = 5.0)]
    pub batch_secs: f64,
    /// Ping period (`http.ws.ping_delay`).
    #[arg(long, default_value_t = 2.0)]
    pub ping_secs: f64,
    /// Extra time allowed for a Pong (`http.ws.pong_timeout`).
    #[arg(long, default_value_t = 5.0)]
    pub pong_timeout_secs: f64,
    /// Period of `stats` messages, per capture.
    #[arg(long, default_value_t = 10.0)]
    pub stats_secs: f64,
    /// Enables basic auth with this `user:password` (repeatable).
    #[arg(long = "auth", value_name = "USER:PASSWORD")]
    pub auth: Vec<String>,
    /// The analyzer's own host id, sent in the 101 as `X-Host-ID`.
    #[arg(long, default_value = "sim")]
    pub analyzer_host_id: String,
    /// NDJSON file of flows (one JSON object per line), sent in order instead of generated ones.
    #[arg(long)]
    pub replay: Option<PathBuf>,
    /// JSON file `{"Nodes":[...],"Edges":[...]}` answering `/api/topology`.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// Milliseconds each `/api/topology` query waits before its answer: the round trip to an
    /// analyzer a network hop away (the cold benchmarks).
    #[arg(long, default_value_t = 0)]
    pub topology_delay_ms: u64,
    /// Stop generating after this many flow records.
    #[arg(long)]
    pub total: Option<u64>,
    /// Capture ids of the simulated captures.
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_CAPTURE_ID)]
    pub captures: Vec<String>,
    /// Empty the namespace registry whenever any subscriber disconnects, as Skydive does.
    #[arg(long)]
    pub wipe_registry_bug: bool,
    /// Append every flow record written to a subscriber to this NDJSON file.
    #[arg(long)]
    pub sent_log: Option<PathBuf>,
}

#[derive(clap::Parser)]
struct SimCommand {
    #[command(flatten)]
    args: SimArgs,
}

impl SimArgs {
    /// Parses options as they would follow `sluice sim` on a command line.
    pub fn try_parse_from<I, T>(args: I) -> Result<SimArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        use clap::Parser as _;
        let argv = std::iter::once(std::ffi::OsString::from("sim"))
            .chain(args.into_iter().map(Into::into));
        SimCommand::try_parse_from(argv).map(|c| c.args)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let positive = [
            ("--rate", self.rate),
            ("--update-secs", self.update_secs),
            ("--expire-secs", self.expire_secs),
            ("--app-timeout-secs", self.app_timeout_secs),
            ("--batch-secs", self.batch_secs),
            ("--ping-secs", self.ping_secs),
            ("--pong-timeout-secs", self.pong_timeout_secs),
            ("--stats-secs", self.stats_secs),
        ];
        for (name, value) in positive {
            anyhow::ensure!(
                value.is_finite() && value > 0.0,
                "{name} must be a positive number of seconds, got {value}"
            );
        }
        anyhow::ensure!(
            !self.captures.is_empty() && self.captures.iter().all(|c| !c.is_empty()),
            "--captures needs at least one non-empty capture id"
        );
        anyhow::ensure!(
            self.topology_delay_ms <= 60_000,
            "--topology-delay-ms must be at most 60000, got {}",
            self.topology_delay_ms
        );
        for auth in &self.auth {
            anyhow::ensure!(
                auth.contains(':'),
                "--auth takes user:password, got `{auth}`"
            );
        }
        Ok(())
    }
}

impl Default for SimArgs {
    fn default() -> Self {
        SimArgs::try_parse_from(std::iter::empty::<String>()).expect("defaults parse")
    }
}

/// One flow record as sent: its compact JSON and the capture it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    json: Box<RawValue>,
    capture_id: String,
}

impl Record {
    fn from_flow(flow: &crate::skydive::flow::Flow) -> anyhow::Result<Self> {
        Ok(Record {
            json: serde_json::value::to_raw_value(flow)?,
            capture_id: flow.capture_id.clone(),
        })
    }

    /// A replayed line: kept verbatim, even if it is not a valid flow.
    fn from_line(line: &str) -> anyhow::Result<Self> {
        #[derive(Deserialize)]
        struct Capture {
            #[serde(rename = "CaptureID")]
            capture_id: Option<String>,
        }
        let json: Box<RawValue> = serde_json::from_str(line)?;
        let capture_id = serde_json::from_str::<Capture>(line)
            .ok()
            .and_then(|c| c.capture_id)
            .unwrap_or_default();
        Ok(Record { json, capture_id })
    }
}

/// Shared state of the HTTP handlers.
pub(crate) struct SimState {
    args: SimArgs,
    hub: Arc<Hub>,
    graph: gremlin::Graph,
    shutdown: CancellationToken,
    /// `/api/topology` queries answered (`GET /sim/sent`).
    topology_queries: AtomicU64,
    subscriptions: subscriptions::Subscriptions,
}

impl SimState {
    /// Accepts any request when auth is off; otherwise checks `Cookie: authtoken`,
    /// `Authorization: Basic` and `X-Auth-Token`, in Skydive's order.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        if self.args.auth.is_empty() {
            return true;
        }
        let token_ok = |token: &str| {
            base64::engine::general_purpose::STANDARD
                .decode(token.trim())
                .ok()
                .and_then(|raw| String::from_utf8(raw).ok())
                .is_some_and(|pair| self.args.auth.contains(&pair))
        };
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| kv.trim().strip_prefix("authtoken="))
            .next();
        if let Some(token) = cookie.filter(|t| !t.is_empty()) {
            return token_ok(token);
        }
        if let Some(basic) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic "))
        {
            return token_ok(basic);
        }
        headers
            .get("X-Auth-Token")
            .and_then(|v| v.to_str().ok())
            .is_some_and(token_ok)
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::CONNECTION, "close")],
        "Wrong credentials",
    )
        .into_response()
}

/// A bound simulator: the listener is open, nothing runs until [`BoundSim::run`].
pub struct BoundSim {
    listener: tokio::net::TcpListener,
    state: Arc<SimState>,
    records: Option<Vec<Record>>,
}

impl BoundSim {
    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.state.args.listen)
    }

    /// Serves until `shutdown` is cancelled.
    pub fn run(self, shutdown: CancellationToken) -> impl Future<Output = anyhow::Result<()>> {
        let BoundSim {
            listener,
            state,
            records,
        } = self;
        async move {
            let emitter = tokio::spawn(analyzer::run(state.clone(), records, shutdown.clone()));
            let app = router(state.clone());
            let stop = shutdown.clone();
            // The state token ends the WebSocket connections; the server token ends accepting.
            let cancel_connections = state.shutdown.clone();
            let served = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                stop.cancelled().await;
                cancel_connections.cancel();
            })
            .await;
            state.shutdown.cancel();
            emitter.abort();
            let _ = emitter.await;
            served.context("simulator HTTP server failed")
        }
    }
}

/// Opens the listener and loads the replay and topology files.
pub async fn bind(args: SimArgs) -> anyhow::Result<BoundSim> {
    args.validate()?;
    let records =
        match &args.replay {
            Some(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .with_context(|| format!("cannot read replay file {}", path.display()))?;
                let mut records = Vec::new();
                for (n, line) in text.lines().enumerate() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    records.push(Record::from_line(line).with_context(|| {
                        format!("{}:{}: not a JSON value", path.display(), n + 1)
                    })?);
                }
                Some(records)
            }
            None => None,
        };
    let graph = match &args.topology {
        Some(path) => {
            let text = tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("cannot read topology file {}", path.display()))?;
            gremlin::Graph::from_json(&text)
                .with_context(|| format!("bad topology file {}", path.display()))?
        }
        None => gremlin::Graph::default(),
    };
    let hub = Hub::new(args.wipe_registry_bug, args.sent_log.as_deref())
        .context("cannot open the sent log")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let state = Arc::new(SimState {
        args,
        hub,
        graph,
        shutdown: CancellationToken::new(),
        topology_queries: AtomicU64::new(0),
        subscriptions: Default::default(),
    });
    Ok(BoundSim {
        listener,
        state,
        records,
    })
}

/// Runs `sluice sim` until `shutdown` is cancelled, after printing
/// `sluice sim listening on <addr>` on stdout.
pub async fn serve(args: SimArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let bound = bind(args).await?;
    println!("sluice sim listening on {}", bound.local_addr());
    bound.run(shutdown).await
}

fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/ws/subscriber/flow", get(ws::subscriber_flow))
        .route("/api", get(api_info))
        .route("/api/topology", post(topology).get(whole_topology))
        .route("/sim/sent", get(sent))
        .route("/sim/frame", post(frame))
        .route("/sim/subscriptions", get(subscription_attempts))
        .with_state(state)
}

async fn subscription_attempts(State(sim): State<Arc<SimState>>) -> Response {
    axum::Json(serde_json::json!({ "subscriptions": sim.subscriptions.all() })).into_response()
}

async fn api_info(State(sim): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if !sim.authorized(&headers) {
        return unauthorized();
    }
    axum::Json(serde_json::json!({
        "Host": sim.args.analyzer_host_id,
        "Version": "0.28.0",
        "Service": "analyzer",
    }))
    .into_response()
}

fn json_answer(mut body: String) -> Response {
    body.push('\n');
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body,
    )
        .into_response()
}

async fn whole_topology(State(sim): State<Arc<SimState>>, headers: HeaderMap) -> Response {
    if !sim.authorized(&headers) {
        return unauthorized();
    }
    json_answer(sim.graph.to_json().to_string())
}

async fn topology(State(sim): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    if !sim.authorized(&headers) {
        return unauthorized();
    }
    #[derive(Deserialize)]
    struct Query {
        #[serde(rename = "GremlinQuery", default)]
        gremlin_query: String,
    }
    let query: Query = match serde_json::from_slice(&body) {
        Ok(query) => query,
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("bad request body: {e}")).into_response();
        }
    };
    if query.gremlin_query.trim().is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    sim.topology_queries.fetch_add(1, Ordering::Relaxed);
    if sim.args.topology_delay_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(sim.args.topology_delay_ms)).await;
    }
    match gremlin::query(&sim.graph, &query.gremlin_query) {
        Ok(value) => json_answer(value.to_string()),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn sent(State(sim): State<Arc<SimState>>) -> Response {
    axum::Json(serde_json::json!({
        "records": sim.hub.counters.records.load(Ordering::Relaxed),
        "messages": sim.hub.counters.messages.load(Ordering::Relaxed),
        "subscribers": *sim.hub.live().borrow(),
        "topology_queries": sim.topology_queries.load(Ordering::Relaxed),
    }))
    .into_response()
}

async fn frame(State(sim): State<Arc<SimState>>, body: String) -> Response {
    let message = hub::Outgoing {
        text: body.into(),
        delivery: None,
    };
    sim.hub.broadcast(None, message).await;
    StatusCode::NO_CONTENT.into_response()
}

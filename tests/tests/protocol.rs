//! The subscriber against the simulator, in-process, over real sockets
//! (docs/skydive-protocol.md §1–§2).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use sluice::sim::{self, SimArgs};
use sluice::skydive::flow::Flow;
use sluice::skydive::subscriber::{self, SubscriberSettings, SubscriberStats};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_util::sync::CancellationToken;

/// Generous: the machine may be loaded.
const WAIT: Duration = Duration::from_secs(20);

/// Fast timings so flows show up within a fraction of a second.
const FAST: &[&str] = &[
    "--update-secs",
    "0.2",
    "--batch-secs",
    "0.2",
    "--flows",
    "10",
    "--rate",
    "1000",
];

struct Sim {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Sim {
    async fn start(args: &[&str]) -> Sim {
        let args = SimArgs::try_parse_from(args.iter().copied()).expect("sim args");
        let bound = sim::bind(args).await.expect("bind the simulator");
        let addr = bound.local_addr();
        let stop = CancellationToken::new();
        let task = tokio::spawn(bound.run(stop.clone()));
        Sim { addr, stop, task }
    }

    async fn start_on(addr: SocketAddr, extra: &[&str]) -> Sim {
        let listen = addr.to_string();
        let mut args = vec!["--listen", listen.as_str()];
        args.extend_from_slice(extra);
        Sim::start(&args).await
    }

    async fn start_fast(extra: &[&str]) -> Sim {
        Sim::start_on("127.0.0.1:0".parse().unwrap(), &[FAST, extra].concat()).await
    }

    fn url(&self) -> String {
        format!("ws://{}/ws/subscriber/flow", self.addr)
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("simulator stops")
            .expect("simulator task")
            .expect("simulator result");
    }
}

struct Sub {
    stats: Arc<SubscriberStats>,
    flows: Arc<Mutex<Vec<Flow>>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Sub {
    fn start(settings: SubscriberSettings) -> Sub {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let stats = Arc::new(SubscriberStats::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(subscriber::run(settings, tx, stats.clone(), stop.clone()));
        let flows = Arc::new(Mutex::new(Vec::new()));
        let sink = flows.clone();
        tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                sink.lock().unwrap().extend(batch.flows);
            }
        });
        Sub {
            stats,
            flows,
            stop,
            task,
        }
    }

    fn count(&self) -> usize {
        self.flows.lock().unwrap().len()
    }

    fn json(&self) -> Vec<String> {
        self.flows
            .lock()
            .unwrap()
            .iter()
            .map(|f| serde_json::to_string(f).unwrap())
            .collect()
    }

    fn stat(&self, pick: impl Fn(&SubscriberStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        pick(&self.stats).load(Ordering::Relaxed)
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("subscriber stops")
            .expect("subscriber did not panic");
    }
}

fn settings(url: String, host_id: &str) -> SubscriberSettings {
    SubscriberSettings {
        url,
        host_id: host_id.to_owned(),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        ..SubscriberSettings::default()
    }
}

/// Polls `condition` until it holds, failing the test after [`WAIT`].
async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sent_log(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// One HTTP/1.1 request; returns the status and the body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n{headers}\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_right_credentials_deliver_every_sent_flow_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sent.ndjson");
    let log_arg = log.to_str().unwrap();
    let sim = Sim::start_fast(&[
        "--auth",
        "admin:secret",
        "--total",
        "40",
        "--sent-log",
        log_arg,
    ])
    .await;
    let mut s = settings(sim.url(), "right");
    s.username = "admin".into();
    s.password = "secret".into();
    let sub = Sub::start(s);
    wait_until("40 flows", || sub.count() >= 40).await;
    wait_until("the sent log to hold 40 records", || {
        sent_log(&log).len() == 40
    })
    .await;
    assert_eq!(sub.json(), sent_log(&log));
    assert_eq!(sub.stat(|s| &s.malformed_flows), 0);
    assert_eq!(sub.stat(|s| &s.connects), 1);
    assert!(sub.stats.last_error().is_none());
    sub.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_401_in_last_error() {
    let sim = Sim::start_fast(&["--auth", "admin:secret"]).await;
    let mut s = settings(sim.url(), "wrong");
    s.username = "admin".into();
    s.password = "nope".into();
    let sub = Sub::start(s);
    wait_until("a 401", || {
        sub.stats
            .last_error()
            .is_some_and(|e| e.contains("401") && e.contains("wrong credentials"))
    })
    .await;
    assert_eq!(sub.stat(|s| &s.connects), 0);
    // No credentials at all is refused the same way; /api agrees.
    let (status, body) = http(sim.addr, "GET", "/api", "", "").await;
    assert_eq!((status, body.as_str()), (401, "Wrong credentials"));
    let ok = "Authorization: Basic YWRtaW46c2VjcmV0\r\n";
    let (status, body) = http(sim.addr, "GET", "/api", ok, "").await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""Service":"analyzer""#), "{body}");
    sub.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_namespace_gets_only_its_capture() {
    let sim = Sim::start_fast(&["--captures", "cap-a,cap-b"]).await;
    let all = Sub::start(settings(sim.url(), "all"));
    let mut s = settings(sim.url(), "only-b");
    s.capture_id = "cap-b".into();
    let only_b = Sub::start(s);
    wait_until("flows on both", || {
        all.count() >= 40 && only_b.count() >= 10
    })
    .await;
    let captures = |sub: &Sub| -> std::collections::BTreeSet<String> {
        sub.flows
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.capture_id.clone())
            .collect()
    };
    assert_eq!(captures(&only_b), ["cap-b".to_owned()].into());
    assert_eq!(
        captures(&all),
        ["cap-a".to_owned(), "cap-b".to_owned()].into()
    );
    all.stop().await;
    only_b.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_host_id_is_a_409_while_the_first_is_live() {
    let sim = Sim::start_fast(&[]).await;
    let first = Sub::start(settings(sim.url(), "dup"));
    wait_until("the first subscriber", || {
        first.stats.connected.load(Ordering::Relaxed)
    })
    .await;
    let second = Sub::start(settings(sim.url(), "dup"));
    wait_until("a 409", || {
        second
            .stats
            .last_error()
            .is_some_and(|e| e.contains("409") && e.contains("`dup` already in use"))
    })
    .await;
    assert_eq!(second.stat(|s| &s.connects), 0);
    first.stop().await;
    wait_until("the second subscriber after the first left", || {
        second.stat(|s| &s.connects) == 1
    })
    .await;
    second.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyzer_restart_on_the_same_port_loses_nothing_sent_after() {
    let sim = Sim::start_fast(&[]).await;
    let addr = sim.addr;
    let sub = Sub::start(settings(sim.url(), "restart"));
    wait_until("flows from the first analyzer", || sub.count() >= 5).await;
    sim.stop().await;
    wait_until("the disconnect", || sub.stat(|s| &s.disconnects) >= 1).await;

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sent.ndjson");
    let extra = [
        FAST,
        &[
            "--seed",
            "2",
            "--total",
            "30",
            "--sent-log",
            log.to_str().unwrap(),
        ],
    ]
    .concat();
    let sim = Sim::start_on(addr, &extra).await;
    wait_until("the sent log", || sent_log(&log).len() == 30).await;
    let sent = sent_log(&log);
    wait_until("every flow the new analyzer sent", || {
        let got = sub.json();
        got.len() >= 30 && got[got.len() - 30..] == sent[..]
    })
    .await;
    assert_eq!(sub.stat(|s| &s.connects), 2);
    sub.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_flow_is_dropped_alone_and_a_bad_frame_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let replay = dir.path().join("replay.ndjson");
    let lines = [
        r#"{"UUID":"g1","Start":1,"Last":2,"ParentUUID":"","RawPacketsCaptured":0}"#,
        r#"{"UUID":"g2","Start":1,"Last":2,"ParentUUID":"","RawPacketsCaptured":0}"#,
        r#"{"UUID":"bad","Start":"yesterday","Last":2}"#,
        r#"{"UUID":"g3","Start":1,"Last":2,"ParentUUID":"","RawPacketsCaptured":0}"#,
        r#"{"UUID":"g4","Start":1,"Last":2,"ParentUUID":"","RawPacketsCaptured":0}"#,
    ];
    std::fs::write(&replay, lines.join("\n")).unwrap();
    let sim = Sim::start_fast(&["--replay", replay.to_str().unwrap()]).await;
    let sub = Sub::start(settings(sim.url(), "malformed"));
    wait_until("four good flows and one bad", || {
        sub.count() >= 4 && sub.stat(|s| &s.malformed_flows) >= 1
    })
    .await;
    let uuids: Vec<String> = sub
        .flows
        .lock()
        .unwrap()
        .iter()
        .map(|f| f.uuid.clone())
        .collect();
    assert_eq!(uuids, ["g1", "g2", "g3", "g4"]);
    assert_eq!(sub.stat(|s| &s.malformed_flows), 1);
    assert_eq!(sub.stat(|s| &s.malformed_messages), 0);

    let (status, _) = http(sim.addr, "POST", "/sim/frame", "", "this is not json").await;
    assert_eq!(status, 204);
    wait_until("a malformed message", || {
        sub.stat(|s| &s.malformed_messages) == 1
    })
    .await;
    assert_eq!(sub.stat(|s| &s.connects), 1, "the connection survives");
    assert_eq!(sub.stat(|s| &s.malformed_flows), 1);
    sub.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pongs_keep_the_connection_past_the_pong_timeout() {
    let sim = Sim::start_fast(&["--ping-secs", "0.3", "--pong-timeout-secs", "0.7"]).await;
    let sub = Sub::start(settings(sim.url(), "pong"));
    wait_until("flows", || sub.count() > 0).await;
    let early = sub.count();

    // A client that never reads never answers: the simulator must drop it.
    let mut request = sim.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-Client-Type", "mute".parse().unwrap());
    let (mut mute, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let addr = sim.addr;
    let subscribers = move || async move {
        let (_, body) = http(addr, "GET", "/sim/sent", "", "").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["subscribers"].as_u64().unwrap()
    };
    for (want, what) in [
        (2, "the mute client to attach"),
        (1, "the mute client to be dropped"),
    ] {
        let deadline = tokio::time::Instant::now() + WAIT;
        while subscribers().await != want {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // By now the subscriber has lived through at least one full read deadline (1 s).
    let ended = loop {
        match tokio::time::timeout(WAIT, mute.next())
            .await
            .expect("the mute socket ends")
        {
            Some(Ok(_)) => continue,
            other => break other,
        }
    };
    assert!(!matches!(ended, Some(Ok(_))));

    wait_until("more flows", || sub.count() > early).await;
    assert_eq!(sub.stat(|s| &s.connects), 1);
    assert_eq!(sub.stat(|s| &s.disconnects), 0);
    assert!(sub.stats.connected.load(Ordering::Relaxed));
    sub.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silence_after_the_registry_wipe_triggers_a_reconnect() {
    let sim = Sim::start_fast(&["--wipe-registry-bug", "--stats-secs", "0.3"]).await;
    let mut s = settings(sim.url(), "a");
    s.silence_timeout = Duration::from_secs(2);
    let a = Sub::start(s);
    let b = Sub::start(settings(sim.url(), "b"));
    wait_until("flows on both", || a.count() > 0 && b.count() > 0).await;
    b.stop().await;
    wait_until("the silence reconnect", || a.stat(|s| &s.connects) == 2).await;
    let error = a.stats.last_error().unwrap_or_default();
    assert!(error.contains("no flows or stats"), "{error}");
    let after = a.count();
    wait_until("flows after the reconnect", || a.count() > after).await;
    a.stop().await;
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_is_strict_about_the_handshake() {
    let sim = Sim::start_fast(&[]).await;
    // Not an upgrade: 426.
    let (status, _) = http(sim.addr, "GET", "/ws/subscriber/flow", "", "").await;
    assert_eq!(status, 426);

    // No X-Client-Type: 101 with the analyzer headers, then Close 1000 at once.
    let (mut ws, response) = tokio_tungstenite::connect_async(sim.url()).await.unwrap();
    assert_eq!(response.headers()["X-Host-ID"], "sim");
    assert_eq!(response.headers()["X-Service-Type"], "analyzer");
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1000),
        other => panic!("expected a Close frame, got {other:?}"),
    }

    // With X-Client-Type: a Ping right away.
    let mut request = sim.url().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("X-Client-Type", "test".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Ping(payload))) => assert!(payload.is_empty()),
        other => panic!("expected a Ping, got {other:?}"),
    }

    // Gremlin: 204 on an empty query, 400 on a parse error, trailing newline on 200.
    let (status, _) = http(
        sim.addr,
        "POST",
        "/api/topology",
        "",
        r#"{"GremlinQuery":""}"#,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = http(
        sim.addr,
        "POST",
        "/api/topology",
        "",
        r#"{"GremlinQuery":"G.V("}"#,
    )
    .await;
    assert_eq!(status, 400);
    let q = r#"{"GremlinQuery":"G.V().Has('TID','x').Values('Host')"}"#;
    let (status, body) = http(sim.addr, "POST", "/api/topology", "", q).await;
    assert_eq!((status, body.as_str()), (200, "null\n"));
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immediate_close_is_reported_as_rejected_headers() {
    // A bare WebSocket server that closes right after the 101, as Skydive does on bad headers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            if let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await {
                let _ = ws.close(None).await;
            }
        }
    });
    let sub = Sub::start(settings(format!("ws://{addr}/ws/subscriber/flow"), "x"));
    wait_until("the rejection", || {
        sub.stats
            .last_error()
            .is_some_and(|e| e.contains("rejected client headers"))
    })
    .await;
    assert_eq!(sub.stat(|s| &s.flows), 0);
    sub.stop().await;
    server.abort();
}

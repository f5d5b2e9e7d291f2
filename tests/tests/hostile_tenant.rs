//! A hostile tenant against a real `sluice serve`: with nothing but its token it tries every way
//! out of its sandbox the security model closes (README "Security model"), and each is refused
//! with a 4xx naming what and where, with no effect: no file outside the data folder, no
//! contact with a denied address, no memory growth, no secret in the database, no stall of
//! another tenant.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sluice_tests::{Response, Serve, Sim, wait_for};

const ADMIN: &str = "admin-secret-for-hostile-tests";
const WAIT: Duration = Duration::from_secs(90);

/// The server config of these tests: loopback's 127.0.0.1 and ::1 are denied (the analyzer
/// stand-in listens on 127.0.0.2), guests have two threads and one slot per tenant, and the
/// quotas are small enough to reach.
const SERVER_CONFIG: &str = "egress:\n  deny: [127.0.0.1/32, \"::1/128\", 10.0.0.0/8]\nlimits:\n  guest_threads: 2\n  guest_calls_per_tenant: 1\n  modules_per_tenant: 2\n  spool_bytes_per_tenant: 3000000\n  file_bytes_per_tenant: 60000\n";

fn serve(dir: &Path) -> Serve {
    Serve::start_with_config(&dir.join("data"), ADMIN, SERVER_CONFIG).unwrap()
}

/// A file-writer pipeline reading `url`; `extra` is appended under `pipeline:`.
fn pipeline(url: &str, host_id: &str, extra: &str) -> String {
    format!(
        "host_id: \"{host_id}\"\npipeline:\n  subscriber:\n    url: {url}\n  store:\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 100\n      max_seconds_per_object: 1\n      max_seconds_per_stream: 3600\n      max_flow_array_size: 10000\n  write:\n    type: file\n    file:\n      dir: out\n{extra}"
    )
}

const ANALYZER: &str = "ws://127.0.0.2:9/ws/subscriber/flow";

fn assert_refused(r: &Response, status: u16, code: &str, key: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    if status == 400 && code == "invalid_config" {
        let keys: Vec<&str> = v["error"]["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap_or(""))
            .collect();
        assert!(keys.contains(&key), "{key} not among {keys:?}: {v}");
    } else {
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains(key),
            "{key}: {v}"
        );
    }
    v
}

/// Every file below `dir`.
fn files_below(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn host_paths_files_and_the_servers_output_are_out_of_reach() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(dir.path());
    let (_, t) = serve.tenant("mallory");
    let escape = dir.path().join("escaped");
    let traversal = format!("../../../../../../..{}", escape.display());
    let bucket = |dirname: &str| {
        pipeline(ANALYZER, "", "").replace("dirname: bucket", &format!("dirname: \"{dirname}\""))
    };
    let buffered = |line: &str| {
        pipeline(ANALYZER, "", "").replace(
            "      dirname: bucket\n",
            &format!("      dirname: bucket\n      {line}\n"),
        )
    };
    for (yaml, key) in [
        (bucket(&traversal), "pipeline.store.buffered.dirname"),
        (
            bucket(&escape.display().to_string()),
            "pipeline.store.buffered.dirname",
        ),
        (
            pipeline(ANALYZER, "", "").replace("filename_prefix: logs", "filename_prefix: /etc"),
            "pipeline.store.buffered.filename_prefix",
        ),
        (
            buffered("key_format: \"{prefix}/../../{tag}/{stream}/{seq}\""),
            "pipeline.store.buffered.key_format",
        ),
    ] {
        assert_refused(
            &serve.yaml("POST", "/v1/pipelines", Some(&t), &yaml),
            400,
            "invalid_config",
            key,
        );
    }
    // Local paths of the writers: inside the pipeline's folder only.
    for (extra, key) in [
        (
            "  account:\n    type: file\n    file:\n      filename: ../../../x.json\n",
            "pipeline.account.file.filename",
        ),
        (
            "  account:\n    type: file\n    file:\n      filename: /tmp/x.json\n",
            "pipeline.account.file.filename",
        ),
    ] {
        assert_refused(
            &serve.yaml(
                "POST",
                "/v1/pipelines",
                Some(&t),
                &pipeline(ANALYZER, "", extra),
            ),
            400,
            "invalid_config",
            key,
        );
    }
    let yaml = pipeline(ANALYZER, "", "").replace("dir: out", "dir: /tmp");
    assert_refused(
        &serve.yaml("POST", "/v1/pipelines", Some(&t), &yaml),
        400,
        "invalid_config",
        "pipeline.write.file.dir",
    );
    // The server's own output.
    let yaml = pipeline(ANALYZER, "", "").replace("type: file", "type: stdout");
    let v = assert_refused(
        &serve.yaml("POST", "/v1/pipelines", Some(&t), &yaml),
        400,
        "invalid_config",
        "pipeline.write.type",
    );
    assert!(v.to_string().contains("stdout"), "{v}");
    // Host files as TLS material: refused before anything is read, with the same answer
    // whether the file exists or not (no oracle).
    let mut answers = Vec::new();
    for file in ["/etc/shadow", "/nonexistent/ca.pem", "/dev/zero"] {
        let yaml = format!("tls:\n  ca_cert: {file}\n{}", pipeline(ANALYZER, "", ""));
        let v = assert_refused(
            &serve.yaml("POST", "/v1/pipelines", Some(&t), &yaml),
            400,
            "invalid_config",
            "tls.ca_cert",
        );
        answers.push(v["error"]["errors"][0]["message"].clone());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    // The same through JSON.
    let body = json!({"tls": {"client_key": "/etc/shadow"}, "pipeline": {"subscriber": {"url": ANALYZER}, "store": {"buffered": {"dirname": "../x", "max_flows_per_object": 1, "max_flow_array_size": 1}}, "write": {"type": "file", "file": {"dir": "out"}}}});
    let r = serve.json("POST", "/v1/pipelines", Some(&t), &body);
    let v = assert_refused(&r, 400, "invalid_config", "tls.client_key");
    assert!(
        v.to_string().contains("pipeline.store.buffered.dirname"),
        "{v}"
    );
    // Nothing was created, nothing escaped.
    let r = serve.request("GET", "/v1/pipelines", Some(&t), None);
    assert_eq!(r.json()["pipelines"].as_array().unwrap().len(), 0);
    assert!(!escape.exists());
}

#[test]
fn yaml_bombs_and_oversized_values_cost_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(dir.path());
    let (_, t) = serve.tenant("mallory");
    // One 200 kB anchor and 4,000 aliases: 800 MB once expanded, in a 1 MiB body.
    let mut bomb = format!("logging:\n  a: &big \"{}\"\n  b:\n", "x".repeat(200_000));
    for _ in 0..4000 {
        bomb.push_str("    - *big\n");
    }
    bomb.push_str(&pipeline(ANALYZER, "", ""));
    assert!(bomb.len() < 1 << 20);
    let before = serve.rss_kib();
    let r = serve.yaml("POST", "/v1/pipelines", Some(&t), &bomb);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("expands to more than"), "{}", r.text());
    let grown = serve.rss_kib().saturating_sub(before);
    assert!(grown < 64 * 1024, "the server grew by {grown} KiB");
    // Sizes past the server's ceilings name the key and the maximum.
    for (from, to, key) in [
        (
            "max_flow_array_size: 10000",
            "max_flow_array_size: 1000000000000",
            "pipeline.store.buffered.max_flow_array_size",
        ),
        (
            "max_flows_per_object: 100",
            "max_flows_per_object: 100000000",
            "pipeline.store.buffered.max_flows_per_object",
        ),
        (
            "max_seconds_per_stream: 3600",
            "max_seconds_per_stream: 9999999999",
            "pipeline.store.buffered.max_seconds_per_stream",
        ),
    ] {
        let yaml = pipeline(ANALYZER, "", "").replace(from, to);
        let v = assert_refused(
            &serve.yaml("POST", "/v1/pipelines", Some(&t), &yaml),
            400,
            "invalid_config",
            key,
        );
        assert!(v.to_string().contains("maximum"), "{v}");
    }
    let yaml = pipeline(ANALYZER, "", "").replace("type: file", "type: s3")
        + "    spool:\n      max_bytes: 1000000000000\n      max_objects: 99999999\n"
        + "  action:\n    reject_timeout: 99999999\n";
    let r = serve.yaml("POST", "/v1/pipelines", Some(&t), &yaml);
    for key in [
        "pipeline.write.spool.max_bytes",
        "pipeline.write.spool.max_objects",
        "pipeline.action.reject_timeout",
    ] {
        assert_refused(&r, 400, "invalid_config", key);
    }
}

#[test]
fn destinations_are_checked_when_named_and_again_when_used() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(dir.path());
    let (_, t) = serve.tenant("mallory");
    let own = format!("ws://{}/v1/pipelines", serve.addr);
    for (url, why) in [
        ("ws://169.254.169.254/latest/meta-data/", "never allowed"),
        (own.as_str(), "own address"),
        ("ws://10.1.2.3:8082/ws/subscriber/flow", "egress policy"),
        // A name that resolves to a denied address is denied.
        ("ws://localhost:8082/ws/subscriber/flow", "resolves to"),
        (
            "ws://user:secret@127.0.0.2:9/ws/subscriber/flow",
            "credentials",
        ),
    ] {
        let v = assert_refused(
            &serve.yaml("POST", "/v1/pipelines", Some(&t), &pipeline(url, "", "")),
            400,
            "invalid_config",
            "pipeline.subscriber.url",
        );
        assert!(v.to_string().contains(why), "{url}: {v}");
        assert!(!v.to_string().contains("secret@"), "{v}");
    }
    let yaml = format!(
        "analyzers: [\"169.254.169.254:80\"]\n{}",
        pipeline(ANALYZER, "", "")
    )
    .replace("type: file", "type: s3")
        + "    s3:\n      endpoint: http://[fe80::1]:9000\n      api_key: k\n      iam_endpoint: http://0.0.0.0/token\n";
    let r = serve.yaml("POST", "/v1/pipelines", Some(&t), &yaml);
    for key in [
        "analyzers[0]",
        "pipeline.write.s3.endpoint",
        "pipeline.write.s3.iam_endpoint",
    ] {
        assert_refused(&r, 400, "invalid_config", key);
    }

    // Accepted under one policy, a pipeline is checked again when it connects: restarted
    // under a policy that denies its analyzer, it fails with the reason and never connects.
    let sim = Sim::start_on("127.0.0.2:0", dir.path(), &["--rate", "50"]).unwrap();
    let url = sim.ws_url();
    let id = {
        let r = serve.yaml("POST", "/v1/pipelines", Some(&t), &pipeline(&url, "", ""));
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_string()
    };
    let data = serve.data_dir.clone();
    drop(serve);
    let strict = SERVER_CONFIG.replace("10.0.0.0/8]", "10.0.0.0/8, 127.0.0.2/32]");
    let serve = Serve::start_with_config(&data, ADMIN, &strict).unwrap();
    let status = wait_for("the pipeline to fail", WAIT, || {
        let s = serve
            .request("GET", &format!("/v1/pipelines/{id}/status"), Some(&t), None)
            .json();
        (s["state"] == "failed").then_some(s)
    })
    .unwrap();
    assert!(
        status["last_error"]
            .as_str()
            .unwrap()
            .contains("pipeline.subscriber.url"),
        "{status}"
    );
    assert_eq!(status["connected"], false);
    assert_eq!(status["counters"]["received"], 0);
}

#[test]
fn every_spelling_of_a_leased_analyzer_is_the_same_lease() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(dir.path());
    let (_, alice) = serve.tenant("alice");
    let (_, mallory) = serve.tenant("mallory");
    let r = serve.yaml(
        "POST",
        "/v1/pipelines?desired_state=stopped",
        Some(&alice),
        &pipeline(ANALYZER, "probe-1", ""),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    for alias in [
        "ws://127.0.0.2:9/ws/subscriber/flow/",
        "ws://127.0.0.2:9/ws/subscriber/flow?x=1",
        "ws://127.0.0.2:9/ws/subscriber/flow#fragment",
        "ws://[::ffff:127.0.0.2]:9/ws/subscriber/flow",
    ] {
        for host_id in ["probe-1", " probe-1 "] {
            let r = serve.yaml(
                "POST",
                "/v1/pipelines?desired_state=stopped",
                Some(&mallory),
                &pipeline(alias, host_id, ""),
            );
            assert_refused(&r, 409, "host_id_conflict", "host_id");
        }
    }
    let leases = serve
        .request("GET", "/v1/admin/leases", Some(ADMIN), None)
        .json();
    assert_eq!(leases["leases"].as_array().unwrap().len(), 1, "{leases}");
    assert_eq!(
        leases["leases"][0]["analyzer"],
        "ws://127.0.0.2:9/ws/subscriber/flow"
    );
}

/// Every byte of the database files (the WAL included).
fn database_bytes(data: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        if let Ok(bytes) = std::fs::read(data.join(format!("sluice.db{suffix}"))) {
            all.extend(bytes);
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[test]
fn secrets_are_sealed_at_rest_never_shown_and_survive_a_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(dir.path());
    let (_, t) = serve.tenant("alice");
    let secrets = [
        "s3-secret-7f3a9c",
        "ibm-api-key-51e2d0",
        "analyzer-pw-c41b77",
    ];
    let yaml = format!(
        "analyzer:\n  auth:\n    cluster:\n      username: u\n      password: {}\n{}",
        secrets[2],
        pipeline(ANALYZER, "", "")
    )
    .replace("type: file", "type: s3")
        + &format!(
            "    s3:\n      endpoint: http://127.0.0.2:9\n      access_key: a\n      secret_key: {}\n      api_key: {}\n      iam_endpoint: http://127.0.0.2:9/token\n    spool:\n      max_bytes: 1000000\n",
            secrets[0], secrets[1]
        );
    let r = serve.yaml(
        "POST",
        "/v1/pipelines?desired_state=stopped",
        Some(&t),
        &yaml,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let shown = serve
        .request("GET", &format!("/v1/pipelines/{id}"), Some(&t), None)
        .text();
    let db = database_bytes(&serve.data_dir);
    for secret in secrets {
        assert!(!shown.contains(secret), "{shown}");
        assert!(!contains(&db, secret), "{secret} is in the database");
        assert!(!serve.process.stderr().contains(secret));
    }
    assert!(contains(&db, "sluice-sealed:v1:"));
    let key_file = serve.data_dir.join("secret-key");
    let old_key = std::fs::read_to_string(&key_file).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Rotation: the new key in SLUICE_SECRET_KEY, the old one as previous; every stored
    // secret is sealed again under the new key at start.
    let data = serve.data_dir.clone();
    drop(serve);
    let new_key = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
    let config = data.with_extension("sluice.yml");
    let rotated = Serve::start_env(
        "127.0.0.1:0",
        &data,
        ADMIN,
        &["--config", config.to_str().unwrap()],
        &[
            ("SLUICE_SECRET_KEY", new_key),
            ("SLUICE_SECRET_KEY_PREVIOUS", old_key.trim()),
        ],
    )
    .unwrap();
    let r = rotated.request("POST", &format!("/v1/pipelines/{id}/start"), Some(&t), None);
    assert_eq!(r.status, 200, "{}", r.text());
    drop(rotated);
    // Without the old key the pipeline still opens: nothing is sealed under it any more.
    let after = Serve::start_env(
        "127.0.0.1:0",
        &data,
        ADMIN,
        &["--config", config.to_str().unwrap()],
        &[("SLUICE_SECRET_KEY", new_key)],
    )
    .unwrap();
    let status = wait_for("the pipeline to start", WAIT, || {
        let s = after
            .request("GET", &format!("/v1/pipelines/{id}/status"), Some(&t), None)
            .json();
        (s["state"] != "starting").then_some(s)
    })
    .unwrap();
    assert!(
        !status["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("sealed"),
        "{status}"
    );
    let db = database_bytes(&after.data_dir);
    for secret in secrets {
        assert!(!contains(&db, secret));
    }
}

#[test]
fn metrics_are_the_operators_and_each_tenant_reads_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{SERVER_CONFIG}metrics_token: scrape-token-1\n");
    let serve = Serve::start_with_config(&dir.path().join("data"), ADMIN, &config).unwrap();
    let (_, alice) = serve.tenant("alice");
    let (_, bob) = serve.tenant("bob");
    let create = |token: &str| {
        let r = serve.yaml(
            "POST",
            "/v1/pipelines?desired_state=stopped",
            Some(token),
            &pipeline(ANALYZER, "", ""),
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_str().unwrap().to_string()
    };
    let (pa, pb) = (create(&alice), create(&bob));
    assert_eq!(serve.request("GET", "/metrics", None, None).status, 401);
    assert_refused(
        &serve.request("GET", "/metrics", Some(&alice), None),
        403,
        "forbidden",
        "/v1/metrics",
    );
    for token in [ADMIN, "scrape-token-1"] {
        let r = serve.request("GET", "/metrics", Some(token), None);
        assert_eq!(r.status, 200);
        assert!(r.text().contains(&pa) && r.text().contains(&pb));
    }
    let own = serve.request("GET", "/v1/metrics", Some(&alice), None);
    assert_eq!(own.status, 200);
    assert!(own.text().contains(&pa), "{}", own.text());
    assert!(!own.text().contains(&pb), "{}", own.text());
    assert!(!own.text().contains("sluice_api_requests_total"));
    assert_eq!(serve.request("GET", "/v1/metrics", None, None).status, 401);
}

fn upload(serve: &Serve, token: &str, name: &str) -> Response {
    let bytes = std::fs::read(sluice::wasm::test_guests::path(name)).unwrap();
    serve.request(
        "POST",
        "/v1/modules",
        Some(token),
        Some(("application/wasm", &bytes)),
    )
}

#[test]
fn a_spinning_guest_stalls_neither_the_api_nor_another_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(dir.path());
    let (_, mallory) = serve.tenant("mallory");
    let (_, alice) = serve.tenant("alice");
    let spin = upload(&serve, &mallory, "spin").json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let anonymize = upload(&serve, &mallory, "anonymize").json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A third module is over the tenant's quota.
    assert_refused(
        &upload(&serve, &mallory, "trap"),
        403,
        "quota_exceeded",
        "limits.modules_per_tenant",
    );
    // Refused at create, not accepted and failed later: a guest whose init refuses its
    // config, and limits above the server's.
    let wasm = |module: &str, extra: &str| {
        format!("  transform:\n    type: wasm\n    wasm:\n      module: {module}\n{extra}")
    };
    let r = serve.yaml(
        "POST",
        "/v1/pipelines",
        Some(&mallory),
        &pipeline(
            ANALYZER,
            "",
            &wasm(&anonymize, "      config: {ipv4_prefix: 99}\n"),
        ),
    );
    let v = assert_refused(&r, 400, "invalid_config", "pipeline.transform.wasm.config");
    assert!(v.to_string().contains("prefix out of range"), "{v}");
    let r = serve.yaml(
        "POST",
        "/v1/pipelines",
        Some(&mallory),
        &pipeline(ANALYZER, "", &wasm(&spin, "      deadline_ms: 60000\n")),
    );
    assert_refused(
        &r,
        400,
        "invalid_config",
        "pipeline.transform.wasm.deadline_ms",
    );

    let r = serve.yaml(
        "POST",
        "/v1/pipelines?desired_state=stopped",
        Some(&mallory),
        &pipeline(ANALYZER, "", &wasm(&spin, "")),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let spinner = r.json()["id"].as_str().unwrap().to_string();
    let r = serve.yaml(
        "POST",
        "/v1/pipelines?desired_state=stopped",
        Some(&alice),
        &pipeline(ANALYZER, "", ""),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    let flows = json!([{"UUID": "u1", "LayersPath": "Ethernet/IPv4/TCP",
        "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2"},
        "Transport": {"Protocol": "TCP", "A": 1, "B": 2}, "Start": 1, "Last": 2}])
    .to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let addr = serve.addr;
    let spinners: Vec<_> = (0..6)
        .map(|_| {
            let (stop, mallory, spinner, flows) = (
                stop.clone(),
                mallory.clone(),
                spinner.clone(),
                flows.clone(),
            );
            std::thread::spawn(move || {
                let mut runs = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = sluice_tests::http_request(
                        addr,
                        "POST",
                        &format!("/v1/pipelines/{spinner}/test"),
                        Some(&mallory),
                        Some(("application/json", flows.as_bytes())),
                    )
                    .unwrap();
                    assert_eq!(r.status, 200, "{}", r.text());
                    // Stopped by its deadline, or first by its fuel.
                    let dropped = &r.json()["counters"]["dropped"];
                    assert_eq!(
                        dropped["deadline"].as_u64().unwrap_or(0)
                            + dropped["fuel"].as_u64().unwrap_or(0),
                        1,
                        "{dropped}"
                    );
                    runs += 1;
                }
                runs
            })
        })
        .collect();
    // While six clients keep the guest spinning, the other tenant's API answers promptly.
    std::thread::sleep(Duration::from_millis(1500));
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let started = Instant::now();
        let r = serve.request("GET", "/v1/pipelines", Some(&alice), None);
        assert_eq!(r.status, 200);
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let runs: usize = spinners.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(runs >= 2, "the spinning guest ran {runs} times");
    assert!(
        slowest < Duration::from_millis(250),
        "another tenant waited {slowest:?} for GET /v1/pipelines"
    );
}

#[test]
fn api_connections_are_capped_and_slow_clients_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let config = "http:\n  header_timeout_secs: 2\n  max_connections: 4\n";
    let serve = Serve::start_with_config(&dir.path().join("data"), ADMIN, config).unwrap();
    // Four clients that never finish their headers hold every slot.
    let mut idle: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(serve.addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = TcpStream::connect(serve.addr).unwrap();
    fifth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        fifth.read(&mut buf).is_err(),
        "a fifth connection was served while four held the slots"
    );
    // The header timeout cuts the slow ones off; the fifth is then served.
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(
            !String::from_utf8_lossy(&rest).contains("200 OK"),
            "a slow client was answered"
        );
    }
    fifth
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    fifth.read_to_end(&mut answer).unwrap();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[test]
fn a_tenant_cannot_take_more_than_its_share_of_disk() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(dir.path());
    let (_, t) = serve.tenant("mallory");
    // Spool quota: 3 MB for the tenant; two S3 pipelines of 2 MB don't fit.
    let s3 = |max_bytes: u64| {
        pipeline(ANALYZER, "", "").replace("type: file", "type: s3")
            + &format!(
                "    s3:\n      endpoint: http://127.0.0.2:9\n    spool:\n      max_bytes: {max_bytes}\n"
            )
    };
    let r = serve.yaml(
        "POST",
        "/v1/pipelines?desired_state=stopped",
        Some(&t),
        &s3(2_000_000),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = serve.yaml(
        "POST",
        "/v1/pipelines?desired_state=stopped",
        Some(&t),
        &s3(2_000_000),
    );
    assert_refused(&r, 403, "quota_exceeded", "limits.spool_bytes_per_tenant");

    // File quota: 60 kB for the tenant's file writers, then writes fail and are counted.
    let sim = Sim::start_on(
        "127.0.0.2:0",
        dir.path(),
        &[
            "--rate",
            "2000",
            "--flows",
            "200",
            "--update-secs",
            "0.5",
            "--expire-secs",
            "2",
            "--batch-secs",
            "0.2",
        ],
    )
    .unwrap();
    let r = serve.yaml(
        "POST",
        "/v1/pipelines",
        Some(&t),
        &pipeline(&sim.ws_url(), "", "  compress:\n    type: gzip\n"),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let mut last = Value::Null;
    wait_for("writes refused by the quota", WAIT, || {
        last = serve
            .request("GET", &format!("/v1/pipelines/{id}/status"), Some(&t), None)
            .json();
        (last["counters"]["write_errors"].as_u64().unwrap_or(0) > 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {last}\n{}", serve.process.stderr()));
    let out = serve.data_dir.join("pipelines").join(&id).join("out");
    let used: u64 = files_below(&out)
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    assert!(
        used <= 60_000,
        "{used} bytes written past a 60000-byte quota"
    );
    assert!(used > 0);
    assert!(
        serve
            .process
            .stderr()
            .contains("limits.file_bytes_per_tenant"),
        "{}",
        serve.process.stderr()
    );
    // Deleting the pipeline frees its folder, and its share of the quota.
    let r = serve.request("DELETE", &format!("/v1/pipelines/{id}"), Some(&t), None);
    assert_eq!(r.status, 204);
    assert!(!out.exists());
}

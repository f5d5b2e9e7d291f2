//! `sluice serve` with the S3 writer end to end: `sluice sim` → a tenant's pipeline in
//! `sluice serve` → a TCP relay that can be cut → the moto S3 server, read back with an
//! independent client. Every record the simulator sent is in the bucket exactly once: in a
//! normal run, through an outage followed by a SIGKILL of the server and a restart on the same
//! data folder, through a stop while the store is down followed by a start once it is up, and
//! through quick stop/start and replace cycles (no run may reuse the last run's keys).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use sluice_tests::s3::{Bucket, MotoServer, TcpProxy};
use sluice_tests::{Serve, Sim, http_request, multiset, wait_for};

/// Every wait of these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(90);
const ADMIN: &str = "admin-secret-for-serve-s3";

/// An S3 pipeline: gzip JSON objects of at most `per_object` records, due after a second, to
/// `bucket` at `endpoint`. The spool is the default one of `sluice serve`,
/// `<data_dir>/pipelines/<id>/spool`. `host_id` is `""`: the analyzer assigns one per
/// connection, so a reconnection after a SIGKILL is never refused.
fn s3_yaml(url: &str, endpoint: &str, bucket: &str, per_object: u32) -> String {
    format!(
        "host_id: \"\"\npipeline:\n  subscriber:\n    url: {url}\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  encode:\n    type: json\n  compress:\n    type: gzip\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: logs\n      dirname: {bucket}\n      max_flows_per_object: {per_object}\n      max_seconds_per_object: 1\n      max_seconds_per_stream: 3600\n      max_flow_array_size: 100000\n  write:\n    type: s3\n    s3:\n      endpoint: {endpoint}\n      region: us-east-1\n      access_key: test\n      secret_key: test\n"
    )
}

fn create(serve: &Serve, token: &str, yaml: &str) -> String {
    let r = serve.yaml("POST", "/v1/pipelines", Some(token), yaml);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

fn dropped(status: &Value) -> u64 {
    status["counters"]["dropped"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

fn spool_dir(serve: &Serve, id: &str) -> PathBuf {
    serve.data_dir.join("pipelines").join(id).join("spool")
}

/// Spool files in `dir` and the records they hold (from each file's header line).
fn spooled(dir: &Path) -> (usize, usize) {
    let (mut files, mut records) = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "obj") {
            // The uploader may remove a file between the listing and the read.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let header = bytes.split(|b| *b == b'\n').nth(1).unwrap_or_default();
            let header: Value = serde_json::from_slice(header)
                .unwrap_or_else(|e| panic!("{}: bad spool header: {e}", path.display()));
            files += 1;
            records += header["records"].as_u64().unwrap() as usize;
        }
    }
    (files, records)
}

/// Waits until the simulator has sent `total` records and the pipeline has received them all
/// and handed every one to its writer (the spool, for `s3`): `records_written` + dropped ==
/// received == `total`.
fn wait_all_written(serve: &Serve, token: &str, id: &str, sim: &Sim, total: usize) -> Value {
    wait_for(
        &format!("the simulator to send {total} records"),
        WAIT,
        || (sim.sent().len() >= total).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", sim.process.stderr()));
    assert_eq!(sim.sent().len(), total);
    let mut last = Value::Null;
    wait_for(
        "every record received and written to the spool",
        WAIT,
        || {
            last = serve.status(token, id);
            let received = counter(&last, "received");
            (received == total as u64
                && counter(&last, "records_written") + dropped(&last) == received)
                .then(|| last.clone())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {last}\n{}", serve.process.stderr()))
}

/// Every record sent is in the bucket exactly once.
fn assert_exactly_once(bucket: &Bucket, sim: &Sim) {
    let sent = sim.sent();
    let stored = bucket.all_records();
    assert_eq!(
        stored.len(),
        sent.len(),
        "bucket {} holds {} records, the simulator sent {}",
        bucket.name,
        stored.len(),
        sent.len()
    );
    assert!(
        multiset(stored) == multiset(sent),
        "bucket {}: the records stored differ from those sent",
        bucket.name
    );
}

/// Lines of the server's log with `needle`.
fn log_has(serve: &Serve, needle: &str) -> bool {
    serve.process.stderr().contains(needle)
}

#[test]
fn two_tenants_s3_pipelines_deliver_every_record_once_each_with_its_own_spool() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    let proxy = TcpProxy::start(moto.addr).unwrap();
    let endpoint = proxy.endpoint();
    // One simulator per pipeline: each sends its `total` to its one subscriber.
    let total = 600;
    let sim_a = Sim::start_fast(dir.path(), 30, 300, total, 21).unwrap();
    let sim_b = Sim::start_fast(dir.path(), 30, 300, total, 22).unwrap();
    for bucket in ["flows-a", "flows-b"] {
        moto.create_bucket(bucket).unwrap();
    }
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (_, a) = serve.tenant("alpha");
    let (_, b) = serve.tenant("beta");
    let pa = create(
        &serve,
        &a,
        &s3_yaml(&sim_a.ws_url(), &endpoint, "flows-a", 40),
    );
    let pb = create(
        &serve,
        &b,
        &s3_yaml(&sim_b.ws_url(), &endpoint, "flows-b", 40),
    );

    let mut bucket_a = Bucket::new(&moto, "flows-a");
    let mut bucket_b = Bucket::new(&moto, "flows-b");
    for (token, id, sim, bucket) in [
        (&a, &pa, &sim_a, &mut bucket_a),
        (&b, &pb, &sim_b, &mut bucket_b),
    ] {
        let s = wait_all_written(&serve, token, id, sim, total as usize);
        assert_eq!(dropped(&s), 0, "{s}");
        bucket.wait_records(total as usize, WAIT, || serve.process.stderr());
        let s = serve.status(token, id);
        assert_eq!(s["state"], "running", "{s}");
        assert_eq!(s["connected"], true, "{s}");
        assert!(s["last_error"].is_null(), "{s}");
        assert_eq!(counter(&s, "write_errors"), 0, "{s}");
    }

    // Each pipeline has its own spool folder in its own data folder, both locked by this one
    // process at once, and both empty once uploaded.
    let (spool_a, spool_b) = (spool_dir(&serve, &pa), spool_dir(&serve, &pb));
    assert_ne!(spool_a, spool_b);
    for spool in [&spool_a, &spool_b] {
        assert!(spool.join(".lock").is_file(), "{}", spool.display());
        wait_for("the spool to empty", WAIT, || {
            (spooled(spool) == (0, 0)).then_some(())
        })
        .unwrap();
    }
    assert!(
        !log_has(&serve, "in use by another sluice process"),
        "{}",
        serve.process.stderr()
    );

    for (bucket, sim) in [(&mut bucket_a, &sim_a), (&mut bucket_b, &sim_b)] {
        bucket.refresh();
        bucket.check_objects();
        assert!(bucket.seen.len() >= 10, "{} objects", bucket.seen.len());
        assert_exactly_once(bucket, sim);
    }
}

#[test]
fn outage_then_sigkill_then_restart_uploads_everything_spooled() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let moto = MotoServer::start().unwrap();
    moto.create_bucket("flows").unwrap();
    let proxy = TcpProxy::start(moto.addr).unwrap();
    let total = 1000;
    let sim = Sim::start_fast(dir.path(), 30, 200, total, 31).unwrap();
    let serve = Serve::start(&data, ADMIN).unwrap();
    let (_, token) = serve.tenant("alpha");
    let id = create(
        &serve,
        &token,
        &s3_yaml(&sim.ws_url(), &proxy.endpoint(), "flows", 50),
    );
    let spool = spool_dir(&serve, &id);
    let mut bucket = Bucket::new(&moto, "flows");
    bucket.wait_records(1, WAIT, || serve.process.stderr());

    // The store goes away while the simulator is still sending (~5 s of flows).
    proxy.cut();
    wait_for("objects spooled during the outage", WAIT, || {
        (spooled(&spool).0 >= 2).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.process.stderr()));
    // Records only in memory at a SIGKILL are lost by nature; with `max_seconds_per_object: 1`
    // everything received is flushed to the spool within a second or so, and the kill comes
    // only once the status shows every record sent as received and written (to the spool).
    wait_all_written(&serve, &token, &id, &sim, total as usize);
    wait_for("an upload to fail", WAIT, || {
        log_has(&serve, "upload failed; the object stays in the spool").then_some(())
    })
    .unwrap();
    // What is not in the bucket is in the spool (an upload cut mid-way may be in both).
    let uploaded = bucket.refresh();
    let (files, in_spool) = spooled(&spool);
    assert!(files >= 2);
    assert!(
        uploaded + in_spool >= total as usize,
        "{uploaded} uploaded + {in_spool} spooled < {total}"
    );
    assert!(uploaded < total as usize, "the outage held some back");

    serve.process.signal("KILL").unwrap();
    let mut serve = serve;
    let _ = serve.process.wait(WAIT);
    assert_eq!(spooled(&spool), (files, in_spool), "the spool survives");
    drop(serve);

    proxy.restore();
    let serve = Serve::start(&data, ADMIN).unwrap();
    bucket.wait_records(total as usize, WAIT, || serve.process.stderr());
    wait_for("the spool to empty", WAIT, || {
        (spooled(&spool) == (0, 0)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.process.stderr()));
    assert!(
        log_has(&serve, "spool holds objects from a previous run"),
        "{}",
        serve.process.stderr()
    );
    // The pipeline resumed: running and subscribed again.
    let s = wait_for("the pipeline to reconnect", WAIT, || {
        let s = serve.status(&token, &id);
        (s["state"] == "running" && s["connected"] == true).then_some(s)
    })
    .unwrap();
    assert_eq!(s["desired_state"], "running", "{s}");

    bucket.refresh();
    bucket.check_objects();
    assert_exactly_once(&bucket, &sim);
}

/// `POST /v1/pipelines/{id}/stop` in a thread: the answer and how long it took, or a failure
/// if it takes longer than `limit` (the call must never hang).
fn stop_bounded(serve: &Serve, token: &str, id: &str, limit: Duration) -> (u16, Value, Duration) {
    let (addr, token, path) = (
        serve.addr,
        token.to_string(),
        format!("/v1/pipelines/{id}/stop"),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(http_request(addr, "POST", &path, Some(&token), None));
    });
    let r = rx
        .recv_timeout(limit)
        .unwrap_or_else(|_| {
            panic!(
                "stop did not answer within {limit:?}\n{}",
                serve.process.stderr()
            )
        })
        .unwrap();
    (r.status, r.json(), started.elapsed())
}

#[test]
fn stop_with_the_store_down_keeps_the_spool_and_start_uploads_it() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    moto.create_bucket("flows").unwrap();
    let proxy = TcpProxy::start(moto.addr).unwrap();
    proxy.cut();
    let total = 400;
    let sim = Sim::start_fast(dir.path(), 30, 300, total, 41).unwrap();
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (_, token) = serve.tenant("alpha");
    let id = create(
        &serve,
        &token,
        &s3_yaml(&sim.ws_url(), &proxy.endpoint(), "flows", 40),
    );
    let spool = spool_dir(&serve, &id);
    wait_all_written(&serve, &token, &id, &sim, total as usize);
    wait_for("every record spooled", WAIT, || {
        (spooled(&spool).1 == total as usize).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", spooled(&spool), serve.process.stderr()));

    // The stop waits (bounded: 30 s) for uploads that can't succeed, then answers.
    let (code, s, took) = stop_bounded(&serve, &token, &id, Duration::from_secs(75));
    assert_eq!(code, 200, "{s}");
    assert_eq!(s["state"], "stopped", "{s}");
    assert_eq!(s["desired_state"], "stopped", "{s}");
    assert_eq!(counter(&s, "records_written"), total as u64, "{s}");
    assert!(counter(&s, "write_errors") > 0, "{s}");
    assert!(took < Duration::from_secs(60), "stop took {took:?}");
    assert_eq!(
        spooled(&spool).1,
        total as usize,
        "the objects stay spooled"
    );
    assert!(moto.keys("flows").is_empty());
    assert!(
        log_has(&serve, "Objects left in the spool for the next start"),
        "{}",
        serve.process.stderr()
    );

    // Start again with the store up: everything spooled is uploaded.
    proxy.restore();
    let r = serve.request(
        "POST",
        &format!("/v1/pipelines/{id}/start"),
        Some(&token),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let mut bucket = Bucket::new(&moto, "flows");
    bucket.wait_records(total as usize, WAIT, || serve.process.stderr());
    wait_for("the spool to empty", WAIT, || {
        (spooled(&spool) == (0, 0)).then_some(())
    })
    .unwrap();
    let s = serve.status(&token, &id);
    assert_eq!(s["state"], "running", "{s}");
    assert_eq!(s["desired_state"], "running", "{s}");
    bucket.refresh();
    bucket.check_objects();
    assert_exactly_once(&bucket, &sim);
}

/// Stop, start and replace in quick succession: each run of the pipeline starts new streams,
/// and no object of a new run may take the key of an object of the run before (S3 overwrites
/// it: the records in it would be gone).
#[test]
fn quick_restarts_never_overwrite_an_object() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    moto.create_bucket("flows").unwrap();
    let sim = Sim::start_fast(dir.path(), 30, 300, 1_000_000, 51).unwrap();
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (_, token) = serve.tenant("alpha");
    // Small objects: each message of the simulator (every 0.3 s) fills some at once.
    let yaml = s3_yaml(&sim.ws_url(), &moto.endpoint(), "flows", 3);
    let id = create(&serve, &token, &yaml);
    for cycle in 0..8 {
        let before = counter(&serve.status(&token, &id), "records_written");
        wait_for("records written in this run", WAIT, || {
            (counter(&serve.status(&token, &id), "records_written") > before).then_some(())
        })
        .unwrap();
        if cycle % 2 == 0 {
            let (code, s, _) = stop_bounded(&serve, &token, &id, WAIT);
            assert_eq!(code, 200, "{s}");
            let r = serve.request(
                "POST",
                &format!("/v1/pipelines/{id}/start"),
                Some(&token),
                None,
            );
            assert_eq!(r.status, 200, "{}", r.text());
        } else {
            let r = serve.yaml("PUT", &format!("/v1/pipelines/{id}"), Some(&token), &yaml);
            assert_eq!(r.status, 200, "{}", r.text());
        }
    }
    let (code, s, _) = stop_bounded(&serve, &token, &id, WAIT);
    assert_eq!(code, 200, "{s}");
    // The stop waited for the uploads (the store is up): everything written is there, unless a
    // later object took an earlier one's key.
    let written = counter(&s, "records_written") as usize;
    let mut bucket = Bucket::new(&moto, "flows");
    bucket.refresh();
    bucket.check_objects();
    assert_eq!(
        bucket.records(),
        written,
        "records lost to overwritten keys: {s}"
    );
    // Nothing twice, nothing that was not sent.
    let sent = multiset(sim.sent());
    for (record, n) in multiset(bucket.all_records()) {
        assert!(sent.get(&record).is_some_and(|s| *s >= n), "{record}");
    }
}

//! `write: {type: s3}` end to end: `sluice sim` → `sluice run` → a real S3 server (moto) on
//! loopback, read back with an independent client. Every flow the simulator sent must be in
//! the bucket, through outages, crashes, bad credentials, a missing bucket and IBM IAM tokens.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sluice_tests::s3::{Bucket, FakeIam, MotoServer, TcpProxy, start_run_env};
use sluice_tests::{Process, Sim, multiset, received_total, wait_for};

const WAIT: Duration = Duration::from_secs(120);
const BUCKET: &str = "flows";

enum Credentials<'a> {
    Hmac(&'a str, &'a str),
    Iam {
        api_key: &'a str,
        token_url: &'a str,
    },
}

struct Pipe<'a> {
    endpoint: &'a str,
    credentials: Credentials<'a>,
    /// `pipeline.write.spool.dir`; `None` leaves the default (below `XDG_STATE_HOME`).
    spool: Option<&'a Path>,
    per_object: u32,
    object_secs: u32,
}

fn write_config(dir: &Path, sim: &Sim, pipe: &Pipe) -> PathBuf {
    let path = dir.join("pipeline.yml");
    let credentials = match pipe.credentials {
        Credentials::Hmac(key, secret) => {
            format!("      access_key: {key}\n      secret_key: {secret}\n")
        }
        Credentials::Iam { api_key, token_url } => {
            format!("      api_key: {api_key}\n      iam_endpoint: {token_url}\n")
        }
    };
    let spool = pipe.spool.map_or(String::new(), |d| {
        format!("    spool:\n      dir: {}\n", d.display())
    });
    let text = format!(
        "host_id: s3-e2e-{pid}\npipeline:\n  subscriber:\n    url: {url}\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  encode:\n    type: json\n  compress:\n    type: gzip\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: logs\n      dirname: {BUCKET}\n      max_flows_per_object: {per_object}\n      max_seconds_per_object: {object_secs}\n      max_seconds_per_stream: 3600\n      max_flow_array_size: 1000000\n  write:\n    type: s3\n    s3:\n      endpoint: {endpoint}\n      region: us-east-1\n{credentials}{spool}",
        pid = std::process::id(),
        url = sim.ws_url(),
        per_object = pipe.per_object,
        object_secs = pipe.object_secs,
        endpoint = pipe.endpoint,
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Spool files under `dir` (recursively) and the records they hold.
fn spooled(dir: &Path) -> (usize, usize) {
    let (mut files, mut records) = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (0, 0);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            let (f, r) = spooled(&path);
            files += f;
            records += r;
        } else if path.extension().is_some_and(|e| e == "obj") {
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let header = bytes.split(|b| *b == b'\n').nth(1).unwrap_or_default();
            let header: serde_json::Value = serde_json::from_slice(header).unwrap();
            files += 1;
            records += header["records"].as_u64().unwrap() as usize;
        }
    }
    (files, records)
}

fn wait_received(run: &Process, n: u64) {
    wait_for(&format!("sluice to receive {n} flows"), WAIT, || {
        (received_total(&run.stderr()) >= n).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.stderr()));
}

fn wait_log(run: &Process, what: &str) {
    wait_for(&format!("'{what}' in the log"), WAIT, || {
        run.stderr().contains(what).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.stderr()));
}

fn assert_running(run: &mut Process) {
    assert!(
        run.wait(Duration::from_millis(100)).is_err(),
        "sluice run stopped: {}",
        run.stderr()
    );
}

fn stop(mut run: Process) -> String {
    run.signal("TERM").unwrap();
    assert!(
        run.wait(WAIT).unwrap(),
        "sluice run failed: {}",
        run.stderr()
    );
    run.stderr()
}

#[test]
fn objects_land_with_keys_bodies_and_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    moto.create_bucket(BUCKET).unwrap();
    let sim = Sim::start_fast(dir.path(), 30, 400, 400, 3).unwrap();
    let spool = dir.path().join("spool");
    let endpoint = moto.endpoint();
    let config = write_config(
        dir.path(),
        &sim,
        &Pipe {
            endpoint: &endpoint,
            credentials: Credentials::Hmac("test", "test"),
            spool: Some(&spool),
            per_object: 40,
            object_secs: 1,
        },
    );
    let run = start_run_env(&config, &[]).unwrap();
    wait_received(&run, 400);
    let mut bucket = Bucket::new(&moto, BUCKET);
    bucket.wait_records(400, WAIT, || run.stderr());
    stop(run);
    bucket.refresh();
    bucket.check_objects();
    assert!(bucket.seen.len() >= 10, "{} objects", bucket.seen.len());
    assert_eq!(multiset(bucket.all_records()), multiset(sim.sent()));
    assert_eq!(spooled(&spool), (0, 0), "the spool is empty after uploads");
}

#[test]
fn sigterm_flushes_pending_records_into_the_bucket() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    moto.create_bucket(BUCKET).unwrap();
    let sim = Sim::start_fast(dir.path(), 30, 500, 150, 9).unwrap();
    let endpoint = moto.endpoint();
    let spool = dir.path().join("spool");
    let config = write_config(
        dir.path(),
        &sim,
        &Pipe {
            endpoint: &endpoint,
            credentials: Credentials::Hmac("test", "test"),
            spool: Some(&spool),
            per_object: 100_000,
            object_secs: 3600,
        },
    );
    let run = start_run_env(&config, &[]).unwrap();
    wait_received(&run, 150);
    assert!(
        moto.keys(BUCKET).is_empty(),
        "nothing is due before the signal"
    );
    stop(run);
    let mut bucket = Bucket::new(&moto, BUCKET);
    assert_eq!(bucket.refresh(), 150, "SIGTERM uploads before exit");
    bucket.check_objects();
    assert_eq!(multiset(bucket.all_records()), multiset(sim.sent()));
}

#[test]
fn store_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    moto.create_bucket(BUCKET).unwrap();
    let proxy = TcpProxy::start(moto.addr).unwrap();
    let sim = Sim::start_fast(dir.path(), 30, 200, 1200, 5).unwrap();
    let endpoint = proxy.endpoint();
    let spool = dir.path().join("spool");
    let config = write_config(
        dir.path(),
        &sim,
        &Pipe {
            endpoint: &endpoint,
            credentials: Credentials::Hmac("test", "test"),
            spool: Some(&spool),
            per_object: 50,
            object_secs: 1,
        },
    );
    let mut run = start_run_env(&config, &[]).unwrap();
    let mut bucket = Bucket::new(&moto, BUCKET);
    bucket.wait_records(1, WAIT, || run.stderr());
    proxy.cut();
    // The simulator keeps sending while the store is unreachable.
    wait_for("objects spooled during the outage", WAIT, || {
        (spooled(&spool).0 >= 3).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.stderr()));
    // (Read after a request cut mid-way had time to land anyway.)
    let during = bucket.refresh();
    std::thread::sleep(Duration::from_secs(3));
    wait_log(&run, "upload failed; the object stays in the spool");
    assert_running(&mut run);
    assert_eq!(
        bucket.refresh(),
        during,
        "nothing reaches the store during the outage"
    );
    proxy.restore();
    wait_received(&run, 1200);
    bucket.wait_records(1200, WAIT, || run.stderr());
    let log = stop(run);
    assert!(
        log.lines().any(|l| l.contains("upload failed")
            && l.contains(&format!("bucket={BUCKET}"))
            && l.contains(&format!("endpoint={endpoint}"))
            && l.contains("key=logs/")),
        "failures name the key, bucket and endpoint: {log}"
    );
    bucket.refresh();
    bucket.check_objects();
    assert_eq!(multiset(bucket.all_records()), multiset(sim.sent()));
    assert_eq!(spooled(&spool), (0, 0));
}

#[test]
fn killed_with_spooled_objects_then_restarted_uploads_them() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let moto = MotoServer::start().unwrap();
    moto.create_bucket(BUCKET).unwrap();
    let proxy = TcpProxy::start(moto.addr).unwrap();
    proxy.cut();
    let sim = Sim::start_fast(dir.path(), 30, 300, 300, 11).unwrap();
    let endpoint = proxy.endpoint();
    // The default spool folder: $XDG_STATE_HOME/sluice/spool/<bucket>-<hash of the config path>.
    let config = write_config(
        dir.path(),
        &sim,
        &Pipe {
            endpoint: &endpoint,
            credentials: Credentials::Hmac("test", "test"),
            spool: None,
            per_object: 40,
            object_secs: 1,
        },
    );
    let env = [("XDG_STATE_HOME", state.as_path())];
    let mut run = start_run_env(&config, &env).unwrap();
    wait_received(&run, 300);
    let spool_root = state.join("sluice/spool");
    wait_for("every record spooled", WAIT, || {
        (spooled(&spool_root).1 == 300).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", spooled(&spool_root), run.stderr()));
    let folders: Vec<_> = std::fs::read_dir(&spool_root).unwrap().collect();
    assert_eq!(folders.len(), 1, "one spool folder per pipeline");
    assert!(
        folders[0]
            .as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(&format!("{BUCKET}-"))
    );
    assert_running(&mut run);
    run.signal("KILL").unwrap();
    let _ = run.wait(WAIT);
    assert!(moto.keys(BUCKET).is_empty());

    proxy.restore();
    let run = start_run_env(&config, &env).unwrap();
    let mut bucket = Bucket::new(&moto, BUCKET);
    bucket.wait_records(300, WAIT, || run.stderr());
    let log = stop(run);
    assert!(
        log.contains("spool holds objects from a previous run"),
        "{log}"
    );
    bucket.refresh();
    bucket.check_objects();
    assert_eq!(multiset(bucket.all_records()), multiset(sim.sent()));
    assert_eq!(spooled(&spool_root), (0, 0));
}

#[test]
fn missing_bucket_is_reported_and_retried_until_created() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    let sim = Sim::start_fast(dir.path(), 30, 300, 200, 13).unwrap();
    let endpoint = moto.endpoint();
    let spool = dir.path().join("spool");
    let config = write_config(
        dir.path(),
        &sim,
        &Pipe {
            endpoint: &endpoint,
            credentials: Credentials::Hmac("test", "test"),
            spool: Some(&spool),
            per_object: 40,
            object_secs: 1,
        },
    );
    let mut run = start_run_env(&config, &[]).unwrap();
    wait_log(&run, "NoSuchBucket");
    let log = run.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("NoSuchBucket"))
        .unwrap()
        .to_string();
    assert!(
        line.contains(&format!("bucket={BUCKET}"))
            && line.contains("key=logs/")
            && line.contains(&format!("endpoint={endpoint}"))
            && line.contains("the bucket does not exist"),
        "{line}"
    );
    wait_received(&run, 200);
    assert_running(&mut run);
    moto.create_bucket(BUCKET).unwrap();
    let mut bucket = Bucket::new(&moto, BUCKET);
    bucket.wait_records(200, WAIT, || run.stderr());
    stop(run);
    bucket.refresh();
    bucket.check_objects();
    assert_eq!(multiset(bucket.all_records()), multiset(sim.sent()));
}

#[test]
fn wrong_credentials_are_reported_and_a_fixed_config_uploads_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start_with_auth().unwrap();
    moto.create_bucket(BUCKET).unwrap();
    let sim = Sim::start_fast(dir.path(), 30, 300, 200, 17).unwrap();
    let endpoint = moto.endpoint();
    let spool = dir.path().join("spool");
    let pipe = |secret| Pipe {
        endpoint: &endpoint,
        credentials: Credentials::Hmac(&moto.access_key, secret),
        spool: Some(&spool),
        per_object: 40,
        object_secs: 1,
    };
    let config = write_config(dir.path(), &sim, &pipe("not-the-secret"));
    let mut run = start_run_env(&config, &[]).unwrap();
    wait_log(&run, "SignatureDoesNotMatch");
    let log = run.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("SignatureDoesNotMatch"))
        .unwrap();
    assert!(
        line.contains("wrong credentials")
            && line.contains(&format!("bucket={BUCKET}"))
            && line.contains(&format!("endpoint={endpoint}")),
        "{line}"
    );
    wait_received(&run, 200);
    wait_for("every record spooled", WAIT, || {
        (spooled(&spool).1 == 200).then_some(())
    })
    .unwrap();
    assert_running(&mut run);
    assert!(moto.keys(BUCKET).is_empty());
    // Credentials are read at start: fix the file and restart (SIGKILL: a SIGTERM would wait
    // for the drain, which can't succeed with these keys).
    run.signal("KILL").unwrap();
    let _ = run.wait(WAIT);
    let config = write_config(dir.path(), &sim, &pipe(&moto.secret_key));
    let run = start_run_env(&config, &[]).unwrap();
    let mut bucket = Bucket::new(&moto, BUCKET);
    bucket.wait_records(200, WAIT, || run.stderr());
    stop(run);
    bucket.refresh();
    bucket.check_objects();
    assert_eq!(multiset(bucket.all_records()), multiset(sim.sent()));
}

#[test]
fn ibm_iam_token_is_fetched_once_reused_refreshed_and_replaced_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let moto = MotoServer::start().unwrap();
    moto.create_bucket(BUCKET).unwrap();
    let iam = FakeIam::start("test-api-key", Duration::from_secs(4), moto.addr).unwrap();
    // ~15 s of flows, an object per tag per second.
    let sim = Sim::start_fast(dir.path(), 30, 100, 1500, 19).unwrap();
    let endpoint = iam.cos_endpoint();
    let token_url = iam.token_url();
    let spool = dir.path().join("spool");
    let config = write_config(
        dir.path(),
        &sim,
        &Pipe {
            endpoint: &endpoint,
            credentials: Credentials::Iam {
                api_key: "test-api-key",
                token_url: &token_url,
            },
            spool: Some(&spool),
            per_object: 100_000,
            object_secs: 1,
        },
    );
    let run = start_run_env(&config, &[]).unwrap();
    let mut bucket = Bucket::new(&moto, BUCKET);
    bucket.wait_records(300, WAIT, || run.stderr());
    let (issued, refused, uploads) = iam.log(|l| {
        (
            l.tokens_issued,
            l.requests_refused,
            l.requests_by_token.values().sum::<usize>(),
        )
    });
    assert_eq!(refused, 0, "a token is refreshed before it expires");
    assert!(
        issued < uploads && uploads >= 4,
        "tokens are reused: {issued} tokens for {uploads} uploads"
    );
    // A revoked token: the store answers 403, sluice fetches a new one and sends again. The
    // token revoked is a long-lived one, so it is not about to be refreshed anyway.
    iam.set_expires_in(Duration::from_secs(3600));
    // Every token issued after this count is long-lived.
    let long_lived = format!("tok-{}", iam.log(|l| l.tokens_issued) + 1);
    wait_for("a long-lived token in use", WAIT, || {
        iam.log(|l| l.requests_by_token.contains_key(&long_lived))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}\n{}", iam.log(|l| format!("{l:?}")), run.stderr()));
    iam.revoke_all();
    bucket.wait_records(1500, WAIT, || run.stderr());
    let log = stop(run);
    bucket.refresh();
    bucket.check_objects();
    assert_eq!(multiset(bucket.all_records()), multiset(sim.sent()));
    iam.log(|l| {
        assert!(
            l.token_requests_refused == 0,
            "the grant was well formed: {l:?}"
        );
        assert!(
            l.requests_refused >= 1,
            "the revoked token was refused: {l:?}"
        );
        assert!(
            l.refused_authorizations
                .iter()
                .all(|a| a.starts_with("Bearer tok-")),
            "only bearer tokens are sent: {l:?}"
        );
        // 4 s tokens refreshed at 3.2 s for a few seconds, one long-lived, one after the
        // revocation.
        assert!(
            (3..=8).contains(&l.tokens_issued),
            "tokens refreshed ahead of expiry: {l:?}"
        );
        let used: BTreeSet<&String> = l.requests_by_token.keys().collect();
        assert!(used.len() >= 3, "{l:?}");
    });
    assert!(
        log.contains("store refused the IAM token; fetching a new one"),
        "{log}"
    );
}

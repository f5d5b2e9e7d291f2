//! `sluice sim` and `sluice run` as real processes: every flow the simulator sent is exported
//! exactly once, in the right tag, in objects with the right keys and metadata.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sluice_tests::{Sim, multiset, read_objects, received_total, sluice_bin, start_run, wait_for};

const WAIT: Duration = Duration::from_secs(90);

/// The test's own classifier, written from docs/stages.md §5.1 (not sluice's code).
fn expected_tag(flow: &serde_json::Value) -> &'static str {
    let inside = |ip: &serde_json::Value| -> Option<bool> {
        let ip: IpAddr = ip.as_str()?.parse().ok()?;
        let ip = match ip {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        Some(match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                o[0] == 10
                    || (o[0] == 172 && (16..32).contains(&o[1]))
                    || (o[0] == 192 && o[1] == 168)
            }
            IpAddr::V6(_) => false,
        })
    };
    let network = &flow["Network"];
    match (inside(&network["A"]), inside(&network["B"])) {
        (Some(true), Some(true)) => "internal",
        (Some(true), Some(false)) => "egress",
        (Some(false), Some(true)) => "ingress",
        _ => "other",
    }
}

fn write_config(dir: &Path, sim: &Sim, per_object: u32, object_secs: u32) -> std::path::PathBuf {
    let path = dir.join("pipeline.yml");
    let text = format!(
        "host_id: e2e-{pid}-{per_object}\npipeline:\n  subscriber:\n    url: {url}\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  encode:\n    type: json\n  compress:\n    type: gzip\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: {per_object}\n      max_seconds_per_object: {object_secs}\n      max_seconds_per_stream: 3600\n      max_flow_array_size: 1000000\n  write:\n    type: file\n    file:\n      dir: {out}\n",
        pid = std::process::id(),
        url = sim.ws_url(),
        out = dir.join("out").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn exported(dir: &Path) -> Vec<(String, serde_json::Value, Vec<serde_json::Value>)> {
    let out = dir.join("out");
    if !out.exists() {
        return Vec::new();
    }
    read_objects(&out)
        .unwrap()
        .into_iter()
        .map(|o| {
            assert_eq!(o.bucket, "bucket");
            let records: Vec<serde_json::Value> = serde_json::from_slice(&o.content).unwrap();
            (o.key, o.meta, records)
        })
        .collect()
}

fn check_objects(objects: &[(String, serde_json::Value, Vec<serde_json::Value>)]) {
    let mut seqs: BTreeMap<(String, String), Vec<u64>> = BTreeMap::new();
    for (key, meta, records) in objects {
        let parts: Vec<&str> = key.split('/').collect();
        assert_eq!(parts.len(), 4, "{key}");
        assert_eq!(parts[0], "logs");
        assert!(
            parts[2].len() == 16 && parts[2].ends_with('Z') && parts[2].as_bytes()[8] == b'T',
            "{key}"
        );
        let (seq, ext) = parts[3].split_once('.').unwrap();
        assert_eq!((seq.len(), ext), (8, "gz"), "{key}");
        seqs.entry((parts[1].into(), parts[2].into()))
            .or_default()
            .push(seq.parse().unwrap());
        for r in records {
            assert_eq!(expected_tag(r), parts[1], "record in the wrong tag: {r}");
        }
        assert_eq!(meta["content_type"], "application/json");
        assert_eq!(meta["content_encoding"], "gzip");
        let m = &meta["metadata"];
        assert_eq!(
            m["num-records"].as_str().unwrap(),
            records.len().to_string()
        );
        let first: i64 = m["first-timestamp"].as_str().unwrap().parse().unwrap();
        let last: i64 = m["last-timestamp"].as_str().unwrap().parse().unwrap();
        assert!(first <= last && first > 1_500_000_000_000, "{meta}");
    }
    for ((tag, stream), mut s) in seqs {
        s.sort();
        assert_eq!(
            s,
            (0..s.len() as u64).collect::<Vec<_>>(),
            "{tag}/{stream}: seqs must be 0..n"
        );
    }
}

#[test]
fn run_exports_every_flow_once_in_the_right_tag() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start_fast(dir.path(), 30, 400, 400, 3).unwrap();
    let config = write_config(dir.path(), &sim, 40, 1);
    let mut run = start_run(&config).unwrap();
    wait_for("the simulator to send 400 records", WAIT, || {
        (sim.sent().len() >= 400).then_some(())
    })
    .unwrap();
    let sent = sim.sent();
    assert_eq!(sent.len(), 400);
    wait_for("sluice to receive them", WAIT, || {
        (received_total(&run.stderr()) == 400).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.stderr()));
    // Time flushes (1 s) deliver everything without a signal.
    wait_for("every record in objects", WAIT, || {
        (exported(dir.path())
            .iter()
            .map(|o| o.2.len())
            .sum::<usize>()
            == 400)
            .then_some(())
    })
    .unwrap();
    run.signal("TERM").unwrap();
    assert!(
        run.wait(WAIT).unwrap(),
        "sluice run failed: {}",
        run.stderr()
    );
    let objects = exported(dir.path());
    check_objects(&objects);
    assert!(
        objects.len() >= 10,
        "400 records at 40 per object: {} objects",
        objects.len()
    );
    let tags: std::collections::BTreeSet<&str> = objects
        .iter()
        .map(|o| o.0.split('/').nth(1).unwrap())
        .collect();
    assert!(
        tags.len() >= 3,
        "the simulator's flows cover several tags: {tags:?}"
    );
    let got = multiset(objects.into_iter().flat_map(|o| o.2));
    assert_eq!(
        got,
        multiset(sent),
        "exported records differ from the records sent"
    );
}

#[test]
fn sigterm_flushes_a_partly_filled_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start(
        dir.path(),
        &[
            "--rate",
            "500",
            "--flows",
            "20",
            "--update-secs",
            "0.5",
            "--batch-secs",
            "0.3",
            "--total",
            "150",
            "--seed",
            "9",
        ],
    )
    .unwrap();
    let config = write_config(dir.path(), &sim, 100_000, 3600);
    let mut run = start_run(&config).unwrap();
    wait_for("150 records sent", WAIT, || {
        (sim.sent().len() >= 150).then_some(())
    })
    .unwrap();
    wait_for("sluice to receive them", WAIT, || {
        (received_total(&run.stderr()) == 150).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.stderr()));
    assert!(
        exported(dir.path()).is_empty(),
        "nothing is due before the signal"
    );
    run.signal("TERM").unwrap();
    assert!(
        run.wait(WAIT).unwrap(),
        "sluice run failed: {}",
        run.stderr()
    );
    let objects = exported(dir.path());
    check_objects(&objects);
    assert_eq!(
        multiset(objects.into_iter().flat_map(|o| o.2)),
        multiset(sim.sent())
    );
}

#[test]
fn check_accepts_every_shipped_config() {
    let config_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut checked = 0;
    for entry in std::fs::read_dir(&config_dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yml") || path.file_name().unwrap() == "sluice.yml"
        {
            continue;
        }
        let out = Command::new(sluice_bin())
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(": valid") && stdout.contains("pipeline:"),
            "{stdout}"
        );
        assert!(
            !stdout.contains("secret_key: password"),
            "secrets must be redacted: {stdout}"
        );
        checked += 1;
    }
    assert!(
        checked >= 5,
        "expected secadvisor, awsflowlogs, vpclogs, allinone and demo"
    );
}

#[test]
fn check_reports_every_error_with_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.yml");
    std::fs::write(
        &path,
        "pipeline:\n  subscriber:\n    url: http://nowhere\n  store:\n    buffered:\n      dirname: b\n      max_flows_per_object: 0\n      max_flow_array_size: 10\n  classify:\n    cluster_net_masks: [10.0.0.0/40]\n",
    )
    .unwrap();
    let out = Command::new(sluice_bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "pipeline.subscriber.url (line 3): 'http://nowhere' must start with ws:// or wss://"
        ),
        "{err}"
    );
    assert!(
        err.contains("pipeline.store.buffered.max_flows_per_object (line 7)"),
        "{err}"
    );
    assert!(
        err.contains(
            "pipeline.classify.cluster_net_masks[0] (line 10): cannot parse netmask '10.0.0.0/40'"
        ),
        "{err}"
    );

    std::fs::write(&path, "pipeline:\n  compress:\n    type: zip\n").unwrap();
    let out = Command::new(sluice_bin())
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "pipeline.compress.type (line 3): unknown type `zip`, expected one of `none`, `gzip`"
        ),
        "{err}"
    );
}

//! `sluice run` with a wasm transform against `sluice sim`, as real processes: every flow the
//! simulator sent comes out once, anonymized by the `anonymize` guest.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use sluice_tests::{Sim, read_objects, received_total, start_run, wait_for};

const WAIT: Duration = Duration::from_secs(90);

/// The test's own /16 mask (not the guest's code); `""` for what isn't IPv4.
fn mask16(ip: &serde_json::Value) -> String {
    ip.as_str()
        .and_then(|s| s.parse::<Ipv4Addr>().ok())
        .map(|a| Ipv4Addr::from(u32::from(a) & 0xffff_0000).to_string())
        .unwrap_or_else(|| match ip.as_str() {
            // IPv6 under the default /48 is checked by the guest's unit tests.
            Some(s) if s.contains(':') => "v6".into(),
            _ => String::new(),
        })
}

fn key(uuid: &serde_json::Value, src: String, dst: String) -> String {
    format!("{}|{src}|{dst}", uuid.as_str().unwrap_or(""))
}

#[test]
fn run_with_a_wasm_transform_exports_every_flow_anonymized() {
    let guest = sluice::wasm::test_guests::path("anonymize");
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start_fast(dir.path(), 20, 300, 300, 11).unwrap();
    let config = dir.path().join("pipeline.yml");
    std::fs::write(
        &config,
        format!(
            "host_id: wasm-e2e-{pid}\npipeline:\n  subscriber:\n    url: {url}\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  transform:\n    type: wasm\n    wasm:\n      module: {guest}\n      config: {{ipv4_prefix: 16}}\n      fuel: 100000000\n  encode:\n    type: json\n  compress:\n    type: gzip\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 50\n      max_seconds_per_object: 1\n      max_seconds_per_stream: 3600\n      max_flow_array_size: 1000000\n  write:\n    type: file\n    file:\n      dir: {out}\n",
            pid = std::process::id(),
            url = sim.ws_url(),
            guest = guest.display(),
            out = dir.path().join("out").display(),
        ),
    )
    .unwrap();
    let mut run = start_run(&config).unwrap();
    wait_for("the simulator to send 300 records", WAIT, || {
        (sim.sent().len() >= 300).then_some(())
    })
    .unwrap();
    wait_for("sluice to receive them", WAIT, || {
        (received_total(&run.stderr()) == 300).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.stderr()));
    let out = dir.path().join("out");
    let exported = || -> Vec<serde_json::Value> {
        if !out.exists() {
            return Vec::new();
        }
        read_objects(&out)
            .unwrap()
            .into_iter()
            .flat_map(|o| serde_json::from_slice::<Vec<serde_json::Value>>(&o.content).unwrap())
            .collect()
    };
    wait_for("every record in objects", WAIT, || {
        (exported().len() == 300).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", run.stderr()));
    run.signal("TERM").unwrap();
    assert!(
        run.wait(WAIT).unwrap(),
        "sluice run failed: {}",
        run.stderr()
    );

    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for f in sim.sent() {
        let n = &f["Network"];
        *want
            .entry(key(&f["UUID"], mask16(&n["A"]), mask16(&n["B"])))
            .or_default() += 1;
    }
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for r in exported() {
        let names: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert!(names.iter().any(|k| *k == "SrcAddr"), "{r}");
        let v6 = |s: &serde_json::Value| {
            if s.as_str().is_some_and(|s| s.contains(':')) {
                "v6".to_string()
            } else {
                s.as_str().unwrap_or("").to_string()
            }
        };
        *got.entry(key(&r["UUID"], v6(&r["SrcAddr"]), v6(&r["DstAddr"])))
            .or_default() += 1;
    }
    assert_eq!(
        got, want,
        "exported records differ from the masked records sent"
    );
    assert!(
        !run.stderr().contains("wasm batch failed"),
        "{}",
        run.stderr()
    );
}

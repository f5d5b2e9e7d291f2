//! `sluice serve` with uploaded WebAssembly modules, as real processes: a tenant uploads the
//! `anonymize` guest, names it by digest in a pipeline fed by `sluice sim`, and every flow
//! arrives masked; modules are isolated between tenants, a module in use cannot be deleted, and
//! bad uploads (garbage, a core module, the wrong world, too large) get a 4xx that says which.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sluice_tests::{Response, Serve, Sim, read_objects, wait_for};

const WAIT: Duration = Duration::from_secs(90);
const ADMIN: &str = "admin-secret-for-tests";

fn guest(name: &str) -> Vec<u8> {
    std::fs::read(sluice::wasm::test_guests::path(name)).unwrap()
}

fn upload(serve: &Serve, token: Option<&str>, bytes: &[u8]) -> Response {
    serve.request(
        "POST",
        "/v1/modules",
        token,
        Some(("application/wasm", bytes)),
    )
}

fn assert_error(r: &Response, status: u16, code: &str, says: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    let message = v["error"]["message"].as_str().unwrap_or("");
    assert!(message.contains(says), "`{says}` not in {v}");
}

/// A file-writer pipeline whose transform is the wasm module `module` (a digest).
fn pipeline_yaml(url: &str, host_id: &str, module: &str) -> String {
    format!(
        "host_id: \"{host_id}\"\npipeline:\n  subscriber:\n    url: {url}\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  transform:\n    type: wasm\n    wasm:\n      module: {module}\n      config: {{ipv4_prefix: 16}}\n      fuel: 100000000\n  encode:\n    type: json\n  compress:\n    type: gzip\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 50\n      max_seconds_per_object: 1\n      max_seconds_per_stream: 3600\n      max_flow_array_size: 100000\n  write:\n    type: file\n    file:\n      dir: out\n"
    )
}

/// The test's own /16 mask; `"v6"` for IPv6 (masked under /48 by the guest's unit tests).
fn mask16(ip: &Value) -> String {
    match ip.as_str() {
        Some(s) if s.contains(':') => "v6".into(),
        Some(s) => s
            .parse::<Ipv4Addr>()
            .map(|a| Ipv4Addr::from(u32::from(a) & 0xffff_0000).to_string())
            .unwrap_or_default(),
        None => String::new(),
    }
}

fn v6(s: &Value) -> String {
    match s.as_str() {
        Some(s) if s.contains(':') => "v6".into(),
        other => other.unwrap_or("").to_string(),
    }
}

fn exported(serve: &Serve, pipeline: &str) -> Vec<Value> {
    let out = serve.data_dir.join("pipelines").join(pipeline).join("out");
    if !out.exists() {
        return Vec::new();
    }
    read_objects(&out)
        .unwrap()
        .into_iter()
        .flat_map(|o| serde_json::from_slice::<Vec<Value>>(&o.content).unwrap())
        .collect()
}

#[test]
fn an_uploaded_module_anonymizes_a_tenants_pipeline_and_stays_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start_fast(dir.path(), 20, 300, 300, 11).unwrap();
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (_, a) = serve.tenant("alpha");
    let (_, b) = serve.tenant("beta");

    // Upload: 201, then the same bytes again: 200 with the same id.
    let wasm = guest("anonymize");
    let r = upload(&serve, Some(&a), &wasm);
    assert_eq!(r.status, 201, "{}", r.text());
    let m = r.json();
    let digest = m["id"].as_str().unwrap().to_string();
    assert_eq!(digest, sluice::wasm::digest(&wasm));
    assert_eq!(m["world"], "transformer");
    assert_eq!(m["size"], wasm.len());
    assert!(m["created_at"].as_str().is_some(), "{m}");
    let r = upload(&serve, Some(&a), &wasm);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], digest.as_str());
    assert!(
        serve
            .data_dir
            .join("modules")
            .join(format!("{digest}.wasm"))
            .exists()
    );
    let r = serve.request("GET", "/v1/modules", Some(&a), None);
    assert_eq!(r.status, 200);
    let list = r.json();
    assert_eq!(list["modules"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["modules"][0]["id"], digest.as_str());
    let r = serve.request("GET", &format!("/v1/modules/{digest}"), Some(&a), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["world"], "transformer");

    // The pipeline names it by digest.
    let yaml = pipeline_yaml(&sim.ws_url(), "wasm-serve", &digest);
    let r = serve.yaml("POST", "/v1/pipelines", Some(&a), &yaml);
    assert_eq!(r.status, 201, "{}", r.text());
    let pa = r.json()["id"].as_str().unwrap().to_string();
    let r = serve.request("GET", &format!("/v1/pipelines/{pa}"), Some(&a), None);
    assert!(r.text().contains(&digest), "{}", r.text());

    // Tenant B: A's module is not there for it.
    let r = serve.request("GET", "/v1/modules", Some(&b), None);
    assert_eq!(r.json()["modules"].as_array().unwrap().len(), 0);
    for method in ["GET", "DELETE"] {
        let r = serve.request(method, &format!("/v1/modules/{digest}"), Some(&b), None);
        assert_error(&r, 404, "not_found", "no module");
    }
    let r = serve.yaml(
        "POST",
        "/v1/pipelines",
        Some(&b),
        &pipeline_yaml(&sim.ws_url(), "wasm-serve-b", &digest),
    );
    assert_error(&r, 400, "invalid_config", "pipeline.transform.wasm.module");
    // No token: 401 on every module route; the admin has no modules.
    for (method, path) in [
        ("GET", "/v1/modules".to_string()),
        ("POST", "/v1/modules".to_string()),
        ("GET", format!("/v1/modules/{digest}")),
        ("DELETE", format!("/v1/modules/{digest}")),
    ] {
        let r = serve.request(method, &path, None, None);
        assert_error(&r, 401, "unauthorized", "");
        let r = serve.request(method, &path, Some(ADMIN), None);
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text());
    }

    // Every flow arrives, masked by the guest.
    wait_for("the simulator to send 300 records", WAIT, || {
        (sim.sent().len() >= 300).then_some(())
    })
    .unwrap();
    wait_for("every record in objects", WAIT, || {
        (exported(&serve, &pa).len() == 300).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.process.stderr()));
    let key = |uuid: &Value, src: String, dst: String| {
        format!("{}|{src}|{dst}", uuid.as_str().unwrap_or(""))
    };
    let mut want: BTreeMap<String, usize> = BTreeMap::new();
    for f in sim.sent() {
        let n = &f["Network"];
        *want
            .entry(key(&f["UUID"], mask16(&n["A"]), mask16(&n["B"])))
            .or_default() += 1;
    }
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    for r in exported(&serve, &pa) {
        *got.entry(key(&r["UUID"], v6(&r["SrcAddr"]), v6(&r["DstAddr"])))
            .or_default() += 1;
    }
    assert_eq!(
        got, want,
        "exported records differ from the masked records sent"
    );
    let status = serve
        .request("GET", &format!("/v1/pipelines/{pa}/status"), Some(&a), None)
        .json();
    assert!(
        status["counters"]["fuel_used"].as_u64().unwrap() > 0,
        "{status}"
    );

    // In use: 409; after the pipeline is gone: 204, then 404.
    let r = serve.request("DELETE", &format!("/v1/modules/{digest}"), Some(&a), None);
    assert_error(&r, 409, "module_in_use", &pa);
    let r = serve.request("DELETE", &format!("/v1/pipelines/{pa}"), Some(&a), None);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = serve.request("DELETE", &format!("/v1/modules/{digest}"), Some(&a), None);
    assert_eq!(r.status, 204, "{}", r.text());
    let r = serve.request("GET", &format!("/v1/modules/{digest}"), Some(&a), None);
    assert_error(&r, 404, "not_found", "no module");
    assert!(
        !serve
            .data_dir
            .join("modules")
            .join(format!("{digest}.wasm"))
            .exists()
    );

    let doc = serve
        .request("GET", "/v1/openapi.json", Some(&a), None)
        .json();
    for path in ["/v1/modules", "/v1/modules/{id}"] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
}

fn small_limit_config(dir: &Path) -> String {
    let path = dir.join("sluice.yml");
    std::fs::write(&path, "limits:\n  max_module_bytes: 4096\n").unwrap();
    path.display().to_string()
}

#[test]
fn bad_modules_get_a_4xx_that_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (a_id, a) = serve.tenant("alpha");
    let url = "ws://127.0.0.1:9/ws/subscriber/flow";

    let r = upload(&serve, Some(&a), b"definitely not wasm");
    assert_error(&r, 400, "not_wasm", "not a WebAssembly binary");
    let r = upload(&serve, Some(&a), b"\0asm\x01\0\0\0");
    assert_error(&r, 400, "core_module", "core WebAssembly module");
    // A component of neither world (an empty one).
    let r = upload(&serve, Some(&a), b"\0asm\x0d\0\x01\0");
    assert_error(&r, 400, "unknown_world", "sluice:guest");
    let r = serve.request(
        "POST",
        "/v1/modules",
        Some(&a),
        Some(("text/plain", &guest("anonymize"))),
    );
    assert_error(&r, 415, "unsupported_media_type", "application/wasm");
    let r = serve.request("GET", "/v1/modules", Some(&a), None);
    assert_eq!(r.json()["modules"].as_array().unwrap().len(), 0);

    // A mangler is accepted as a module, but not as a transform.
    let r = upload(&serve, Some(&a), &guest("enrich"));
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["world"], "mangler");
    let enrich = r.json()["id"].as_str().unwrap().to_string();
    let r = serve.yaml(
        "POST",
        "/v1/pipelines",
        Some(&a),
        &pipeline_yaml(url, "", &enrich),
    );
    assert_error(&r, 400, "invalid_config", "pipeline.transform.wasm.module");
    assert!(r.text().contains("mangler"), "{}", r.text());
    // As a mangler it is fine, and then it is in use.
    let mangled = pipeline_yaml(url, "", &enrich).replace(
        "  transform:\n    type: wasm\n    wasm:\n",
        "  mangle:\n    type: wasm\n    wasm:\n",
    );
    assert!(mangled.contains("mangle:"), "{mangled}");
    let r = serve.yaml(
        "POST",
        "/v1/pipelines?desired_state=stopped",
        Some(&a),
        &mangled,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let p = r.json()["id"].as_str().unwrap().to_string();
    let r = serve.request("DELETE", &format!("/v1/modules/{enrich}"), Some(&a), None);
    assert_error(&r, 409, "module_in_use", &p);
    // An unknown digest.
    let r = serve.yaml(
        "POST",
        "/v1/pipelines",
        Some(&a),
        &pipeline_yaml(url, "", &"0".repeat(64)),
    );
    assert_error(&r, 400, "invalid_config", "pipeline.transform.wasm.module");
    // Deleting the tenant removes its module files.
    let module_file = serve
        .data_dir
        .join("modules")
        .join(format!("{enrich}.wasm"));
    assert!(module_file.exists());
    let r = serve.request("DELETE", &format!("/v1/tenants/{a_id}"), Some(ADMIN), None);
    assert_eq!(r.status, 204, "{}", r.text());
    assert!(!module_file.exists());
    drop(serve);

    // Too large for the server's limit.
    let serve = Serve::start_on(
        "127.0.0.1:0",
        &dir.path().join("small"),
        ADMIN,
        &["--config", &small_limit_config(dir.path())],
    )
    .unwrap();
    let (_, a) = serve.tenant("alpha");
    let r = upload(&serve, Some(&a), &guest("anonymize"));
    assert_error(&r, 413, "module_too_large", "4096 bytes");
    assert!(r.text().contains("max_module_bytes"), "{}", r.text());
}

#[test]
fn a_guest_written_with_std_runs_and_its_tenant_reads_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Sim::start_fast(dir.path(), 20, 300, 300, 13).unwrap();
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (_, a) = serve.tenant("alpha");
    let (_, b) = serve.tenant("beta");
    let r = upload(&serve, Some(&a), &guest("stdlib"));
    assert_eq!(r.status, 201, "{}", r.text());
    let digest = r.json()["id"].as_str().unwrap().to_string();
    let yaml = pipeline_yaml(&sim.ws_url(), "wasm-std", &digest);
    let r = serve.yaml("POST", "/v1/pipelines", Some(&a), &yaml);
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let logs = |since: u64| {
        let r = serve.request(
            "GET",
            &format!("/v1/pipelines/{id}/logs?since={since}"),
            Some(&a),
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.text()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    // Its println! and eprintln! lines are in its guest log, not in the server's.
    let lines = wait_for("the guest's lines", WAIT, || {
        let lines = logs(0);
        (lines.len() >= 2).then_some(lines)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", serve.process.stderr()));
    let first = &lines[0];
    assert!(
        first["text"]
            .as_str()
            .unwrap()
            .starts_with("stdlib guest: "),
        "{first}"
    );
    assert_eq!(first["stage"], "transform");
    assert_eq!(first["level"], "info");
    assert!(first["time"].as_str().unwrap().ends_with('Z'), "{first}");
    assert!(
        lines
            .iter()
            .any(|l| l["text"] == "stdlib guest: done" && l["level"] == "warn")
    );
    assert!(!serve.process.stderr().contains("stdlib guest:"));
    // Polling: only the lines after the last one read.
    let last = lines.last().unwrap()["seq"].as_u64().unwrap();
    assert!(logs(last).iter().all(|l| l["seq"].as_u64().unwrap() > last));
    // Its records: the HashMap counts, the clock reads, a file read is refused.
    wait_for("objects", WAIT, || {
        (!exported(&serve, &id).is_empty()).then_some(())
    })
    .unwrap();
    let record = &exported(&serve, &id)[0];
    assert!(record["SamePath"].as_i64().unwrap() >= 1, "{record}");
    assert!(
        record["NowMs"].as_i64().unwrap() > 1_700_000_000_000,
        "{record}"
    );
    assert!(
        record["File"].as_str().unwrap().starts_with("refused"),
        "{record}"
    );
    // Another tenant doesn't see it.
    let r = serve.request("GET", &format!("/v1/pipelines/{id}/logs"), Some(&b), None);
    assert_error(&r, 404, "not_found", "no pipeline");
}

//! `sluice serve` as a real process on 127.0.0.1:0 with a temp data folder, `sluice sim` as the
//! analyzer and the `file` writer: tenant isolation over every route, host_id leases, restart
//! after SIGKILL, 100 pipelines at once, and malformed bodies.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use sluice_tests::{Serve, Sim, read_objects, wait_for};

/// (method, path, optional (content type, body)).
type Route<'a> = (&'a str, String, Option<(&'a str, &'a [u8])>);
/// (method, path, content type, body, expected status, expected error code).
type BadCase<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str);

const WAIT: Duration = Duration::from_secs(90);
const ADMIN: &str = "admin-secret-for-tests";

/// A pipeline writing gzip JSON objects (one per second at most) below its `out` folder.
fn pipeline_yaml(url: &str, host_id: &str) -> String {
    format!(
        "host_id: \"{host_id}\"\npipeline:\n  subscriber:\n    url: {url}\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  encode:\n    type: json\n  compress:\n    type: gzip\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 1000\n      max_seconds_per_object: 1\n      max_seconds_per_stream: 3600\n      max_flow_array_size: 100000\n  write:\n    type: file\n    file:\n      dir: out\n    s3:\n      secret_key: hunter2\n"
    )
}

fn sim(dir: &Path, rate: &str) -> Sim {
    Sim::start(
        dir,
        &[
            "--rate",
            rate,
            "--flows",
            "20",
            "--update-secs",
            "0.5",
            "--expire-secs",
            "5",
            "--batch-secs",
            "0.3",
            "--seed",
            "7",
        ],
    )
    .unwrap()
}

fn create(serve: &Serve, token: &str, yaml: &str) -> String {
    let r = serve.yaml("POST", "/v1/pipelines", Some(token), yaml);
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

fn out_dir(serve: &Serve, pipeline: &str) -> PathBuf {
    serve.data_dir.join("pipelines").join(pipeline).join("out")
}

/// Objects written by a pipeline: key → decompressed content.
fn objects(serve: &Serve, pipeline: &str) -> BTreeMap<String, Vec<u8>> {
    let out = out_dir(serve, pipeline);
    if !out.exists() {
        return BTreeMap::new();
    }
    read_objects(&out)
        .unwrap()
        .into_iter()
        .map(|o| (format!("{}/{}", o.bucket, o.key), o.content))
        .collect()
}

fn assert_error(r: &sluice_tests::Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(
        !v["error"]["message"].as_str().unwrap_or("").is_empty(),
        "{v}"
    );
}

#[test]
fn tenants_are_isolated_on_every_route() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(dir.path(), "100");
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (a_id, a) = serve.tenant("alpha");
    let (b_id, b) = serve.tenant("beta");
    let pa = create(&serve, &a, &pipeline_yaml(&sim.ws_url(), "iso-a"));
    let pb = create(&serve, &b, &pipeline_yaml(&sim.ws_url(), "iso-b"));

    // Both deliver.
    for p in [&pa, &pb] {
        wait_for("objects", WAIT, || {
            (!objects(&serve, p).is_empty()).then_some(())
        })
        .unwrap();
    }

    // Every tenant route on the other tenant's pipeline: 404, as if it did not exist.
    let yaml = pipeline_yaml(&sim.ws_url(), "iso-x");
    let flows = json!([]).to_string();
    let other: Vec<Route> = vec![
        ("GET", format!("/v1/pipelines/{pb}"), None),
        (
            "PUT",
            format!("/v1/pipelines/{pb}"),
            Some(("application/yaml", yaml.as_bytes())),
        ),
        ("DELETE", format!("/v1/pipelines/{pb}"), None),
        ("POST", format!("/v1/pipelines/{pb}/start"), None),
        ("POST", format!("/v1/pipelines/{pb}/stop"), None),
        ("GET", format!("/v1/pipelines/{pb}/status"), None),
        (
            "POST",
            format!("/v1/pipelines/{pb}/test"),
            Some(("application/json", flows.as_bytes())),
        ),
    ];
    for (method, path, body) in &other {
        let r = serve.request(method, path, Some(&a), *body);
        assert_error(&r, 404, "not_found");
        // The owner still has it, untouched.
        let r = serve.request("GET", &format!("/v1/pipelines/{pb}/status"), Some(&b), None);
        assert_eq!(r.status, 200, "{method} {path}: {}", r.text());
        assert_eq!(r.json()["desired_state"], "running");
    }
    // Lists are per tenant; the admin sees both.
    let ids = |token: &str| -> BTreeSet<String> {
        let r = serve.request("GET", "/v1/pipelines", Some(token), None);
        assert_eq!(r.status, 200);
        r.json()["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&a), BTreeSet::from([pa.clone()]));
    assert_eq!(ids(&b), BTreeSet::from([pb.clone()]));
    assert_eq!(ids(ADMIN), BTreeSet::from([pa.clone(), pb.clone()]));

    // Admin routes: a tenant token gets 403; no token 401; a wrong token 401.
    let tenant_body = json!({"name": "gamma"}).to_string();
    let admin_routes: Vec<Route> = vec![
        (
            "POST",
            "/v1/tenants".into(),
            Some(("application/json", tenant_body.as_bytes())),
        ),
        ("GET", "/v1/tenants".into(), None),
        ("DELETE", format!("/v1/tenants/{b_id}"), None),
        ("POST", format!("/v1/tenants/{a_id}/tokens"), None),
        ("GET", format!("/v1/tenants/{a_id}/tokens"), None),
        ("DELETE", format!("/v1/tenants/{a_id}/tokens/tk_x"), None),
        ("GET", "/v1/admin/leases".into(), None),
    ];
    for (method, path, body) in &admin_routes {
        assert_error(
            &serve.request(method, path, Some(&a), *body),
            403,
            "forbidden",
        );
    }
    let pipeline_body = Some(("application/yaml", yaml.as_bytes()));
    let mut every_route = admin_routes.clone();
    every_route.extend(other.clone());
    every_route.push(("GET", "/v1/pipelines".into(), None));
    every_route.push(("POST", "/v1/pipelines".into(), pipeline_body));
    every_route.push(("GET", "/v1/openapi.json".into(), None));
    for (method, path, body) in &every_route {
        assert_error(
            &serve.request(method, path, None, *body),
            401,
            "unauthorized",
        );
        assert_error(
            &serve.request(method, path, Some("sluice_not-a-token"), *body),
            401,
            "unauthorized",
        );
    }
    // Health needs no token; the operator's metrics need the admin's.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(serve.request("GET", path, None, None).status, 200, "{path}");
    }
    assert_eq!(serve.request("GET", "/metrics", None, None).status, 401);
    assert_eq!(
        serve.request("GET", "/metrics", Some(ADMIN), None).status,
        200
    );

    // Status, read (redacted), dry run.
    let status = serve
        .request("GET", &format!("/v1/pipelines/{pa}/status"), Some(&a), None)
        .json();
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["connected"], true, "{status}");
    assert!(status["counters"]["received"].as_u64().unwrap() > 0);
    assert!(status["counters"]["objects_written"].as_u64().unwrap() > 0);
    assert!(status["counters"]["dropped"]["malformed"].is_u64());
    let read = serve
        .request("GET", &format!("/v1/pipelines/{pa}"), Some(&a), None)
        .json();
    assert_eq!(read["host_id"], "iso-a");
    assert_eq!(
        read["config"]["pipeline"]["write"]["s3"]["secret_key"],
        "<redacted>"
    );
    assert!(!read["definition"].as_str().unwrap().contains("hunter2"));
    let flows = sim.sent().into_iter().take(5).collect::<Vec<Value>>();
    assert!(!flows.is_empty());
    let mut body = flows.clone();
    body.push(json!({"Metric": "not an object"}));
    let r = serve.json(
        "POST",
        &format!("/v1/pipelines/{pa}/test"),
        Some(&a),
        &Value::Array(body),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let test = r.json();
    let objects_out = test["objects"].as_array().unwrap();
    assert!(!objects_out.is_empty(), "{test}");
    assert_eq!(objects_out[0]["content_encoding"], "gzip");
    assert!(objects_out[0]["content_base64"].is_string());
    let records: u64 = objects_out
        .iter()
        .map(|o| o["records"].as_u64().unwrap())
        .sum();
    assert_eq!(records, flows.len() as u64, "{test}");
    assert_eq!(test["malformed"][0]["index"], flows.len());

    // Metrics carry both pipelines.
    let metrics = serve.request("GET", "/metrics", Some(ADMIN), None).text();
    for p in [&pa, &pb] {
        assert!(
            metrics.contains(&format!(
                "sluice_objects_written_total{{tenant=\"{}\",pipeline=\"{p}\"}}",
                if p == &pa { &a_id } else { &b_id }
            )),
            "{metrics}"
        );
    }
    assert!(
        metrics.contains("sluice_pipelines{state=\"running\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sluice_api_requests_total{status=\"404\"}"),
        "{metrics}"
    );

    // The OpenAPI document lists every route served.
    let doc = serve
        .request("GET", "/v1/openapi.json", Some(&a), None)
        .json();
    for path in [
        "/v1/tenants",
        "/v1/tenants/{id}",
        "/v1/tenants/{id}/tokens",
        "/v1/tenants/{id}/tokens/{token_id}",
        "/v1/pipelines",
        "/v1/pipelines/{id}",
        "/v1/pipelines/{id}/start",
        "/v1/pipelines/{id}/stop",
        "/v1/pipelines/{id}/status",
        "/v1/pipelines/{id}/test",
        "/v1/admin/leases",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/openapi.json",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }

    // Token rotation: a new token works, the revoked one no longer does.
    let r = serve.request(
        "POST",
        &format!("/v1/tenants/{a_id}/tokens"),
        Some(ADMIN),
        None,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let new = r.json()["token"].as_str().unwrap().to_string();
    let old_id = serve
        .request(
            "GET",
            &format!("/v1/tenants/{a_id}/tokens"),
            Some(ADMIN),
            None,
        )
        .json()["tokens"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = serve.request(
        "DELETE",
        &format!("/v1/tenants/{a_id}/tokens/{old_id}"),
        Some(ADMIN),
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        serve.request("GET", "/v1/pipelines", Some(&a), None).status,
        401
    );
    assert_eq!(ids(&new), BTreeSet::from([pa.clone()]));

    // Stop and start persist the desired state; delete flushes and removes.
    let r = serve.request(
        "POST",
        &format!("/v1/pipelines/{pa}/stop"),
        Some(&new),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["state"], "stopped");
    let r = serve.request(
        "POST",
        &format!("/v1/pipelines/{pa}/start"),
        Some(&new),
        None,
    );
    assert_eq!(r.json()["desired_state"], "running");
    let r = serve.request("DELETE", &format!("/v1/pipelines/{pa}"), Some(&new), None);
    assert_eq!(r.status, 204);
    assert_eq!(ids(&new), BTreeSet::new());
    // Deleting a tenant takes its pipelines.
    let r = serve.request("DELETE", &format!("/v1/tenants/{b_id}"), Some(ADMIN), None);
    assert_eq!(r.status, 204);
    assert_eq!(ids(ADMIN), BTreeSet::new());
    assert_eq!(
        serve.request("GET", "/v1/pipelines", Some(&b), None).status,
        401
    );
}

fn leases(serve: &Serve) -> Vec<(String, String, String, String)> {
    let r = serve.request("GET", "/v1/admin/leases", Some(ADMIN), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let mut v: Vec<_> = r.json()["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            for key in ["node", "expires_at", "acquired_at"] {
                assert!(l[key].is_string(), "{l}");
            }
            (
                l["analyzer"].as_str().unwrap().to_string(),
                l["host_id"].as_str().unwrap().to_string(),
                l["tenant_id"].as_str().unwrap().to_string(),
                l["pipeline_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_host_id_is_leased_to_one_pipeline_per_analyzer() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (a_id, a) = serve.tenant("alpha");
    let (b_id, b) = serve.tenant("beta");
    // No analyzer there: the pipelines run and keep reconnecting; leases don't care.
    let url = "ws://127.0.0.1:9/ws/subscriber/flow";
    let other_url = "ws://127.0.0.2:9/ws/subscriber/flow";
    let p1 = create(&serve, &a, &pipeline_yaml(url, "shared"));

    // Whoever asks, the second gets 409; a tenant is not told who holds it, the admin is.
    for token in [&b, &a] {
        let r = serve.yaml(
            "POST",
            "/v1/pipelines",
            Some(token),
            &pipeline_yaml(url, "shared"),
        );
        assert_error(&r, 409, "host_id_conflict");
        assert!(!r.text().contains(&p1), "{}", r.text());
    }
    let r = serve.yaml(
        "POST",
        &format!("/v1/pipelines?tenant_id={b_id}"),
        Some(ADMIN),
        &pipeline_yaml(url, "shared"),
    );
    assert_error(&r, 409, "host_id_conflict");
    assert!(r.text().contains(&p1), "{}", r.text());
    // Nothing was created by the refused requests.
    assert_eq!(
        serve
            .request("GET", "/v1/pipelines", Some(ADMIN), None)
            .json()["pipelines"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // A PUT onto a held key is refused too.
    let p3 = create(&serve, &b, &pipeline_yaml(other_url, "shared"));
    let r = serve.yaml(
        "PUT",
        &format!("/v1/pipelines/{p3}"),
        Some(&b),
        &pipeline_yaml(url, "shared"),
    );
    assert_error(&r, 409, "host_id_conflict");
    // "" is never leased: any number of pipelines may use it.
    let e1 = create(&serve, &a, &pipeline_yaml(url, ""));
    let e2 = create(&serve, &b, &pipeline_yaml(url, ""));
    assert_eq!(
        leases(&serve),
        vec![
            (url.into(), "shared".into(), a_id.clone(), p1.clone()),
            (other_url.into(), "shared".into(), b_id.clone(), p3.clone()),
        ]
    );

    // After deleting the holder, the second succeeds.
    let r = serve.request("DELETE", &format!("/v1/pipelines/{p1}"), Some(&a), None);
    assert_eq!(r.status, 204);
    let p2 = create(&serve, &b, &pipeline_yaml(url, "shared"));
    assert_eq!(
        leases(&serve),
        vec![
            (url.into(), "shared".into(), b_id.clone(), p2.clone()),
            (other_url.into(), "shared".into(), b_id.clone(), p3.clone()),
        ]
    );
    // A PUT that changes the host_id moves the lease.
    let r = serve.yaml(
        "PUT",
        &format!("/v1/pipelines/{p3}"),
        Some(&b),
        &pipeline_yaml(other_url, "moved"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        leases(&serve)
            .iter()
            .map(|l| (l.1.as_str(), l.3.as_str()))
            .collect::<Vec<_>>(),
        vec![("shared", p2.as_str()), ("moved", p3.as_str())]
    );
    for p in [&e1, &e2] {
        assert!(leases(&serve).iter().all(|l| &l.3 != p));
    }
}

#[test]
fn a_killed_server_comes_back_with_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let sim = sim(dir.path(), "100");
    let serve = Serve::start(&data, ADMIN).unwrap();
    let (a_id, a) = serve.tenant("alpha");
    let (b_id, b) = serve.tenant("beta");
    let running = create(&serve, &a, &pipeline_yaml(&sim.ws_url(), "restart-1"));
    let stopped = create(&serve, &b, &pipeline_yaml(&sim.ws_url(), "restart-2"));
    let r = serve.request(
        "POST",
        &format!("/v1/pipelines/{stopped}/stop"),
        Some(&b),
        None,
    );
    assert_eq!(r.status, 200);
    wait_for("two objects", WAIT, || {
        (objects(&serve, &running).len() >= 2).then_some(())
    })
    .unwrap();
    let leases_before = leases(&serve);
    assert_eq!(leases_before.len(), 2);

    serve.process.signal("KILL").unwrap();
    let mut serve = serve;
    serve.process.wait(Duration::from_secs(10)).unwrap();
    let written = objects(&serve, &running);
    drop(serve);

    let serve = Serve::start(&data, ADMIN).unwrap();
    // Tenants, tokens, pipelines, desired states, leases.
    let tenants: BTreeSet<String> = serve
        .request("GET", "/v1/tenants", Some(ADMIN), None)
        .json()["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tenants, BTreeSet::from([a_id, b_id]));
    let status = |token: &str, id: &str| {
        serve
            .request(
                "GET",
                &format!("/v1/pipelines/{id}/status"),
                Some(token),
                None,
            )
            .json()
    };
    assert_eq!(status(&a, &running)["desired_state"], "running");
    assert_eq!(status(&b, &stopped)["desired_state"], "stopped");
    assert_eq!(status(&b, &stopped)["state"], "stopped");
    assert_eq!(leases(&serve), leases_before);
    // The running pipeline resumes: new objects arrive.
    wait_for("objects after the restart", WAIT, || {
        (objects(&serve, &running).len() > written.len()).then_some(())
    })
    .unwrap();
    assert_eq!(status(&a, &running)["state"], "running");
    // Everything written before the kill is still there, byte for byte.
    let after = objects(&serve, &running);
    for (key, content) in &written {
        assert_eq!(after.get(key), Some(content), "{key} lost or changed");
    }
    // Counters were saved and carried over (at least what was saved before the kill).
    assert!(
        status(&a, &running)["counters"]["objects_written"]
            .as_u64()
            .unwrap()
            > 0
    );
}

#[test]
fn a_hundred_pipelines_of_ten_tenants_all_deliver() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(dir.path(), "20");
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let mut all = Vec::new();
    for t in 0..10 {
        let (_, token) = serve.tenant(&format!("tenant-{t}"));
        for p in 0..10 {
            let id = create(
                &serve,
                &token,
                &pipeline_yaml(&sim.ws_url(), &format!("dense-{t}-{p}")),
            );
            all.push((token.clone(), id));
        }
    }
    assert_eq!(leases(&serve).len(), 100);
    wait_for(
        "every pipeline to deliver",
        Duration::from_secs(120),
        || {
            all.iter()
                .all(|(_, id)| !objects(&serve, id).is_empty())
                .then_some(())
        },
    )
    .unwrap_or_else(|e| {
        let silent: Vec<_> = all
            .iter()
            .filter(|(_, id)| objects(&serve, id).is_empty())
            .collect();
        panic!("{e}: {} silent: {silent:?}", silent.len())
    });
    for (token, id) in &all {
        let s = serve
            .request(
                "GET",
                &format!("/v1/pipelines/{id}/status"),
                Some(token),
                None,
            )
            .json();
        assert_eq!(s["state"], "running", "{s}");
        assert!(
            s["counters"]["objects_written"].as_u64().unwrap() > 0,
            "{s}"
        );
    }
}

#[test]
fn malformed_bodies_get_clear_4xx_never_500() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_on(
        "127.0.0.1:0",
        &dir.path().join("data"),
        ADMIN,
        &["--config", &write_server_config(dir.path())],
    )
    .unwrap();
    let (_, a) = serve.tenant("alpha");
    let url = "ws://127.0.0.1:9/ws/subscriber/flow";
    let good = pipeline_yaml(url, "");
    let p = create(&serve, &a, &good);

    let cases: Vec<BadCase> = vec![
        // (method, path, content type, body, status, code)
        ("POST", "/v1/pipelines", "application/yaml", b"pipeline: [\n".to_vec(), 400, "invalid_config"),
        ("POST", "/v1/pipelines", "application/json", b"{\"pipeline\": ".to_vec(), 400, "bad_json"),
        ("POST", "/v1/pipelines", "application/json", b"[1, 2]".to_vec(), 400, "bad_json"),
        ("POST", "/v1/pipelines", "application/yaml", good.replace("max_flows_per_object: 1000", "max_flows_per_object: many").into_bytes(), 400, "invalid_config"),
        ("POST", "/v1/pipelines", "application/yaml", format!("{good}  colour: blue\n").into_bytes(), 400, "invalid_config"),
        ("POST", "/v1/pipelines", "application/json", json!({"pipeline": {"subscriber": {"url": url}, "store": {"buffered": {"dirname": "b", "max_flows_per_object": "ten", "max_flow_array_size": 10}}}}).to_string().into_bytes(), 400, "invalid_config"),
        ("POST", "/v1/pipelines", "application/json", json!({"pipeline": {"subscriber": {"url": url}}, "colour": 1}).to_string().into_bytes(), 400, "invalid_config"),
        ("POST", "/v1/pipelines", "application/yaml", good.replace("dir: out", "dir: /etc").into_bytes(), 400, "invalid_config"),
        ("POST", "/v1/pipelines", "application/yaml", good.replace("dir: out", "dir: ../../x").into_bytes(), 400, "invalid_config"),
        ("POST", "/v1/pipelines", "text/plain", good.clone().into_bytes(), 415, "unsupported_media_type"),
        ("POST", "/v1/pipelines", "application/yaml", vec![0xff, 0xfe, 0x00], 400, "bad_body"),
        ("POST", "/v1/pipelines", "application/yaml", vec![b'#'; 3 << 20], 413, "body_too_large"),
        ("POST", "/v1/pipelines?colour=blue", "application/yaml", good.clone().into_bytes(), 400, "bad_query"),
        ("POST", "/v1/pipelines?desired_state=paused", "application/yaml", good.clone().into_bytes(), 400, "bad_query"),
        ("PUT", "/v1/pipelines/{p}", "application/yaml", b"host_id: [".to_vec(), 400, "invalid_config"),
        ("PUT", "/v1/pipelines/{p}", "application/json", b"nope".to_vec(), 400, "bad_json"),
        ("POST", "/v1/pipelines/{p}/test", "application/json", b"{\"not\": \"an array\"}".to_vec(), 400, "bad_json"),
        ("POST", "/v1/pipelines/{p}/test", "application/yaml", b"[]".to_vec(), 415, "unsupported_media_type"),
        ("POST", "/v1/pipelines/{p}/test", "application/json", vec![b' '; 3 << 20], 413, "body_too_large"),
        ("POST", "/v1/tenants", "application/json", b"{\"nam\": \"x\"}".to_vec(), 400, "bad_json"),
        ("POST", "/v1/tenants", "application/json", b"{\"name\": 5}".to_vec(), 400, "bad_json"),
        ("POST", "/v1/tenants", "application/json", b"{\"name\": \"\"}".to_vec(), 400, "bad_name"),
        ("POST", "/v1/tenants", "application/json", b"".to_vec(), 400, "bad_json"),
        ("POST", "/v1/tenants", "application/x-www-form-urlencoded", b"name=x".to_vec(), 415, "unsupported_media_type"),
        ("POST", "/v1/tenants", "application/json", b"{\"name\": \"alpha\"}".to_vec(), 409, "tenant_exists"),
        ("GET", "/v1/nothing-here", "application/json", vec![], 404, "not_found"),
        ("PATCH", "/v1/pipelines", "application/json", vec![], 405, "method_not_allowed"),
    ];
    for (method, path, content_type, body, status, code) in cases {
        let path = path.replace("{p}", &p);
        let token = if path.starts_with("/v1/tenants") {
            ADMIN
        } else {
            &a
        };
        let r = serve.request(method, &path, Some(token), Some((content_type, &body)));
        assert!(
            (400..500).contains(&r.status),
            "{method} {path} ({content_type}): {} {}",
            r.status,
            r.text()
        );
        assert_error(&r, status, code);
    }

    // Every config error at once, with key paths and lines (YAML).
    let bad = good
        .replace("max_flows_per_object: 1000", "max_flows_per_object: 0")
        .replace(
            "cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]",
            "cluster_net_masks: [10.0.0.0/33]",
        );
    let r = serve.yaml("POST", "/v1/pipelines", Some(&a), &bad);
    assert_error(&r, 400, "invalid_config");
    let errors = r.json()["error"]["errors"].as_array().unwrap().clone();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["path"], "pipeline.classify.cluster_net_masks[0]");
    assert_eq!(errors[0]["line"], 6);
    assert_eq!(
        errors[1]["path"],
        "pipeline.store.buffered.max_flows_per_object"
    );
    assert_eq!(errors[1]["line"], 16);
    // An unknown JSON key is named by its path.
    let r = serve.json(
        "POST",
        "/v1/pipelines",
        Some(&a),
        &json!({"pipeline": {"subscriber": {"url": url, "colour": 1}}}),
    );
    assert!(
        r.json()["error"]["errors"][0]["path"] == "pipeline.subscriber.colour",
        "{}",
        r.text()
    );

    // The pipeline limit (2 in this server's config) is a clear 403.
    create(&serve, &a, &good);
    let r = serve.yaml("POST", "/v1/pipelines", Some(&a), &good);
    assert_error(&r, 403, "pipeline_limit");

    // Nothing above was a 5xx.
    let metrics = serve.request("GET", "/metrics", Some(ADMIN), None).text();
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("sluice_api_requests_total{status=\"5")),
        "{metrics}"
    );
}

fn write_server_config(dir: &Path) -> String {
    let path = dir.join("sluice.yml");
    std::fs::write(
        &path,
        "limits:\n  max_body_bytes: 2097152\n  pipelines_per_tenant: 2\n",
    )
    .unwrap();
    path.display().to_string()
}

/// A pipeline that writes nothing until it is flushed (huge object and time limits).
fn buffering_yaml(url: &str, host_id: &str, prefix: &str) -> String {
    pipeline_yaml(url, host_id)
        .replace("max_flows_per_object: 1000", "max_flows_per_object: 100000")
        .replace("max_seconds_per_object: 1", "max_seconds_per_object: 3600")
        .replace(
            "filename_prefix: logs",
            &format!("filename_prefix: {prefix}"),
        )
}

fn records_in(serve: &Serve, pipeline: &str) -> usize {
    objects(serve, pipeline)
        .values()
        .map(|c| serde_json::from_slice::<Vec<Value>>(c).unwrap().len())
        .sum()
}

#[test]
fn stop_replace_delete_and_shutdown_flush_what_is_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(dir.path(), "100");
    let mut serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (_, a) = serve.tenant("alpha");
    let url = sim.ws_url();
    let stop = create(&serve, &a, &buffering_yaml(&url, "", "logs"));
    let put = create(&serve, &a, &buffering_yaml(&url, "", "logs"));
    let delete = create(&serve, &a, &buffering_yaml(&url, "", "logs"));
    let term = create(&serve, &a, &buffering_yaml(&url, "", "logs"));
    let status = |id: &str| {
        serve
            .request("GET", &format!("/v1/pipelines/{id}/status"), Some(&a), None)
            .json()
    };
    for id in [&stop, &put, &delete, &term] {
        wait_for("flows buffered", WAIT, || {
            (status(id)["counters"]["received"].as_u64().unwrap() > 0).then_some(())
        })
        .unwrap();
        assert!(objects(&serve, id).is_empty(), "nothing is due yet");
    }

    // Stop: everything received is written before the answer.
    let r = serve.request(
        "POST",
        &format!("/v1/pipelines/{stop}/stop"),
        Some(&a),
        None,
    );
    assert_eq!(r.status, 200);
    let s = r.json();
    assert_eq!(s["state"], "stopped");
    let c = &s["counters"];
    let dropped: u64 = c["dropped"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(c["received"].as_u64().unwrap() > 0);
    assert_eq!(
        c["received"].as_u64().unwrap(),
        c["records_written"].as_u64().unwrap() + dropped,
        "{s}"
    );
    assert_eq!(
        records_in(&serve, &stop) as u64,
        c["records_written"].as_u64().unwrap()
    );

    // Replace: the old definition's buffer is flushed before the new one starts.
    let r = serve.yaml(
        "PUT",
        &format!("/v1/pipelines/{put}"),
        Some(&a),
        &buffering_yaml(&url, "", "replaced"),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let flushed = objects(&serve, &put);
    assert!(!flushed.is_empty());
    assert!(
        flushed.keys().all(|k| k.starts_with("bucket/logs/")),
        "{flushed:?}"
    );
    // The new run starts in the next whole second (its keys never reuse the old run's).
    wait_for("the new definition running", WAIT, || {
        (status(&put)["state"] == "running").then_some(())
    })
    .unwrap();
    let before = status(&put)["counters"]["received"].as_u64().unwrap();
    wait_for("flows for the new definition", WAIT, || {
        (status(&put)["counters"]["received"].as_u64().unwrap() > before).then_some(())
    })
    .unwrap();

    // Delete: stopped, then gone with its folder (its files are the tenant's disk quota).
    let r = serve.request("DELETE", &format!("/v1/pipelines/{delete}"), Some(&a), None);
    assert_eq!(r.status, 204);
    assert!(!serve.data_dir.join("pipelines").join(&delete).exists());
    let r = serve.request("GET", &format!("/v1/pipelines/{delete}"), Some(&a), None);
    assert_eq!(r.status, 404);

    // SIGTERM: every running pipeline flushes before the process exits.
    serve.process.signal("TERM").unwrap();
    assert!(
        serve.process.wait(Duration::from_secs(30)).unwrap(),
        "{}",
        serve.process.stderr()
    );
    assert!(records_in(&serve, &term) > 0);
    assert!(
        objects(&serve, &put)
            .keys()
            .any(|k| k.starts_with("bucket/replaced/"))
    );
}

//! Guests in Python and JavaScript as a tenant makes them: `sluice guest new`, the native test,
//! `sluice guest build` (the real binary, which installs componentize-py and componentize-js
//! under ~/.cache/sluice/toolchains on first use), `sluice guest deploy`, and a real
//! `sluice serve` running them.
//!
//! The Python and JavaScript `anonymize` examples (guests/python, guests/js) must write the
//! Rust `anonymize` guest's records byte for byte on the same flows; a Python guest's `print()`
//! reaches its pipeline's guest log; a scaffolded project passes its own test and builds; build
//! and upload errors say what is wrong. Each component is built once per test binary; a build
//! takes 5-20 s, and the server compiles a Python or JavaScript component in 7-16 s.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::{Value, json};
use sluice_tests::{Response, Serve, sluice_bin};

const ADMIN: &str = "admin-secret-for-tests";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// This binary's scratch folder, emptied once per run.
fn work() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest_languages");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

/// Where cargo builds the Rust guests of this test: the guests' own target folder
/// (server/src/wasm/test_guests.rs), whose dependencies are already built.
fn guests_target() -> PathBuf {
    std::env::var_os("SLUICE_GUESTS_TARGET").map_or_else(
        || {
            let home = std::env::var_os("HOME").expect("HOME");
            Path::new(&home).join(".cache/sluice/guests-target")
        },
        PathBuf::from,
    )
}

/// `cmd` with the outer cargo's settings removed, so that a cargo it starts builds where and
/// how this test says.
fn clean_env(cmd: &mut Command) -> &mut Command {
    cmd.env("CARGO_TARGET_DIR", guests_target())
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
}

/// `sluice guest <args>` in `cwd`.
fn sluice_guest(cwd: &Path, args: &[&OsStr]) -> Output {
    let mut cmd = Command::new(sluice_bin());
    clean_env(&mut cmd)
        .arg("guest")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// `sluice guest build <source> -o <work>/<name>`, which must succeed.
fn build(source: &Path, name: &str) -> PathBuf {
    let out = work().join(name);
    let r = sluice_guest(
        work(),
        &[
            OsStr::new("build"),
            source.as_os_str(),
            OsStr::new("-o"),
            out.as_os_str(),
        ],
    );
    assert!(
        r.status.success(),
        "sluice guest build {} failed:\n{}",
        source.display(),
        text(&r.stderr)
    );
    let stderr = text(&r.stderr);
    assert!(
        stderr.contains("world transformer"),
        "no world in the build's output:\n{stderr}"
    );
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..4], b"\0asm");
    out
}

fn python_anonymize() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        build(
            &repo().join("guests/python/anonymize.py"),
            "anonymize-py.wasm",
        )
    })
}

fn js_anonymize() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build(&repo().join("guests/js/anonymize.js"), "anonymize-js.wasm"))
}

/// Uploads a component over REST; returns its module id.
fn upload(serve: &Serve, token: &str, wasm: &Path) -> String {
    let bytes = std::fs::read(wasm).unwrap();
    let r = serve.request(
        "POST",
        "/v1/modules",
        Some(token),
        Some(("application/wasm", &bytes)),
    );
    assert_eq!(r.status, 201, "{}: {}", wasm.display(), r.text());
    let m = r.json();
    assert_eq!(m["world"], "transformer", "{m}");
    m["id"].as_str().unwrap().to_string()
}

/// `sluice guest deploy` of a component; returns what it printed (stdout) and its stderr.
fn deploy(serve: &Serve, token: &str, wasm: &Path) -> (bool, String, String) {
    let server = format!("http://{}", serve.addr);
    let r = sluice_guest(
        work(),
        &[
            OsStr::new("deploy"),
            wasm.as_os_str(),
            OsStr::new("--server"),
            OsStr::new(&server),
            OsStr::new("--token"),
            OsStr::new(token),
        ],
    );
    (r.status.success(), text(&r.stdout), text(&r.stderr))
}

/// A stopped pipeline whose transform is `module` with `config`; returns its id.
fn pipeline(serve: &Serve, token: &str, module: &str, config: &str) -> String {
    let yaml = format!(
        "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:9/ws/subscriber/flow\n  classify:\n    cluster_net_masks: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16]\n  transform:\n    type: wasm\n    wasm:\n      module: {module}\n      config: {config}\n  encode:\n    type: json\n  compress:\n    type: none\n  store:\n    type: buffered\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 1000\n      max_seconds_per_object: 60\n      max_seconds_per_stream: 3600\n      max_flow_array_size: 100000\n  write:\n    type: file\n    file:\n      dir: out\n"
    );
    let r = serve.yaml(
        "POST",
        "/v1/pipelines?desired_state=stopped",
        Some(token),
        &yaml,
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["id"].as_str().unwrap().to_string()
}

/// A dry run of `flows`: the answer.
fn dry_run(serve: &Serve, token: &str, pipeline: &str, flows: &Value) -> Value {
    let r: Response = serve.json(
        "POST",
        &format!("/v1/pipelines/{pipeline}/test"),
        Some(token),
        flows,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["malformed"], json!([]), "{v}");
    v
}

/// A dry run's objects as (tag, content), by tag: the keys' stream ids differ between
/// pipelines, the tags and contents must not.
fn contents(answer: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = answer["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            // <prefix>/<tag>/<stream>/<seq>
            let key = o["key"].as_str().unwrap();
            let tag = key.split('/').nth(1).unwrap_or_default().to_string();
            (tag, o["content"].as_str().unwrap().to_string())
        })
        .collect();
    out.sort();
    out
}

/// The analyzer's flows of tests/vectors/skydive (TCP and UDP over IPv4 and IPv6, DNS, ICMP
/// without Transport, TCP and IP metrics) and the cases where masking differs between
/// languages unless done with care (a flow without Transport or Metric, addresses that don't
/// parse, a zone id, an IPv4-mapped IPv6 address, octets with leading zeros, zero runs).
fn flows() -> Value {
    let mut flows: Vec<Value> = Vec::new();
    let dir = repo().join("tests/vectors/skydive");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("flow-") && n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(names.len() >= 8, "{names:?}");
    for name in names {
        flows.push(serde_json::from_slice(&std::fs::read(dir.join(name)).unwrap()).unwrap());
    }
    let flow = |uuid: &str, network: Value, transport: Value, metric: Value| {
        let mut f = json!({
            "UUID": uuid,
            "LayersPath": "Ethernet/IPv4/TCP",
            "Network": network,
            "Start": 1_700_000_000_000_i64,
            "Last": 1_700_000_060_000_i64,
        });
        if !transport.is_null() {
            f["Transport"] = transport;
        }
        if !metric.is_null() {
            f["Metric"] = metric;
        }
        f
    };
    let net = |p: &str, a: &str, b: &str| json!({"Protocol": p, "A": a, "B": b, "ID": 0});
    let tcp = |a: i64, b: i64| json!({"Protocol": "TCP", "A": a, "B": b, "ID": 0});
    let metric = json!({"ABPackets": 3, "ABBytes": 180, "BAPackets": 2, "BABytes": 1200, "Start": 1_700_000_000_000_i64, "Last": 1_700_000_060_000_i64});
    flows.extend([
        flow(
            "tcp4",
            net("IPV4", "10.1.2.3", "192.168.77.201"),
            tcp(1234, 80),
            metric.clone(),
        ),
        flow(
            "udp6",
            net("IPV6", "fd00:1:2:3::42", "2001:db8:abcd:12:1::1"),
            json!({"Protocol": "UDP", "A": 5353, "B": 53, "ID": 0}),
            metric.clone(),
        ),
        flow(
            "bare",
            net("IPV4", "172.16.5.4", "8.8.8.8"),
            Value::Null,
            Value::Null,
        ),
        flow(
            "junk",
            net("IPV4", "not an address", "010.1.2.3"),
            tcp(1, 2),
            Value::Null,
        ),
        flow(
            "zone",
            net("IPV6", "fe80::1%eth0", "::ffff:10.1.2.3"),
            tcp(3, 4),
            metric.clone(),
        ),
        flow(
            "runs",
            net("IPV6", "1:0:0:2:0:0:0:3", "1:0:0:0:2:3:4:5"),
            tcp(5, 6),
            metric,
        ),
    ]);
    Value::Array(flows)
}

/// The Python and JavaScript `anonymize` write the Rust one's objects byte for byte: the same
/// records, fields, order and values.
#[test]
fn python_and_js_anonymize_write_the_rust_guests_records() {
    // The two builds run while the server starts and takes the Rust guest.
    std::thread::scope(|s| {
        let py = s.spawn(python_anonymize);
        let js = s.spawn(js_anonymize);
        let dir = tempfile::tempdir().unwrap();
        let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
        let (_, token) = serve.tenant("twins");
        let rust = upload(
            &serve,
            &token,
            &sluice::wasm::test_guests::path("anonymize"),
        );
        let (py, js) = (py.join().unwrap(), js.join().unwrap());

        // Python over REST, JavaScript with `sluice guest deploy`, compiled side by side.
        let (py_id, (ok, js_id, stderr)) = std::thread::scope(|s| {
            let p = s.spawn(|| upload(&serve, &token, py));
            let j = s.spawn(|| deploy(&serve, &token, js));
            (p.join().unwrap(), j.join().unwrap())
        });
        assert!(ok, "sluice guest deploy failed:\n{stderr}");
        let js_id = js_id.trim().to_string();
        assert_eq!(js_id.len(), 64, "stdout is the module id: {js_id}");
        assert!(stderr.contains("world transformer"), "{stderr}");

        let flows = flows();
        let config = "{ipv4_prefix: 16}";
        let mut answers = Vec::new();
        for module in [&rust, &py_id, &js_id] {
            let p = pipeline(&serve, &token, module, config);
            answers.push(dry_run(&serve, &token, &p, &flows));
        }
        let want = contents(&answers[0]);
        let records: usize = want
            .iter()
            .map(|(_, c)| serde_json::from_str::<Vec<Value>>(c).unwrap().len())
            .sum();
        assert_eq!(records, flows.as_array().unwrap().len(), "{want:?}");
        // The Rust guest's own values, so that three empty answers can't agree.
        let all = want.iter().map(|(_, c)| c.as_str()).collect::<String>();
        for part in [
            r#""UUID":"tcp4","LayersPath":"Ethernet/IPv4/TCP","SrcAddr":"10.1.0.0","DstAddr":"192.168.0.0","SrcPort":1234,"DstPort":80,"Protocol":"TCP","Packets":5,"Bytes":1380"#,
            r#""SrcAddr":"fd00:1:2::","DstAddr":"2001:db8:abcd::""#,
            r#""UUID":"bare","LayersPath":"Ethernet/IPv4/TCP","SrcAddr":"172.16.0.0","DstAddr":"8.8.0.0","SrcPort":0,"DstPort":0,"Protocol":"","Packets":0,"Bytes":0"#,
            r#""SrcAddr":"","DstAddr":"""#,
        ] {
            assert!(all.contains(part), "{part} not in {all}");
        }
        for (answer, language) in answers[1..].iter().zip(["Python", "JavaScript"]) {
            let got = contents(answer);
            assert_eq!(got.len(), want.len(), "{language}: {got:?}");
            for ((tag, w), (got_tag, g)) in want.iter().zip(&got) {
                assert_eq!(tag, got_tag);
                let (w, g): (Vec<Value>, Vec<Value>) = (
                    serde_json::from_str(w).unwrap(),
                    serde_json::from_str(g).unwrap(),
                );
                for (i, (w, g)) in w.iter().zip(&g).enumerate() {
                    assert_eq!(g, w, "{language}, tag {tag}, record {i}");
                }
            }
            // Field order too: the objects are the same bytes.
            assert_eq!(got, want, "{language}");
        }
    });
}

/// `sluice guest new` for Python and JavaScript: the project's native test passes, it builds,
/// and the Python one's `print()` line is in its pipeline's guest log.
#[test]
fn new_python_and_js_projects_test_build_and_log() {
    let py = work().join("new-py");
    let js = work().join("new-js");
    for (lang, dir) in [("python", &py), ("js", &js)] {
        let r = sluice_guest(
            work(),
            &[
                OsStr::new("new"),
                OsStr::new("--lang"),
                OsStr::new(lang),
                dir.as_os_str(),
            ],
        );
        assert!(r.status.success(), "{}", text(&r.stderr));
        assert!(text(&r.stdout).contains("sluice guest build"));
    }
    let r = Command::new("python3")
        .args(["-m", "unittest", "-v"])
        .current_dir(&py)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r.stderr));
    assert!(
        text(&r.stderr).contains("Ran 2 tests"),
        "{}",
        text(&r.stderr)
    );
    let r = Command::new("node")
        .arg("--test")
        .current_dir(&js)
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", text(&r.stdout));
    assert!(text(&r.stdout).contains("# pass 2"), "{}", text(&r.stdout));

    let (py_wasm, _) = std::thread::scope(|s| {
        let p = s.spawn(|| build(&py.join("transform.py"), "new-py.wasm"));
        let j = s.spawn(|| build(&js.join("transform.js"), "new-js.wasm"));
        (p.join().unwrap(), j.join().unwrap())
    });
    // The build left the project as it was (no __pycache__ from componentize-py).
    let mut left: Vec<String> = std::fs::read_dir(&py)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "__pycache__")
        .collect();
    left.sort();
    assert_eq!(left, ["sluice.py", "test_transform.py", "transform.py"]);

    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (_, token) = serve.tenant("scaffold");
    let module = upload(&serve, &token, &py_wasm);
    let p = pipeline(&serve, &token, &module, "{port: 443}");
    let flow = |sport: i64, dport: i64| {
        json!({"UUID": format!("f{sport}"), "LayersPath": "Ethernet/IPv4/TCP",
            "Network": {"Protocol": "IPV4", "A": "10.0.0.1", "B": "10.0.0.2", "ID": 0},
            "Transport": {"Protocol": "TCP", "A": sport, "B": dport, "ID": 0},
            "Metric": {"ABPackets": 6, "ABBytes": 516, "BAPackets": 4, "BABytes": 760},
            "Start": 1_700_000_000_000_i64, "Last": 1_700_000_000_500_i64})
    };
    let answer = dry_run(
        &serve,
        &token,
        &p,
        &json!([flow(40000, 443), flow(40001, 80)]),
    );
    let content = answer["objects"][0]["content"].as_str().unwrap_or("");
    assert_eq!(
        content,
        "[{\"UUID\":\"f40000\",\"Src\":\"10.0.0.1\",\"Dst\":\"10.0.0.2\",\"Port\":443,\"Bytes\":1276}]\n",
        "{answer}"
    );
    let logs = answer["logs"].as_array().unwrap();
    assert!(
        logs.iter().any(|l| l["text"] == "kept 1 of 2 flows"
            && l["stage"] == "transform"
            && l["level"] == "info"),
        "print() is not in the guest log: {answer}"
    );
}

/// `sluice guest new --lang rust`: `cargo test` passes and `sluice guest build` builds it
/// (the slowest part of this binary: cargo compiles the SDK natively and for wasm32-wasip2).
#[test]
fn a_new_rust_project_tests_and_builds() {
    let dir = work().join("new-rust");
    let r = sluice_guest(
        work(),
        &[
            OsStr::new("new"),
            OsStr::new("--lang"),
            OsStr::new("rust"),
            dir.as_os_str(),
        ],
    );
    assert!(r.status.success(), "{}", text(&r.stderr));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let r = clean_env(&mut Command::new(cargo))
        .args(["test", "--quiet"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        r.status.success(),
        "{}\n{}",
        text(&r.stdout),
        text(&r.stderr)
    );
    assert!(text(&r.stdout).contains("2 passed"), "{}", text(&r.stdout));
    let wasm = build(&dir, "new-rust.wasm");
    assert!(std::fs::metadata(wasm).unwrap().len() > 10_000);
}

/// A broken guest's build fails with the guest's own error, not the toolchain's insides; a
/// file defining no stage function says which to define.
#[test]
fn build_errors_say_what_is_wrong() {
    let dir = work().join("broken");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let fails = |path: &Path, extra: &[&str]| {
        let mut args = vec![OsStr::new("build"), path.as_os_str()];
        args.extend(extra.iter().map(OsStr::new));
        let r = sluice_guest(&dir, &args);
        assert!(!r.status.success(), "{} built", path.display());
        text(&r.stderr)
    };
    let py = write(
        "syntax.py",
        "def transform(flows, config)\n    return flows\n",
    );
    let js = write(
        "syntax.js",
        "export function transform(flows, config) {\n  return flows.map((f) => ({ UUID: f.UUID });\n}\n",
    );
    let (py_err, js_err) = std::thread::scope(|s| {
        let p = s.spawn(|| fails(&py, &[]));
        let j = s.spawn(|| fails(&js, &[]));
        (p.join().unwrap(), j.join().unwrap())
    });
    assert!(
        py_err.contains(&format!("{}\", line 1", py.display())) && py_err.contains("SyntaxError"),
        "{py_err}"
    );
    for inside in ["Caused by", "AssertionError", "sluice_app.py", "backtrace"] {
        assert!(!py_err.contains(inside), "`{inside}` in {py_err}");
    }
    assert!(
        js_err.contains("syntax.js:2") && js_err.contains("SyntaxError"),
        "{js_err}"
    );
    assert!(!js_err.contains("    at "), "{js_err}");

    let none = write("helpers.py", "def helper():\n    return 1\n");
    let e = fails(&none, &[]);
    assert!(
        e.contains("defines neither") && e.contains("--world"),
        "{e}"
    );
    let e = fails(&dir, &[]);
    assert!(e.contains("without Cargo.toml"), "{e}");
    let e = fails(
        &write("my-guest.py", "def transform(f, c): return f\n"),
        &[],
    );
    assert!(e.contains("letters, digits and _"), "{e}");
}

/// `sluice guest deploy` prints the server's refusal (status, code, message) and fails.
#[test]
fn deploy_shows_the_servers_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(&dir.path().join("data"), ADMIN).unwrap();
    let (_, token) = serve.tenant("deployer");
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let (ok, stdout, stderr) = deploy(&serve, &token, &garbage);
    assert!(!ok && stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("400 not_wasm: "), "{stderr}");
    let (ok, _, stderr) = deploy(&serve, "not-a-token", &garbage);
    assert!(!ok);
    assert!(stderr.contains("401 unauthorized"), "{stderr}");
    // Nothing listening: says where it tried.
    let r = sluice_guest(
        dir.path(),
        &[
            OsStr::new("deploy"),
            garbage.as_os_str(),
            OsStr::new("--server"),
            OsStr::new("http://127.0.0.1:9"),
            OsStr::new("--token"),
            OsStr::new("t"),
        ],
    );
    assert!(!r.status.success());
    assert!(
        text(&r.stderr).contains("cannot reach http://127.0.0.1:9/v1/modules"),
        "{}",
        text(&r.stderr)
    );
}

//! `SKYDIVE_*` environment overrides (docs/stages.md §3.3) through the real binary: `sluice
//! check` applies and lists them (secrets redacted), a bad one names its variable and key, and
//! `sluice serve` ignores them for a tenant's definition.

use std::path::Path;
use std::process::Command;

use sluice_tests::{Serve, sluice_bin};

fn shipped(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../config/{name}.yml"))
}

#[test]
fn check_applies_and_lists_the_overrides_with_secrets_redacted() {
    let out = Command::new(sluice_bin())
        .arg("check")
        .arg(shipped("awsflowlogs"))
        .env("SKYDIVE_PIPELINE_WRITE_S3_SECRET_KEY", "hunter2-env")
        .env("SKYDIVE_PIPELINE_STORE_BUFFERED_MAX_FLOWS_PER_OBJECT", "77")
        .env("SKYDIVE_ANALYZERS", "10.1.1.1:8082 10.1.1.2:8082")
        .env("SKYDIVE_PIPELINE_ENCODE_TYPE", "parquet")
        .env("SKYDIVE_PIPELINE_COMPRESS_TYPE", "none")
        .env("SKYDIVE_NO_SUCH_KEY", "x")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "# SKYDIVE_PIPELINE_WRITE_S3_SECRET_KEY sets pipeline.write.s3.secret_key: \"<redacted>\""
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2-env"), "{stdout}");
    assert!(stdout.contains("# SKYDIVE_NO_SUCH_KEY names no key: ignored"));
    // The resolved pipeline has the variables' values.
    let yaml: serde_yaml::Value = serde_yaml::from_str(&stdout).unwrap();
    let p = &yaml["pipeline"];
    assert_eq!(p["store"]["buffered"]["max_flows_per_object"], 77);
    assert_eq!(p["encode"]["type"], "parquet");
    assert_eq!(p["write"]["s3"]["secret_key"], "<redacted>");
    assert_eq!(
        yaml["analyzers"],
        serde_yaml::to_value(["10.1.1.1:8082", "10.1.1.2:8082"]).unwrap()
    );

    // A value that doesn't fit names the variable and the key.
    let out = Command::new(sluice_bin())
        .arg("check")
        .arg(shipped("awsflowlogs"))
        .env("SKYDIVE_PIPELINE_ENCODE_PARQUET_ROW_GROUP_ROWS", "1000000")
        .env("SKYDIVE_PIPELINE_ENCODE_TYPE", "parquet")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pipeline.encode.parquet.row_group_rows")
            && err.contains("SKYDIVE_PIPELINE_ENCODE_PARQUET_ROW_GROUP_ROWS"),
        "{err}"
    );

    // A value set by a variable that validation refuses: the variable, not a line of the file.
    let out = Command::new(sluice_bin())
        .arg("check")
        .arg(shipped("awsflowlogs"))
        .env("SKYDIVE_PIPELINE_ENCODE_TYPE", "parquet")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // gzip around Parquet: the file's own `compress: gzip` line is named.
    assert!(err.contains("pipeline.compress.type (line"), "{err}");
}

#[test]
fn serve_ignores_the_environment_for_a_tenants_definition() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_env(
        "127.0.0.1:0",
        &dir.path().join("data"),
        "admin-env-tests",
        &[],
        &[
            ("SKYDIVE_PIPELINE_STORE_BUFFERED_MAX_FLOWS_PER_OBJECT", "3"),
            (
                "SKYDIVE_PIPELINE_WRITE_S3_ENDPOINT",
                "http://169.254.169.254",
            ),
        ],
    )
    .unwrap();
    let (_, token) = serve.tenant("alpha");
    let yaml = "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  store:\n    buffered:\n      dirname: bucket\n      max_flows_per_object: 500\n      max_flow_array_size: 1000\n  write:\n    type: file\n    file:\n      dir: out\n";
    let r = serve.request(
        "POST",
        "/v1/pipelines?desired_state=stopped",
        Some(&token),
        Some(("application/yaml", yaml.as_bytes())),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_str().unwrap().to_string();
    let read = serve
        .request("GET", &format!("/v1/pipelines/{id}"), Some(&token), None)
        .json();
    let p = &read["config"]["pipeline"];
    assert_eq!(
        p["store"]["buffered"]["max_flows_per_object"], 500,
        "{read}"
    );
    assert_eq!(p["write"]["s3"]["endpoint"], "", "{read}");
}

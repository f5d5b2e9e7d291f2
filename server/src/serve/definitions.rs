//! A tenant's definition in `sluice serve`, between the API and the supervisor: its local
//! paths resolved into the pipeline's folder, its module digests into the tenant's module files,
//! what the database keeps beside it, its host_id lease key, and its subscriber settings.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::{
    AccountType, ConfigError, ExporterConfig, MangleType, TransformType, WriteType,
};
use crate::db::PipelineRow;
use crate::skydive::subscriber::SubscriberSettings;
use crate::tls::TlsError;

/// The subscriber settings of a pipeline in `sluice serve`. A missing `host_id` is `""` here
/// (the analyzer then assigns one per connection): the server's hostname, `sluice run`'s
/// default, would be shared by every pipeline and refused by the analyzer.
pub fn subscriber_settings(config: &ExporterConfig) -> Result<SubscriberSettings, TlsError> {
    Ok(SubscriberSettings {
        url: config.pipeline.subscriber.url.clone(),
        host_id: config
            .host_id
            .clone()
            .unwrap_or_default()
            .trim()
            .to_string(),
        capture_id: config.pipeline.subscriber.capture_id.clone(),
        username: config.analyzer.auth.cluster.username.clone(),
        password: config.analyzer.auth.cluster.password.clone(),
        tls: crate::tls::client_config(&config.tls)?,
        ..SubscriberSettings::default()
    })
}

/// Resolves the local paths of a checked definition for `sluice serve`: a relative
/// `write.file.dir`, `write.spool.dir` (default `spool`) or `account.file.filename` goes inside
/// `pipeline_dir` (the rules refused `..`, and absolute paths unless the operator allows them).
pub fn resolve_for_serve(config: &ExporterConfig, pipeline_dir: &Path) -> ExporterConfig {
    let mut resolved = config.clone();
    let p = &mut resolved.pipeline;
    let fix = |value: &mut String| {
        let path = PathBuf::from(value.as_str());
        if !path.is_absolute() {
            *value = pipeline_dir.join(path).display().to_string();
        }
    };
    if p.write.kind == WriteType::File {
        fix(&mut p.write.file.dir);
    }
    if p.write.kind == WriteType::S3 {
        if p.write.spool.dir.is_empty() {
            p.write.spool.dir = "spool".into();
        }
        fix(&mut p.write.spool.dir);
    }
    if p.account.kind == AccountType::File {
        fix(&mut p.account.file.filename);
    }
    resolved
}

/// Resolves the module of each wasm stage (`pipeline.{transform,mangle}.wasm.module`, a digest
/// in `sluice serve`) to the file of the tenant's uploaded module in `modules_dir`, checking the
/// tenant owns it (`owned`: digest → world) and that its world fits the stage.
pub fn resolve_modules(
    config: &mut ExporterConfig,
    owned: &HashMap<String, String>,
    modules_dir: &Path,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    let p = &mut config.pipeline;
    let stages = [
        (
            "transform",
            "transformer",
            p.transform.kind == TransformType::Wasm,
            &mut p.transform.wasm,
        ),
        (
            "mangle",
            "mangler",
            p.mangle.kind == MangleType::Wasm,
            &mut p.mangle.wasm,
        ),
    ];
    for (section, want, is_wasm, wasm) in stages {
        let Some(wasm) = wasm.as_mut().filter(|_| is_wasm) else {
            continue;
        };
        let digest = wasm.module.trim().to_ascii_lowercase();
        let path = format!("pipeline.{section}.wasm.module");
        match owned.get(&digest) {
            None => errors.push(ConfigError {
                path,
                line: None,
                message: format!(
                    "no module `{}`: in sluice serve this is the id of a module uploaded with POST /v1/modules",
                    wasm.module
                ),
            }),
            Some(world) if world != want => errors.push(ConfigError {
                path,
                line: None,
                message: format!(
                    "module `{digest}` implements the {world} world; pipeline.{section} needs a {want}"
                ),
            }),
            Some(_) => {
                wasm.module = modules_dir
                    .join(format!("{digest}.wasm"))
                    .display()
                    .to_string();
            }
        }
    }
    errors
}

/// What the database keeps beside a pipeline's definition, read from its checked config: the
/// canonical analyzer and trimmed host_id (shown in every list), the bytes its spool may hold
/// (`default_spool_bytes` when it sets none; 0 without a spool) and the modules it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFields {
    /// `pipeline.subscriber.url`, canonical.
    pub analyzer: String,
    /// `host_id`, trimmed.
    pub host_id: String,
    /// Spool bytes.
    pub spool_bytes: u64,
    /// (stage, module digest) of each wasm stage.
    pub modules: Vec<crate::db::pipelines::ModuleUse>,
}

impl StoredFields {
    /// From a checked config.
    pub fn of(config: &ExporterConfig, default_spool_bytes: u64) -> Self {
        let p = &config.pipeline;
        let mut modules = Vec::new();
        for (stage, on, wasm) in [
            (
                "transform",
                p.transform.kind == TransformType::Wasm,
                &p.transform.wasm,
            ),
            ("mangle", p.mangle.kind == MangleType::Wasm, &p.mangle.wasm),
        ] {
            if let Some(wasm) = wasm.as_ref().filter(|_| on) {
                modules.push((stage, wasm.module.trim().to_ascii_lowercase()));
            }
        }
        StoredFields {
            analyzer: canonical_analyzer(&p.subscriber.url),
            host_id: config.host_id.as_deref().unwrap_or("").trim().to_string(),
            spool_bytes: match p.write.kind {
                WriteType::S3 => p.write.spool.max_bytes.unwrap_or(default_spool_bytes),
                _ => 0,
            },
            modules,
        }
    }

    /// Copies the columns into `row`.
    pub fn apply(&self, row: &mut PipelineRow) {
        row.analyzer = self.analyzer.clone();
        row.host_id = self.host_id.clone();
        row.spool_bytes = self.spool_bytes.min(i64::MAX as u64) as i64;
    }
}

/// The (analyzer, host_id) a pipeline must lease, if any: `""` and a missing host_id are never
/// leased.
pub fn lease_key(config: &ExporterConfig) -> Option<crate::db::LeaseKey> {
    let host_id = config.host_id.as_deref().unwrap_or("").trim();
    (!host_id.is_empty()).then(|| crate::db::LeaseKey {
        analyzer: canonical_analyzer(&config.pipeline.subscriber.url),
        host_id: host_id.to_string(),
    })
}

/// The analyzer of a lease, written one way whatever way the URL was: scheme and host in
/// lower case, the port always (the scheme's default when absent), the path without a trailing
/// `/`, no query, fragment or credentials, an IPv4-mapped IPv6 address as IPv4 and `localhost`
/// as 127.0.0.1. Every spelling of one analyzer is then one lease.
pub fn canonical_analyzer(url: &str) -> String {
    let Ok(parsed) = url::Url::parse(url.trim()) else {
        return url.trim().to_string();
    };
    let host = match parsed.host() {
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
            crate::egress::LOCALHOST.to_string()
        }
        Some(url::Host::Domain(d)) => d.trim_end_matches('.').to_ascii_lowercase(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => match crate::egress::canonical_ip(a.into()) {
            std::net::IpAddr::V4(v4) => v4.to_string(),
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        },
        None => String::new(),
    };
    let port = parsed.port_or_known_default().unwrap_or(0);
    let path = parsed.path().trim_end_matches('/');
    format!("{}://{host}:{port}{path}", parsed.scheme())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &str) -> ExporterConfig {
        let text = format!(
            "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:1/ws/subscriber/flow\n  store:\n    buffered:\n      dirname: b\n      max_flows_per_object: 10\n      max_flow_array_size: 100\n  write:\n    type: file\n    file:\n      dir: {dir}\n"
        );
        ExporterConfig::load(&text).unwrap()
    }

    #[test]
    fn module_digests_resolve_to_the_tenants_files_of_the_right_world() {
        let mut c = config("out");
        c.pipeline.transform.kind = TransformType::Wasm;
        c.pipeline.transform.wasm = Some(crate::config::WasmOptions {
            module: "AB12".into(),
            ..Default::default()
        });
        let owned: HashMap<String, String> = [("ab12".to_string(), "transformer".to_string())]
            .into_iter()
            .collect();
        let mut ok = c.clone();
        assert!(resolve_modules(&mut ok, &owned, Path::new("/d/modules")).is_empty());
        assert_eq!(
            ok.pipeline.transform.wasm.unwrap().module,
            "/d/modules/ab12.wasm"
        );
        let mangler: HashMap<String, String> = [("ab12".to_string(), "mangler".to_string())]
            .into_iter()
            .collect();
        let errors = resolve_modules(&mut c.clone(), &mangler, Path::new("/d"));
        assert_eq!(errors[0].path, "pipeline.transform.wasm.module");
        assert!(
            errors[0].message.contains("mangler"),
            "{}",
            errors[0].message
        );
        let errors = resolve_modules(&mut c.clone(), &HashMap::new(), Path::new("/d"));
        assert_eq!(errors[0].path, "pipeline.transform.wasm.module");
        assert!(
            errors[0].message.contains("no module"),
            "{}",
            errors[0].message
        );
    }

    #[test]
    fn relative_dirs_go_inside_the_pipeline_folder() {
        let c = resolve_for_serve(&config("out"), Path::new("/data/pipelines/p1"));
        assert_eq!(c.pipeline.write.file.dir, "/data/pipelines/p1/out");
        let c = resolve_for_serve(&config("/srv/out"), Path::new("/data/pipelines/p1"));
        assert_eq!(c.pipeline.write.file.dir, "/srv/out");
    }

    #[test]
    fn the_s3_spool_lives_in_the_pipeline_folder() {
        let mut c = config("out");
        c.pipeline.write.kind = WriteType::S3;
        let resolved = resolve_for_serve(&c, Path::new("/data/pipelines/p1"));
        assert_eq!(
            resolved.pipeline.write.spool.dir,
            "/data/pipelines/p1/spool"
        );
    }

    #[test]
    fn every_spelling_of_an_analyzer_is_one_lease() {
        let canonical = "ws://127.0.0.1:8082/ws/subscriber/flow";
        for url in [
            "ws://127.0.0.1:8082/ws/subscriber/flow",
            "WS://LOCALHOST:8082/ws/subscriber/flow/",
            "ws://localhost:8082/ws/subscriber/flow?x=1#f",
            "ws://[::ffff:127.0.0.1]:8082/ws/subscriber/flow",
            " ws://user:pw@127.0.0.1:8082/ws/subscriber/flow ",
        ] {
            assert_eq!(canonical_analyzer(url), canonical, "{url}");
        }
        assert_eq!(
            canonical_analyzer("wss://Analyzer.Example/ws/subscriber/flow"),
            "wss://analyzer.example:443/ws/subscriber/flow"
        );
        assert_eq!(
            canonical_analyzer("ws://[fd00::1]/x"),
            "ws://[fd00::1]:80/x"
        );
        assert_ne!(
            canonical_analyzer("ws://127.0.0.1:8082/ws/subscriber/flow"),
            canonical_analyzer("ws://127.0.0.1:8083/ws/subscriber/flow")
        );
        let mut c = config("out");
        c.host_id = Some("  h1 ".into());
        assert_eq!(
            lease_key(&c).unwrap(),
            crate::db::LeaseKey {
                analyzer: "ws://127.0.0.1:1/ws/subscriber/flow".into(),
                host_id: "h1".into(),
            }
        );
    }

    #[test]
    fn empty_host_id_is_never_leased() {
        let mut c = config("out");
        assert_eq!(lease_key(&c), None);
        c.host_id = Some(String::new());
        assert_eq!(lease_key(&c), None);
        c.host_id = Some("h1".into());
        assert_eq!(lease_key(&c).unwrap().host_id, "h1");
    }
}

//! The pipeline file: the upstream flow exporter's YAML format, read unchanged.
//!
//! Parsing is strict (an unknown key is an error naming its path and line) but accepts every key
//! the upstream files carry. Sections left empty in YAML (`classify:` with only comments) read as
//! their defaults, as viper does. Everything is checked once, in [`ExporterConfig::load`]; the
//! stages then build from a config that is known to be good.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer, Serialize};

/// Largest pipeline file accepted, so a stray huge input can't exhaust memory.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;

/// One problem in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// Dotted key path, e.g. `pipeline.store.buffered.max_flows_per_object`.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.path.is_empty(), self.line) {
            (true, Some(line)) => write!(f, "line {line}: {}", self.message),
            (true, None) => f.write_str(&self.message),
            (false, Some(line)) => write!(f, "{} (line {line}): {}", self.path, self.message),
            (false, None) => write!(f, "{}: {}", self.path, self.message),
        }
    }
}

/// Every problem found in a pipeline file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Reads a YAML `null` (an empty section) as the default, as viper does.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Defines a stage's `type` enum: `""` or a missing key selects the default (first) variant.
macro_rules! stage_type {
    ($(#[$meta:meta])* $name:ident { $(#[$dmeta:meta])* $default:ident = $dtext:literal $(, $(#[$vmeta:meta])* $variant:ident = $text:literal)* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        pub enum $name {
            $(#[$dmeta])*
            #[default]
            #[serde(rename = $dtext, alias = "")]
            $default,
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)*
        }
        impl $name {
            /// The name used in the file.
            pub fn as_str(self) -> &'static str {
                match self { $name::$default => $dtext, $($name::$variant => $text,)* }
            }
        }
    };
}

stage_type!(
    /// `pipeline.classify.type`
    ClassifyType {
        /// Tag by source and destination against `cluster_net_masks`.
        Subnet = "subnet",
        /// `subnet` plus the Kubernetes nodes' addresses found in the analyzer's topology.
        SubnetAutodiscovery = "subnet_autodiscovery",
    }
);

stage_type!(
    /// `pipeline.filter.type`
    FilterType {
        /// Drop flows whose tag is in `excluded_tags`.
        Subnet = "subnet",
    }
);

stage_type!(
    /// `pipeline.transform.type`
    TransformType {
        /// The Skydive flow itself.
        None = "none",
        /// IBM Security Advisor records.
        Secadvisor = "secadvisor",
        /// AWS VPC Flow Logs records.
        Awsflowlogs = "awsflowlogs",
        /// IBM VPC Flow Logs records.
        Vpclogs = "vpclogs",
        /// A tenant's WebAssembly guest.
        Wasm = "wasm",
    }
);

stage_type!(
    /// `pipeline.mangle.type`
    MangleType {
        /// Records pass unchanged.
        None = "none",
        /// OK / NODATA / SKIPDATA log status records.
        Logstatus = "logstatus",
        /// Accept/reject from two capture points (`pipeline.action`).
        Action = "action",
        /// A tenant's WebAssembly guest.
        Wasm = "wasm",
    }
);

stage_type!(
    /// `pipeline.storeheader.type`
    StoreHeaderType {
        /// The object is the record list.
        None = "none",
        /// IBM VPC Flow Logs object header.
        Vpclogs = "vpclogs",
    }
);

stage_type!(
    /// `pipeline.encode.type`
    EncodeType {
        /// Go-compatible JSON.
        Json = "json",
        /// A header row and one row per record.
        Csv = "csv",
        /// JSON wrapped in `{"data": [...]}`.
        Secadvisor = "secadvisor",
    }
);

stage_type!(
    /// `pipeline.compress.type`
    CompressType {
        /// Stored as encoded.
        None = "none",
        /// gzip.
        Gzip = "gzip",
    }
);

stage_type!(
    /// `pipeline.store.type`
    StoreType {
        /// Batch records into objects and streams.
        Buffered = "buffered",
        /// One object per tag per message.
        Direct = "direct",
    }
);

stage_type!(
    /// `pipeline.account.type`
    AccountType {
        /// Counters only (metrics and status).
        None = "none",
        /// Counters plus upstream's JSON account file.
        File = "file",
    }
);

stage_type!(
    /// `pipeline.write.type`
    WriteType {
        /// An S3-compatible object store.
        S3 = "s3",
        /// Print each object to standard output.
        Stdout = "stdout",
        /// A folder per bucket under `pipeline.write.file.dir`.
        File = "file",
    }
);

/// The whole pipeline file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterConfig {
    /// Sent as `X-Host-ID`; must be unique among an analyzer's subscribers, or `""`.
    #[serde(default)]
    pub host_id: Option<String>,
    /// `host:port` of the analyzers, for topology (gremlin) queries.
    #[serde(default, deserialize_with = "null_default")]
    pub analyzers: Vec<String>,
    /// Credentials for the analyzer.
    #[serde(default, deserialize_with = "null_default")]
    pub analyzer: AnalyzerSection,
    /// TLS material for the analyzer's REST API.
    #[serde(default, deserialize_with = "null_default")]
    pub tls: TlsSection,
    /// Skydive's logging section; accepted for compatibility, logging is set by `RUST_LOG`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<serde_yaml::Value>,
    /// Skydive's `flow` section (`flow.expire`, `flow.update`); accepted for compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<serde_yaml::Value>,
    /// Skydive's `http` section; accepted for compatibility.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<serde_yaml::Value>,
    /// The stages.
    #[serde(default, deserialize_with = "null_default")]
    pub pipeline: PipelineConfig,
}

/// `analyzer:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyzerSection {
    /// `analyzer.auth`
    #[serde(default, deserialize_with = "null_default")]
    pub auth: AuthSection,
}

/// `analyzer.auth:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `analyzer.auth.cluster`: the credentials sent to the analyzer (WebSocket and REST).
    #[serde(default, deserialize_with = "null_default")]
    pub cluster: Credentials,
}

/// A username and password; an empty username means no authentication.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// User name.
    #[serde(default, deserialize_with = "null_default")]
    pub username: String,
    /// Password.
    #[serde(default, deserialize_with = "null_default")]
    pub password: String,
}

/// `tls:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// Client certificate (PEM file).
    #[serde(default, deserialize_with = "null_default")]
    pub client_cert: String,
    /// Client key (PEM file).
    #[serde(default, deserialize_with = "null_default")]
    pub client_key: String,
    /// CA certificate (PEM file).
    #[serde(default, deserialize_with = "null_default")]
    pub ca_cert: String,
}

/// `pipeline:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Where flows come from.
    #[serde(default, deserialize_with = "null_default")]
    pub subscriber: SubscriberSection,
    /// Tags each flow.
    #[serde(default, deserialize_with = "null_default")]
    pub classify: ClassifySection,
    /// Drops flows by tag.
    #[serde(default, deserialize_with = "null_default")]
    pub filter: FilterSection,
    /// Turns a flow into an output record.
    #[serde(default, deserialize_with = "null_default")]
    pub transform: TransformSection,
    /// Post-processes each tag's batch of records.
    #[serde(default, deserialize_with = "null_default")]
    pub mangle: MangleSection,
    /// Settings of the `action` mangler (upstream keeps them here, not under `mangle`).
    #[serde(default, deserialize_with = "null_default")]
    pub action: ActionSection,
    /// Wraps an object's records.
    #[serde(default, deserialize_with = "null_default")]
    pub storeheader: StoreHeaderSection,
    /// Batches records into objects.
    #[serde(default, deserialize_with = "null_default")]
    pub store: StoreSection,
    /// Serialises an object.
    #[serde(default, deserialize_with = "null_default")]
    pub encode: EncodeSection,
    /// Compresses an object.
    #[serde(default, deserialize_with = "null_default")]
    pub compress: CompressSection,
    /// Counts what was written.
    #[serde(default, deserialize_with = "null_default")]
    pub account: AccountSection,
    /// Delivers objects.
    #[serde(default, deserialize_with = "null_default")]
    pub write: WriteSection,
}

/// `pipeline.subscriber:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberSection {
    /// The analyzer's flow endpoint, e.g. `ws://127.0.0.1:8082/ws/subscriber/flow`.
    #[serde(default, deserialize_with = "null_default")]
    pub url: String,
    /// Receive only this capture's flows (namespace `flow/<capture_id>`).
    #[serde(default, deserialize_with = "null_default")]
    pub capture_id: String,
}

/// `pipeline.classify:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifySection {
    /// Which classifier.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: ClassifyType,
    /// CIDRs inside the cluster (IPv4 or IPv6).
    #[serde(default, deserialize_with = "null_default")]
    pub cluster_net_masks: Vec<String>,
}

/// `pipeline.filter:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSection {
    /// Which filter.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: FilterType,
    /// Tags whose flows are dropped.
    #[serde(default, deserialize_with = "null_default")]
    pub excluded_tags: Vec<String>,
}

/// `pipeline.transform:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformSection {
    /// Which transform.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: TransformType,
    /// `secadvisor` options.
    #[serde(default, deserialize_with = "null_default")]
    pub secadvisor: SecadvisorOptions,
    /// `awsflowlogs` options.
    #[serde(default, deserialize_with = "null_default")]
    pub awsflowlogs: AwsFlowLogsOptions,
    /// `wasm` options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmOptions>,
}

/// `pipeline.transform.secadvisor:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecadvisorOptions {
    /// Don't report a flow the first time it is seen (unless it already ended).
    #[serde(default, deserialize_with = "null_default")]
    pub exclude_started_flows: bool,
    /// `NAME=<gremlin template>` entries added to each record's `Extend`.
    #[serde(default, deserialize_with = "null_default")]
    pub extend: Vec<String>,
}

/// `pipeline.transform.awsflowlogs:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsFlowLogsOptions {
    /// 3 gives version 3 records, anything else version 2.
    #[serde(default, deserialize_with = "null_default")]
    pub version: u32,
    /// The account id written in each record (upstream's constant by default).
    #[serde(default, deserialize_with = "null_default")]
    pub account_id: Option<String>,
    /// Use upstream's misspelled CSV column names (`srcadr`, `pkt-srcadr`).
    #[serde(default, deserialize_with = "null_default")]
    pub upstream_names: bool,
}

/// `pipeline.{transform,mangle}.wasm:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WasmOptions {
    /// A file path (`sluice run`) or module digest (`sluice serve`).
    #[serde(default, deserialize_with = "null_default")]
    pub module: String,
    /// Passed to the guest's `init`.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Fuel per batch (within the server's maximum).
    #[serde(default)]
    pub fuel: Option<u64>,
    /// Wall-clock deadline per batch in milliseconds (within the server's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Memory cap of the guest in bytes (within the server's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Most bytes the guest may return per batch (within the server's maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_bytes: Option<u64>,
}

/// `pipeline.mangle:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MangleSection {
    /// Which mangler.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: MangleType,
    /// `wasm` options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<WasmOptions>,
}

/// `pipeline.action:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSection {
    /// TID of the first capture point.
    #[serde(default, deserialize_with = "null_default")]
    pub tid1: String,
    /// TID of the second capture point.
    #[serde(default, deserialize_with = "null_default")]
    pub tid2: String,
    /// Seconds without confirmation from both sides before a reject (0 means 5).
    #[serde(default, deserialize_with = "null_default")]
    pub reject_timeout: u64,
}

/// `pipeline.storeheader:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreHeaderSection {
    /// Which header.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: StoreHeaderType,
    /// Extra header fields for `vpclogs` (keys are lowercased, as upstream).
    #[serde(default, deserialize_with = "null_default")]
    pub vpclogs: BTreeMap<String, serde_yaml::Value>,
}

/// `pipeline.store:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Which store.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: StoreType,
    /// `buffered` options.
    #[serde(default, deserialize_with = "null_default")]
    pub buffered: BufferedOptions,
}

/// `pipeline.store.buffered:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferedOptions {
    /// First segment of every object key.
    #[serde(default, deserialize_with = "null_default")]
    pub filename_prefix: String,
    /// The bucket.
    #[serde(default, deserialize_with = "null_default")]
    pub dirname: String,
    /// Records per object (required, > 0).
    #[serde(default, deserialize_with = "null_default")]
    pub max_flows_per_object: u64,
    /// Seconds before pending records are flushed (0: every message).
    #[serde(default, deserialize_with = "null_default")]
    pub max_seconds_per_object: u64,
    /// Seconds before a new stream (key folder) starts (0: one stream per object).
    #[serde(default, deserialize_with = "null_default")]
    pub max_seconds_per_stream: u64,
    /// Records kept pending per tag before the oldest are dropped (required, > 0).
    #[serde(default, deserialize_with = "null_default")]
    pub max_flow_array_size: u64,
    /// Object key layout: `upstream` (default, `<prefix>/<tag>/<stream>/<seq>.<ext>`), `aws`,
    /// `ibm`, or a template of `{placeholders}` (see `pipeline::keyformat`). A template that
    /// could give two objects the same key is refused.
    #[serde(default, deserialize_with = "null_default")]
    pub key_format: String,
}

/// `pipeline.encode:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodeSection {
    /// Which encoder.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: EncodeType,
    /// JSON options (also used by `secadvisor`).
    #[serde(default, deserialize_with = "null_default")]
    pub json: JsonOptions,
    /// CSV options.
    #[serde(default, deserialize_with = "null_default")]
    pub csv: CsvOptions,
}

/// `pipeline.encode.json:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonOptions {
    /// Indent with tabs.
    #[serde(default, deserialize_with = "null_default")]
    pub pretty: bool,
}

/// `pipeline.encode.csv:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    /// One character between fields; `,` when absent. `" "` gives AWS flow-log text.
    #[serde(default, deserialize_with = "null_default")]
    pub delimiter: Option<String>,
}

/// `pipeline.compress:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressSection {
    /// Which compressor.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: CompressType,
    /// gzip options.
    #[serde(default, deserialize_with = "null_default")]
    pub gzip: GzipOptions,
}

/// `pipeline.compress.gzip:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GzipOptions {
    /// 0–9, default 6.
    #[serde(default, deserialize_with = "null_default")]
    pub level: Option<u32>,
}

/// `pipeline.account:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountSection {
    /// Which accounter.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: AccountType,
    /// `file` options.
    #[serde(default, deserialize_with = "null_default")]
    pub file: AccountFileOptions,
}

/// `pipeline.account.file:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountFileOptions {
    /// Path of the JSON account record.
    #[serde(default, deserialize_with = "null_default")]
    pub filename: String,
}

/// `pipeline.write:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteSection {
    /// Which writer.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: WriteType,
    /// `s3` options.
    #[serde(default, deserialize_with = "null_default")]
    pub s3: S3Options,
    /// `file` options.
    #[serde(default, deserialize_with = "null_default")]
    pub file: FileOptions,
    /// Where `s3` objects wait for upload (sluice).
    #[serde(default, deserialize_with = "null_default")]
    pub spool: SpoolOptions,
}

/// `pipeline.write.spool:` (sluice): the folder where each `s3` object is kept, fsync'd, until
/// the store has it. When full, the store keeps records pending (then drops with `overflow`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolOptions {
    /// The folder, one per pipeline; empty: `sluice run` picks
    /// `$XDG_STATE_HOME/sluice/spool/<bucket>-<hash of the config path>`.
    #[serde(default, deserialize_with = "null_default")]
    pub dir: String,
    /// Objects held at most (default 10000).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_objects: Option<u64>,
    /// Bytes held at most (default 1 GiB).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_bytes: Option<u64>,
}

/// `pipeline.write.s3:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`.
    #[serde(default, deserialize_with = "null_default")]
    pub endpoint: String,
    /// Region.
    #[serde(default, deserialize_with = "null_default")]
    pub region: String,
    /// HMAC access key.
    #[serde(default, deserialize_with = "null_default")]
    pub access_key: String,
    /// HMAC secret key.
    #[serde(default, deserialize_with = "null_default")]
    pub secret_key: String,
    /// IBM IAM api key (instead of HMAC keys).
    #[serde(default, deserialize_with = "null_default")]
    pub api_key: String,
    /// IBM IAM token endpoint.
    #[serde(default, deserialize_with = "null_default")]
    pub iam_endpoint: String,
}

/// `pipeline.write.file:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOptions {
    /// Root folder; objects go to `<dir>/<bucket>/<key>`.
    #[serde(default, deserialize_with = "null_default")]
    pub dir: String,
}

impl ExporterConfig {
    /// Parses and validates a pipeline file, returning every problem found.
    pub fn load(text: &str) -> Result<Self, ConfigErrors> {
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigErrors(vec![ConfigError {
                path: String::new(),
                line: None,
                message: format!(
                    "file is {} bytes, more than the {MAX_CONFIG_BYTES} accepted",
                    text.len()
                ),
            }]));
        }
        let config = Self::parse(text)?;
        let mut errors = Vec::new();
        config.validate(&mut |path: &str, message: String| {
            errors.push(ConfigError {
                line: yaml_line(text, path),
                path: path.to_string(),
                message,
            })
        });
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn parse(text: &str) -> Result<Self, ConfigErrors> {
        let de = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, Self>(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let line = inner.location().map(|l| l.line());
            let mut message = strip_location(&inner.to_string());
            if let Some(rest) = message.strip_prefix(&format!("{path}: ")) {
                message = rest.to_string();
            }
            ConfigErrors(vec![ConfigError {
                path: if path == "." { String::new() } else { path },
                line,
                message: explain_unknown_type(&message),
            }])
        })
    }

    fn validate(&self, report: &mut dyn FnMut(&str, String)) {
        let p = &self.pipeline;
        for mask in &p.classify.cluster_net_masks {
            if let Err(e) = Cidr::parse(mask) {
                report(
                    "pipeline.classify.cluster_net_masks",
                    format!("cannot parse netmask '{mask}': {e}"),
                );
            }
        }
        if p.subscriber.url.is_empty() {
            report(
                "pipeline.subscriber.url",
                "is required (e.g. ws://127.0.0.1:8082/ws/subscriber/flow)".into(),
            );
        } else if !(p.subscriber.url.starts_with("ws://") || p.subscriber.url.starts_with("wss://"))
        {
            report(
                "pipeline.subscriber.url",
                format!("'{}' must start with ws:// or wss://", p.subscriber.url),
            );
        }
        if p.store.kind == StoreType::Buffered {
            let b = &p.store.buffered;
            if b.max_flows_per_object == 0 {
                report(
                    "pipeline.store.buffered.max_flows_per_object",
                    "must be set and greater than 0 (upstream wrote empty objects forever)".into(),
                );
            }
            if b.max_flow_array_size == 0 {
                report(
                    "pipeline.store.buffered.max_flow_array_size",
                    "must be set and greater than 0 (upstream discarded every pending flow)".into(),
                );
            } else if b.max_flow_array_size < b.max_flows_per_object {
                report(
                    "pipeline.store.buffered.max_flow_array_size",
                    format!(
                        "{} is smaller than max_flows_per_object ({}): full objects could never form",
                        b.max_flow_array_size, b.max_flows_per_object
                    ),
                );
            }
            if p.write.kind != WriteType::Stdout && b.dirname.is_empty() {
                report(
                    "pipeline.store.buffered.dirname",
                    "is required: it names the bucket".into(),
                );
            }
        }
        let fields = crate::pipeline::storeheader::vpclogs_fields(&p.storeheader);
        let fields: Vec<&str> = fields.keys().map(String::as_str).collect();
        if let Err(e) =
            crate::pipeline::keyformat::KeyTemplate::parse(&p.store.buffered.key_format, &fields)
        {
            report("pipeline.store.buffered.key_format", e.to_string());
        }
        if let Some(level) = p.compress.gzip.level
            && level > 9
        {
            report(
                "pipeline.compress.gzip.level",
                format!("{level} is out of range 0-9"),
            );
        }
        if let Some(d) = &p.encode.csv.delimiter
            && (d.chars().count() != 1 || matches!(d.as_str(), "\"" | "\n" | "\r"))
        {
            report(
                "pipeline.encode.csv.delimiter",
                format!("'{d}' must be one character other than a quote or a line break"),
            );
        }
        if p.encode.kind == EncodeType::Csv && p.storeheader.kind != StoreHeaderType::None {
            report(
                "pipeline.encode.type",
                format!(
                    "csv can't encode the '{}' store header (a map, not a list of records)",
                    p.storeheader.kind.as_str()
                ),
            );
        }
        if p.encode.kind == EncodeType::Secadvisor && p.storeheader.kind != StoreHeaderType::None {
            report(
                "pipeline.encode.type",
                format!(
                    "secadvisor wraps a list of records and can't encode the '{}' store header",
                    p.storeheader.kind.as_str()
                ),
            );
        }
        if p.write.kind == WriteType::File && p.write.file.dir.is_empty() {
            report(
                "pipeline.write.file.dir",
                "is required for the file writer".into(),
            );
        }
        if p.write.kind == WriteType::S3 {
            validate_s3(&p.write, report);
        }
        if p.mangle.kind == MangleType::Action {
            if p.action.tid1.is_empty() {
                report(
                    "pipeline.action.tid1",
                    "is required by the action mangler".into(),
                );
            }
            if p.action.tid2.is_empty() {
                report(
                    "pipeline.action.tid2",
                    "is required by the action mangler".into(),
                );
            }
        }
        for (i, entry) in p.transform.secadvisor.extend.iter().enumerate() {
            if let Err(reason) = crate::pipeline::transform::secadvisor::extend::parse_entry(entry)
            {
                report(
                    &format!("pipeline.transform.secadvisor.extend[{i}]"),
                    format!("'{entry}' {reason}"),
                );
            }
        }
        if p.account.kind == AccountType::File && p.account.file.filename.is_empty() {
            report(
                "pipeline.account.file.filename",
                "is required for the file accounter".into(),
            );
        }
        for (section, kind_is_wasm, wasm) in [
            (
                "transform",
                p.transform.kind == TransformType::Wasm,
                &p.transform.wasm,
            ),
            ("mangle", p.mangle.kind == MangleType::Wasm, &p.mangle.wasm),
        ] {
            if kind_is_wasm && wasm.as_ref().is_none_or(|w| w.module.is_empty()) {
                report(
                    &format!("pipeline.{section}.wasm.module"),
                    "is required for a wasm stage".into(),
                );
            }
        }
    }

    /// The configuration as YAML with secrets replaced, for display.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        let hide = |s: &mut String| {
            if !s.is_empty() {
                *s = "<redacted>".into();
            }
        };
        hide(&mut c.analyzer.auth.cluster.password);
        hide(&mut c.pipeline.write.s3.secret_key);
        hide(&mut c.pipeline.write.s3.api_key);
        c
    }
}

/// `pipeline.write.s3` and `pipeline.write.spool`, when the writer is `s3`.
fn validate_s3(w: &WriteSection, report: &mut dyn FnMut(&str, String)) {
    let s3 = &w.s3;
    for (path, url) in [
        ("pipeline.write.s3.endpoint", &s3.endpoint),
        ("pipeline.write.s3.iam_endpoint", &s3.iam_endpoint),
    ] {
        if !(url.is_empty() || url.starts_with("http://") || url.starts_with("https://")) {
            report(path, format!("'{url}' must start with http:// or https://"));
        }
    }
    // Missing keys are not an error (upstream accepted them): the store refuses the uploads,
    // which are reported with the key, bucket and endpoint, and retried.
    for (path, value) in [
        ("pipeline.write.spool.max_objects", w.spool.max_objects),
        ("pipeline.write.spool.max_bytes", w.spool.max_bytes),
    ] {
        if value == Some(0) {
            report(path, "must be greater than 0".into());
        }
    }
}

/// serde_yaml appends " at line X column Y"; we report the line separately.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// serde says "unknown variant `x`, expected one of ..." for a bad `type`; say it in our words.
fn explain_unknown_type(message: &str) -> String {
    match message.strip_prefix("unknown variant ") {
        Some(rest) => format!("unknown type {}", rest.replace("``, ", "")),
        None => message.to_string(),
    }
}

/// Finds the line of a dotted key path in block-style YAML, for errors found after parsing.
/// Returns the deepest key found; a path ending in a list entry (`extend[2]`) points at that
/// entry's `- ` line when the list is block-style, else at the list.
pub fn yaml_line(text: &str, path: &str) -> Option<usize> {
    let (key_line, key_indent) = yaml_key_line(text, path)?;
    let entry = path
        .rsplit('.')
        .next()
        .and_then(|last| last.split_once('['))
        .and_then(|(_, index)| index.strip_suffix(']')?.parse::<usize>().ok());
    let Some(entry) = entry else {
        return Some(key_line);
    };
    let mut entry_indent = None;
    let mut seen = 0;
    for (n, indent, trimmed) in content_lines(text).skip_while(|&(n, ..)| n <= key_line) {
        let is_entry = trimmed.starts_with('-');
        if indent < key_indent || (indent == key_indent && !is_entry) {
            break;
        }
        if is_entry && *entry_indent.get_or_insert(indent) == indent {
            if seen == entry {
                return Some(n);
            }
            seen += 1;
        }
    }
    Some(key_line)
}

/// The lines that hold YAML content (neither blank nor a comment): number (from 1), indent
/// and the text after the indent.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, usize, &str)> {
    text.lines().enumerate().filter_map(|(n, line)| {
        let trimmed = line.trim_start();
        (!trimmed.is_empty() && !trimmed.starts_with('#'))
            .then(|| (n + 1, line.len() - trimmed.len(), trimmed))
    })
}

/// The line and indent of the deepest key of `path` found (list indices ignored).
fn yaml_key_line(text: &str, path: &str) -> Option<(usize, usize)> {
    let keys: Vec<&str> = path
        .split('.')
        .map(|k| k.split('[').next().unwrap_or(k))
        .collect();
    let mut found: Option<(usize, usize)> = None;
    let mut key_index = 0;
    for (n, indent, trimmed) in content_lines(text) {
        if let Some((_, parent_indent)) = found
            && indent <= parent_indent
        {
            break; // left the block of the last key found
        }
        let Some(key) = trimmed.split(':').next() else {
            continue;
        };
        if key.trim().trim_matches(['"', '\'']) == keys[key_index] && trimmed.contains(':') {
            found = Some((n, indent));
            key_index += 1;
            if key_index == keys.len() {
                break;
            }
        }
    }
    found
}

/// An IPv4 or IPv6 network, parsed as Go's `net.ParseCIDR` does (host bits masked off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (addr, prefix) = text
            .split_once('/')
            .ok_or_else(|| "missing /prefix".to_string())?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid address '{addr}'"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("invalid prefix length '{prefix}' (0-{max})"))?;
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask32(prefix)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask128(prefix)).into()),
        };
        Ok(Cidr { network, prefix })
    }

    /// Whether the network holds the address; IPv4 never matches IPv6 networks and vice versa.
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, addr) {
            (IpAddr::V4(n), IpAddr::V4(a)) => u32::from(a) & mask32(self.prefix) == u32::from(n),
            (IpAddr::V6(n), IpAddr::V6(a)) => u128::from(a) & mask128(self.prefix) == u128::from(n),
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn mask32(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

fn mask128(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:8082/ws/subscriber/flow\n  store:\n    buffered:\n      dirname: bucket\n      max_flows_per_object: 10\n      max_flow_array_size: 100\n";

    #[test]
    fn empty_sections_read_as_defaults() {
        let text = format!(
            "{MINIMAL}  classify:\n  compress:\n  transform:\n    secadvisor:\nanalyzer:\n  auth:\n    cluster:\n      username:\n      password:\n"
        );
        let c = ExporterConfig::load(&text).unwrap();
        assert_eq!(c.pipeline.classify.kind, ClassifyType::Subnet);
        assert_eq!(c.pipeline.compress.kind, CompressType::None);
        assert_eq!(c.pipeline.write.kind, WriteType::S3);
        assert_eq!(c.analyzer.auth.cluster.username, "");
    }

    #[test]
    fn unknown_key_names_path_and_line() {
        let text = format!("{MINIMAL}  encode:\n    type: json\n    jsn:\n      pretty: true\n");
        let err = ExporterConfig::load(&text).unwrap_err();
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].path, "pipeline.encode.jsn");
        assert_eq!(err.0[0].line, Some(11));
        assert!(err.0[0].message.contains("unknown field `jsn`"), "{}", err);
    }

    #[test]
    fn unknown_type_lists_the_valid_ones() {
        let text = format!("{MINIMAL}  compress:\n    type: zstd\n");
        let err = ExporterConfig::load(&text).unwrap_err().to_string();
        assert!(err.contains("pipeline.compress.type (line 10)"), "{err}");
        assert!(
            err.contains("unknown type `zstd`, expected one of `none`, `gzip`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_is_an_error_with_line() {
        let text = MINIMAL.replace("max_flows_per_object: 10", "max_flows_per_object: many");
        let err = ExporterConfig::load(&text).unwrap_err();
        assert_eq!(
            err.0[0].path,
            "pipeline.store.buffered.max_flows_per_object"
        );
        assert_eq!(err.0[0].line, Some(7));
    }

    #[test]
    fn semantic_errors_are_all_reported_with_lines() {
        let text = MINIMAL.replace("max_flows_per_object: 10", "max_flows_per_object: 0")
            + "  classify:\n    cluster_net_masks:\n      - 10.0.0.0/33\n      - not-a-cidr\n";
        let err = ExporterConfig::load(&text).unwrap_err();
        let msgs: Vec<String> = err.0.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("pipeline.classify.cluster_net_masks (line 10): cannot parse netmask '10.0.0.0/33': "), "{msgs:?}");
        assert!(
            msgs[1].contains("cannot parse netmask 'not-a-cidr': "),
            "{msgs:?}"
        );
        assert!(
            msgs[2]
                .starts_with("pipeline.store.buffered.max_flows_per_object (line 7): must be set"),
            "{msgs:?}"
        );
    }

    #[test]
    fn extend_entry_without_equals_is_a_config_error() {
        let text = format!(
            "{MINIMAL}  transform:\n    type: secadvisor\n    secadvisor:\n      extend:\n        - AA_Name\n"
        );
        let err = ExporterConfig::load(&text).unwrap_err().to_string();
        assert!(
            err.contains("pipeline.transform.secadvisor.extend[0] (line 13)"),
            "{err}"
        );
    }

    #[test]
    fn list_entry_errors_point_at_the_entry() {
        let text = "a:\n  b:\n    - x\n    # note\n    - y:\n        - z\n    - w\n  c:\n  - p\n  - q\n  d: [1, 2]\n";
        assert_eq!(yaml_line(text, "a.b[0]"), Some(3));
        assert_eq!(
            yaml_line(text, "a.b[2]"),
            Some(7),
            "nested lists don't count"
        );
        assert_eq!(yaml_line(text, "a.b[3]"), Some(2), "past the end: the list");
        assert_eq!(
            yaml_line(text, "a.c[1]"),
            Some(10),
            "entries at the key's indent"
        );
        assert_eq!(yaml_line(text, "a.d[1]"), Some(11), "flow style: the list");
        assert_eq!(yaml_line(text, "a.b"), Some(2));
    }

    #[test]
    fn extend_template_errors_are_config_errors() {
        let text = format!(
            "{MINIMAL}  transform:\n    type: secadvisor\n    secadvisor:\n      extend:\n        - OK=G.V().Has('IP', '{{{{.Network.A}}}}')\n        - BAD=G.V().Has('IP', '{{{{if .X}}}}')\n        - OPEN=G.V({{{{.Network.A\n"
        );
        let err = ExporterConfig::load(&text).unwrap_err().to_string();
        assert!(!err.contains("extend[0]"), "{err}");
        assert!(
            err.contains("pipeline.transform.secadvisor.extend[1] (line 14)")
                && err.contains("unsupported action"),
            "{err}"
        );
        assert!(
            err.contains("pipeline.transform.secadvisor.extend[2] (line 15)")
                && err.contains("unclosed action"),
            "{err}"
        );
    }

    #[test]
    fn cidr_masks_host_bits_and_keeps_families_apart() {
        let c = Cidr::parse("10.1.2.3/8").unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains("10.200.0.1".parse().unwrap()));
        assert!(!c.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("fd00::/8")
                .unwrap()
                .contains("fd12::1".parse().unwrap())
        );
        assert!(
            Cidr::parse("::/0")
                .unwrap()
                .contains("2001:db8::1".parse().unwrap())
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("10.0.0.0").is_err());
    }

    #[test]
    fn s3_endpoint_and_spool_limits_are_checked() {
        let text = format!(
            "{MINIMAL}  write:\n    type: s3\n    s3:\n      endpoint: 127.0.0.1:9000\n    spool:\n      dir: /var/spool/x\n      max_bytes: 0\n"
        );
        let err = ExporterConfig::load(&text).unwrap_err().to_string();
        assert!(
            err.contains("pipeline.write.s3.endpoint (line 12): '127.0.0.1:9000' must start with http:// or https://"),
            "{err}"
        );
        assert!(
            err.contains("pipeline.write.spool.max_bytes (line 15): must be greater than 0"),
            "{err}"
        );
        let ok = text
            .replace("127.0.0.1:9000", "http://127.0.0.1:9000")
            .replace("max_bytes: 0", "max_objects: 5");
        let c = ExporterConfig::load(&ok).unwrap();
        assert_eq!(c.pipeline.write.spool.dir, "/var/spool/x");
        assert_eq!(c.pipeline.write.spool.max_objects, Some(5));
    }

    #[test]
    fn key_format_that_may_collide_is_a_config_error_with_line() {
        let text = MINIMAL.replace(
            "      dirname: bucket\n",
            "      dirname: bucket\n      key_format: \"{prefix}/{tag}/{yyyy}{mm}{dd}.gz\"\n",
        );
        let err = ExporterConfig::load(&text).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert_eq!(err.0[0].path, "pipeline.store.buffered.key_format");
        assert_eq!(err.0[0].line, Some(7));
        assert!(err.0[0].message.contains("same key"), "{err}");
        let text = MINIMAL.replace(
            "      dirname: bucket\n",
            "      dirname: bucket\n      key_format: \"{tag}/{stream}/{seq}/{vpc_crn}\"\n",
        );
        let err = ExporterConfig::load(&text).unwrap_err().to_string();
        assert!(err.contains("unknown placeholder {vpc_crn}"), "{err}");
        let ok = format!(
            "{text}  storeheader:\n    type: vpclogs\n    vpclogs:\n      vpc_crn: crn:x\n"
        );
        ExporterConfig::load(&ok).unwrap();
        for preset in ["upstream", "aws", "ibm"] {
            let text = MINIMAL.replace(
                "      dirname: bucket\n",
                &format!("      dirname: bucket\n      key_format: {preset}\n"),
            );
            ExporterConfig::load(&text).unwrap();
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let text = format!("{MINIMAL}  write:\n    s3:\n      secret_key: hunter2\n");
        let c = ExporterConfig::load(&text).unwrap().redacted();
        assert_eq!(c.pipeline.write.s3.secret_key, "<redacted>");
    }
}

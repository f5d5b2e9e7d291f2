//! The pipeline file: the upstream flow exporter's YAML format, read unchanged.
//!
//! Parsing is strict (an unknown key is an error naming its path and line) but accepts every key
//! the upstream files carry. Sections left empty in YAML (`classify:` with only comments) read as
//! their defaults, as viper does. Everything is checked once, in [`ExporterConfig::load`]; the
//! stages then build from a config that is known to be good.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

use serde::{Deserialize, Deserializer, Serialize};

pub mod env;
mod lines;

use lines::LineIndex;

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

/// A value of the file parsed where it is read, once: its text (what is written back) and
/// what it parsed to, or why it didn't. Validation reports the failures, every one with its key
/// and line; the stages use the parsed values.
#[derive(Debug, Clone)]
pub struct Parsed<T> {
    text: String,
    value: Result<T, String>,
}

/// What [`Parsed`] parses a text into.
pub trait ParseText: Sized {
    /// The value of `text`, or why it isn't one.
    fn parse_text(text: &str) -> Result<Self, String>;
}

impl<T: ParseText> Parsed<T> {
    /// Parses `text`.
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let value = T::parse_text(&text);
        Parsed { text, value }
    }
}

impl<T> Parsed<T> {
    /// The text as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The value; `None` only in a file that failed validation.
    pub fn get(&self) -> Option<&T> {
        self.value.as_ref().ok()
    }

    fn error(&self) -> Option<&str> {
        self.value.as_ref().err().map(String::as_str)
    }
}

impl<'de, T: ParseText> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Parsed::new(String::deserialize(d)?))
    }
}

impl<T> Serialize for Parsed<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A network of `cluster_net_masks`, read as Go's `net.ParseCIDR` does: host bits are allowed
/// and masked off (`10.1.2.3/8` is 10.0.0.0/8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetMask(pub IpNet);

impl ParseText for NetMask {
    fn parse_text(text: &str) -> Result<Self, String> {
        text.parse::<IpNet>()
            .map(|net| NetMask(net.trunc()))
            .map_err(|_| {
                format!("cannot parse netmask '{text}': not an address/prefix (e.g. 10.0.0.0/8)")
            })
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

/// Defines a stage's `type` enum: `""`, `null` or a missing key selects the default (first)
/// variant; an unknown name is an error that lists the known ones.
macro_rules! stage_type {
    ($(#[$meta:meta])* $name:ident { $(#[$dmeta:meta])* $default:ident = $dtext:literal $(, $(#[$vmeta:meta])* $variant:ident = $text:literal)* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
        pub enum $name {
            $(#[$dmeta])*
            #[default]
            #[serde(rename = $dtext)]
            $default,
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)*
        }
        impl $name {
            /// The name used in the file.
            pub fn as_str(self) -> &'static str {
                match self { $name::$default => $dtext, $($name::$variant => $text,)* }
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = Option::<String>::deserialize(d)?.unwrap_or_default();
                match text.as_str() {
                    "" | $dtext => Ok($name::$default),
                    $($text => Ok($name::$variant),)*
                    other => Err(serde::de::Error::custom(format!(
                        concat!("unknown type `{}`, expected one of `", $dtext, "`" $(, ", `", $text, "`")*),
                        other
                    ))),
                }
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
        /// OCSF Network Activity records (docs/ocsf.md).
        Ocsf = "ocsf",
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
        /// Apache Parquet, compressed inside (docs/parquet.md).
        Parquet = "parquet",
    }
);

stage_type!(
    /// `pipeline.encode.parquet.compression`: the codec of every column chunk.
    ParquetCompression {
        /// Snappy: fast, what most writers default to.
        Snappy = "snappy",
        /// Zstandard (level 1).
        Zstd = "zstd",
        /// gzip (level 6).
        Gzip = "gzip",
        /// Uncompressed.
        None = "none",
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
        /// Prometheus gauges per connection and per interface, no objects (docs/stages.md §9.3).
        PromSkyCon = "prom_sky_con",
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
    pub cluster_net_masks: Vec<Parsed<NetMask>>,
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
    pub extend: Vec<Parsed<crate::pipeline::transform::secadvisor::extend::ExtendEntry>>,
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
    /// `prom_sky_con` options.
    #[serde(default, deserialize_with = "null_default")]
    pub prom_sky_con: PromSkyConOptions,
}

/// `pipeline.store.prom_sky_con:` (upstream's keys).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromSkyConOptions {
    /// `sluice run` serves `/metrics` on this port (all interfaces, as upstream); required
    /// there. `sluice serve` opens no port: the tenant scrapes `/v1/pipelines/{id}/metrics`.
    #[serde(default, deserialize_with = "null_default")]
    pub port: Option<Port>,
    /// Seconds without a flow before a connection's series go (0 or absent: 60; at most
    /// [`PromSkyConOptions::MAX_CONNECTION_TIMEOUT_S`]).
    #[serde(default, deserialize_with = "null_default")]
    pub connection_timeout: u64,
    /// In upstream's shipped file, never read by its code: accepted and ignored.
    #[serde(default, deserialize_with = "null_default")]
    pub monitoring_port: Option<Port>,
}

impl PromSkyConOptions {
    /// A day: series of connections gone for longer are noise, and the clock arithmetic stays
    /// far from overflow.
    pub const MAX_CONNECTION_TIMEOUT_S: u64 = 86_400;
}

/// A TCP port, written as a number or a string of digits (viper read either); 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port(pub std::num::NonZeroU16);

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Number(u64),
            String(String),
        }
        let number = match Text::deserialize(d)? {
            Text::Number(n) => Some(n),
            Text::String(s) => s.trim().parse::<u64>().ok(),
        };
        number
            .and_then(|n| u16::try_from(n).ok())
            .and_then(std::num::NonZeroU16::new)
            .map(Port)
            .ok_or_else(|| serde::de::Error::custom("must be a port number from 1 to 65535"))
    }
}

impl Serialize for Port {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0.get())
    }
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
    /// With `key_format: aws` or `aws-hive`, an hour folder after the day (AWS's
    /// `PerHourPartition`).
    #[serde(default, deserialize_with = "null_default")]
    pub key_format_per_hour: bool,
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
    /// Parquet options.
    #[serde(default, deserialize_with = "null_default")]
    pub parquet: ParquetOptions,
}

/// `pipeline.encode.parquet:`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParquetOptions {
    /// The codec inside the file (snappy when absent).
    #[serde(default, deserialize_with = "null_default")]
    pub compression: ParquetCompression,
    /// Records per row group, at most [`RowGroupRows::MAX`] (default
    /// [`RowGroupRows::DEFAULT`]): a row group is built in memory before it is written.
    #[serde(default, deserialize_with = "null_default")]
    pub row_group_rows: Option<RowGroupRows>,
}

/// `pipeline.encode.parquet.row_group_rows`: 1 to [`RowGroupRows::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowGroupRows(std::num::NonZeroUsize);

impl RowGroupRows {
    /// The bound on a row group held in memory (the default `max_flows_per_object` ceiling of
    /// `sluice serve`).
    pub const MAX: usize = 100_000;
    /// When the key is absent.
    pub const DEFAULT: usize = 10_000;

    /// The number of rows.
    pub fn get(self) -> usize {
        self.0.get()
    }

    /// `rows`, if in range.
    pub fn new(rows: usize) -> Option<Self> {
        std::num::NonZeroUsize::new(rows)
            .filter(|n| n.get() <= Self::MAX)
            .map(RowGroupRows)
    }
}

impl Default for RowGroupRows {
    fn default() -> Self {
        RowGroupRows(std::num::NonZeroUsize::MIN.saturating_add(Self::DEFAULT - 1))
    }
}

impl<'de> Deserialize<'de> for RowGroupRows {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let rows = u64::deserialize(d)?;
        usize::try_from(rows)
            .ok()
            .and_then(RowGroupRows::new)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{rows} is out of range 1-{}: a row group is held in memory until written",
                    RowGroupRows::MAX
                ))
            })
    }
}

impl Serialize for RowGroupRows {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get() as u64)
    }
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
        Self::load_with(text, Check::Common, &env::Overrides::default())
    }

    /// What `sluice run` and `sluice check` load: [`ExporterConfig::load`] with the checks only
    /// a process of its own needs (the prom_sky_con store's port), and the `SKYDIVE_*` variables of `vars` applied over the
    /// file, as `sluice run` and `sluice check` do (config/env.rs). An error in a value set by
    /// a variable names the variable instead of a line.
    pub fn load_with_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(Self, env::Overrides), ConfigErrors> {
        let overrides = env::Overrides::from_vars(vars);
        let config = Self::load_with(text, Check::Run, &overrides)?;
        Ok((config, overrides))
    }

    /// [`ExporterConfig::load`] for a tenant's definition in `sluice serve`: the file must also
    /// keep to `rules` (no host path, file or server output; the server's ceilings). The
    /// environment is not applied: the definition is the tenant's text alone.
    pub fn load_for_serve(text: &str, rules: &ServeRules) -> Result<Self, ConfigErrors> {
        Self::load_with(text, Check::Serve(rules), &env::Overrides::default())
    }

    fn load_with(
        text: &str,
        check: Check<'_>,
        overrides: &env::Overrides,
    ) -> Result<Self, ConfigErrors> {
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
        check_expansion(text)?;
        let config = overrides.apply(&Self::parse(text)?).map_err(ConfigErrors)?;
        let mut errors = Vec::new();
        let index = std::cell::OnceCell::new();
        let mut report = |path: &str, message: String| {
            errors.push(match overrides.setter_of(path) {
                Some(o) => ConfigError {
                    line: None,
                    path: path.to_string(),
                    message: format!("{message} (set by {})", o.variable),
                },
                None => ConfigError {
                    line: index.get_or_init(|| LineIndex::new(text)).line_of(path),
                    path: path.to_string(),
                    message,
                },
            })
        };
        config.validate(&mut report);
        match check {
            Check::Common => {}
            Check::Run => config.validate_for_run(&mut report),
            Check::Serve(rules) => config.validate_for_serve(rules, &mut report),
        }
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
            let message = bare_message(&inner.to_string(), &path);
            ConfigErrors(vec![ConfigError {
                path: if path == "." { String::new() } else { path },
                line,
                message,
            }])
        })
    }

    fn validate(&self, report: &mut dyn FnMut(&str, String)) {
        let p = &self.pipeline;
        for (i, mask) in p.classify.cluster_net_masks.iter().enumerate() {
            if let Some(e) = mask.error() {
                report(
                    &format!("pipeline.classify.cluster_net_masks[{i}]"),
                    e.to_string(),
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
        if let Err(e) = crate::pipeline::keyformat::KeyTemplate::parse(
            &p.store.buffered.key_format,
            p.store.buffered.key_format_per_hour,
            &fields,
        ) {
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
        if p.encode.kind == EncodeType::Parquet {
            if p.compress.kind != CompressType::None {
                report(
                    "pipeline.compress.type",
                    format!(
                        "must be none with the parquet encoder, which compresses inside the file (pipeline.encode.parquet.compression), not '{}'",
                        p.compress.kind.as_str()
                    ),
                );
            }
            if p.storeheader.kind != StoreHeaderType::None {
                report(
                    "pipeline.encode.type",
                    format!(
                        "parquet writes a table of records and can't encode the '{}' store header",
                        p.storeheader.kind.as_str()
                    ),
                );
            }
        }
        if p.store.kind == StoreType::PromSkyCon && p.transform.kind != TransformType::None {
            report(
                "pipeline.transform.type",
                format!(
                    "must be none with the prom_sky_con store, which reads Skydive flows, not '{}' records",
                    p.transform.kind.as_str()
                ),
            );
        }
        if p.store.prom_sky_con.connection_timeout > PromSkyConOptions::MAX_CONNECTION_TIMEOUT_S {
            report(
                "pipeline.store.prom_sky_con.connection_timeout",
                format!(
                    "{} is more than {} seconds",
                    p.store.prom_sky_con.connection_timeout,
                    PromSkyConOptions::MAX_CONNECTION_TIMEOUT_S
                ),
            );
        }
        if p.store.buffered.key_format_per_hour
            && !matches!(p.store.buffered.key_format.as_str(), "aws" | "aws-hive")
        {
            report(
                "pipeline.store.buffered.key_format_per_hour",
                "only applies to key_format aws or aws-hive (a template says {HH} itself)".into(),
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
            if let Some(reason) = entry.error() {
                report(
                    &format!("pipeline.transform.secadvisor.extend[{i}]"),
                    format!("'{}' {reason}", entry.text()),
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

    /// The checks `sluice run` adds: what only a process of its own can do.
    fn validate_for_run(&self, report: &mut dyn FnMut(&str, String)) {
        let store = &self.pipeline.store;
        if store.kind == StoreType::PromSkyCon && store.prom_sky_con.port.is_none() {
            report(
                "pipeline.store.prom_sky_con.port",
                "is required: sluice run serves the gauges on /metrics at this port".into(),
            );
        }
    }

    /// The configuration with secrets replaced, for display.
    pub fn redacted(&self) -> Self {
        let mut c = self.clone();
        for (_, value) in c.secrets_mut() {
            if !value.is_empty() {
                *value = "<redacted>".into();
            }
        }
        c
    }

    /// Every secret value with its key path: what is sealed at rest and redacted on display.
    /// An inline TLS client key is a secret; a path to one (`sluice run`) is not.
    pub fn secrets_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        let mut secrets = vec![
            (
                "analyzer.auth.cluster.password",
                &mut self.analyzer.auth.cluster.password,
            ),
            (
                "pipeline.write.s3.secret_key",
                &mut self.pipeline.write.s3.secret_key,
            ),
            (
                "pipeline.write.s3.api_key",
                &mut self.pipeline.write.s3.api_key,
            ),
        ];
        if crate::tls::is_inline_pem(&self.tls.client_key) {
            secrets.push(("tls.client_key", &mut self.tls.client_key));
        }
        secrets
    }

    /// The checks of [`ExporterConfig::load_for_serve`] on a config already parsed (a stored
    /// definition, whose lines are not the tenant's).
    pub fn check_for_serve(&self, rules: &ServeRules) -> Vec<ConfigError> {
        let mut errors = Vec::new();
        self.validate_for_serve(rules, &mut |path: &str, message: String| {
            errors.push(ConfigError {
                path: path.to_string(),
                line: None,
                message,
            })
        });
        errors
    }

    /// The checks `sluice serve` adds for a tenant's definition (see [`ServeRules`]).
    fn validate_for_serve(&self, rules: &ServeRules, report: &mut dyn FnMut(&str, String)) {
        let p = &self.pipeline;
        let c = &rules.ceilings;
        if p.write.kind == WriteType::Stdout {
            report(
                "pipeline.write.type",
                "stdout is the server's own output: sluice serve takes `file` or `s3`".into(),
            );
        }
        // Names that become parts of object paths.
        if let Err(why) = check_segment(&p.store.buffered.dirname) {
            report("pipeline.store.buffered.dirname", why);
        }
        for (key, value) in [
            (
                "pipeline.store.buffered.filename_prefix",
                &p.store.buffered.filename_prefix,
            ),
            (
                "pipeline.store.buffered.key_format",
                &p.store.buffered.key_format,
            ),
        ] {
            if let Err(why) = check_key_text(value) {
                report(key, why);
            }
        }
        // Local paths: inside the pipeline's folder.
        for (key, value, used) in [
            (
                "pipeline.write.file.dir",
                &p.write.file.dir,
                p.write.kind == WriteType::File,
            ),
            (
                "pipeline.write.spool.dir",
                &p.write.spool.dir,
                p.write.kind == WriteType::S3,
            ),
            (
                "pipeline.account.file.filename",
                &p.account.file.filename,
                p.account.kind == AccountType::File,
            ),
        ] {
            if !used {
                continue;
            }
            let path = std::path::Path::new(value.as_str());
            if path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            {
                report(
                    key,
                    format!("'{value}' must not contain '..' in sluice serve"),
                );
            } else if path.is_absolute() && !rules.allow_absolute_paths {
                report(
                    key,
                    format!(
                        "'{value}' is absolute: sluice serve takes a path relative to the pipeline's data folder"
                    ),
                );
            } else if value.chars().any(char::is_control) {
                report(key, "must not contain control characters".into());
            }
        }
        for (key, value) in [
            ("tls.ca_cert", &self.tls.ca_cert),
            ("tls.client_cert", &self.tls.client_cert),
            ("tls.client_key", &self.tls.client_key),
        ] {
            if !value.is_empty() && !crate::tls::is_inline_pem(value) {
                report(
                    key,
                    "sluice serve takes the PEM text itself (`-----BEGIN ...`), not a path on the server".into(),
                );
            } else if value.len() > crate::tls::MAX_PEM_BYTES {
                report(
                    key,
                    format!("is larger than {} bytes", crate::tls::MAX_PEM_BYTES),
                );
            }
        }
        let mut copy = self.clone();
        for (key, value) in copy.secrets_mut() {
            if crate::secrets::is_sealed(value) {
                report(
                    key,
                    "a sealed value can't be given: give the secret itself".into(),
                );
            }
        }
        for (key, value) in self.destinations() {
            if let Err(why) = destination(&value).and_then(|d| d.check_literal(&rules.egress)) {
                report(&key, why);
            }
        }
        let b = &p.store.buffered;
        for (key, value, max) in [
            (
                "pipeline.store.buffered.max_flows_per_object",
                b.max_flows_per_object,
                c.max_flows_per_object,
            ),
            (
                "pipeline.store.buffered.max_flow_array_size",
                b.max_flow_array_size,
                c.max_flow_array_size,
            ),
            (
                "pipeline.store.buffered.max_seconds_per_object",
                b.max_seconds_per_object,
                c.max_seconds_per_object,
            ),
            (
                "pipeline.store.buffered.max_seconds_per_stream",
                b.max_seconds_per_stream,
                c.max_seconds_per_stream,
            ),
            (
                "pipeline.write.spool.max_objects",
                p.write.spool.max_objects.unwrap_or(0),
                c.max_spool_objects,
            ),
            (
                "pipeline.write.spool.max_bytes",
                p.write.spool.max_bytes.unwrap_or(0),
                c.max_spool_bytes,
            ),
            (
                "pipeline.action.reject_timeout",
                p.action.reject_timeout,
                c.max_reject_timeout_secs,
            ),
            // A row group is held in memory: no larger than the largest object.
            (
                "pipeline.encode.parquet.row_group_rows",
                p.encode
                    .parquet
                    .row_group_rows
                    .map_or(0, |r| r.get() as u64),
                c.max_flows_per_object,
            ),
        ] {
            if value > max {
                report(
                    key,
                    format!("{value} is above the server's maximum of {max}"),
                );
            }
        }
        for (key, len) in [
            ("analyzers", self.analyzers.len()),
            (
                "pipeline.classify.cluster_net_masks",
                p.classify.cluster_net_masks.len(),
            ),
            (
                "pipeline.filter.excluded_tags",
                p.filter.excluded_tags.len(),
            ),
            (
                "pipeline.transform.secadvisor.extend",
                p.transform.secadvisor.extend.len(),
            ),
            ("pipeline.storeheader.vpclogs", p.storeheader.vpclogs.len()),
        ] {
            if len > c.max_list_entries {
                report(
                    key,
                    format!(
                        "{len} entries are more than the server's maximum of {}",
                        c.max_list_entries
                    ),
                );
            }
        }
        for (section, wasm) in [("transform", &p.transform.wasm), ("mangle", &p.mangle.wasm)] {
            let Some(wasm) = wasm else { continue };
            for (name, value, max) in [
                ("fuel", wasm.fuel, c.wasm_fuel),
                ("deadline_ms", wasm.deadline_ms, c.wasm_deadline_ms),
                ("memory_bytes", wasm.memory_bytes, c.wasm_memory_bytes),
                ("output_bytes", wasm.output_bytes, c.wasm_output_bytes),
            ] {
                if let Some(value) = value
                    && value > max
                {
                    report(
                        &format!("pipeline.{section}.wasm.{name}"),
                        format!("{value} is above the server's maximum of {max}"),
                    );
                }
            }
        }
    }

    /// Every network destination the file names, with its key: the analyzer's flow endpoint,
    /// the topology analyzers (`host:port`, reached over http or https), the S3 and IAM
    /// endpoints. Empty values are left out.
    pub fn destinations(&self) -> Vec<(String, String)> {
        let p = &self.pipeline;
        let scheme = if crate::tls::is_set(&self.tls) {
            "https"
        } else {
            "http"
        };
        let mut out = vec![(
            "pipeline.subscriber.url".to_string(),
            p.subscriber.url.clone(),
        )];
        for (i, analyzer) in self.analyzers.iter().enumerate() {
            out.push((format!("analyzers[{i}]"), format!("{scheme}://{analyzer}")));
        }
        if p.write.kind == WriteType::S3 {
            out.push((
                "pipeline.write.s3.endpoint".into(),
                p.write.s3.endpoint.clone(),
            ));
            if !p.write.s3.api_key.is_empty() {
                out.push((
                    "pipeline.write.s3.iam_endpoint".into(),
                    p.write.s3.iam_endpoint.clone(),
                ));
            }
        }
        out.retain(|(_, url)| !url.is_empty());
        out
    }
}

/// Which checks a load makes besides the common ones.
#[derive(Debug, Clone, Copy)]
enum Check<'a> {
    /// Only the common ones (a definition `sluice serve` stored, tests).
    Common,
    /// `sluice run`'s and `sluice check`'s.
    Run,
    /// A tenant's definition in `sluice serve`.
    Serve(&'a ServeRules),
}

/// The checks and ceilings `sluice serve` applies to a tenant's definition on top of
/// [`ExporterConfig::load`]'s.
#[derive(Debug, Clone)]
pub struct ServeRules {
    /// The server's maximum for every size, count and duration a pipeline sets.
    pub ceilings: Ceilings,
    /// Where pipelines may connect.
    pub egress: crate::egress::EgressPolicy,
    /// Whether `write.file.dir`, `write.spool.dir` and `account.file.filename` may be absolute.
    pub allow_absolute_paths: bool,
}

/// The server's maximum for each size, count and duration a pipeline sets (`limits.*` of the
/// server config). The defaults suit a 2-core, 24 GiB machine and admit the upstream files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    /// `store.buffered.max_flows_per_object`.
    pub max_flows_per_object: u64,
    /// `store.buffered.max_flow_array_size`: records held per tag (their memory).
    pub max_flow_array_size: u64,
    /// `store.buffered.max_seconds_per_object`.
    pub max_seconds_per_object: u64,
    /// `store.buffered.max_seconds_per_stream`.
    pub max_seconds_per_stream: u64,
    /// `write.spool.max_objects`.
    pub max_spool_objects: u64,
    /// `write.spool.max_bytes`.
    pub max_spool_bytes: u64,
    /// `action.reject_timeout` (seconds).
    pub max_reject_timeout_secs: u64,
    /// Entries of each list (`analyzers`, `cluster_net_masks`, `excluded_tags`, `extend`,
    /// `storeheader.vpclogs`).
    pub max_list_entries: usize,
    /// `{transform,mangle}.wasm.fuel`.
    pub wasm_fuel: u64,
    /// `{transform,mangle}.wasm.deadline_ms`.
    pub wasm_deadline_ms: u64,
    /// `{transform,mangle}.wasm.memory_bytes`.
    pub wasm_memory_bytes: u64,
    /// `{transform,mangle}.wasm.output_bytes`.
    pub wasm_output_bytes: u64,
}

impl Default for Ceilings {
    fn default() -> Self {
        Ceilings {
            max_flows_per_object: 100_000,
            max_flow_array_size: 100_000,
            max_seconds_per_object: 3_600,
            max_seconds_per_stream: 7 * 86_400,
            max_spool_objects: 10_000,
            max_spool_bytes: 1 << 30,
            max_reject_timeout_secs: 3_600,
            max_list_entries: 1_024,
            wasm_fuel: 1_000_000_000,
            wasm_deadline_ms: 1_000,
            wasm_memory_bytes: 64 << 20,
            wasm_output_bytes: 16 << 20,
        }
    }
}

/// A name that becomes one segment of a path (the bucket): no `/` or `\`, not `.` or `..`,
/// no control character.
pub fn check_segment(text: &str) -> Result<(), String> {
    if text.contains(['/', '\\']) {
        return Err(format!("'{text}' must be one path segment (no '/')"));
    }
    if text == "." || text == ".." {
        return Err(format!("'{text}' is not a name"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// Text that becomes part of an object key (a prefix, a key template): relative (no leading
/// `/`), no `.` or `..` segment, no control character.
pub fn check_key_text(text: &str) -> Result<(), String> {
    if text.starts_with('/') {
        return Err(format!("'{text}' must not start with '/'"));
    }
    if text.split(['/', '\\']).any(|s| s == ".." || s == ".") {
        return Err(format!("'{text}' must not contain a '.' or '..' segment"));
    }
    if text.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// A destination URL as the egress checks need it.
#[derive(Debug, Clone)]
pub struct Destination {
    /// The parsed URL.
    pub url: url::Url,
}

impl Destination {
    /// The host as written (a name, or an address without brackets).
    pub fn host(&self) -> String {
        match self.url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => String::new(),
        }
    }

    /// The port, the scheme's default when absent.
    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().unwrap_or(80)
    }

    /// The address, when the host is written as one.
    pub fn literal_addr(&self) -> Option<std::net::SocketAddr> {
        let ip = match self.url.host()? {
            url::Host::Ipv4(a) => IpAddr::V4(a),
            url::Host::Ipv6(a) => IpAddr::V6(a),
            url::Host::Domain(_) => return None,
        };
        Some(std::net::SocketAddr::new(ip, self.port()))
    }

    /// Checks a literal address now (a name is checked when resolved).
    pub fn check_literal(&self, egress: &crate::egress::EgressPolicy) -> Result<(), String> {
        match self.literal_addr() {
            Some(addr) => egress.check(addr).map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }
}

/// Parses a destination URL for `sluice serve`: a host, no credentials in the URL (they go in
/// their own keys, which are sealed at rest).
pub fn destination(text: &str) -> Result<Destination, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| format!("'{text}' is not a URL: {e}"))?;
    if url.host().is_none() {
        return Err(format!("'{text}' has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "credentials in the URL are not accepted: use analyzer.auth.cluster (or the s3 keys)"
                .into(),
        );
    }
    Ok(Destination { url })
}

/// Refuses a document whose YAML anchors and aliases expand past [`MAX_CONFIG_BYTES`], before
/// anything is materialised: the walk borrows every scalar and stops as soon as the budget is
/// spent, so a few kilobytes of aliases can't become gigabytes of strings.
fn check_expansion(text: &str) -> Result<(), ConfigErrors> {
    use serde::de::DeserializeSeed as _;
    let budget = std::cell::Cell::new(MAX_CONFIG_BYTES);
    let de = serde_yaml::Deserializer::from_str(text);
    Budget(&budget).deserialize(de).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            line: e.location().map(|l| l.line()),
            message: strip_location(&e.to_string()),
        }])
    })
}

/// Spends one unit per node and one per scalar byte.
struct Budget<'a>(&'a std::cell::Cell<usize>);

impl Budget<'_> {
    fn spend<E: serde::de::Error>(&self, n: usize) -> Result<(), E> {
        match self.0.get().checked_sub(n) {
            Some(left) => {
                self.0.set(left);
                Ok(())
            }
            None => Err(E::custom(format!(
                "the document expands to more than {MAX_CONFIG_BYTES} bytes (YAML anchors and aliases?)"
            ))),
        }
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Budget<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Budget<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.spend(1)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.spend(1)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.spend(1)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.spend(1)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.spend(1 + v.len())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.spend(1)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.spend(1)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        serde::de::DeserializeSeed::deserialize(self, d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.spend(1)?;
        while seq.next_element_seed(Budget(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.spend(1)?;
        while map.next_key_seed(Budget(self.0))?.is_some() {
            map.next_value_seed(Budget(self.0))?;
        }
        Ok(())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        use serde::de::VariantAccess as _;
        let ((), variant) = data.variant_seed(Budget(self.0))?;
        variant.newtype_variant_seed(Budget(self.0))
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

/// serde_yaml appends " at line X column Y" to its messages; the line is reported as its own
/// field.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// serde_yaml's message without the location it appends and the path it prefixes (its own
/// path, which is `path` or a section of it): both are reported as their own fields.
fn bare_message(message: &str, path: &str) -> String {
    let message = strip_location(message);
    let prefixed = |p: &str| message.strip_prefix(p).and_then(|m| m.strip_prefix(": "));
    let mut cut = path;
    loop {
        if let Some(rest) = prefixed(cut) {
            return rest.to_string();
        }
        match cut.rfind(['.', '[']) {
            Some(i) => cut = &cut[..i],
            None => return message,
        }
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
        // Each bad entry at its own line (the list's key is line 10).
        assert!(msgs[0].starts_with("pipeline.classify.cluster_net_masks[0] (line 11): cannot parse netmask '10.0.0.0/33': "), "{msgs:?}");
        assert!(
            msgs[1].starts_with(
                "pipeline.classify.cluster_net_masks[1] (line 12): cannot parse netmask 'not-a-cidr': "
            ),
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
    fn netmasks_mask_host_bits_and_keep_families_apart() {
        let c = NetMask::parse_text("10.1.2.3/8").unwrap().0;
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(&"10.200.0.1".parse::<IpAddr>().unwrap()));
        assert!(!c.contains(&"::ffff:10.0.0.1".parse::<IpAddr>().unwrap()));
        let v6 = NetMask::parse_text("fd00::/8").unwrap().0;
        assert!(v6.contains(&"fd12::1".parse::<IpAddr>().unwrap()));
        assert!(NetMask::parse_text("10.0.0.0/33").is_err());
        assert!(NetMask::parse_text("10.0.0.0").is_err());
    }

    #[test]
    fn errors_in_flow_maps_and_after_block_scalars_have_their_lines() {
        let text = format!(
            "{MINIMAL}  classify: {{type: subnet,\n    cluster_net_masks: [10.0.0.0/8, bad]}}\n  storeheader:\n    type: vpclogs\n    vpclogs:\n      note: |\n        free text\n        more\n  compress: {{type: gzip, gzip: {{level: 12}}}}\n"
        );
        let err = ExporterConfig::load(&text).unwrap_err();
        let found: Vec<(&str, Option<usize>)> =
            err.0.iter().map(|e| (e.path.as_str(), e.line)).collect();
        assert_eq!(
            found,
            [
                ("pipeline.classify.cluster_net_masks[1]", Some(10)),
                ("pipeline.compress.gzip.level", Some(17)),
            ],
            "{err}"
        );
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
    fn parquet_compresses_inside_and_bounds_its_row_groups() {
        let text = format!(
            "{MINIMAL}  encode:\n    type: parquet\n    parquet:\n      compression: zstd\n      row_group_rows: 5000\n"
        );
        let c = ExporterConfig::load(&text).unwrap();
        assert_eq!(
            c.pipeline.encode.parquet.compression,
            ParquetCompression::Zstd
        );
        assert_eq!(
            c.pipeline.encode.parquet.row_group_rows.map(|r| r.get()),
            Some(5000)
        );
        let defaults = format!("{MINIMAL}  encode:\n    type: parquet\n");
        let c = ExporterConfig::load(&defaults).unwrap();
        assert_eq!(
            c.pipeline.encode.parquet.compression,
            ParquetCompression::Snappy
        );
        assert_eq!(c.pipeline.encode.parquet.row_group_rows, None);
        let gzip = format!("{defaults}  compress:\n    type: gzip\n");
        let e = ExporterConfig::load(&gzip).unwrap_err();
        assert_eq!(e.0[0].path, "pipeline.compress.type");
        assert_eq!(e.0[0].line, Some(12));
        assert!(e.0[0].message.contains("compresses inside"), "{e}");
        for rows in ["0", "100001", "-1"] {
            let text = format!(
                "{MINIMAL}  encode:\n    type: parquet\n    parquet:\n      row_group_rows: {rows}\n"
            );
            let e = ExporterConfig::load(&text).unwrap_err();
            assert_eq!(e.0[0].path, "pipeline.encode.parquet.row_group_rows", "{e}");
            assert_eq!(e.0[0].line, Some(12), "{e}");
        }
        let text = format!(
            "{MINIMAL}  encode:\n    type: parquet\n    parquet:\n      compression: lz4\n"
        );
        let e = ExporterConfig::load(&text).unwrap_err().to_string();
        assert!(
            e.contains("expected one of `snappy`, `zstd`, `gzip`, `none`"),
            "{e}"
        );
        let header = format!("{defaults}  storeheader:\n    type: vpclogs\n");
        let e = ExporterConfig::load(&header).unwrap_err();
        assert_eq!(e.0[0].path, "pipeline.encode.type");
    }

    #[test]
    fn prom_sky_con_timeout_and_serve_row_groups_are_bounded() {
        let path = format!("{}/../config/prom_sky_con.yml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        let long = text.replace("connection_timeout: 60", "connection_timeout: 86401");
        let e = ExporterConfig::load(&long).unwrap_err();
        assert_eq!(
            e.0[0].path,
            "pipeline.store.prom_sky_con.connection_timeout"
        );
        assert_eq!(e.0[0].line, Some(26));
        ExporterConfig::load(&text.replace("connection_timeout: 60", "connection_timeout: 86400"))
            .unwrap();
        // In serve a row group is no larger than the server's largest object.
        let mut rules = rules();
        rules.ceilings.max_flows_per_object = 1_000;
        let parquet = |rows: u32| {
            format!(
                "{MINIMAL}  encode:\n    type: parquet\n    parquet:\n      row_group_rows: {rows}\n"
            )
        };
        ExporterConfig::load_for_serve(&parquet(1_000), &rules).unwrap();
        let e = ExporterConfig::load_for_serve(&parquet(1_001), &rules).unwrap_err();
        assert_eq!(e.0[0].path, "pipeline.encode.parquet.row_group_rows");
        assert!(e.0[0].message.contains("maximum of 1000"), "{e}");
    }

    #[test]
    fn hour_folders_only_for_aws_layouts() {
        let text = MINIMAL.replace(
            "      dirname: bucket\n",
            "      dirname: bucket\n      key_format: aws-hive\n      key_format_per_hour: true\n",
        );
        ExporterConfig::load(&text).unwrap();
        let text = MINIMAL.replace(
            "      dirname: bucket\n",
            "      dirname: bucket\n      key_format_per_hour: true\n",
        );
        let e = ExporterConfig::load(&text).unwrap_err();
        assert_eq!(e.0[0].path, "pipeline.store.buffered.key_format_per_hour");
        assert_eq!(e.0[0].line, Some(7));
    }

    #[test]
    fn prom_sky_con_reads_flows_and_needs_a_port_in_run_only() {
        let path = format!("{}/../config/prom_sky_con.yml", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).unwrap();
        let (c, _) = ExporterConfig::load_with_env(&text, Vec::new()).unwrap();
        let options = &c.pipeline.store.prom_sky_con;
        assert_eq!(c.pipeline.store.kind, StoreType::PromSkyCon);
        assert_eq!(options.port.map(|p| p.0.get()), Some(9100));
        assert_eq!(options.connection_timeout, 60);
        // Without a port: an error for `sluice run` (upstream's too), not for `sluice serve`.
        let no_port = text.replace("      port: 9100\n", "");
        let e = ExporterConfig::load_with_env(&no_port, Vec::new()).unwrap_err();
        assert_eq!(e.0[0].path, "pipeline.store.prom_sky_con.port");
        assert_eq!(serve_errors(&no_port), vec![]);
        // The port as a string, as viper read it; out of range is an error with its line.
        ExporterConfig::load(&text.replace("port: 9100", "port: \"9100\"")).unwrap();
        let e = ExporterConfig::load(&text.replace("port: 9100", "port: 70000")).unwrap_err();
        assert_eq!(e.0[0].path, "pipeline.store.prom_sky_con.port");
        assert_eq!(e.0[0].line, Some(25));
        let e = ExporterConfig::load(&text.replace("type: none", "type: awsflowlogs")).unwrap_err();
        assert_eq!(e.0[0].path, "pipeline.transform.type");
    }

    fn rules() -> ServeRules {
        ServeRules {
            ceilings: Ceilings::default(),
            egress: crate::egress::EgressPolicy::new(
                &[],
                &[],
                crate::egress::Action::Allow,
                vec!["127.0.0.1:8080".parse().unwrap()],
            ),
            allow_absolute_paths: false,
        }
    }

    fn serve_errors(text: &str) -> Vec<ConfigError> {
        match ExporterConfig::load_for_serve(text, &rules()) {
            Ok(_) => Vec::new(),
            Err(e) => e.0,
        }
    }

    fn keys(errors: &[ConfigError]) -> Vec<&str> {
        errors.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn the_shipped_files_are_accepted_by_serve_but_a_host_path() {
        for file in [
            "secadvisor",
            "awsflowlogs",
            "vpclogs",
            "allinone",
            "demo",
            "prom_sky_con",
        ] {
            let path = format!("{}/../config/{file}.yml", env!("CARGO_MANIFEST_DIR"));
            let text = std::fs::read_to_string(&path).unwrap();
            let errors = serve_errors(&text);
            // Upstream's vpclogs file keeps its account record in /tmp.
            let expected: &[&str] = match file {
                "vpclogs" => &["pipeline.account.file.filename"],
                _ => &[],
            };
            assert_eq!(keys(&errors), expected, "{file}");
        }
    }

    #[test]
    fn serve_refuses_host_paths_and_server_output() {
        let text = MINIMAL.replace("dirname: bucket", "dirname: \"../../../../tmp/x\"")
            + "  write:\n    type: stdout\n";
        let e = serve_errors(&text);
        assert_eq!(
            keys(&e),
            ["pipeline.write.type", "pipeline.store.buffered.dirname"],
            "{e:?}"
        );
        assert_eq!(e[1].line, Some(6));
        // The same file is fine for `sluice run`.
        ExporterConfig::load(&text).unwrap();
        for (key, value) in [
            ("filename_prefix", "/etc"),
            ("filename_prefix", "a/../../b"),
            ("key_format", "\"{prefix}/../{tag}/{stream}/{seq}\""),
            ("dirname", "\"a\\u0000b\""),
        ] {
            let text = MINIMAL.replace(
                "      dirname: bucket\n",
                &format!("      dirname: bucket\n      {key}: {value}\n"),
            );
            let text = if key == "dirname" {
                MINIMAL.replace("dirname: bucket", &format!("dirname: {value}"))
            } else {
                text
            };
            let e = serve_errors(&text);
            assert_eq!(
                keys(&e),
                [format!("pipeline.store.buffered.{key}")],
                "{value}"
            );
        }
        let text = format!(
            "{MINIMAL}  write:\n    type: file\n    file:\n      dir: /var/lib\n  account:\n    type: file\n    file:\n      filename: ../acct.json\n"
        );
        assert_eq!(
            keys(&serve_errors(&text)),
            ["pipeline.write.file.dir", "pipeline.account.file.filename"]
        );
    }

    #[test]
    fn serve_takes_tls_material_inline_only() {
        let text = format!("{MINIMAL}tls:\n  ca_cert: /etc/shadow\n  client_key: /dev/zero\n");
        let e = serve_errors(&text);
        assert_eq!(keys(&e), ["tls.ca_cert", "tls.client_key"], "{e:?}");
        assert!(e[0].message.contains("PEM text itself"), "{}", e[0].message);
        assert_eq!(e[0].line, Some(10));
        let inline = format!(
            "{MINIMAL}tls:\n  ca_cert: |\n    -----BEGIN CERTIFICATE-----\n    MIIB\n    -----END CERTIFICATE-----\n"
        );
        assert_eq!(serve_errors(&inline), vec![]);
    }

    #[test]
    fn serve_checks_destinations_and_credentials_in_urls() {
        for (url, key) in [
            (
                "ws://169.254.169.254/latest/meta-data",
                "pipeline.subscriber.url",
            ),
            (
                "ws://127.0.0.1:8080/v1/pipelines",
                "pipeline.subscriber.url",
            ),
            ("ws://[::ffff:169.254.169.254]/x", "pipeline.subscriber.url"),
            (
                "ws://user:pw@10.0.0.1/ws/subscriber/flow",
                "pipeline.subscriber.url",
            ),
        ] {
            let text = MINIMAL.replace("ws://127.0.0.1:8082/ws/subscriber/flow", url);
            let e = serve_errors(&text);
            assert_eq!(keys(&e), [key], "{url}: {e:?}");
        }
        let text = format!(
            "analyzers: [\"169.254.169.254:80\"]\n{MINIMAL}  write:\n    type: s3\n    s3:\n      endpoint: http://0.0.0.0:9000\n      api_key: k\n      iam_endpoint: http://224.0.0.1/token\n"
        );
        assert_eq!(
            keys(&serve_errors(&text)),
            [
                "analyzers[0]",
                "pipeline.write.s3.endpoint",
                "pipeline.write.s3.iam_endpoint"
            ]
        );
    }

    #[test]
    fn serve_caps_sizes_counts_and_wasm_limits_at_the_servers_maximum() {
        let text = MINIMAL.replace(
            "max_flow_array_size: 100",
            "max_flow_array_size: 1000000000000",
        ) + "  write:\n    type: s3\n    spool:\n      max_bytes: 99999999999999\n  transform:\n    type: wasm\n    wasm:\n      module: abc\n      fuel: 99999999999\n      memory_bytes: 1\n";
        let e = serve_errors(&text);
        assert_eq!(
            keys(&e),
            [
                "pipeline.store.buffered.max_flow_array_size",
                "pipeline.write.spool.max_bytes",
                "pipeline.transform.wasm.fuel"
            ],
            "{e:?}"
        );
        assert!(
            e[0].message.contains("maximum of 100000"),
            "{}",
            e[0].message
        );
        let masks: Vec<String> = (0..1025)
            .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
            .collect();
        let text = format!(
            "{MINIMAL}  classify:\n    cluster_net_masks: [{}]\n",
            masks.join(", ")
        );
        assert_eq!(
            keys(&serve_errors(&text)),
            ["pipeline.classify.cluster_net_masks"]
        );
    }

    #[test]
    fn serve_refuses_a_sealed_value_as_a_secret() {
        let sealed = crate::secrets::Keyring::ephemeral().seal("pipeline.write.s3.secret_key", "x");
        let text = format!("{MINIMAL}  write:\n    s3:\n      secret_key: \"{sealed}\"\n");
        assert_eq!(keys(&serve_errors(&text)), ["pipeline.write.s3.secret_key"]);
    }

    #[test]
    fn an_alias_bomb_is_refused_before_it_expands() {
        let anchor = "x".repeat(200_000);
        let mut text = format!("logging:\n  a: &big \"{anchor}\"\n  list:\n");
        for _ in 0..4000 {
            text.push_str("    - *big\n");
        }
        text.push_str(MINIMAL);
        assert!(text.len() < MAX_CONFIG_BYTES);
        // Refused by the budget walk, which borrows every scalar: nothing was copied.
        let e = ExporterConfig::load(&text).unwrap_err();
        assert!(e.0[0].message.contains("expands to more than"), "{e}");
        assert!(e.0[0].line.is_some(), "{e}");
        // A few aliases of a small anchor are fine.
        let ok = format!("logging:\n  a: &v small\n  b: *v\n{MINIMAL}");
        ExporterConfig::load(&ok).unwrap();
    }

    #[test]
    fn secrets_are_redacted() {
        let text = format!("{MINIMAL}  write:\n    s3:\n      secret_key: hunter2\n");
        let c = ExporterConfig::load(&text).unwrap().redacted();
        assert_eq!(c.pipeline.write.s3.secret_key, "<redacted>");
    }
}

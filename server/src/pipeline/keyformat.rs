//! Object key layouts (`pipeline.store.buffered.key_format`): upstream's, AWS's (plain or
//! Hive-compatible), IBM's, or a template of `{placeholders}`.
//!
//! | placeholder | value |
//! |---|---|
//! | `{prefix}` | `store.buffered.filename_prefix` as is; `{prefix/}` adds a `/` when it isn't empty |
//! | `{tag}` | the classifier's tag |
//! | `{stream}` | the stream's start, `YYYYMMDDTHHMMSSZ` UTC |
//! | `{seq}` | the object's number in its stream, `%08d` |
//! | `{ext}` | `gz`, `json`, `csv` or `parquet` |
//! | `{hash}` | 16 hex digits from tag, stream and seq: stable when an upload is retried |
//! | `{yyyy}` `{mm}` `{dd}` `{HH}` `{MM}` `{SS}` | the object's start time (its `first-timestamp`, which a retry keeps), UTC |
//! | `{stream_yyyy}` … `{stream_SS}` | the same for the stream's start |
//! | `{record_type}` | `ingress`/`egress`, otherwise the tag (IBM's `record-type`) |
//! | `{flow_log_id}` | `fl-<tag>` (AWS's flow log id) |
//! | `{account_id}` | `transform.awsflowlogs.account_id` (default `12345678`) |
//! | `{region}`, `{account}`, `{vpc_id}`, `{subnet_id}`, `{instance_id}`, `{vnic_id}` | the `storeheader.vpclogs` key of that name, else derived from its CRNs (`vpc_crn`, `instance_crn`), `network_interface_id` or `write.s3.region`, else `unknown` |
//! | `{<key>}` | any key of `pipeline.storeheader.vpclogs` (e.g. `{vpc_crn}`) |
//!
//! Literal text passes as written, so `key=value` folders (`year={yyyy}/`) give Hive-style
//! partitions. Substituted values other than `prefix` are percent-encoded outside
//! `A-Za-z0-9-_.~`, so a value can't add a folder or an `=`. A
//! template must hold `{seq}`, `{stream}` and `{tag}` (or `{record_type}` / `{flow_log_id}`),
//! or `{hash}`: anything less lets two objects get the same key.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::config::ExporterConfig;

/// `upstream`: `<prefix>/<tag>/<stream>/<seq>.<ext>` (the default).
pub const PRESET_UPSTREAM: &str = "{prefix}/{tag}/{stream}/{seq}.{ext}";

/// `aws`: AWS VPC Flow Logs' S3 layout (docs/awsflowlogs.md §3).
pub const PRESET_AWS: &str = "{prefix/}AWSLogs/{account_id}/vpcflowlogs/{region}/{yyyy}/{mm}/{dd}/{account_id}_vpcflowlogs_{region}_{flow_log_id}_{yyyy}{mm}{dd}T{HH}{MM}Z_{hash}.log.{ext}";

/// `aws-hive`: AWS's Hive-compatible layout for VPC Flow Logs (docs/awsflowlogs.md §3): the
/// same file names in `key=value` folders, which Hive-aware readers read as partition columns.
pub const PRESET_AWS_HIVE: &str = "{prefix/}AWSLogs/aws-account-id={account_id}/aws-service=vpcflowlogs/aws-region={region}/year={yyyy}/month={mm}/day={dd}/{account_id}_vpcflowlogs_{region}_{flow_log_id}_{yyyy}{mm}{dd}T{HH}{MM}Z_{hash}.log.{ext}";

/// `ibm`: IBM Cloud VPC Flow Logs' COS layout (docs/vpclogs.md §5).
pub const PRESET_IBM: &str = "{prefix/}ibm_vpc_flowlogs_v1/account={account}/region={region}/vpc-id={vpc_id}/subnet-id={subnet_id}/endpoint-type=vnics/instance-id={instance_id}/vnic-id={vnic_id}/record-type={record_type}/year={yyyy}/month={mm}/day={dd}/hour={HH}/stream-id={stream}/{seq}.{ext}";

/// Names whose value [`KeyLayout::from_config`] always provides.
const DERIVED: &[&str] = &[
    "account_id",
    "region",
    "account",
    "vpc_id",
    "subnet_id",
    "instance_id",
    "vnic_id",
];

/// Written for a derived value the configuration doesn't give.
pub const UNKNOWN: &str = "unknown";

/// Why a `key_format` can't be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    /// A `{` without its `}`.
    #[error("'{0}' has a '{{' without a closing '}}'")]
    Unclosed(String),
    /// A name that is neither built in nor a `storeheader.vpclogs` key.
    #[error(
        "unknown placeholder {{{0}}}: use a preset (upstream, aws, aws-hive, ibm), a built-in placeholder, or a key of pipeline.storeheader.vpclogs"
    )]
    Unknown(String),
    /// The template can give two objects the same key.
    #[error(
        "'{0}' can give two objects the same key: it needs {{seq}}, {{stream}} and {{tag}} (or {{record_type}} / {{flow_log_id}}), or {{hash}}"
    )]
    MayCollide(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatePart {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Prefix,
    PrefixSlash,
    Tag,
    Stream,
    Seq,
    Ext,
    Hash,
    RecordType,
    FlowLogId,
    Date { of_stream: bool, part: DatePart },
    Value(String),
}

/// A parsed `key_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTemplate {
    parts: Vec<Part>,
}

impl Default for KeyTemplate {
    fn default() -> Self {
        KeyTemplate::parse(PRESET_UPSTREAM, false, &[]).unwrap_or(KeyTemplate { parts: Vec::new() })
    }
}

/// The template a `key_format` names: a preset's (AWS's two with an hour folder when
/// `per_hour`, as AWS's `PerHourPartition`), or the text itself.
pub fn preset_template(format: &str, per_hour: bool) -> String {
    let (template, day, hour) = match format {
        "" | "upstream" => return PRESET_UPSTREAM.to_string(),
        "ibm" => return PRESET_IBM.to_string(),
        "aws" => (PRESET_AWS, "/{dd}/", "{HH}/"),
        "aws-hive" => (PRESET_AWS_HIVE, "/day={dd}/", "hour={HH}/"),
        other => return other.to_string(),
    };
    if per_hour {
        template.replacen(day, &format!("{day}{hour}"), 1)
    } else {
        template.to_string()
    }
}

impl KeyTemplate {
    /// Parses a preset name (`""` is `upstream`; `per_hour` adds an hour folder to `aws` and
    /// `aws-hive`) or a template; `fields` are the `storeheader.vpclogs` keys (lowercased)
    /// usable as placeholders.
    pub fn parse(format: &str, per_hour: bool, fields: &[&str]) -> Result<Self, KeyFormatError> {
        let template = preset_template(format, per_hour);
        let template = template.as_str();
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Lit(rest[..open].to_string()));
            }
            let Some(close) = rest[open..].find('}') else {
                return Err(KeyFormatError::Unclosed(template.to_string()));
            };
            let name = &rest[open + 1..open + close];
            parts.push(Self::placeholder(name, fields)?);
            rest = &rest[open + close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Lit(rest.to_string()));
        }
        let has = |p: &Part| parts.contains(p);
        let unique = has(&Part::Hash)
            || (has(&Part::Seq)
                && has(&Part::Stream)
                && (has(&Part::Tag) || has(&Part::RecordType) || has(&Part::FlowLogId)));
        if !unique {
            return Err(KeyFormatError::MayCollide(template.to_string()));
        }
        Ok(KeyTemplate { parts })
    }

    fn placeholder(name: &str, fields: &[&str]) -> Result<Part, KeyFormatError> {
        let (of_stream, unit) = match name.strip_prefix("stream_") {
            Some(unit) => (true, unit),
            None => (false, name),
        };
        let date = match unit {
            "yyyy" => Some(DatePart::Year),
            "mm" => Some(DatePart::Month),
            "dd" => Some(DatePart::Day),
            "HH" => Some(DatePart::Hour),
            "MM" => Some(DatePart::Minute),
            "SS" => Some(DatePart::Second),
            _ => None,
        };
        if let Some(part) = date {
            return Ok(Part::Date { of_stream, part });
        }
        Ok(match name {
            "prefix" => Part::Prefix,
            "prefix/" => Part::PrefixSlash,
            "tag" => Part::Tag,
            "stream" => Part::Stream,
            "seq" => Part::Seq,
            "ext" => Part::Ext,
            "hash" => Part::Hash,
            "record_type" => Part::RecordType,
            "flow_log_id" => Part::FlowLogId,
            _ if DERIVED.contains(&name) || fields.contains(&name) => Part::Value(name.to_string()),
            _ => return Err(KeyFormatError::Unknown(name.to_string())),
        })
    }
}

/// Formats an object's place in the bucket.
#[derive(Debug, Clone)]
pub struct KeyLayout {
    /// `store.buffered.filename_prefix`.
    pub prefix: String,
    /// `gz`, `json` or `csv`.
    pub extension: &'static str,
    /// `store.buffered.key_format`.
    pub template: KeyTemplate,
    /// Named values for `{name}` placeholders.
    pub values: BTreeMap<String, String>,
}

impl Default for KeyLayout {
    fn default() -> Self {
        KeyLayout {
            prefix: String::new(),
            extension: "gz",
            template: KeyTemplate::default(),
            values: BTreeMap::new(),
        }
    }
}

/// The parts of an IBM CRN: `crn:v1:<cname>:<ctype>:<service>:<location>:a/<account>:<instance>:<type>:<id>`.
fn crn_part(crn: &str, index: usize) -> Option<&str> {
    let parts: Vec<&str> = crn.split(':').collect();
    if parts.len() < 10 || parts[0] != "crn" {
        return None;
    }
    parts.get(index).copied().filter(|p| !p.is_empty())
}

fn percent_encode(out: &mut String, value: &str) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

fn date_part(ms: i64, part: DatePart) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
    let format = match part {
        DatePart::Year => "%Y",
        DatePart::Month => "%m",
        DatePart::Day => "%d",
        DatePart::Hour => "%H",
        DatePart::Minute => "%M",
        DatePart::Second => "%S",
    };
    t.format(format).to_string()
}

/// FNV-1a over tag, stream and seq: the same object always gets the same digits.
fn object_hash(tag: &str, stream_ms: i64, seq: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = tag
        .bytes()
        .chain([0])
        .chain(stream_ms.to_le_bytes())
        .chain(seq.to_le_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl KeyLayout {
    /// From a validated pipeline file; `extension` is the object's suffix.
    pub fn from_config(config: &ExporterConfig, extension: &'static str) -> Self {
        let p = &config.pipeline;
        let mut values = super::storeheader::vpclogs_fields(&p.storeheader);
        let field = |name: &str| values.get(name).filter(|v| !v.is_empty()).cloned();
        let crn = |name: &str, index: usize| {
            values
                .get(name)
                .and_then(|c| crn_part(c, index))
                .map(str::to_string)
        };
        let any_crn = |index: usize| {
            ["vpc_crn", "collector_crn", "instance_crn"]
                .iter()
                .find_map(|name| crn(name, index))
        };
        let derived = [
            (
                "account_id",
                p.transform
                    .awsflowlogs
                    .account_id
                    .clone()
                    .filter(|a| !a.is_empty())
                    .or_else(|| {
                        Some(super::transform::awsflowlogs::DEFAULT_ACCOUNT_ID.to_string())
                    }),
            ),
            (
                "region",
                field("region")
                    .or_else(|| any_crn(5))
                    .or_else(|| Some(p.write.s3.region.clone()).filter(|r| !r.is_empty())),
            ),
            (
                "account",
                field("account")
                    .or_else(|| any_crn(6).map(|s| s.trim_start_matches("a/").to_string())),
            ),
            ("vpc_id", field("vpc_id").or_else(|| crn("vpc_crn", 9))),
            ("subnet_id", field("subnet_id")),
            (
                "instance_id",
                field("instance_id").or_else(|| crn("instance_crn", 9)),
            ),
            (
                "vnic_id",
                field("vnic_id").or_else(|| field("network_interface_id")),
            ),
        ];
        for (name, value) in derived {
            values.insert(
                name.to_string(),
                value.unwrap_or_else(|| UNKNOWN.to_string()),
            );
        }
        let fields: Vec<&str> = values.keys().map(String::as_str).collect();
        let template = KeyTemplate::parse(
            &p.store.buffered.key_format,
            p.store.buffered.key_format_per_hour,
            &fields,
        )
        .unwrap_or_else(|e| {
            // Config validation refuses this; keep going with upstream's layout.
            tracing::error!(error = %e, "key_format not usable: using upstream's layout");
            KeyTemplate::default()
        });
        KeyLayout {
            prefix: p.store.buffered.filename_prefix.clone(),
            extension,
            template,
            values,
        }
    }

    /// The key of object `seq` of the stream started at `stream_ms` for `tag`; `start_ms` is
    /// the object's start (its `first-timestamp`).
    pub fn key(&self, tag: &str, stream_ms: i64, seq: u64, start_ms: i64) -> String {
        let mut key = String::with_capacity(96);
        for part in &self.template.parts {
            match part {
                Part::Lit(text) => key.push_str(text),
                Part::Prefix => key.push_str(&self.prefix),
                Part::PrefixSlash => {
                    if !self.prefix.is_empty() {
                        key.push_str(&self.prefix);
                        if !self.prefix.ends_with('/') {
                            key.push('/');
                        }
                    }
                }
                Part::Tag => percent_encode(&mut key, tag),
                Part::Stream => key.push_str(&super::output::stream_id(stream_ms)),
                Part::Seq => {
                    let _ = write!(key, "{seq:08}");
                }
                Part::Ext => key.push_str(self.extension),
                Part::Hash => {
                    let _ = write!(key, "{:016x}", object_hash(tag, stream_ms, seq));
                }
                Part::RecordType => percent_encode(&mut key, tag),
                Part::FlowLogId => {
                    key.push_str("fl-");
                    percent_encode(&mut key, tag);
                }
                Part::Date { of_stream, part } => {
                    let ms = if *of_stream { stream_ms } else { start_ms };
                    key.push_str(&date_part(ms, *part));
                }
                Part::Value(name) => {
                    percent_encode(&mut key, self.values.get(name).map_or(UNKNOWN, |v| v));
                }
            }
        }
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1546338030000; // 2019-01-01T10:20:30Z

    fn config(yaml: &str) -> ExporterConfig {
        let text = format!(
            "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:8082/ws/subscriber/flow\n  store:\n    buffered:\n      filename_prefix: logs\n      dirname: bucket\n      max_flows_per_object: 10\n      max_flow_array_size: 100\n{yaml}"
        );
        ExporterConfig::load(&text).unwrap()
    }

    #[test]
    fn upstream_is_the_default() {
        let layout = KeyLayout::from_config(&config(""), "gz");
        assert_eq!(
            layout.key("egress", T0, 1, T0 + 5000),
            "logs/egress/20190101T102030Z/00000001.gz"
        );
        let empty = KeyLayout {
            prefix: String::new(),
            ..KeyLayout::default()
        };
        assert_eq!(
            empty.key("egress", T0, 0, T0),
            "/egress/20190101T102030Z/00000000.gz"
        );
    }

    #[test]
    fn aws_preset() {
        let c = config(
            "      key_format: aws\n  transform:\n    type: awsflowlogs\n    awsflowlogs:\n      account_id: \"123456789012\"\n  write:\n    s3:\n      region: us-east-1\n",
        );
        let layout = KeyLayout::from_config(&c, "gz");
        let key = layout.key("egress", T0, 3, T0 + 60_000);
        let hash = format!("{:016x}", object_hash("egress", T0, 3));
        assert_eq!(
            key,
            format!(
                "logs/AWSLogs/123456789012/vpcflowlogs/us-east-1/2019/01/01/123456789012_vpcflowlogs_us-east-1_fl-egress_20190101T1021Z_{hash}.log.gz"
            )
        );
        // Retried with the same stream, seq and start: the same key.
        assert_eq!(layout.key("egress", T0, 3, T0 + 60_000), key);
        assert_ne!(layout.key("egress", T0, 4, T0 + 60_000), key);
        assert_ne!(layout.key("ingress", T0, 3, T0 + 60_000), key);
        // Without prefix or region.
        let c = config("      key_format: aws\n").clone();
        let mut layout = KeyLayout::from_config(&c, "gz");
        layout.prefix.clear();
        assert!(
            layout
                .key("other", T0, 0, T0)
                .starts_with("AWSLogs/12345678/vpcflowlogs/unknown/2019/01/01/12345678_vpcflowlogs_unknown_fl-other_20190101T1020Z_"),
        );
    }

    #[test]
    fn aws_hive_preset_and_hour_folders() {
        let aws = "  transform:\n    type: awsflowlogs\n    awsflowlogs:\n      account_id: \"123456789012\"\n  write:\n    s3:\n      region: eu-west-1\n";
        let hash = format!("{:016x}", object_hash("ingress", T0, 0));
        let file = format!(
            "123456789012_vpcflowlogs_eu-west-1_fl-ingress_20190101T1120Z_{hash}.log.parquet"
        );
        let key = |yaml: &str| {
            KeyLayout::from_config(&config(&format!("{yaml}{aws}")), "parquet").key(
                "ingress",
                T0,
                0,
                T0 + 3_600_000,
            )
        };
        assert_eq!(
            key("      key_format: aws-hive\n"),
            format!(
                "logs/AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=eu-west-1/year=2019/month=01/day=01/{file}"
            )
        );
        assert_eq!(
            key("      key_format: aws-hive\n      key_format_per_hour: true\n"),
            format!(
                "logs/AWSLogs/aws-account-id=123456789012/aws-service=vpcflowlogs/aws-region=eu-west-1/year=2019/month=01/day=01/hour=11/{file}"
            )
        );
        assert_eq!(
            key("      key_format: aws\n      key_format_per_hour: true\n"),
            format!("logs/AWSLogs/123456789012/vpcflowlogs/eu-west-1/2019/01/01/11/{file}")
        );
        // A template's own `key=value` folders; a value can't add a folder or an `=`.
        let c = config(
            "      key_format: \"tenant={tenant}/dt={yyyy}-{mm}-{dd}/{tag}/{stream}/{seq}.{ext}\"\n  storeheader:\n    vpclogs:\n      tenant: \"a=b/c\"\n",
        );
        assert_eq!(
            KeyLayout::from_config(&c, "parquet").key("other", T0, 1, T0),
            "tenant=a%3Db%2Fc/dt=2019-01-01/other/20190101T102030Z/00000001.parquet"
        );
    }

    #[test]
    fn ibm_preset_from_crns() {
        let c = config(
            "      key_format: ibm\n  storeheader:\n    type: vpclogs\n    vpclogs:\n      vpc_crn: \"crn:v1:bluemix:public:is:us-south:a/acc123::vpc:r006-vpc\"\n      instance_crn: \"crn:v1:bluemix:public:is:us-south-1:a/acc123::instance:0717-vsi\"\n      network_interface_id: 0717-nic\n      subnet_id: 0717-subnet\n",
        );
        let layout = KeyLayout::from_config(&c, "gz");
        assert_eq!(
            layout.key("ingress", T0, 7, T0 + 3_600_000),
            "logs/ibm_vpc_flowlogs_v1/account=acc123/region=us-south/vpc-id=r006-vpc/subnet-id=0717-subnet/endpoint-type=vnics/instance-id=0717-vsi/vnic-id=0717-nic/record-type=ingress/year=2019/month=01/day=01/hour=11/stream-id=20190101T102030Z/00000007.gz"
        );
    }

    #[test]
    fn templates_with_storeheader_fields_are_percent_encoded() {
        let c = config(
            "      key_format: \"{vpc_crn}/{stream_yyyy}-{stream_mm}/{tag}/{stream}/{seq}.{ext}\"\n  storeheader:\n    vpclogs:\n      VPC_CRN: \"crn:v1:x/y\"\n",
        );
        let layout = KeyLayout::from_config(&c, "json");
        assert_eq!(
            layout.key("internal", T0, 2, T0),
            "crn%3Av1%3Ax%2Fy/2019-01/internal/20190101T102030Z/00000002.json"
        );
    }

    #[test]
    fn templates_that_may_collide_or_are_malformed_are_refused() {
        for (format, unique) in [
            ("{prefix}/{tag}/{seq}.gz", false),
            ("{prefix}/{tag}/{stream}.gz", false),
            ("{prefix}/{stream}/{seq}.gz", false),
            ("{yyyy}/{mm}/{dd}/{HH}{MM}{SS}.gz", false),
            ("{prefix}/{record_type}/{stream}/{seq}.gz", true),
            ("x/{hash}", true),
        ] {
            let r = KeyTemplate::parse(format, false, &[]);
            assert_eq!(r.is_ok(), unique, "{format}: {r:?}");
            if !unique {
                assert!(matches!(r, Err(KeyFormatError::MayCollide(_))));
            }
        }
        assert!(matches!(
            KeyTemplate::parse("{tag}/{stream}/{seq}/{nope}", false, &[]),
            Err(KeyFormatError::Unknown(n)) if n == "nope"
        ));
        assert!(matches!(
            KeyTemplate::parse("{tag}/{stream}/{seq", false, &[]),
            Err(KeyFormatError::Unclosed(_))
        ));
    }
}

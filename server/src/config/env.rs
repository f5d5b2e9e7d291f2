//! `SKYDIVE_*` environment overrides, as upstream's viper read them (docs/stages.md §3.3): the
//! variable of a key is `SKYDIVE_` and the key in upper case with `.` and `-` as `_`
//! (`SKYDIVE_PIPELINE_WRITE_S3_SECRET_KEY` is `pipeline.write.s3.secret_key`), and a list is
//! the value split on white space. Only `sluice run` and `sluice check` apply them: a definition
//! created through the API is the tenant's text alone.
//!
//! The keys are listed here with their kind, because a variable's name can't be split back
//! into a path (`secret_key` holds an `_`); a test checks that every key of the file format is
//! listed.

use serde::Serialize;

use super::{ConfigError, ExporterConfig};

/// What a key holds, so that a variable's text becomes the value the file would hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Text as given.
    Text,
    /// A whole number.
    Number,
    /// `true`/`false` (also `1`/`0`, `t`/`f`, as Go's `strconv.ParseBool`).
    Bool,
    /// Entries separated by white space.
    List,
}

use Kind::{Bool, List, Number, Text};

/// Every key an environment variable can set. Maps (`pipeline.storeheader.vpclogs`), the
/// guest's JSON `config`, and Skydive's own `logging`, `flow` and `http` sections can't be set
/// this way.
const KEYS: &[(&str, Kind)] = &[
    ("host_id", Text),
    ("analyzers", List),
    ("analyzer.auth.cluster.username", Text),
    ("analyzer.auth.cluster.password", Text),
    ("tls.client_cert", Text),
    ("tls.client_key", Text),
    ("tls.ca_cert", Text),
    ("pipeline.subscriber.url", Text),
    ("pipeline.subscriber.capture_id", Text),
    ("pipeline.classify.type", Text),
    ("pipeline.classify.cluster_net_masks", List),
    ("pipeline.filter.type", Text),
    ("pipeline.filter.excluded_tags", List),
    ("pipeline.transform.type", Text),
    ("pipeline.transform.secadvisor.exclude_started_flows", Bool),
    ("pipeline.transform.secadvisor.extend", List),
    ("pipeline.transform.awsflowlogs.version", Number),
    ("pipeline.transform.awsflowlogs.account_id", Text),
    ("pipeline.transform.awsflowlogs.upstream_names", Bool),
    ("pipeline.transform.wasm.module", Text),
    ("pipeline.transform.wasm.fuel", Number),
    ("pipeline.transform.wasm.deadline_ms", Number),
    ("pipeline.transform.wasm.memory_bytes", Number),
    ("pipeline.transform.wasm.output_bytes", Number),
    ("pipeline.mangle.type", Text),
    ("pipeline.mangle.wasm.module", Text),
    ("pipeline.mangle.wasm.fuel", Number),
    ("pipeline.mangle.wasm.deadline_ms", Number),
    ("pipeline.mangle.wasm.memory_bytes", Number),
    ("pipeline.mangle.wasm.output_bytes", Number),
    ("pipeline.action.tid1", Text),
    ("pipeline.action.tid2", Text),
    ("pipeline.action.reject_timeout", Number),
    ("pipeline.storeheader.type", Text),
    ("pipeline.store.type", Text),
    ("pipeline.store.buffered.filename_prefix", Text),
    ("pipeline.store.buffered.dirname", Text),
    ("pipeline.store.buffered.max_flows_per_object", Number),
    ("pipeline.store.buffered.max_seconds_per_object", Number),
    ("pipeline.store.buffered.max_seconds_per_stream", Number),
    ("pipeline.store.buffered.max_flow_array_size", Number),
    ("pipeline.store.buffered.key_format", Text),
    ("pipeline.store.buffered.key_format_per_hour", Bool),
    ("pipeline.store.prom_sky_con.port", Text),
    ("pipeline.store.prom_sky_con.connection_timeout", Number),
    ("pipeline.store.prom_sky_con.monitoring_port", Text),
    ("pipeline.encode.type", Text),
    ("pipeline.encode.json.pretty", Bool),
    ("pipeline.encode.csv.delimiter", Text),
    ("pipeline.encode.parquet.compression", Text),
    ("pipeline.encode.parquet.row_group_rows", Number),
    ("pipeline.compress.type", Text),
    ("pipeline.compress.gzip.level", Number),
    ("pipeline.account.type", Text),
    ("pipeline.account.file.filename", Text),
    ("pipeline.write.type", Text),
    ("pipeline.write.s3.endpoint", Text),
    ("pipeline.write.s3.region", Text),
    ("pipeline.write.s3.access_key", Text),
    ("pipeline.write.s3.secret_key", Text),
    ("pipeline.write.s3.api_key", Text),
    ("pipeline.write.s3.iam_endpoint", Text),
    ("pipeline.write.file.dir", Text),
    ("pipeline.write.spool.dir", Text),
    ("pipeline.write.spool.max_objects", Number),
    ("pipeline.write.spool.max_bytes", Number),
];

/// The prefix of every override.
pub const PREFIX: &str = "SKYDIVE_";

/// The variable that sets `key`.
pub fn variable(key: &str) -> String {
    let mut name = String::with_capacity(PREFIX.len() + key.len());
    name.push_str(PREFIX);
    name.extend(
        key.chars()
            .map(|c| if matches!(c, '.' | '-') { '_' } else { c })
            .flat_map(char::to_uppercase),
    );
    name
}

/// One variable that sets a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnvOverride {
    /// The variable, e.g. `SKYDIVE_PIPELINE_WRITE_S3_SECRET_KEY`.
    pub variable: String,
    /// The key it sets, e.g. `pipeline.write.s3.secret_key`.
    pub key: &'static str,
    /// Its text.
    pub value: String,
}

impl EnvOverride {
    /// Its text, or `<redacted>` for a secret (the keys [`ExporterConfig::secrets_mut`] names).
    pub fn shown_value(&self) -> &str {
        let secret = matches!(
            self.key,
            "analyzer.auth.cluster.password"
                | "pipeline.write.s3.secret_key"
                | "pipeline.write.s3.api_key"
        ) || (self.key == "tls.client_key" && crate::tls::is_inline_pem(&self.value));
        if secret && !self.value.is_empty() {
            "<redacted>"
        } else {
            &self.value
        }
    }
}

/// The `SKYDIVE_*` variables of an environment: those that set a key, and the others (which
/// upstream ignored too, since viper only looks up the keys it is asked for).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Variables naming a key, in the order of [`KEYS`].
    pub applied: Vec<EnvOverride>,
    /// `SKYDIVE_*` variables naming no key, sorted.
    pub unknown: Vec<String>,
}

impl Overrides {
    /// Picks the overrides out of `vars` (e.g. `std::env::vars()`).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut found: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(PREFIX))
            .collect();
        let mut applied = Vec::new();
        for (key, _) in KEYS {
            let name = variable(key);
            if let Some(i) = found.iter().position(|(n, _)| *n == name) {
                let (variable, value) = found.swap_remove(i);
                applied.push(EnvOverride {
                    variable,
                    key,
                    value,
                });
            }
        }
        let mut unknown: Vec<String> = found.into_iter().map(|(name, _)| name).collect();
        unknown.sort();
        Overrides { applied, unknown }
    }

    /// The variable that set `path` or the list or section holding it, if any.
    pub fn setter_of(&self, path: &str) -> Option<&EnvOverride> {
        self.applied.iter().find(|o| {
            path == o.key
                || path
                    .strip_prefix(o.key)
                    .is_some_and(|rest| rest.starts_with(['[', '.']))
        })
    }

    /// `config` with the overrides applied, or every variable whose text doesn't fit its key.
    pub fn apply(&self, config: &ExporterConfig) -> Result<ExporterConfig, Vec<ConfigError>> {
        if self.applied.is_empty() {
            return Ok(config.clone());
        }
        let mut errors = Vec::new();
        let mut tree = match serde_yaml::to_value(config) {
            Ok(tree) => tree,
            Err(e) => {
                return Err(vec![ConfigError {
                    path: String::new(),
                    line: None,
                    message: format!("cannot apply the SKYDIVE_* variables: {e}"),
                }]);
            }
        };
        for o in &self.applied {
            let kind = KEYS
                .iter()
                .find(|(k, _)| *k == o.key)
                .map_or(Text, |(_, kind)| *kind);
            match value_of(kind, &o.value) {
                Ok(value) => set(&mut tree, o.key, value),
                Err(why) => errors.push(ConfigError {
                    path: o.key.to_string(),
                    line: None,
                    message: format!("{} (set by {}): {why}", o.shown_value(), o.variable),
                }),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        serde_path_to_error::deserialize::<_, ExporterConfig>(tree).map_err(|e| {
            let path = e.path().to_string();
            let message = super::bare_message(&e.into_inner().to_string(), &path);
            let setter = self
                .setter_of(&path)
                .map(|o| format!(" (set by {})", o.variable))
                .unwrap_or_default();
            vec![ConfigError {
                path,
                line: None,
                message: format!("{message}{setter}"),
            }]
        })
    }
}

/// The YAML value a variable's text stands for.
fn value_of(kind: Kind, text: &str) -> Result<serde_yaml::Value, String> {
    use serde_yaml::Value;
    Ok(match kind {
        Text => Value::String(text.to_string()),
        Number => {
            let text = text.trim();
            if text.is_empty() {
                Value::Null
            } else {
                Value::Number(
                    text.parse::<u64>()
                        .map_err(|_| format!("'{text}' is not a whole number"))?
                        .into(),
                )
            }
        }
        Bool => Value::Bool(match text.trim() {
            "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
            "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => false,
            other => return Err(format!("'{other}' is not true or false")),
        }),
        List => Value::Sequence(
            text.split_whitespace()
                .map(|s| Value::String(s.to_string()))
                .collect(),
        ),
    })
}

/// Sets `path` (dotted) in `tree`, making the sections on the way.
fn set(tree: &mut serde_yaml::Value, path: &str, value: serde_yaml::Value) {
    use serde_yaml::Value;
    let mut node = tree;
    for part in path.split('.') {
        if !node.is_mapping() {
            *node = Value::Mapping(serde_yaml::Mapping::new());
        }
        let Value::Mapping(map) = node else { return };
        node = map
            .entry(Value::String(part.to_string()))
            .or_insert(Value::Null);
    }
    *node = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "pipeline:\n  subscriber:\n    url: ws://127.0.0.1:8082/ws/subscriber/flow\n  store:\n    buffered:\n      dirname: bucket\n      max_flows_per_object: 10\n      max_flow_array_size: 100\n";

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn names_follow_upstream() {
        assert_eq!(
            variable("pipeline.write.s3.secret_key"),
            "SKYDIVE_PIPELINE_WRITE_S3_SECRET_KEY"
        );
        assert_eq!(variable("a-b.c"), "SKYDIVE_A_B_C");
        // No two keys share a variable.
        let mut names: Vec<String> = KEYS.iter().map(|(k, _)| variable(k)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
    }

    #[test]
    fn every_key_of_the_file_can_be_set() {
        // A config with every optional section present, as YAML: each leaf is a key.
        let mut c = ExporterConfig::default();
        c.pipeline.transform.wasm = Some(Default::default());
        c.pipeline.mangle.wasm = Some(Default::default());
        c.pipeline.write.spool.max_objects = Some(1);
        c.pipeline.write.spool.max_bytes = Some(1);
        let mut tree = serde_yaml::to_value(&c).unwrap();
        for (key, value) in [
            ("pipeline.transform.wasm.deadline_ms", "1"),
            ("pipeline.transform.wasm.memory_bytes", "1"),
            ("pipeline.transform.wasm.output_bytes", "1"),
            ("pipeline.mangle.wasm.deadline_ms", "1"),
            ("pipeline.mangle.wasm.memory_bytes", "1"),
            ("pipeline.mangle.wasm.output_bytes", "1"),
        ] {
            set(&mut tree, key, value_of(Number, value).unwrap());
        }
        let mut leaves = Vec::new();
        walk(&tree, String::new(), &mut leaves);
        let not_settable = [
            "pipeline.storeheader.vpclogs",
            "pipeline.transform.wasm.config",
            "pipeline.mangle.wasm.config",
        ];
        for leaf in leaves {
            if not_settable.contains(&leaf.as_str()) {
                continue;
            }
            assert!(
                KEYS.iter().any(|(k, _)| *k == leaf),
                "{leaf} has no SKYDIVE_* variable"
            );
        }
    }

    fn walk(node: &serde_yaml::Value, path: String, out: &mut Vec<String>) {
        match node {
            serde_yaml::Value::Mapping(map) if !map.is_empty() => {
                for (k, v) in map {
                    let k = k.as_str().unwrap_or_default();
                    let p = if path.is_empty() {
                        k.to_string()
                    } else {
                        format!("{path}.{k}")
                    };
                    walk(v, p, out);
                }
            }
            _ => out.push(path),
        }
    }

    #[test]
    fn overrides_set_text_numbers_booleans_and_lists() {
        let env = vars(&[
            ("SKYDIVE_PIPELINE_WRITE_S3_SECRET_KEY", "hunter2"),
            ("SKYDIVE_PIPELINE_STORE_BUFFERED_MAX_FLOWS_PER_OBJECT", "50"),
            ("SKYDIVE_PIPELINE_ENCODE_JSON_PRETTY", "true"),
            (
                "SKYDIVE_PIPELINE_CLASSIFY_CLUSTER_NET_MASKS",
                "10.0.0.0/8  192.168.0.0/16\n",
            ),
            ("SKYDIVE_HOST_ID", "node-7"),
            ("SKYDIVE_LOGGING_LEVEL", "DEBUG"),
            ("PATH", "/bin"),
        ]);
        let (c, o) = ExporterConfig::load_with_env(FILE, env).unwrap();
        assert_eq!(c.pipeline.write.s3.secret_key, "hunter2");
        assert_eq!(c.pipeline.store.buffered.max_flows_per_object, 50);
        assert!(c.pipeline.encode.json.pretty);
        let masks: Vec<&str> = c
            .pipeline
            .classify
            .cluster_net_masks
            .iter()
            .map(|m| m.text())
            .collect();
        assert_eq!(masks, ["10.0.0.0/8", "192.168.0.0/16"]);
        assert_eq!(c.host_id.as_deref(), Some("node-7"));
        assert_eq!(o.unknown, ["SKYDIVE_LOGGING_LEVEL"]);
        let shown: Vec<(&str, &str)> = o.applied.iter().map(|o| (o.key, o.shown_value())).collect();
        assert!(shown.contains(&("pipeline.write.s3.secret_key", "<redacted>")));
        assert!(shown.contains(&("host_id", "node-7")));
    }

    #[test]
    fn a_bad_override_names_its_variable_and_key() {
        let env = vars(&[(
            "SKYDIVE_PIPELINE_STORE_BUFFERED_MAX_FLOWS_PER_OBJECT",
            "many",
        )]);
        let e = ExporterConfig::load_with_env(FILE, env).unwrap_err();
        assert_eq!(e.0[0].path, "pipeline.store.buffered.max_flows_per_object");
        assert_eq!(e.0[0].line, None);
        assert!(
            e.0[0]
                .message
                .contains("set by SKYDIVE_PIPELINE_STORE_BUFFERED_MAX_FLOWS_PER_OBJECT"),
            "{e}"
        );
        // A value that parses but fails validation: the variable, not the file's line.
        let env = vars(&[("SKYDIVE_PIPELINE_STORE_BUFFERED_MAX_FLOWS_PER_OBJECT", "0")]);
        let e = ExporterConfig::load_with_env(FILE, env).unwrap_err();
        assert_eq!(e.0[0].line, None, "{e}");
        assert!(e.0[0].message.contains("(set by SKYDIVE_"), "{e}");
        let env = vars(&[(
            "SKYDIVE_PIPELINE_CLASSIFY_CLUSTER_NET_MASKS",
            "10.0.0.0/8 nope",
        )]);
        let e = ExporterConfig::load_with_env(FILE, env).unwrap_err();
        assert_eq!(e.0[0].path, "pipeline.classify.cluster_net_masks[1]");
        assert!(e.0[0].message.contains("(set by SKYDIVE_"), "{e}");
    }

    #[test]
    fn the_file_alone_is_unchanged() {
        let (c, o) = ExporterConfig::load_with_env(FILE, vars(&[])).unwrap();
        assert!(o.applied.is_empty());
        assert_eq!(
            serde_yaml::to_string(&c).unwrap(),
            serde_yaml::to_string(&ExporterConfig::load(FILE).unwrap()).unwrap()
        );
    }
}

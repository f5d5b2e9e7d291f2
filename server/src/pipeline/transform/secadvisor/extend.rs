//! `extend`: `NAME=<gremlin template>` entries whose rendered query's first string result is
//! added to each record's `Extend` map (docs/stages.md §6.2.3).
//!
//! Templates use Go text/template field syntax over the record's Go field names
//! (`{{.Network.A}}`, `{{.Context.A.Name}}`, `{{.Extend.X}}`). Only field substitutions are
//! supported (with `{{-`/`-}}` trimming); any other action is a configuration error.

use std::sync::Arc;

use super::record::SecAdvisorRecord;
use crate::log_throttle::LogThrottle;
use crate::pipeline::ttl_cache::{DEFAULT_CAPACITY, TtlCache};
use crate::skydive::topology::TopologyClient;

/// How long a rendered query's result is reused, "" included (upstream: 10 min).
pub const EXTEND_TTL_MS: i64 = 10 * 60 * 1000;

/// Why a template could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{` without `}}`.
    #[error("unclosed action at byte {0}")]
    Unclosed(usize),
    /// An action other than a field path.
    #[error(
        "unsupported action '{{{{{0}}}}}': only field paths such as {{{{.Network.A}}}} are supported"
    )]
    Unsupported(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Field(Vec<String>),
}

/// A parsed template: literal text and field substitutions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses Go template text limited to `{{.Field.Path}}` actions.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let mut literal = &rest[..open];
            if trim_next {
                literal = literal.trim_start();
            }
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + open))?;
            let mut action = &after[..close];
            let mut literal = literal.to_string();
            if let Some(inner) = action.strip_prefix('-')
                && inner.starts_with(char::is_whitespace)
            {
                literal.truncate(literal.trim_end().len());
                action = inner;
            }
            trim_next = false;
            if let Some(inner) = action.strip_suffix('-')
                && inner.ends_with(char::is_whitespace)
            {
                trim_next = true;
                action = inner;
            }
            if !literal.is_empty() {
                parts.push(Part::Text(literal));
            }
            parts.push(Part::Field(parse_path(action.trim())?));
            let consumed = open + 2 + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        let tail = if trim_next { rest.trim_start() } else { rest };
        if !tail.is_empty() {
            parts.push(Part::Text(tail.to_string()));
        }
        Ok(Template { parts })
    }

    /// Renders against the record; `None` when a path can't be evaluated (Go's execution error,
    /// upon which the variable is skipped).
    pub fn render(&self, record: &SecAdvisorRecord) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Field(path) => out.push_str(&record.field(path)?),
            }
        }
        Some(out)
    }
}

fn parse_path(action: &str) -> Result<Vec<String>, TemplateError> {
    let unsupported = || TemplateError::Unsupported(action.to_string());
    let path = action.strip_prefix('.').ok_or_else(unsupported)?;
    let keys: Vec<String> = path.split('.').map(str::to_string).collect();
    let ident = |k: &String| {
        let mut chars = k.chars();
        chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
            && chars.all(|c| c.is_alphanumeric() || c == '_')
    };
    if keys.iter().all(ident) {
        Ok(keys)
    } else {
        Err(unsupported())
    }
}

/// One `NAME=<template>` entry of `transform.secadvisor.extend`, split at the first `=` and
/// parsed when the file is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtendEntry {
    /// The key under `Extend` in each record.
    pub name: String,
    /// The gremlin query template.
    pub template: Template,
}

impl crate::config::ParseText for ExtendEntry {
    fn parse_text(entry: &str) -> Result<Self, String> {
        let (name, text) = entry
            .split_once('=')
            .ok_or_else(|| "must have the form NAME=<gremlin template>".to_string())?;
        let template = Template::parse(text).map_err(|e| e.to_string())?;
        Ok(ExtendEntry {
            name: name.to_string(),
            template,
        })
    }
}

/// The configured `extend` entries, with the result cache.
#[derive(Debug)]
pub struct Extender {
    client: Arc<TopologyClient>,
    templates: Vec<(String, Template)>,
    cache: TtlCache<String>,
    failures: LogThrottle,
}

impl Extender {
    /// The entries, in order.
    pub fn new(client: Arc<TopologyClient>, entries: &[ExtendEntry]) -> Self {
        Extender {
            client,
            templates: entries
                .iter()
                .map(|e| (e.name.clone(), e.template.clone()))
                .collect(),
            cache: TtlCache::new(DEFAULT_CAPACITY),
            failures: LogThrottle::default(),
        }
    }

    /// Whether any entry is configured.
    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }

    /// Stores a result as if it had been queried (tests seed the cache as upstream's do).
    pub fn seed(&mut self, query: &str, value: &str, now_ms: i64) {
        self.cache
            .insert(query, value.to_string(), EXTEND_TTL_MS, now_ms);
    }

    /// Evaluates every entry in order against the record as it stands.
    pub async fn apply(&mut self, record: &mut SecAdvisorRecord, now_ms: i64) {
        for (name, template) in &self.templates {
            let Some(query) = template.render(record) else {
                tracing::debug!(variable = %name, uuid = %record.uuid, "extend template not applicable");
                continue;
            };
            let value = match self.cache.get(&query, now_ms) {
                Some(v) => v.clone(),
                None => {
                    let v = first_string(&self.client, &query, &mut self.failures).await;
                    self.cache.insert(&query, v.clone(), EXTEND_TTL_MS, now_ms);
                    v
                }
            };
            record.extend.insert(name.clone(), value);
        }
    }
}

/// The first string of the query's answer; "" on any failure or an empty answer.
async fn first_string(client: &TopologyClient, query: &str, failures: &mut LogThrottle) -> String {
    let answer = match client.query(query).await {
        Ok(answer) => answer,
        Err(e) => {
            if let Some(not_logged) = failures.allow() {
                tracing::warn!(query, error = %e, not_logged, "extend query failed");
            }
            return String::new();
        }
    };
    match serde_json::from_value::<Option<Vec<String>>>(answer) {
        Ok(values) => values
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default(),
        Err(e) => {
            if let Some(not_logged) = failures.allow() {
                tracing::warn!(query, error = %e, not_logged, "extend answer is not a list of strings");
            }
            String::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::transform::secadvisor::record::{
        PeerContext, PeerContexts, PeerType, SecAdvisorLayer,
    };

    fn record() -> SecAdvisorRecord {
        SecAdvisorRecord {
            uuid: "u-1".into(),
            start: 42,
            link_id: 7,
            network: Some(SecAdvisorLayer {
                protocol: "IPV4".into(),
                a: "10.0.0.1".into(),
                b: "10.0.0.2".into(),
                a_name: "0_0_ns-p_0".into(),
                ..Default::default()
            }),
            context: Some(PeerContexts {
                a: Some(PeerContext {
                    kind: PeerType::Pod,
                    name: "ns/p".into(),
                    set: String::new(),
                }),
                b: None,
            }),
            extend: [("X".to_string(), "x-value".to_string())].into(),
            ..Default::default()
        }
    }

    #[test]
    fn renders_go_field_paths() {
        let r = record();
        let t = |text: &str| Template::parse(text).unwrap().render(&r);
        assert_eq!(
            t("G.V().Has('RoutingTables.Src','{{.Network.A}}').Values('Host')").as_deref(),
            Some("G.V().Has('RoutingTables.Src','10.0.0.1').Values('Host')")
        );
        assert_eq!(
            t("{{ .UUID }}/{{.Start}}/{{.LinkID}}").as_deref(),
            Some("u-1/42/7")
        );
        assert_eq!(
            t("{{.Context.A.Name}}:{{.Context.A.Type}}").as_deref(),
            Some("ns/p:pod")
        );
        assert_eq!(t("{{.Network.AName}}").as_deref(), Some("0_0_ns-p_0"));
        assert_eq!(
            t("{{.Extend.X}}|{{.Extend.Y}}").as_deref(),
            Some("x-value|<no value>")
        );
        assert_eq!(t("a  {{- .UUID -}}  b").as_deref(), Some("au-1b"));
        assert_eq!(t("no actions }}").as_deref(), Some("no actions }}"));
    }

    #[test]
    fn nil_paths_and_unknown_fields_skip() {
        let r = record();
        for text in [
            "{{.Transport.A}}",
            "{{.Context.B.Name}}",
            "{{.Metric.ABBytes}}",
            "{{.Network.Nope}}",
            "{{.Network}}",
            "{{.Nope}}",
        ] {
            assert_eq!(Template::parse(text).unwrap().render(&r), None, "{text}");
        }
        let bare = SecAdvisorRecord::default();
        assert_eq!(
            Template::parse("{{.Network.A}}").unwrap().render(&bare),
            None
        );
    }

    #[test]
    fn bad_templates_are_config_errors() {
        assert_eq!(Template::parse("x {{.A"), Err(TemplateError::Unclosed(2)));
        for text in [
            "{{if .A}}x{{end}}",
            "{{.}}",
            "{{ .A | printf }}",
            "{{len .A}}",
            "{{.A..B}}",
        ] {
            assert!(
                matches!(Template::parse(text), Err(TemplateError::Unsupported(_))),
                "{text}"
            );
        }
        use crate::config::ParseText as _;
        assert!(ExtendEntry::parse_text("OK={{.UUID}}").is_ok());
        let err = ExtendEntry::parse_text("BAD={{.UUID").unwrap_err();
        assert!(err.starts_with("unclosed"), "{err}");
        assert!(ExtendEntry::parse_text("NOEQUALS").is_err());
    }
}

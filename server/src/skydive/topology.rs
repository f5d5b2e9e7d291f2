//! Client for the analyzer's topology REST API: gremlin queries over `POST /api/topology`
//! (docs/stages.md §14, docs/skydive-protocol.md §5).
//!
//! Used by the secadvisor transform (context, node type and `extend` lookups) and by the
//! `subnet_autodiscovery` classifier. Upstream picks a random analyzer from `analyzers` per
//! client; we use the first one (`127.0.0.1:8082`, Skydive's default, when the list is empty).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{Credentials, ExporterConfig, TlsSection};
use crate::egress::EgressPolicy;

/// The analyzer used when `analyzers` is empty (Skydive's default).
pub const DEFAULT_ANALYZER: &str = "127.0.0.1:8082";

/// Request timeout, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Largest answer accepted, so a huge topology can't exhaust memory.
pub const MAX_RESPONSE_BYTES: usize = 16 << 20;

/// Queries one client has in flight at once: lookups overlap their round trips, but a
/// pipeline never opens more than this many connections to its analyzer (docs/stages.md
/// §6.2.4). At 8, a cold pipeline against a 5 ms analyzer ran at 0.14x of warm, at 32 at
/// 0.25x (`cargo bench -p sluice --bench pipeline -- analyzer`).
pub const MAX_IN_FLIGHT: usize = 32;

/// Why a topology query failed.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// The TLS material can't be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The analyzer's address is not a host and port.
    #[error("analyzers: {0}")]
    Analyzer(String),
    /// The egress policy refuses the analyzer.
    #[error(transparent)]
    Egress(#[from] crate::egress::EgressError),
    /// The HTTP client could not be built (bad TLS material).
    #[error("cannot build the topology client: {0}")]
    Client(#[source] reqwest::Error),
    /// Connection, timeout or transfer failure.
    #[error("topology request to {url} failed: {source}")]
    Request {
        /// The endpoint.
        url: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// The analyzer answered with a status other than 200 (upstream's `<status>: <body>`).
    #[error("{status}: {body}")]
    Status {
        /// e.g. `400 Bad Request`.
        status: String,
        /// The body, as text.
        body: String,
    },
    /// The answer is larger than [`MAX_RESPONSE_BYTES`].
    #[error("topology answer larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    /// The answer is not the JSON expected.
    #[error("bad topology answer: {0}")]
    Decode(String),
    /// The query matched no node.
    #[error("no result")]
    NoResult,
}

/// A topology node as the analyzer returns it; only the parts the exporter reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Node {
    /// Node id.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Node metadata (nested maps).
    #[serde(rename = "Metadata", default)]
    pub metadata: Map<String, Value>,
}

impl Node {
    /// The metadata value at a dotted path such as `K8s.Extra.Status.Addresses`.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut keys = path.split('.');
        let mut value = self.metadata.get(keys.next()?)?;
        for key in keys {
            value = value.as_object()?.get(key)?;
        }
        Some(value)
    }

    /// The string at a dotted metadata path; `None` when missing or not a string.
    pub fn get_str(&self, path: &str) -> Option<&str> {
        self.get(path)?.as_str()
    }

    /// Every value at a dotted metadata path, walking into arrays on the way and at the end
    /// as the analyzer's `Has` does (`Runc.Hosts.IP` in a list of hosts, `IPV4` a list of
    /// addresses).
    pub fn values(&self, path: &str) -> Vec<&Value> {
        let mut keys = path.split('.');
        let mut current: Vec<&Value> = keys
            .next()
            .and_then(|k| self.metadata.get(k))
            .into_iter()
            .collect();
        for key in keys {
            current = current
                .into_iter()
                .flat_map(|v| match v {
                    Value::Array(items) => items.iter().filter_map(|i| i.get(key)).collect(),
                    other => other.get(key).into_iter().collect::<Vec<_>>(),
                })
                .collect();
        }
        current
            .into_iter()
            .flat_map(|v| match v {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            })
            .collect()
    }
}

/// Quotes a gremlin string argument as Skydive's query builder does (JSON, double quotes).
pub fn quote(text: &str) -> String {
    Value::from(text).to_string()
}

/// A client for one analyzer's `/api/topology`.
#[derive(Debug, Clone)]
pub struct TopologyClient {
    http: reqwest::Client,
    url: String,
    credentials: Option<Credentials>,
    /// The analyzer's address when it is written as one (the resolver never sees it).
    literal: Option<std::net::SocketAddr>,
    egress: EgressPolicy,
    /// Bounds the queries in flight ([`MAX_IN_FLIGHT`]).
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl TopologyClient {
    /// From the pipeline file: the first of `analyzers`, `analyzer.auth.cluster` and `tls`
    /// (HTTPS with its CA and client certificate when any `tls` value is set), connecting
    /// where `egress` allows.
    pub fn from_config(
        config: &ExporterConfig,
        egress: &EgressPolicy,
    ) -> Result<Self, TopologyError> {
        let analyzer = config
            .analyzers
            .first()
            .map_or(DEFAULT_ANALYZER, String::as_str);
        let cluster = &config.analyzer.auth.cluster;
        let credentials = (!cluster.username.is_empty()).then(|| cluster.clone());
        Self::build(analyzer, credentials, &config.tls, egress)
    }

    /// A plain-HTTP client for `host:port`, optionally with basic authentication.
    pub fn new(analyzer: &str, credentials: Option<Credentials>) -> Result<Self, TopologyError> {
        Self::build(
            analyzer,
            credentials,
            &TlsSection::default(),
            &EgressPolicy::unrestricted(),
        )
    }

    fn build(
        analyzer: &str,
        credentials: Option<Credentials>,
        tls: &TlsSection,
        egress: &EgressPolicy,
    ) -> Result<Self, TopologyError> {
        let tls = crate::tls::client_config(tls)?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{analyzer}/api/topology");
        let destination = crate::config::destination(&url).map_err(TopologyError::Analyzer)?;
        let mut builder = crate::egress::http_client(egress, destination.port())
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT);
        if let Some(tls) = tls {
            builder = builder.use_preconfigured_tls(rustls::ClientConfig::clone(&tls));
        }
        Ok(TopologyClient {
            http: builder.build().map_err(TopologyError::Client)?,
            url,
            credentials,
            literal: destination.literal_addr(),
            egress: egress.clone(),
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// The endpoint queried.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs a gremlin query and returns the decoded JSON answer.
    pub async fn query(&self, gremlin: &str) -> Result<Value, TopologyError> {
        let body = self.query_raw(gremlin).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| TopologyError::Decode(e.to_string()))
    }

    /// Runs a gremlin query and returns the answer's bytes (status 200 only).
    pub async fn query_raw(&self, gremlin: &str) -> Result<Vec<u8>, TopologyError> {
        let request_error = |source| TopologyError::Request {
            url: self.url.clone(),
            source,
        };
        let mut request = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(serde_json::json!({ "GremlinQuery": gremlin }).to_string());
        if let Some(c) = &self.credentials {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        if let Some(addr) = self.literal {
            self.egress.check(addr)?;
        }
        tracing::trace!(query = gremlin, "topology query");
        // Never closed, so acquiring only waits.
        let _slot = self.in_flight.acquire().await;
        let response = request.send().await.map_err(request_error)?;
        let status = response.status();
        let body = crate::egress::read_body(response, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| match e {
                crate::egress::BodyError::TooLarge(_) => TopologyError::TooLarge,
                crate::egress::BodyError::Transfer(source) => request_error(source),
            })?;
        if status != reqwest::StatusCode::OK {
            return Err(TopologyError::Status {
                status: status.to_string(),
                body: String::from_utf8_lossy(&body).into_owned(),
            });
        }
        Ok(body)
    }

    /// The nodes of a node query; paths (nested arrays) are flattened in order and anything
    /// that is not an object or array is ignored. `null` gives no node.
    pub async fn nodes(&self, gremlin: &str) -> Result<Vec<Node>, TopologyError> {
        Ok(self.paths(gremlin).await?.into_iter().flatten().collect())
    }

    /// The answer's items, each flattened into its nodes as [`TopologyClient::nodes`] does:
    /// one path per item of a `ShortestPathTo` query (a node alone is a path of one).
    pub async fn paths(&self, gremlin: &str) -> Result<Vec<Vec<Node>>, TopologyError> {
        match self.query(gremlin).await? {
            Value::Null => Ok(Vec::new()),
            Value::Array(items) => items
                .into_iter()
                .map(|item| {
                    let mut nodes = Vec::new();
                    flatten_nodes(vec![item], &mut nodes)?;
                    Ok(nodes)
                })
                .collect(),
            other => Err(TopologyError::Decode(format!(
                "expected an array of nodes, got {}",
                kind_of(&other)
            ))),
        }
    }

    /// The first node (after flattening) of a node query; an empty result is an error.
    pub async fn first_node(&self, gremlin: &str) -> Result<Node, TopologyError> {
        self.nodes(gremlin)
            .await?
            .into_iter()
            .next()
            .ok_or(TopologyError::NoResult)
    }
}

fn flatten_nodes(items: Vec<Value>, out: &mut Vec<Node>) -> Result<(), TopologyError> {
    for item in items {
        match item {
            Value::Array(inner) => flatten_nodes(inner, out)?,
            object @ Value::Object(_) => out.push(
                serde_json::from_value(object).map_err(|e| TopologyError::Decode(e.to_string()))?,
            ),
            _ => {}
        }
    }
    Ok(())
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
pub(crate) mod mock;

#[cfg(test)]
mod tests {
    use super::*;
    use mock::MockAnalyzer;
    use serde_json::json;

    #[tokio::test]
    async fn sends_the_query_with_headers_and_basic_auth() {
        let mock = MockAnalyzer::start([(
            "G.V().Has(\"TID\", \"x\")".to_string(),
            json!([[{"ID": "a", "Metadata": {"Type": "netns", "K8s": {"Name": "n"}}}], {"ID": "b"}, 3]),
        )])
        .await;
        let client = TopologyClient::new(
            &mock.addr,
            Some(Credentials {
                username: "admin".into(),
                password: "secret".into(),
            }),
        )
        .unwrap();
        let nodes = client
            .nodes(&format!("G.V().Has(\"TID\", {})", quote("x")))
            .await
            .unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[0].id, "a");
        assert_eq!(nodes[0].get_str("Type"), Some("netns"));
        assert_eq!(nodes[0].get_str("K8s.Name"), Some("n"));
        assert_eq!(nodes[0].get_str("K8s.Missing"), None);
        let requests = mock.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].query, "G.V().Has(\"TID\", \"x\")");
        assert_eq!(requests[0].content_type, "application/json");
        assert_eq!(requests[0].accept, "application/json");
        // "admin:secret" in base64.
        assert_eq!(requests[0].authorization, "Basic YWRtaW46c2VjcmV0");
    }

    #[tokio::test]
    async fn errors_carry_status_and_body_and_empty_is_no_result() {
        let mock = MockAnalyzer::start([]).await;
        let client = TopologyClient::new(&mock.addr, None).unwrap();
        let err = client.query(mock::FAIL_QUERY).await.unwrap_err();
        assert_eq!(err.to_string(), "400 Bad Request: no such step");
        assert!(matches!(
            client.first_node("G.V().Has(\"TID\", \"none\")").await,
            Err(TopologyError::NoResult)
        ));
        assert_eq!(mock.requests()[1].authorization, "");
        let down = TopologyClient::new("127.0.0.1:1", None).unwrap();
        assert!(matches!(
            down.query("G.V()").await,
            Err(TopologyError::Request { .. })
        ));
    }

    #[test]
    fn config_picks_first_analyzer_and_https_with_tls() {
        let open = EgressPolicy::unrestricted();
        let mut config = ExporterConfig::default();
        assert_eq!(
            TopologyClient::from_config(&config, &open).unwrap().url(),
            "http://127.0.0.1:8082/api/topology"
        );
        config.analyzers = vec!["a:1".into(), "b:2".into()];
        config.tls.ca_cert = "/nonexistent/ca.pem".into();
        let err = TopologyClient::from_config(&config, &open).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("tls.ca_cert: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
        config.tls.ca_cert.clear();
        config.tls.client_cert = "x".into();
        let err = TopologyClient::from_config(&config, &open).unwrap_err();
        assert!(err.to_string().contains("client_key"), "{err}");
    }

    #[tokio::test]
    async fn a_denied_analyzer_is_not_contacted() {
        let mock = MockAnalyzer::start([]).await;
        let config = ExporterConfig {
            analyzers: vec![mock.addr.clone()],
            ..Default::default()
        };
        let deny = EgressPolicy::new(
            &[],
            &["127.0.0.0/8".parse().unwrap()],
            crate::egress::Action::Allow,
            vec![],
        );
        let err = TopologyClient::from_config(&config, &deny)
            .unwrap()
            .query("G.V()")
            .await
            .unwrap_err();
        assert!(matches!(err, TopologyError::Egress(_)), "{err}");
        assert!(mock.requests().is_empty());
    }
}

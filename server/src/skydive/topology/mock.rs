//! A real HTTP analyzer for tests: answers `POST /api/topology` from a table of
//! gremlin query → JSON answer, `[]` for any other query, and records every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

/// A query the mock answers with `400 Bad Request` and the body `no such step`.
pub const FAIL_QUERY: &str = "G.V().Fail()";

/// One request the mock received.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// `GremlinQuery` of the body.
    pub query: String,
    /// `Content-Type` header.
    pub content_type: String,
    /// `Accept` header.
    pub accept: String,
    /// `Authorization` header ("" when absent).
    pub authorization: String,
}

#[derive(Default)]
struct Shared {
    answers: HashMap<String, Value>,
    seen: Mutex<Vec<Seen>>,
}

/// A running mock analyzer; it stops with the test's runtime.
pub struct MockAnalyzer {
    /// `127.0.0.1:<port>`.
    pub addr: String,
    shared: Arc<Shared>,
}

impl MockAnalyzer {
    /// Starts a server on 127.0.0.1 with an ephemeral port.
    pub async fn start(answers: impl IntoIterator<Item = (String, Value)>) -> Self {
        let shared = Arc::new(Shared {
            answers: answers.into_iter().collect(),
            seen: Mutex::default(),
        });
        let app = Router::new()
            .route("/api/topology", post(topology))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockAnalyzer { addr, shared }
    }

    /// Requests received so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Just the queries received so far, in order.
    pub fn queries(&self) -> Vec<String> {
        self.requests().into_iter().map(|s| s.query).collect()
    }
}

async fn topology(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let query = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["GremlinQuery"].as_str().map(str::to_string))
        .unwrap_or_default();
    shared.seen.lock().unwrap().push(Seen {
        query: query.clone(),
        content_type: header("content-type"),
        accept: header("accept"),
        authorization: header("authorization"),
    });
    if query == FAIL_QUERY {
        return (StatusCode::BAD_REQUEST, "no such step".into());
    }
    let answer = shared
        .answers
        .get(&query)
        .cloned()
        .unwrap_or_else(|| Value::Array(Vec::new()));
    (StatusCode::OK, format!("{answer}\n"))
}

//! The REST API of `sluice serve` (docs/service.md §3): one file per resource, each with a `router()`
//! whose handlers carry their OpenAPI description, so `/v1/openapi.json` is generated from the
//! routes actually served.
//!
//! Every route but `/healthz` and `/readyz` takes `Authorization: Bearer <token>` (`/metrics`
//! the admin's or the configured `metrics_token`).
//! A tenant sees only its own resources (another tenant's answer 404); admin routes answer a
//! tenant 403. Errors are `{"error": {"code", "message"}}` ([`ApiError`]).

pub mod admin;
pub mod auth;
pub mod body;
pub mod error;
pub mod forward;
pub mod health;
pub mod modules;
pub mod openapi;
pub mod pipelines;
pub mod tenants;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

pub use auth::Caller;
pub use error::ApiError;

use crate::db::Db;
use crate::serve::cluster::Cluster;
use crate::serve::config::Limits;
use crate::supervisor::Supervisor;

/// What every handler shares.
#[derive(Debug)]
pub struct App {
    /// The database.
    pub db: Db,
    /// The running pipelines.
    pub supervisor: Supervisor,
    /// SHA-256 of the admin token.
    pub admin_hash: [u8; 32],
    /// SHA-256 of the token that may read `/metrics` besides the admin's.
    pub metrics_hash: Option<[u8; 32]>,
    /// Limits from the server config.
    pub limits: Limits,
    /// This node's id (on leases).
    pub node: String,
    /// This node in the cluster of nodes sharing the database.
    pub cluster: Cluster,
    /// The HTTP client requests about another node's pipelines are forwarded with.
    pub peers: reqwest::Client,
    /// Requests answered, by status.
    pub requests: Mutex<BTreeMap<u16, u64>>,
    /// Tenant tokens recently seen valid.
    pub tokens: auth::TokenCache,
}

impl App {
    /// Requests answered so far, by status.
    pub fn request_counts(&self) -> Vec<(u16, u64)> {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

/// The routes and the OpenAPI document describing them.
pub fn routes() -> (Router<Arc<App>>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(tenants::router())
        .merge(pipelines::router())
        .merge(modules::router())
        .merge(admin::router())
        .merge(health::router())
        .merge(openapi::router())
        .split_for_parts()
}

/// The whole API as a service.
pub fn router(app: Arc<App>) -> Router {
    let (routes, document) = routes();
    let document = Arc::new(document);
    routes
        .layer(axum::Extension(document))
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(
            app.clone(),
            forward::forward,
        ))
        .layer(DefaultBodyLimit::max(app.limits.max_body_bytes))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("A request handler panicked.");
            ApiError::Internal("the request failed inside the server".into()).into_response()
        }))
        .layer(middleware::from_fn_with_state(app.clone(), count_requests))
        .with_state(app)
}

async fn count_requests(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    *app.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(response.status().as_u16())
        .or_default() += 1;
    response
}

pub use crate::rfc3339;

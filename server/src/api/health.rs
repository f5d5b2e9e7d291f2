//! `/healthz` and `/readyz` (no token needed), `/metrics` (the operator's, every tenant's
//! series) and `/v1/metrics` (a tenant's own pipelines).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::App;
use super::auth::{Caller, MetricsReader};
use super::error::ErrorBody;
use crate::metrics::{PipelineSeries, ServerSeries, render_prometheus};

/// The health and metrics routes.
pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(tenant_metrics))
}

/// Liveness: the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "`ok`", content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses((status = 200, description = "`ready`", content_type = "text/plain"),
        (status = 503, description = "The database does not answer", content_type = "text/plain")))]
async fn readyz(State(app): State<Arc<App>>) -> (StatusCode, &'static str) {
    if app.db.ping().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
    }
}

/// Prometheus text format: per pipeline counters, pipelines by state, API requests by status.
/// For the administrator, or the scrape job's `metrics_token`: it names every tenant.
#[utoipa::path(get, path = "/metrics", tag = "health", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain"),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn metrics(State(app): State<Arc<App>>, _reader: MetricsReader) -> impl IntoResponse {
    let server = ServerSeries {
        states: app.supervisor.states(),
        api_requests: app.request_counts(),
    };
    prometheus_text(render_prometheus(&series(&app, None), Some(&server)))
}

/// The caller's own pipelines' series in Prometheus text format (every pipeline for the admin).
#[utoipa::path(get, path = "/v1/metrics", tag = "health", security(("bearer" = [])),
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain"),
        (status = 401, body = ErrorBody)))]
async fn tenant_metrics(State(app): State<Arc<App>>, caller: Caller) -> impl IntoResponse {
    prometheus_text(render_prometheus(&series(&app, caller.scope()), None))
}

/// The series of every pipeline of `tenant` (of everyone's with `None`).
fn series(app: &App, tenant: Option<&str>) -> Vec<PipelineSeries> {
    app.supervisor
        .all()
        .into_iter()
        .filter(|(_, live)| tenant.is_none_or(|t| live.tenant_id == t))
        .map(|(id, live)| PipelineSeries {
            tenant: live.tenant_id.clone(),
            pipeline: id,
            counters: live.counters(),
            connected: live.connected(),
            restarts: live.restarts.load(std::sync::atomic::Ordering::Relaxed),
        })
        .collect()
}

fn prometheus_text(text: String) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

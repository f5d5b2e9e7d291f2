//! `/healthz`, `/readyz` and `/metrics`: no token needed.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::App;
use crate::metrics::{PipelineSeries, render_prometheus};

/// The health and metrics routes.
pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
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
    if app.store.ping().await {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
    }
}

/// Prometheus text format: per pipeline counters, pipelines by state, API requests by status.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain")))]
async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let series: Vec<PipelineSeries> = app
        .supervisor
        .all()
        .into_iter()
        .map(|(id, live)| PipelineSeries {
            tenant: live.tenant_id.clone(),
            pipeline: id,
            counters: live.counters(),
            connected: live.connected(),
            restarts: live.restarts.load(std::sync::atomic::Ordering::Relaxed),
        })
        .collect();
    let text = render_prometheus(&series, &app.supervisor.states(), &app.request_counts());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

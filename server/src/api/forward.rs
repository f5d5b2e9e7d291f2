//! Any node answers every route (docs/service.md §9): a request about a pipeline another live
//! node runs is forwarded to that node, which answers it as its owner (status and counters
//! fresh, logs from its memory, start/stop/replace/delete applied where the pipeline runs).
//!
//! The node's address comes from the `nodes` table, which only nodes write, from their own
//! configuration (`advertise_address` or the listen address): operator data, never a tenant's,
//! so the tenant egress policy does not apply to it. The caller's headers go along unchanged
//! (the owner authenticates and authorises the request itself, exactly as if it came first
//! there); a request already forwarded (`Sluice-Forwarded-By`) is answered where it lands, so
//! a request is forwarded at most once. When the owner is gone or does not answer, this node
//! answers from the database (the status the owner last published).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, App};
use crate::db::{nodes, ownership};

/// Marks a forwarded request with the node that forwarded it.
pub const FORWARDED_BY: HeaderName = HeaderName::from_static("sluice-forwarded-by");
/// The longest a forwarded request may take (a dry run may take 40 s).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(60);
/// Response headers carried back.
const KEPT: [&str; 2] = ["content-type", "sluice-guest-log-dropped"];

/// The client of forwarded requests: no proxy from the environment, no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FORWARD_TIMEOUT)
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("a plain HTTP client builds")
}

/// The pipeline a path is about: `/v1/pipelines/{id}` and everything under it.
fn pipeline_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/pipelines/")?;
    let id = rest.split('/').next()?;
    (!id.is_empty()).then_some(id)
}

/// The middleware.
pub async fn forward(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let Some(id) = pipeline_of(request.uri().path()).map(str::to_string) else {
        return next.run(request).await;
    };
    if request.headers().contains_key(&FORWARDED_BY) || app.supervisor.live(&id).is_some() {
        return next.run(request).await;
    }
    let Some(address) = owner_address(&app, &id).await else {
        return next.run(request).await;
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, app.limits.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge(app.limits.max_body_bytes).into_response(),
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_string(), |p| p.as_str().to_string());
    let mut headers = parts.headers.clone();
    for hop in [header::HOST, header::CONNECTION, header::CONTENT_LENGTH] {
        headers.remove(hop);
    }
    if let Ok(node) = HeaderValue::from_str(&app.node) {
        headers.insert(FORWARDED_BY, node);
    }
    let sent = app
        .peers
        .request(parts.method.clone(), format!("http://{address}{path}"))
        .headers(headers)
        .body(bytes.clone())
        .send()
        .await;
    let answer = match sent {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(pipeline = %id, owner = %address, error = %e, "Cannot forward to the pipeline's node; answering here.");
            return next
                .run(Request::from_parts(parts, Body::from(bytes)))
                .await;
        }
    };
    let status = answer.status();
    let mut kept = Vec::new();
    for name in KEPT {
        if let Some(value) = answer.headers().get(name) {
            kept.push((HeaderName::from_static(name), value.clone()));
        }
    }
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(pipeline = %id, owner = %address, error = %e, "The pipeline's node broke off its answer.");
            return ApiError::Internal("the pipeline's node broke off its answer".into())
                .into_response();
        }
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    for (name, value) in kept {
        response.headers_mut().insert(name, value);
    }
    response
}

/// The address of the live node other than this one that holds `id`, if any.
async fn owner_address(app: &App, id: &str) -> Option<String> {
    let owner = ownership::owner(&app.db, id).await.ok()??;
    if owner.node == app.node {
        return None;
    }
    let node = nodes::get(&app.db, &owner.node).await.ok()??;
    let ttl = app.cluster.timings().ttl.as_millis() as i64;
    (node.heartbeat_at >= crate::now_ms() - ttl).then_some(node.address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_under_a_pipeline_are_forwarded() {
        assert_eq!(pipeline_of("/v1/pipelines/pl_1"), Some("pl_1"));
        assert_eq!(pipeline_of("/v1/pipelines/pl_1/status"), Some("pl_1"));
        assert_eq!(pipeline_of("/v1/pipelines"), None);
        assert_eq!(pipeline_of("/v1/pipelines/"), None);
        assert_eq!(pipeline_of("/v1/tenants/t1"), None);
    }
}

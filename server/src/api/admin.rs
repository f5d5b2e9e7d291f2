//! `/v1/admin`: server-wide views for the administrator.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AdminOnly;
use super::error::{ApiError, ErrorBody};
use super::{App, rfc3339};
use crate::db::{leases, nodes};

/// The admin routes.
pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(list_leases))
        .routes(routes!(list_nodes))
        .routes(routes!(drain_node))
}

/// A `sluice serve` node sharing the database (docs/service.md §9).
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    /// `node_id` (default: the hostname).
    pub id: String,
    /// Where the other nodes reach its API.
    pub address: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339 of its last heartbeat.
    pub last_heartbeat: String,
    /// Whether its heartbeat is recent (within the lease lifetime).
    pub live: bool,
    /// Whether it is handing its pipelines over (drain or shutdown) and takes no new ones.
    pub draining: bool,
    /// Pipelines it holds.
    pub pipelines: i64,
}

/// `GET /v1/admin/nodes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeList {
    /// Every node that joined, by id.
    pub nodes: Vec<NodeView>,
}

fn node_view(app: &App, n: nodes::NodeRow) -> NodeView {
    let ttl = app.cluster.timings().ttl.as_millis() as i64;
    NodeView {
        live: n.heartbeat_at >= crate::now_ms() - ttl,
        id: n.id,
        address: n.address,
        started_at: rfc3339(n.started_at),
        last_heartbeat: rfc3339(n.heartbeat_at),
        draining: n.draining != 0,
        pipelines: n.pipelines,
    }
}

/// Every node, its address, last heartbeat and how many pipelines it runs.
#[utoipa::path(get, path = "/v1/admin/nodes", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = NodeList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_nodes(State(app): State<Arc<App>>, _: AdminOnly) -> Result<Json<NodeList>, ApiError> {
    let all = nodes::list(&app.db).await?;
    Ok(Json(NodeList {
        nodes: all.into_iter().map(|n| node_view(&app, n)).collect(),
    }))
}

/// Drains a node: it hands every pipeline over to the other live nodes at once (each flushed
/// first) and takes no new ones, without stopping. A restart of the node ends the drain.
#[utoipa::path(post, path = "/v1/admin/nodes/{id}/drain", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "Node id")),
    responses((status = 202, description = "The node hands its pipelines over within a second", body = NodeView),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn drain_node(
    State(app): State<Arc<App>>,
    _: AdminOnly,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<NodeView>), ApiError> {
    if !nodes::set_draining(&app.db, &id).await? {
        return Err(ApiError::NotFound(format!("no node `{id}`")));
    }
    tracing::info!(node = %id, "Drain requested.");
    let node = nodes::get(&app.db, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no node `{id}`")))?;
    Ok((StatusCode::ACCEPTED, Json(node_view(&app, node))))
}

/// One host_id lease.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseView {
    /// The analyzer (`pipeline.subscriber.url`).
    pub analyzer: String,
    /// The leased host_id.
    pub host_id: String,
    /// Owner of the holder pipeline.
    pub tenant_id: String,
    /// The holder pipeline.
    pub pipeline_id: String,
    /// The node that renews it.
    pub node: String,
    /// RFC 3339.
    pub acquired_at: String,
    /// RFC 3339; the holder renews it before then.
    pub expires_at: String,
}

/// `GET /v1/admin/leases`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LeaseList {
    /// Every live lease.
    pub leases: Vec<LeaseView>,
}

/// Every host_id lease.
#[utoipa::path(get, path = "/v1/admin/leases", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = LeaseList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_leases(
    State(app): State<Arc<App>>,
    _: AdminOnly,
) -> Result<Json<LeaseList>, ApiError> {
    let leases = leases::list(&app.db).await?;
    Ok(Json(LeaseList {
        leases: leases
            .into_iter()
            .map(|l| LeaseView {
                analyzer: l.analyzer,
                host_id: l.host_id,
                tenant_id: l.tenant_id,
                pipeline_id: l.pipeline_id,
                node: l.node,
                acquired_at: rfc3339(l.acquired_at),
                expires_at: rfc3339(l.expires_at),
            })
            .collect(),
    }))
}

//! `/v1/admin`: server-wide views for the administrator.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::AdminOnly;
use super::error::{ApiError, ErrorBody};
use super::{App, rfc3339};
use crate::db::leases;

/// The admin routes.
pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new().routes(routes!(list_leases))
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

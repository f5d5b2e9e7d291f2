//! `/v1/tenants`: the admin creates, lists and deletes tenants and rotates their tokens.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::{AdminOnly, hash_token, new_id, new_token};
use super::body::JsonBody;
use super::error::{ApiError, ErrorBody};
use super::{App, rfc3339};
use crate::db::{Tenant, pipelines, tenants, tokens};

/// Longest tenant name.
const MAX_NAME: usize = 200;

/// The tenant routes.
pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(delete_tenant))
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(delete_token))
}

/// `POST /v1/tenants` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Unique name, 1 to 200 characters.
    pub name: String,
}

/// A new tenant with its first token (shown only here).
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    /// Tenant id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Bearer token of the tenant: keep it, it is not shown again.
    pub token: String,
    /// Id of that token (to revoke it).
    pub token_id: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A tenant.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantView {
    /// Tenant id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// RFC 3339.
    pub created_at: String,
}

/// `GET /v1/tenants`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantList {
    /// Every tenant.
    pub tenants: Vec<TenantView>,
}

/// A new token (shown only here).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenCreated {
    /// Token id.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// The bearer token: keep it, it is not shown again.
    pub token: String,
}

/// A token, without its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    /// Token id.
    pub id: String,
    /// RFC 3339.
    pub created_at: String,
}

/// `GET /v1/tenants/{id}/tokens`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    /// The tenant's tokens.
    pub tokens: Vec<TokenView>,
}

fn view(t: Tenant) -> TenantView {
    TenantView {
        id: t.id,
        name: t.name,
        created_at: rfc3339(t.created_at),
    }
}

/// Creates a tenant and its first token.
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = CreateTenant,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the token is shown only now", body = TenantCreated),
        (status = 400, description = "Bad body or name", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "Name taken", body = ErrorBody),
    ))]
async fn create_tenant(
    State(app): State<Arc<App>>,
    _: AdminOnly,
    JsonBody(body): JsonBody<CreateTenant>,
) -> Result<(StatusCode, Json<TenantCreated>), ApiError> {
    let name = body.name.trim().to_string();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "bad_name",
            format!("`name` must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    let tenant = Tenant {
        id: new_id("tn_"),
        name,
        created_at: crate::now_ms(),
    };
    let token = new_token();
    let token_id = new_id("tk_");
    match app
        .db
        .create_tenant(&tenant, &token_id, &hash_token(&token))
        .await
    {
        Ok(()) => {}
        Err(e) if e.is_conflict() => {
            return Err(ApiError::Conflict {
                code: "tenant_exists",
                message: format!("a tenant named `{}` exists", tenant.name),
            });
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(tenant = %tenant.id, name = %tenant.name, "Tenant created.");
    Ok((
        StatusCode::CREATED,
        Json(TenantCreated {
            id: tenant.id,
            name: tenant.name,
            token,
            token_id,
            created_at: rfc3339(tenant.created_at),
        }),
    ))
}

/// Lists every tenant.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", security(("bearer" = [])),
    responses((status = 200, body = TenantList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_tenants(
    State(app): State<Arc<App>>,
    _: AdminOnly,
) -> Result<Json<TenantList>, ApiError> {
    let tenants = tenants::list(&app.db).await?;
    Ok(Json(TenantList {
        tenants: tenants.into_iter().map(view).collect(),
    }))
}

/// Deletes a tenant: its pipelines stop (flushing) and go, with their leases, and its tokens.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_tenant(
    State(app): State<Arc<App>>,
    _: AdminOnly,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if tenants::get(&app.db, &id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no tenant `{id}`")));
    }
    for p in pipelines::list(&app.db, Some(&id)).await? {
        app.supervisor.remove(&p.id).await;
        app.db.delete_pipeline(&p.id).await?;
    }
    // With its modules (and their files no other tenant owns).
    super::modules::delete_tenant(&app, &id).await?;
    tracing::info!(tenant = %id, "Tenant deleted.");
    Ok(StatusCode::NO_CONTENT)
}

async fn require_tenant(app: &App, id: &str) -> Result<(), ApiError> {
    match tenants::get(&app.db, id).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::NotFound(format!("no tenant `{id}`"))),
    }
}

/// Adds a token to a tenant (rotation: add the new one, then revoke the old).
#[utoipa::path(post, path = "/v1/tenants/{id}/tokens", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 201, body = TokenCreated), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn create_token(
    State(app): State<Arc<App>>,
    _: AdminOnly,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    require_tenant(&app, &id).await?;
    let token = new_token();
    let token_id = new_id("tk_");
    tokens::insert(
        &app.db,
        &token_id,
        &id,
        &hash_token(&token),
        crate::now_ms(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            id: token_id,
            tenant_id: id,
            token,
        }),
    ))
}

/// Lists a tenant's tokens (ids only).
#[utoipa::path(get, path = "/v1/tenants/{id}/tokens", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "Tenant id")),
    responses((status = 200, body = TokenList), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_tokens(
    State(app): State<Arc<App>>,
    _: AdminOnly,
    Path(id): Path<String>,
) -> Result<Json<TokenList>, ApiError> {
    require_tenant(&app, &id).await?;
    let tokens = tokens::list(&app.db, &id).await?;
    Ok(Json(TokenList {
        tokens: tokens
            .into_iter()
            .map(|t| TokenView {
                id: t.id,
                created_at: rfc3339(t.created_at),
            })
            .collect(),
    }))
}

/// Revokes a token.
#[utoipa::path(delete, path = "/v1/tenants/{id}/tokens/{token_id}", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Tenant id"), ("token_id" = String, Path, description = "Token id")),
    responses((status = 204, description = "Revoked"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_token(
    State(app): State<Arc<App>>,
    _: AdminOnly,
    Path((id, token_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let deleted = tokens::delete(&app.db, &id, &token_id).await?;
    app.tokens.clear();
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!(
            "no token `{token_id}` for tenant `{id}`"
        )))
    }
}

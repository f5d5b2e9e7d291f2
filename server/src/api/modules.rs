//! `/v1/modules`: a tenant's WebAssembly components, uploaded once and named by digest in its
//! pipelines (`pipeline.{transform,mangle}.wasm.module`). The bytes are kept in
//! `<data_dir>/modules/<digest>.wasm` (written atomically; one file per digest, shared by the
//! tenants that uploaded the same bytes) and compiled once into the wasm host's disk cache.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::new_id;
use super::error::{ApiError, ErrorBody};
use super::{App, Caller, rfc3339};
use crate::db::{ModuleRow, modules, pipelines};
use crate::wasm::{WasmError, WasmHost};

/// Uploads and deletes of module files, one at a time: a delete removing the last owner's file
/// must not race an upload of the same bytes.
static FILES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The module routes.
pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(upload_module, list_modules))
        .routes(routes!(get_module, delete_module))
}

/// A module.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModuleView {
    /// Lowercase hex SHA-256 of the bytes: what a pipeline names as `wasm.module`.
    pub id: String,
    /// `transformer` or `mangler`.
    pub world: String,
    /// Bytes.
    pub size: i64,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&ModuleRow> for ModuleView {
    fn from(m: &ModuleRow) -> Self {
        ModuleView {
            id: m.digest.clone(),
            world: m.world.clone(),
            size: m.size,
            created_at: rfc3339(m.created_at),
        }
    }
}

/// `GET /v1/modules`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModuleList {
    /// The caller's modules, oldest first.
    pub modules: Vec<ModuleView>,
}

/// Modules belong to a tenant: the admin has none.
fn tenant_of(caller: &Caller) -> Result<&str, ApiError> {
    caller.scope().ok_or_else(|| {
        ApiError::Forbidden("modules belong to a tenant: use a tenant's token".into())
    })
}

async fn find(app: &App, tenant: &str, id: &str) -> Result<ModuleRow, ApiError> {
    modules::get(&app.db, tenant, &id.to_ascii_lowercase())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no module `{id}`")))
}

fn refused(e: WasmError) -> ApiError {
    let code = match e {
        WasmError::TooLarge { .. } => {
            return ApiError::ModuleTooLarge(WasmHost::global().settings().max_module_bytes);
        }
        WasmError::NotWasm => "not_wasm",
        WasmError::CoreModule => "core_module",
        WasmError::WrongWorld { .. } => "unknown_world",
        WasmError::Import(_) => "unsupported_import",
        _ => "invalid_module",
    };
    ApiError::bad_request(code, e.to_string())
}

/// Uploads a component (`Content-Type: application/wasm`). It is checked (a component, not a
/// core module, of the `transformer` or `mangler` world, importing only what sluice provides)
/// and compiled before it is kept. The same bytes again answer 200 with the same id.
#[utoipa::path(post, path = "/v1/modules", tag = "modules", security(("bearer" = [])),
    request_body(description = "A WebAssembly component (wasm32-wasip2)",
        content(("application/wasm"))),
    responses(
        (status = 201, description = "Stored", body = ModuleView),
        (status = 200, description = "Already stored (same bytes)", body = ModuleView),
        (status = 400, description = "Not a component, a core module, an unknown world, an import sluice does not provide", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, description = "The admin has no modules, or the tenant's module quota is used up", body = ErrorBody),
        (status = 413, description = "Larger than limits.max_module_bytes", body = ErrorBody),
        (status = 415, body = ErrorBody),
    ))]
async fn upload_module(
    State(app): State<Arc<App>>,
    caller: Caller,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<ModuleView>), ApiError> {
    let tenant = tenant_of(&caller)?.to_string();
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if !matches!(
        media.as_deref(),
        Some("application/wasm" | "application/octet-stream")
    ) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a module is uploaded as `Content-Type: application/wasm`, got {}",
            media.map_or("none".to_string(), |m| format!("`{m}`"))
        )));
    }
    let limit = app.limits.max_module_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::ModuleTooLarge(limit));
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| ApiError::ModuleTooLarge(limit))?;
    let digest = crate::wasm::digest(&bytes);
    if let Some(existing) = modules::get(&app.db, &tenant, &digest).await? {
        return Ok((StatusCode::OK, Json((&existing).into())));
    }
    check_quota(&app, &tenant, bytes.len()).await?;
    // Compiling is the tenant's CPU: it runs on the guest pool, within the tenant's share.
    let compiled = {
        let bytes = bytes.clone();
        app.supervisor
            .run_as(&tenant, move || WasmHost::global().precompile(&bytes))
            .await
            .map_err(|e| ApiError::Internal(format!("compiling the module failed: {e}")))?
    };
    let world = compiled.map_err(refused)?.world;
    let _files = FILES.lock().await;
    if let Some(existing) = modules::get(&app.db, &tenant, &digest).await? {
        return Ok((StatusCode::OK, Json((&existing).into())));
    }
    check_quota(&app, &tenant, bytes.len()).await?;
    let path = app.supervisor.module_path(&digest);
    if !path.exists() {
        let dir = app.supervisor.modules_dir();
        let tmp = dir.join(format!(".{}.tmp", new_id("up_")));
        let written = async {
            tokio::fs::create_dir_all(&dir).await?;
            tokio::fs::write(&tmp, &bytes).await?;
            tokio::fs::File::open(&tmp).await?.sync_all().await?;
            tokio::fs::rename(&tmp, &path).await
        }
        .await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&tmp).await;
            tracing::error!(path = %path.display(), error = %e, "Cannot store a module.");
            return Err(ApiError::Internal("cannot store the module".into()));
        }
    }
    let row = ModuleRow {
        digest: digest.clone(),
        tenant_id: tenant.clone(),
        size: bytes.len() as i64,
        world: world.as_str().to_string(),
        created_at: crate::now_ms(),
    };
    modules::insert(&app.db, &row).await?;
    tracing::info!(module = %digest, tenant = %tenant, world = %world, size = bytes.len(), "Module uploaded.");
    Ok((StatusCode::CREATED, Json((&row).into())))
}

/// A new module of `size` bytes must fit the tenant's quotas (`limits.modules_per_tenant`,
/// `limits.module_bytes_per_tenant`).
async fn check_quota(app: &App, tenant: &str, size: usize) -> Result<(), ApiError> {
    let owned = modules::list(&app.db, Some(tenant)).await?;
    let limits = &app.limits;
    if owned.len() as u64 >= limits.modules_per_tenant {
        return Err(ApiError::Quota(format!(
            "the tenant has {} modules, the most allowed (limits.modules_per_tenant): delete one first",
            owned.len()
        )));
    }
    let used: u64 = owned.iter().map(|m| m.size.max(0) as u64).sum();
    if used + size as u64 > limits.module_bytes_per_tenant {
        return Err(ApiError::Quota(format!(
            "the tenant's modules would take {} bytes, more than the {} allowed (limits.module_bytes_per_tenant)",
            used + size as u64,
            limits.module_bytes_per_tenant
        )));
    }
    Ok(())
}

/// Lists the caller's modules.
#[utoipa::path(get, path = "/v1/modules", tag = "modules", security(("bearer" = [])),
    responses((status = 200, body = ModuleList), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn list_modules(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<ModuleList>, ApiError> {
    let tenant = tenant_of(&caller)?;
    let rows = modules::list(&app.db, Some(tenant)).await?;
    Ok(Json(ModuleList {
        modules: rows.iter().map(Into::into).collect(),
    }))
}

/// Reads a module's description.
#[utoipa::path(get, path = "/v1/modules/{id}", tag = "modules", security(("bearer" = [])),
    params(("id" = String, Path, description = "Module id (SHA-256 hex)")),
    responses((status = 200, body = ModuleView), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_module(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ModuleView>, ApiError> {
    let tenant = tenant_of(&caller)?;
    Ok(Json((&find(&app, tenant, &id).await?).into()))
}

/// Deletes a module, unless one of the tenant's pipelines names it (409).
#[utoipa::path(delete, path = "/v1/modules/{id}", tag = "modules", security(("bearer" = [])),
    params(("id" = String, Path, description = "Module id (SHA-256 hex)")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "A pipeline uses it", body = ErrorBody)))]
async fn delete_module(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant = tenant_of(&caller)?;
    let module = find(&app, tenant, &id).await?;
    let users = pipelines::users_of(&app.db, tenant, &module.digest).await?;
    if !users.is_empty() {
        return Err(ApiError::Conflict {
            code: "module_in_use",
            message: format!(
                "module `{}` is used by pipeline(s) {}: delete or change them first",
                module.digest,
                users.join(", ")
            ),
        });
    }
    let _files = FILES.lock().await;
    modules::delete(&app.db, tenant, &module.digest).await?;
    drop_if_unowned(&app, &module.digest).await?;
    tracing::info!(module = %module.digest, tenant = %tenant, "Module deleted.");
    Ok(StatusCode::NO_CONTENT)
}

/// Removes a module's file and compiled form once no tenant owns it (call with [`FILES`] held).
async fn drop_if_unowned(app: &App, digest: &str) -> Result<(), ApiError> {
    if modules::owners(&app.db, digest).await? == 0 {
        let path = app.supervisor.module_path(digest);
        if let Err(e) = tokio::fs::remove_file(&path).await {
            tracing::warn!(path = %path.display(), error = %e, "Cannot remove a module file.");
        }
        WasmHost::global().forget(digest);
    }
    Ok(())
}

/// Deletes a tenant (its rows go by cascade), then the files of its modules no other tenant
/// owns. Its pipelines must be gone already.
pub async fn delete_tenant(app: &App, tenant: &str) -> Result<(), ApiError> {
    let _files = FILES.lock().await;
    let owned = modules::list(&app.db, Some(tenant)).await?;
    app.db.delete_tenant(tenant).await?;
    app.tokens.clear();
    for m in owned {
        drop_if_unowned(app, &m.digest).await?;
    }
    Ok(())
}

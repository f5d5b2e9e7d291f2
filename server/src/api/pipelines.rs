//! `/v1/pipelines`: a tenant's pipelines, from the upstream YAML format or the same tree as
//! JSON; lifecycle, status and dry runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::new_id;
use super::body::{QueryParams, RawBody, is_json, is_yaml, parse_json};
use super::error::{ApiError, ErrorBody};
use super::{App, Caller, rfc3339};
use crate::config::{AccountType, ConfigError, ExporterConfig, ServeRules};
use crate::db::ownership::{self, Owner};
use crate::db::{
    DesiredState, LeaseRequest, PipelineRow, PipelineWriteError, account, pipelines, tenants,
};
use crate::guest_log::GuestLine;
use crate::metrics::{Counters, PipelineStats};
use crate::pipeline::Pipeline;
use crate::serve::definitions::{StoredFields, lease_key};
use crate::sinks::{MemorySink, Sink};
use crate::skydive::flow::Flow;
use crate::skydive::subscriber::SubscriberStats;
use crate::supervisor::RunState;

/// How long a dry run may take (building may query the analyzer).
const TEST_TIMEOUT: Duration = Duration::from_secs(40);

/// The pipeline routes.
pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(create_pipeline, list_pipelines))
        .routes(routes!(get_pipeline, replace_pipeline, delete_pipeline))
        .routes(routes!(start_pipeline))
        .routes(routes!(stop_pipeline))
        .routes(routes!(pipeline_status))
        .routes(routes!(test_pipeline))
        .routes(routes!(pipeline_logs))
        .routes(routes!(pipeline_metrics))
}

/// Query of `GET /v1/pipelines/{id}/logs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// The `seq` of the last line already read: only later lines come back (0 or absent: every
    /// line kept).
    pub since: Option<u64>,
}

/// Query of `POST /v1/pipelines`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CreateQuery {
    /// Owner, for the admin only (a tenant always creates its own).
    pub tenant_id: Option<String>,
    /// `running` (default) or `stopped`.
    pub desired_state: Option<DesiredState>,
}

/// A pipeline.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineView {
    /// Pipeline id.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// What the owner asked for; survives restarts.
    pub desired_state: DesiredState,
    /// What it is doing now.
    pub state: RunState,
    /// `pipeline.subscriber.url`.
    pub analyzer: String,
    /// `host_id` (`""` when absent: the analyzer assigns one).
    pub host_id: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// The resolved definition as upstream YAML, secrets redacted (single-pipeline reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<String>,
    /// The same as a JSON tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Value>,
}

/// `GET /v1/pipelines`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineList {
    /// The caller's pipelines (every pipeline for the admin).
    pub pipelines: Vec<PipelineView>,
}

/// Counters of a pipeline (cumulative across restarts).
#[derive(Debug, Serialize, ToSchema)]
pub struct CountersView {
    /// Flows received from the analyzer (malformed included).
    pub received: u64,
    /// Drops by reason (`malformed`, `filtered`, `transform`, `overflow`, `encode`, `write`,
    /// `shutdown`).
    pub dropped: BTreeMap<String, u64>,
    /// Records written.
    pub records_written: u64,
    /// Objects written.
    pub objects_written: u64,
    /// Bytes written (after compression).
    pub bytes_written: u64,
    /// Failed writes (each retried).
    pub write_errors: u64,
    /// Fuel burnt by the pipeline's wasm stages (what the tenant is billed for).
    pub fuel_used: u64,
    /// Times a wasm stage was quarantined after repeated failures.
    pub wasm_quarantines: u64,
}

impl From<Counters> for CountersView {
    fn from(c: Counters) -> Self {
        CountersView {
            received: c.received,
            dropped: c.dropped.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            records_written: c.records_written,
            objects_written: c.objects_written,
            bytes_written: c.bytes_written,
            write_errors: c.write_errors,
            fuel_used: c.fuel_used,
            wasm_quarantines: c.wasm_quarantines,
        }
    }
}

/// `GET /v1/pipelines/{id}/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineStatus {
    /// Pipeline id.
    pub id: String,
    /// What the owner asked for.
    pub desired_state: DesiredState,
    /// What it is doing now.
    pub state: RunState,
    /// Whether its subscriber is connected to the analyzer.
    pub connected: bool,
    /// Counters.
    pub counters: CountersView,
    /// Restarts after failures.
    pub restarts: u64,
    /// The last error (build, task or connection), if any.
    pub last_error: Option<String>,
}

/// One object of a dry run.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestObject {
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Content-Type.
    pub content_type: String,
    /// Content-Encoding (`gzip`) if compressed.
    pub content_encoding: Option<String>,
    /// User metadata (`first-timestamp`, `last-timestamp`, `num-records`).
    pub metadata: BTreeMap<String, String>,
    /// Records inside.
    pub records: usize,
    /// The content as text, when it is uncompressed UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// The content in base64, otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

/// A flow of a dry run that did not decode.
#[derive(Debug, Serialize, ToSchema)]
pub struct MalformedFlow {
    /// Index in the body's array.
    pub index: usize,
    /// Why.
    pub message: String,
}

/// `POST /v1/pipelines/{id}/test`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// The objects the pipeline would write.
    pub objects: Vec<TestObject>,
    /// What the pipeline's guests said during the dry run.
    pub logs: Vec<GuestLine>,
    /// Counters of the dry run.
    pub counters: CountersView,
    /// Flows that did not decode (dropped as `malformed`).
    pub malformed: Vec<MalformedFlow>,
}

/// Reads a tenant's pipeline definition under the server's rules: YAML (`application/yaml`)
/// as is, or JSON converted to the same YAML tree.
fn parse_definition(body: &RawBody, rules: &ServeRules) -> Result<ExporterConfig, ApiError> {
    let media = body.media.as_deref().unwrap_or("");
    let text = body.text()?;
    if is_yaml(media) {
        return ExporterConfig::load_for_serve(text, rules)
            .map_err(|e| ApiError::InvalidConfig(e.0));
    }
    if !is_json(media) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "a pipeline is `Content-Type: application/yaml` (the upstream format) or `application/json` (the same tree), got {}",
            if media.is_empty() {
                "none".to_string()
            } else {
                format!("`{media}`")
            }
        )));
    }
    let tree: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::bad_request("bad_json", format!("invalid JSON body: {e}")))?;
    if !tree.is_object() {
        return Err(ApiError::bad_request(
            "bad_json",
            "a pipeline is a JSON object (the upstream YAML tree)",
        ));
    }
    let yaml = serde_yaml::to_string(&tree)
        .map_err(|e| ApiError::bad_request("bad_json", format!("cannot convert: {e}")))?;
    // Lines would point into the converted text, not the body: keep the key paths only.
    ExporterConfig::load_for_serve(&yaml, rules).map_err(|e| {
        ApiError::InvalidConfig(
            e.0.into_iter()
                .map(|e| ConfigError { line: None, ..e })
                .collect(),
        )
    })
}

/// What a definition must pass beyond its own checks before it is stored: its named hosts
/// resolve to allowed addresses, its modules are the tenant's, its guests accept their
/// config, and the tenant's spool quota holds it. Returns what the database keeps beside it.
async fn admit(
    app: &App,
    id: &str,
    tenant_id: &str,
    config: &ExporterConfig,
) -> Result<StoredFields, ApiError> {
    let supervisor = &app.supervisor;
    let mut errors: Vec<ConfigError> =
        crate::egress::check_destinations(&supervisor.rules().egress, &config.destinations())
            .await
            .into_iter()
            .map(|(path, message)| ConfigError {
                path,
                line: None,
                message,
            })
            .collect();
    let owned = supervisor.owned_modules(tenant_id).await?;
    let resolved = match supervisor.resolve(id, config, &owned) {
        Ok(resolved) => {
            errors.extend(supervisor.check_guests(&resolved, tenant_id).await);
            Some(resolved)
        }
        Err(e) => {
            errors.extend(e);
            None
        }
    };
    match resolved {
        Some(_) if errors.is_empty() => {
            let fields = StoredFields::of(config, app.limits.max_spool_bytes);
            check_spool_quota(app, id, tenant_id, fields.spool_bytes).await?;
            Ok(fields)
        }
        _ => Err(ApiError::InvalidConfig(errors)),
    }
}

/// The tenant's S3 pipelines together (this one instead of its older self) may spool at most
/// `limits.spool_bytes_per_tenant`.
async fn check_spool_quota(app: &App, id: &str, tenant_id: &str, own: u64) -> Result<(), ApiError> {
    if own == 0 {
        return Ok(());
    }
    let others = pipelines::spool_bytes_of(&app.db, tenant_id, id).await?;
    let limit = app.limits.spool_bytes_per_tenant;
    if others.saturating_add(own) > limit {
        return Err(ApiError::Quota(format!(
            "pipeline.write.spool.max_bytes: the tenant's pipelines would spool up to {} bytes, more than the {limit} allowed (limits.spool_bytes_per_tenant); lower write.spool.max_bytes",
            others.saturating_add(own)
        )));
    }
    Ok(())
}

/// The state another node published for a pipeline it runs.
fn published_state(owner: Option<&Owner>) -> RunState {
    let word = owner.map_or("stopped", |o| o.state.as_str());
    RunState::ALL
        .into_iter()
        .find(|s| s.as_str() == word)
        .unwrap_or(RunState::Stopped)
}

/// The owners of the pipelines in `rows` that this node does not run (none read when it runs
/// them all, as a single node does).
async fn remote_owners(
    app: &App,
    rows: &[PipelineRow],
    tenant: Option<&str>,
) -> Result<HashMap<String, Owner>, ApiError> {
    if rows.iter().all(|r| app.supervisor.live(&r.id).is_some()) {
        return Ok(HashMap::new());
    }
    Ok(ownership::owners(&app.db, tenant)
        .await?
        .into_iter()
        .map(|o| (o.pipeline_id.clone(), o))
        .collect())
}

/// A pipeline as the API shows it; the definition (parsed, secrets redacted) only for `detail`
/// (a list reads the row's columns, no YAML). The state is this node's if it runs the
/// pipeline, else what its owner last published (`owners`).
fn view(
    app: &App,
    row: &PipelineRow,
    detail: bool,
    owners: &HashMap<String, Owner>,
) -> PipelineView {
    let redacted = detail
        .then(|| ExporterConfig::load(&row.definition).ok())
        .flatten()
        .map(|c| c.redacted());
    let state = app
        .supervisor
        .live(&row.id)
        .map_or_else(|| published_state(owners.get(&row.id)), |l| l.state().0);
    PipelineView {
        id: row.id.clone(),
        tenant_id: row.tenant_id.clone(),
        desired_state: row.desired_state,
        state,
        analyzer: row.analyzer.clone(),
        host_id: row.host_id.clone(),
        created_at: rfc3339(row.created_at),
        updated_at: rfc3339(row.updated_at),
        definition: detail
            .then(|| {
                redacted
                    .as_ref()
                    .and_then(|c| serde_yaml::to_string(c).ok())
            })
            .flatten(),
        config: detail
            .then(|| redacted.as_ref().and_then(|c| serde_json::to_value(c).ok()))
            .flatten(),
    }
}

/// A pipeline the caller may see, or 404.
async fn find(app: &App, caller: &Caller, id: &str) -> Result<PipelineRow, ApiError> {
    pipelines::get(&app.db, id, caller.scope())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no pipeline `{id}`")))
}

fn write_error(e: PipelineWriteError, caller: &Caller, id: &str) -> ApiError {
    match e {
        PipelineWriteError::LimitReached { limit } => ApiError::PipelineLimit(limit),
        PipelineWriteError::LeaseConflict(holder) => ApiError::Conflict {
            code: "host_id_conflict",
            message: match caller {
                Caller::Admin => format!(
                    "host_id `{}` on {} is leased by pipeline {} of tenant {} (node {})",
                    holder.host_id,
                    holder.analyzer,
                    holder.pipeline_id,
                    holder.tenant_id,
                    holder.node
                ),
                Caller::Tenant(_) => format!(
                    "host_id `{}` on {} is already leased by another pipeline: the analyzer accepts one subscriber per host_id",
                    holder.host_id, holder.analyzer
                ),
            },
        },
        PipelineWriteError::NotFound => ApiError::NotFound(format!("no pipeline `{id}`")),
        PipelineWriteError::Db(e) => ApiError::Db(e),
    }
}

fn lease_request(app: &App, config: &ExporterConfig, node: &str) -> Option<LeaseRequest> {
    lease_key(config).map(|key| LeaseRequest {
        key,
        node: node.to_string(),
        expires_at: crate::now_ms() + (app.limits.lease_ttl_secs * 1000) as i64,
    })
}

/// Creates a pipeline (and takes its host_id lease) and starts it unless `desired_state=stopped`.
#[utoipa::path(post, path = "/v1/pipelines", tag = "pipelines", security(("bearer" = [])),
    params(CreateQuery),
    request_body(description = "The upstream exporter YAML, or the same tree as JSON",
        content(("application/yaml"), ("application/json"))),
    responses(
        (status = 201, description = "Created", body = PipelineView),
        (status = 400, description = "Every config error, with key path and line", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "Pipeline limit reached", body = ErrorBody),
        (status = 409, description = "host_id leased by another pipeline", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
    ))]
async fn create_pipeline(
    State(app): State<Arc<App>>,
    caller: Caller,
    QueryParams(query): QueryParams<CreateQuery>,
    body: RawBody,
) -> Result<(StatusCode, Json<PipelineView>), ApiError> {
    let tenant_id = match (&caller, query.tenant_id) {
        (Caller::Tenant(own), None) => own.clone(),
        (Caller::Tenant(own), Some(t)) if &t == own => t,
        (Caller::Tenant(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "bad_query",
                "`tenant_id` is for the admin only",
            ));
        }
        (Caller::Admin, Some(t)) => {
            if tenants::get(&app.db, &t).await?.is_none() {
                return Err(ApiError::NotFound(format!("no tenant `{t}`")));
            }
            t
        }
        (Caller::Admin, None) => {
            return Err(ApiError::bad_request(
                "bad_query",
                "the admin creates a pipeline for a tenant: add `?tenant_id=<id>`",
            ));
        }
    };
    let config = parse_definition(&body, app.supervisor.rules())?;
    let id = new_id("pl_");
    let fields = admit(&app, &id, &tenant_id, &config).await?;
    let now = crate::now_ms();
    let mut row = PipelineRow {
        id: id.clone(),
        tenant_id,
        definition: app.supervisor.sealed_definition(&config),
        desired_state: query.desired_state.unwrap_or(DesiredState::Running),
        created_at: now,
        updated_at: now,
        analyzer: String::new(),
        host_id: String::new(),
        spool_bytes: 0,
    };
    fields.apply(&mut row);
    // Placed on the live node with the fewest pipelines (docs/service.md §9); if that is
    // another node, its next round starts it.
    let granted = std::time::Instant::now();
    let placement = app.cluster.place_new().await?;
    let lease = lease_request(&app, &config, &placement.node);
    app.db
        .create_pipeline(
            &row,
            &fields.modules,
            lease.as_ref(),
            Some(&placement),
            app.limits.pipelines_per_tenant,
        )
        .await
        .map_err(|e| write_error(e, &caller, &id))?;
    let mut owners = HashMap::new();
    if placement.node == app.node {
        app.cluster.start_created(&row, granted).await;
    } else if let Some(owner) = ownership::owner(&app.db, &id).await? {
        owners.insert(id.clone(), owner);
    }
    tracing::info!(pipeline = %id, tenant = %row.tenant_id, node = %placement.node, "Pipeline created.");
    Ok((StatusCode::CREATED, Json(view(&app, &row, false, &owners))))
}

/// Lists the caller's pipelines.
#[utoipa::path(get, path = "/v1/pipelines", tag = "pipelines", security(("bearer" = [])),
    responses((status = 200, body = PipelineList), (status = 401, body = ErrorBody)))]
async fn list_pipelines(
    State(app): State<Arc<App>>,
    caller: Caller,
) -> Result<Json<PipelineList>, ApiError> {
    let rows = match caller.scope() {
        Some(tenant) => app.db.pipeline_list(tenant).await?,
        None => Arc::new(pipelines::list(&app.db, None).await?),
    };
    let owners = remote_owners(&app, &rows, caller.scope()).await?;
    Ok(Json(PipelineList {
        pipelines: rows.iter().map(|r| view(&app, r, false, &owners)).collect(),
    }))
}

/// Reads a pipeline, with its definition (secrets redacted).
#[utoipa::path(get, path = "/v1/pipelines/{id}", tag = "pipelines", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pipeline id")),
    responses((status = 200, body = PipelineView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_pipeline(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PipelineView>, ApiError> {
    let row = find(&app, &caller, &id).await?;
    let owners = remote_owners(&app, std::slice::from_ref(&row), caller.scope()).await?;
    Ok(Json(view(&app, &row, true, &owners)))
}

/// Replaces a pipeline's definition: the old one stops and flushes, the new one starts (if the
/// desired state is `running`). The lease moves if the analyzer or host_id changed.
#[utoipa::path(put, path = "/v1/pipelines/{id}", tag = "pipelines", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pipeline id")),
    request_body(description = "The upstream exporter YAML, or the same tree as JSON",
        content(("application/yaml"), ("application/json"))),
    responses((status = 200, body = PipelineView), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody)))]
async fn replace_pipeline(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    body: RawBody,
) -> Result<Json<PipelineView>, ApiError> {
    let mut row = find(&app, &caller, &id).await?;
    let config = parse_definition(&body, app.supervisor.rules())?;
    let fields = admit(&app, &id, &row.tenant_id, &config).await?;
    row.definition = app.supervisor.sealed_definition(&config);
    row.updated_at = crate::now_ms();
    fields.apply(&mut row);
    // The lease's holder is the pipeline's owner (this node, unless its owner is gone).
    let holder = ownership::owner(&app.db, &id)
        .await?
        .map_or_else(|| app.node.clone(), |o| o.node);
    let lease = lease_request(&app, &config, &holder);
    let applying = app.cluster.exclusive().await;
    app.db
        .replace_pipeline(&row, &fields.modules, lease.as_ref())
        .await
        .map_err(|e| write_error(e, &caller, &id))?;
    app.supervisor.replace(&row).await;
    app.cluster.applied(&row);
    drop(applying);
    tracing::info!(pipeline = %id, "Pipeline replaced.");
    let owners = remote_owners(&app, std::slice::from_ref(&row), caller.scope()).await?;
    Ok(Json(view(&app, &row, true, &owners)))
}

/// Deletes a pipeline: it stops and flushes, its lease is released.
#[utoipa::path(delete, path = "/v1/pipelines/{id}", tag = "pipelines", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pipeline id")),
    responses((status = 204, description = "Deleted"), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_pipeline(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    find(&app, &caller, &id).await?;
    let applying = app.cluster.exclusive().await;
    app.cluster.forget(&id);
    app.supervisor.remove(&id).await;
    app.db.delete_pipeline(&id).await?;
    drop(applying);
    tracing::info!(pipeline = %id, "Pipeline deleted.");
    Ok(StatusCode::NO_CONTENT)
}

/// The status of a pipeline: this node's view if it runs it, else what its owner last
/// published, with the counters last saved (the forwarding layer sends the request to the
/// owner whenever that node is live, so this is the answer only while it is not).
async fn status_of(app: &App, row: &PipelineRow) -> Result<PipelineStatus, ApiError> {
    if let Some(live) = app.supervisor.live(&row.id) {
        let (state, last_error) = live.state();
        return Ok(PipelineStatus {
            id: row.id.clone(),
            desired_state: row.desired_state,
            state,
            connected: live.connected(),
            counters: live.counters().into(),
            restarts: live.restarts.load(std::sync::atomic::Ordering::Relaxed),
            last_error,
        });
    }
    let owner = ownership::owner(&app.db, &row.id).await?;
    let saved = account::load(&app.db, &row.id).await?;
    let mut counters: CountersView =
        Counters::read(&PipelineStats::default(), &SubscriberStats::default()).into();
    if let Some(saved) = saved {
        counters.received = saved.flows_received.max(0) as u64;
        counters.records_written = saved.records_written.max(0) as u64;
        counters.objects_written = saved.objects_written.max(0) as u64;
        counters.bytes_written = saved.bytes_written.max(0) as u64;
        counters.write_errors = saved.write_errors.max(0) as u64;
        counters.dropped.extend(saved.dropped_map());
    }
    Ok(PipelineStatus {
        id: row.id.clone(),
        desired_state: row.desired_state,
        state: published_state(owner.as_ref()),
        connected: owner.as_ref().is_some_and(|o| o.connected != 0),
        counters,
        restarts: owner.as_ref().map_or(0, |o| o.restarts.max(0) as u64),
        last_error: owner.and_then(|o| o.last_error),
    })
}

/// Starts a pipeline; `running` is persisted as its desired state.
#[utoipa::path(post, path = "/v1/pipelines/{id}/start", tag = "pipelines", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pipeline id")),
    responses((status = 200, body = PipelineStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn start_pipeline(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PipelineStatus>, ApiError> {
    let mut row = find(&app, &caller, &id).await?;
    let now = crate::now_ms();
    let applying = app.cluster.exclusive().await;
    app.db.set_desired(&row, DesiredState::Running, now).await?;
    row.desired_state = DesiredState::Running;
    row.updated_at = now;
    app.supervisor.start(&row).await;
    app.cluster.applied(&row);
    drop(applying);
    Ok(Json(status_of(&app, &row).await?))
}

/// Stops a pipeline (flushing everything pending); `stopped` is persisted as its desired state.
/// Its lease is kept.
#[utoipa::path(post, path = "/v1/pipelines/{id}/stop", tag = "pipelines", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pipeline id")),
    responses((status = 200, body = PipelineStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn stop_pipeline(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PipelineStatus>, ApiError> {
    let mut row = find(&app, &caller, &id).await?;
    let now = crate::now_ms();
    let applying = app.cluster.exclusive().await;
    app.db.set_desired(&row, DesiredState::Stopped, now).await?;
    row.desired_state = DesiredState::Stopped;
    row.updated_at = now;
    app.supervisor.stop(&id).await;
    app.cluster.applied(&row);
    drop(applying);
    Ok(Json(status_of(&app, &row).await?))
}

/// State, connection and counters of a pipeline.
#[utoipa::path(get, path = "/v1/pipelines/{id}/status", tag = "pipelines", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pipeline id")),
    responses((status = 200, body = PipelineStatus), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn pipeline_status(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PipelineStatus>, ApiError> {
    let row = find(&app, &caller, &id).await?;
    Ok(Json(status_of(&app, &row).await?))
}

/// The lines the pipeline's WebAssembly guests wrote (`log`, stdout, stderr) and why their
/// batches failed, oldest first, as JSON lines; the `Sluice-Guest-Log-Dropped` header counts the
/// lines not kept (over the per-batch or per-second budget). Poll with `?since=<last seq>`.
#[utoipa::path(get, path = "/v1/pipelines/{id}/logs", tag = "pipelines", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pipeline id"), LogsQuery),
    responses((status = 200, description = "One JSON object per line", body = GuestLine, content_type = "application/x-ndjson"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn pipeline_logs(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<LogsQuery>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let row = find(&app, &caller, &id).await?;
    let (lines, dropped) = app
        .supervisor
        .live(&row.id)
        .map(|live| live.guest_log.since(query.since.unwrap_or(0)))
        .unwrap_or_default();
    let mut body = String::new();
    for line in &lines {
        body.push_str(&serde_json::to_string(line).unwrap_or_default());
        body.push('\n');
    }
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/x-ndjson".to_string(),
            ),
            (
                axum::http::HeaderName::from_static("sluice-guest-log-dropped"),
                dropped.to_string(),
            ),
        ],
        body,
    ))
}

/// The gauges of the pipeline's `prom_sky_con` store (docs/stages.md §9.3) in Prometheus text
/// format: what `sluice run` serves on the store's own port, served here because a tenant has no
/// port. Empty while the pipeline isn't running or has another store.
#[utoipa::path(get, path = "/v1/pipelines/{id}/metrics", tag = "pipelines", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pipeline id")),
    responses((status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn pipeline_metrics(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let row = find(&app, &caller, &id).await?;
    let text = app
        .supervisor
        .live(&row.id)
        .map(|live| live.prom_gauges.render())
        .unwrap_or_default();
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    ))
}

/// Dry run: the flows of the body (a JSON array of Skydive flows) go through the pipeline's
/// stages up to encode and compress; the objects come back instead of being written.
#[utoipa::path(post, path = "/v1/pipelines/{id}/test", tag = "pipelines", security(("bearer" = [])),
    params(("id" = String, Path, description = "Pipeline id")),
    request_body(description = "A JSON array of Skydive flows", content(("application/json"))),
    responses((status = 200, body = TestResult), (status = 400, body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 504, body = ErrorBody)))]
async fn test_pipeline(
    State(app): State<Arc<App>>,
    caller: Caller,
    Path(id): Path<String>,
    body: RawBody,
) -> Result<Json<TestResult>, ApiError> {
    let row = find(&app, &caller, &id).await?;
    body.require_json()?;
    let items: Vec<Box<RawValue>> = parse_json(&body.bytes)?;
    let mut flows = Vec::with_capacity(items.len());
    let mut malformed = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match serde_json::from_str::<Flow>(item.get()) {
            Ok(flow) => flows.push(flow),
            Err(e) => malformed.push(MalformedFlow {
                index,
                message: e.to_string(),
            }),
        }
    }
    let config = app
        .supervisor
        .open_stored(&row.definition)
        .map_err(|message| ApiError::Conflict {
            code: "build_failed",
            message,
        })?;
    // Module digests become the tenant's module files (paths are resolved too; a dry run
    // writes nothing there).
    let owned = app.supervisor.owned_modules(&row.tenant_id).await?;
    let mut config = app
        .supervisor
        .resolve(&id, &config, &owned)
        .map_err(ApiError::InvalidConfig)?;
    // A dry run writes nothing: no account file either.
    config.pipeline.account.kind = AccountType::None;
    let sink = MemorySink::default();
    let stats = Arc::new(PipelineStats::default());
    let context = app.supervisor.dry_run_context(&row.tenant_id);
    let built = tokio::time::timeout(
        TEST_TIMEOUT,
        Pipeline::build_in(
            &config,
            Some(Sink::Memory(sink.clone())),
            stats.clone(),
            &context,
        ),
    )
    .await
    .map_err(|_| {
        ApiError::Timeout("building the pipeline took too long (analyzer queries)".into())
    })?;
    let mut pipeline = built.map_err(|e| ApiError::Conflict {
        code: "build_failed",
        message: format!("cannot build the pipeline: {e}"),
    })?;
    let now = crate::now_ms();
    let run = async {
        pipeline.process(flows, now).await;
        pipeline.flush_all(now).await;
    };
    tokio::time::timeout(TEST_TIMEOUT, run)
        .await
        .map_err(|_| ApiError::Timeout("the dry run took too long (analyzer queries)".into()))?;
    let objects = sink
        .take()
        .into_iter()
        .map(|o| {
            let text = (o.content_encoding.is_none())
                .then(|| String::from_utf8(o.body.clone()).ok())
                .flatten();
            TestObject {
                content_base64: text
                    .is_none()
                    .then(|| base64::engine::general_purpose::STANDARD.encode(&o.body)),
                content: text,
                bucket: o.bucket,
                key: o.key,
                content_type: o.content_type.to_string(),
                content_encoding: o.content_encoding.map(str::to_string),
                metadata: o
                    .metadata
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                records: o.records,
            }
        })
        .collect();
    Ok(Json(TestResult {
        logs: context.guest_log.since(0).0,
        objects,
        counters: Counters::read(&stats, &{
            let subscriber = SubscriberStats::default();
            let count = malformed.len() as u64;
            subscriber
                .malformed_flows
                .store(count, std::sync::atomic::Ordering::Relaxed);
            subscriber
        })
        .into(),
        malformed,
    }))
}

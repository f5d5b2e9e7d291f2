//! `pipelines`: definitions (upstream YAML), owners and desired states.

use sqlx::{Any, Executor};

use super::{Db, DbError};

/// Whether a pipeline should run; persisted so a restart brings back what was running.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// Subscribed and exporting.
    Running,
    /// Defined but not subscribed.
    Stopped,
}

impl DesiredState {
    /// The column's and the API's word.
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
    }
}

/// The column is TEXT: the `Any` driver knows no enums (bound with [`DesiredState::as_str`]).
impl TryFrom<String> for DesiredState {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        match s.as_str() {
            "running" => Ok(DesiredState::Running),
            "stopped" => Ok(DesiredState::Stopped),
            _ => Err(format!("unknown desired state `{s}`")),
        }
    }
}

/// A stored pipeline.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PipelineRow {
    /// `pl_` + 32 hex digits.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// The canonical upstream YAML, its secrets sealed.
    pub definition: String,
    /// What the owner asked for.
    #[sqlx(try_from = "String")]
    pub desired_state: DesiredState,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Epoch milliseconds.
    pub updated_at: i64,
    /// `pipeline.subscriber.url`, canonical.
    pub analyzer: String,
    /// `host_id`, trimmed (`""` when absent).
    pub host_id: String,
    /// Bytes its spool may hold (0 without one).
    pub spool_bytes: i64,
}

/// A module a pipeline names: (`transform` or `mangle`, digest).
pub type ModuleUse = (&'static str, String);

/// The columns, in `FromRow` order (a macro so that queries stay literal strings).
macro_rules! pipeline_columns {
    () => {
        "id, tenant_id, definition, desired_state, created_at, updated_at, analyzer, host_id, spool_bytes"
    };
}

/// Inserts a pipeline.
pub(super) async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    p: &PipelineRow,
) -> sqlx::Result<()> {
    sqlx::query(concat!(
        "INSERT INTO pipelines (",
        pipeline_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    ))
    .bind(&p.id)
    .bind(&p.tenant_id)
    .bind(&p.definition)
    .bind(p.desired_state.as_str())
    .bind(p.created_at)
    .bind(p.updated_at)
    .bind(&p.analyzer)
    .bind(&p.host_id)
    .bind(p.spool_bytes)
    .execute(db)
    .await?;
    Ok(())
}

/// Records the modules a pipeline names (replacing what it named before).
pub(super) async fn set_modules(
    tx: &mut sqlx::Transaction<'_, Any>,
    pipeline: &PipelineRow,
    modules: &[ModuleUse],
) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM pipeline_modules WHERE pipeline_id = $1")
        .bind(&pipeline.id)
        .execute(&mut **tx)
        .await?;
    for (stage, digest) in modules {
        sqlx::query(
            "INSERT INTO pipeline_modules (pipeline_id, tenant_id, stage, digest) VALUES ($1, $2, $3, $4)",
        )
        .bind(&pipeline.id)
        .bind(&pipeline.tenant_id)
        .bind(*stage)
        .bind(digest)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The pipelines of `tenant` that name the module `digest`.
pub async fn users_of(db: &Db, tenant: &str, digest: &str) -> Result<Vec<String>, DbError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT pipeline_id FROM pipeline_modules WHERE tenant_id = $1 AND digest = $2 ORDER BY pipeline_id",
    )
    .bind(tenant)
    .bind(digest)
    .fetch_all(db.pool())
    .await?)
}

/// Spool bytes of `tenant`'s pipelines other than `except`.
pub async fn spool_bytes_of(db: &Db, tenant: &str, except: &str) -> Result<u64, DbError> {
    // SUM of a BIGINT is a NUMERIC in PostgreSQL: cast back.
    let n: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(spool_bytes), 0) AS BIGINT) FROM pipelines WHERE tenant_id = $1 AND id <> $2",
    )
    .bind(tenant)
    .bind(except)
    .fetch_one(db.pool())
    .await?;
    Ok(n.max(0) as u64)
}

/// A pipeline by id; with `tenant`, only if it is that tenant's.
pub async fn get(db: &Db, id: &str, tenant: Option<&str>) -> Result<Option<PipelineRow>, DbError> {
    let row = match tenant {
        Some(tenant) => {
            sqlx::query_as(concat!(
                "SELECT ",
                pipeline_columns!(),
                " FROM pipelines WHERE id = $1 AND tenant_id = $2"
            ))
            .bind(id)
            .bind(tenant)
            .fetch_optional(db.pool())
            .await?
        }
        None => {
            sqlx::query_as(concat!(
                "SELECT ",
                pipeline_columns!(),
                " FROM pipelines WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(db.pool())
            .await?
        }
    };
    Ok(row)
}

/// Pipelines, oldest first; with `tenant`, only that tenant's.
pub async fn list(db: &Db, tenant: Option<&str>) -> Result<Vec<PipelineRow>, DbError> {
    let rows = match tenant {
        Some(tenant) => {
            sqlx::query_as(concat!(
                "SELECT ",
                pipeline_columns!(),
                " FROM pipelines WHERE tenant_id = $1 ORDER BY created_at, id"
            ))
            .bind(tenant)
            .fetch_all(db.pool())
            .await?
        }
        None => {
            sqlx::query_as(concat!(
                "SELECT ",
                pipeline_columns!(),
                " FROM pipelines ORDER BY created_at, id"
            ))
            .fetch_all(db.pool())
            .await?
        }
    };
    Ok(rows)
}

/// [`list`] without the definitions (left empty): what a pipeline list shows, read from the
/// columns alone. The rows come back as one JSON array built by the database: sqlx hands each
/// row of a result over from its SQLite thread on its own, which made a list of 100 pipelines
/// cost more in thread hand-offs than in work (`cargo bench -p sluice --bench api`).
pub(super) async fn list_summaries(db: &Db, tenant: &str) -> Result<Vec<PipelineRow>, DbError> {
    #[derive(serde::Deserialize)]
    struct Summary {
        id: String,
        tenant_id: String,
        desired_state: DesiredState,
        created_at: i64,
        updated_at: i64,
        analyzer: String,
        host_id: String,
        spool_bytes: i64,
    }
    // The same array from each database's JSON functions.
    let sql = match db.backend() {
        super::Backend::Sqlite => {
            "SELECT json_group_array(json_object('id', id, 'tenant_id', tenant_id, \
             'desired_state', desired_state, 'created_at', created_at, 'updated_at', updated_at, \
             'analyzer', analyzer, 'host_id', host_id, 'spool_bytes', spool_bytes)) \
             FROM (SELECT * FROM pipelines WHERE tenant_id = $1 ORDER BY created_at, id)"
        }
        super::Backend::Postgres => {
            "SELECT COALESCE(json_agg(json_build_object('id', id, 'tenant_id', tenant_id, \
             'desired_state', desired_state, 'created_at', created_at, 'updated_at', updated_at, \
             'analyzer', analyzer, 'host_id', host_id, 'spool_bytes', spool_bytes) \
             ORDER BY created_at, id), '[]'::json)::text FROM pipelines WHERE tenant_id = $1"
        }
    };
    let json: String = sqlx::query_scalar(sql)
        .bind(tenant)
        .fetch_one(db.pool())
        .await?;
    let rows: Vec<Summary> =
        serde_json::from_str(&json).map_err(|e| DbError::from(sqlx::Error::Decode(Box::new(e))))?;
    Ok(rows
        .into_iter()
        .map(|r| PipelineRow {
            id: r.id,
            tenant_id: r.tenant_id,
            definition: String::new(),
            desired_state: r.desired_state,
            created_at: r.created_at,
            updated_at: r.updated_at,
            analyzer: r.analyzer,
            host_id: r.host_id,
            spool_bytes: r.spool_bytes,
        })
        .collect())
}

/// How many pipelines a tenant has.
pub(super) async fn count_for_tenant<'e>(
    db: impl Executor<'e, Database = Any>,
    tenant: &str,
) -> sqlx::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pipelines WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(db)
        .await?;
    Ok(n.max(0) as u64)
}

/// Replaces the definition and what is read from it; false if there is no such pipeline.
pub(super) async fn update_definition<'e>(
    db: impl Executor<'e, Database = Any>,
    p: &PipelineRow,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE pipelines SET definition = $1, updated_at = $2, analyzer = $3, host_id = $4, spool_bytes = $5 WHERE id = $6",
    )
    .bind(&p.definition)
    .bind(p.updated_at)
    .bind(&p.analyzer)
    .bind(&p.host_id)
    .bind(p.spool_bytes)
    .bind(&p.id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets the desired state; false if there is no such pipeline.
pub(super) async fn set_desired(
    db: &Db,
    id: &str,
    state: DesiredState,
    now: i64,
) -> Result<bool, DbError> {
    let done =
        sqlx::query("UPDATE pipelines SET desired_state = $1, updated_at = $2 WHERE id = $3")
            .bind(state.as_str())
            .bind(now)
            .bind(id)
            .execute(db.pool())
            .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes a pipeline (its lease and account cascade).
pub(super) async fn delete<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM pipelines WHERE id = $1")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

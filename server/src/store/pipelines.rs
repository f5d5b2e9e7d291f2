//! `pipelines`: definitions (upstream YAML), owners and desired states.

use sqlx::{Executor, Sqlite};

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
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
        }
    }

    /// Reads the column value (anything unknown reads as stopped, the safe side).
    pub fn parse(text: &str) -> Self {
        match text {
            "running" => DesiredState::Running,
            _ => DesiredState::Stopped,
        }
    }
}

/// One pipeline row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct PipelineRow {
    /// `pl_` + 32 hex digits.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// The upstream YAML text.
    pub definition: String,
    /// `running` or `stopped`.
    pub desired_state: String,
    /// Epoch milliseconds.
    pub created_at: i64,
    /// Epoch milliseconds.
    pub updated_at: i64,
}

impl PipelineRow {
    /// The desired state as an enum.
    pub fn desired(&self) -> DesiredState {
        DesiredState::parse(&self.desired_state)
    }
}

/// The columns, in `FromRow` order (a macro so that queries stay literal strings).
macro_rules! pipeline_columns {
    () => {
        "id, tenant_id, definition, desired_state, created_at, updated_at"
    };
}

/// Inserts a pipeline.
pub async fn insert<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    p: &PipelineRow,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO pipelines (id, tenant_id, definition, desired_state, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?)",
    )
    .bind(&p.id)
    .bind(&p.tenant_id)
    .bind(&p.definition)
    .bind(&p.desired_state)
    .bind(p.created_at)
    .bind(p.updated_at)
    .execute(db)
    .await?;
    Ok(())
}

/// One pipeline; with `tenant`, only if that tenant owns it.
pub async fn get<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    id: &str,
    tenant: Option<&str>,
) -> sqlx::Result<Option<PipelineRow>> {
    match tenant {
        Some(tenant) => {
            sqlx::query_as(concat!(
                "SELECT ",
                pipeline_columns!(),
                " FROM pipelines WHERE id = ? AND tenant_id = ?"
            ))
            .bind(id)
            .bind(tenant)
            .fetch_optional(db)
            .await
        }
        None => {
            sqlx::query_as(concat!(
                "SELECT ",
                pipeline_columns!(),
                " FROM pipelines WHERE id = ?"
            ))
            .bind(id)
            .fetch_optional(db)
            .await
        }
    }
}

/// Pipelines, oldest first; with `tenant`, only that tenant's.
pub async fn list<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant: Option<&str>,
) -> sqlx::Result<Vec<PipelineRow>> {
    match tenant {
        Some(tenant) => {
            sqlx::query_as(concat!(
                "SELECT ",
                pipeline_columns!(),
                " FROM pipelines WHERE tenant_id = ? ORDER BY created_at, id"
            ))
            .bind(tenant)
            .fetch_all(db)
            .await
        }
        None => {
            sqlx::query_as(concat!(
                "SELECT ",
                pipeline_columns!(),
                " FROM pipelines ORDER BY created_at, id"
            ))
            .fetch_all(db)
            .await
        }
    }
}

/// How many pipelines a tenant has.
pub async fn count_for_tenant<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant: &str,
) -> sqlx::Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pipelines WHERE tenant_id = ?")
        .bind(tenant)
        .fetch_one(db)
        .await?;
    Ok(n.max(0) as u64)
}

/// Replaces the definition; false if there is no such pipeline.
pub async fn update_definition<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    id: &str,
    definition: &str,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query("UPDATE pipelines SET definition = ?, updated_at = ? WHERE id = ?")
        .bind(definition)
        .bind(now)
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Sets the desired state; false if there is no such pipeline.
pub async fn set_desired<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    id: &str,
    state: DesiredState,
    now: i64,
) -> sqlx::Result<bool> {
    let done = sqlx::query("UPDATE pipelines SET desired_state = ?, updated_at = ? WHERE id = ?")
        .bind(state.as_str())
        .bind(now)
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Deletes a pipeline (its lease and account cascade).
pub async fn delete<'e>(db: impl Executor<'e, Database = Sqlite>, id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM pipelines WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

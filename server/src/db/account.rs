//! `account`: the account stage's counters per pipeline, saved so they survive restarts.

use std::collections::BTreeMap;

use sqlx::{Any, Executor};

use super::{Db, DbError};

/// Saved counters of one pipeline.
#[derive(Debug, Clone, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct AccountRow {
    /// The pipeline.
    pub pipeline_id: String,
    /// Flows received.
    pub flows_received: i64,
    /// Records written.
    pub records_written: i64,
    /// Objects written.
    pub objects_written: i64,
    /// Bytes written.
    pub bytes_written: i64,
    /// Failed writes.
    pub write_errors: i64,
    /// JSON object `{reason: count}`.
    pub dropped: String,
    /// Epoch milliseconds.
    pub updated_at: i64,
}

impl AccountRow {
    /// The drop counts by reason.
    pub fn dropped_map(&self) -> BTreeMap<String, u64> {
        serde_json::from_str(&self.dropped).unwrap_or_default()
    }
}

/// The saved counters of a pipeline.
pub async fn load(db: &Db, pipeline_id: &str) -> Result<Option<AccountRow>, DbError> {
    Ok(sqlx::query_as(
        "SELECT pipeline_id, flows_received, records_written, objects_written, bytes_written, \
         write_errors, dropped, updated_at FROM account WHERE pipeline_id = $1",
    )
    .bind(pipeline_id)
    .fetch_optional(db.pool())
    .await?)
}

/// Saves (inserts or overwrites) a pipeline's counters, as written by the node holding it at
/// `generation`: [`DbError::Stale`] if that is no longer the pipeline's owner and generation
/// (another node took it over and counts from here on).
pub async fn save(db: &Db, a: &AccountRow, node: &str, generation: i64) -> Result<(), DbError> {
    // One statement: the check and the write cannot be split by a takeover.
    let done = sqlx::query(
        "INSERT INTO account (pipeline_id, flows_received, records_written, objects_written, \
         bytes_written, write_errors, dropped, updated_at) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE EXISTS (SELECT 1 FROM ownership \
         WHERE pipeline_id = $1 AND node = $9 AND generation = $10) \
         ON CONFLICT (pipeline_id) DO UPDATE SET flows_received = excluded.flows_received, \
         records_written = excluded.records_written, objects_written = excluded.objects_written, \
         bytes_written = excluded.bytes_written, write_errors = excluded.write_errors, \
         dropped = excluded.dropped, updated_at = excluded.updated_at",
    )
    .bind(&a.pipeline_id)
    .bind(a.flows_received)
    .bind(a.records_written)
    .bind(a.objects_written)
    .bind(a.bytes_written)
    .bind(a.write_errors)
    .bind(&a.dropped)
    .bind(a.updated_at)
    .bind(node)
    .bind(generation)
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(DbError::Stale {
            pipeline: a.pipeline_id.clone(),
            generation,
        });
    }
    Ok(())
}

/// Forgets a pipeline's counters.
pub(super) async fn delete<'e>(
    db: impl Executor<'e, Database = Any>,
    pipeline_id: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM account WHERE pipeline_id = $1")
        .bind(pipeline_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

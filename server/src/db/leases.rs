//! `leases`: who may subscribe to an analyzer with a given host_id (docs/service.md §2).

use sqlx::{Any, Executor};

use super::{Db, DbError};

/// What a lease is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseKey {
    /// The analyzer: `pipeline.subscriber.url` in its canonical form
    /// (`serve::definitions::canonical_analyzer`).
    pub analyzer: String,
    /// The non-empty `host_id`.
    pub host_id: String,
}

/// One lease.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Lease {
    /// The analyzer URL.
    pub analyzer: String,
    /// The host id.
    pub host_id: String,
    /// Owner of the holder pipeline.
    pub tenant_id: String,
    /// The holder pipeline.
    pub pipeline_id: String,
    /// The server node that renews it.
    pub node: String,
    /// Epoch milliseconds.
    pub acquired_at: i64,
    /// Epoch milliseconds; another node may take it over after this.
    pub expires_at: i64,
}

impl Lease {
    /// What it is on.
    pub fn key(&self) -> LeaseKey {
        LeaseKey {
            analyzer: self.analyzer.clone(),
            host_id: self.host_id.clone(),
        }
    }
}

/// The columns, in `FromRow` order (a macro so that queries stay literal strings).
macro_rules! lease_columns {
    () => {
        "analyzer, host_id, tenant_id, pipeline_id, node, acquired_at, expires_at"
    };
}

/// Inserts a lease; a live lease on the same key makes this a unique violation.
pub(super) async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    l: &Lease,
) -> sqlx::Result<()> {
    sqlx::query(concat!(
        "INSERT INTO leases (",
        lease_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7)"
    ))
    .bind(&l.analyzer)
    .bind(&l.host_id)
    .bind(&l.tenant_id)
    .bind(&l.pipeline_id)
    .bind(&l.node)
    .bind(l.acquired_at)
    .bind(l.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// The lease on `key`, if any.
pub async fn holder(db: &Db, key: &LeaseKey) -> Result<Option<Lease>, DbError> {
    Ok(holder_in(db.pool(), key).await?)
}

/// [`holder`] inside a transaction.
pub(super) async fn holder_in<'e>(
    db: impl Executor<'e, Database = Any>,
    key: &LeaseKey,
) -> sqlx::Result<Option<Lease>> {
    sqlx::query_as(concat!(
        "SELECT ",
        lease_columns!(),
        " FROM leases WHERE analyzer = $1 AND host_id = $2"
    ))
    .bind(&key.analyzer)
    .bind(&key.host_id)
    .fetch_optional(db)
    .await
}

/// The lease held by a pipeline, if any.
pub async fn for_pipeline(db: &Db, pipeline_id: &str) -> Result<Option<Lease>, DbError> {
    Ok(for_pipeline_in(db.pool(), pipeline_id).await?)
}

/// [`for_pipeline`] inside a transaction.
pub(super) async fn for_pipeline_in<'e>(
    db: impl Executor<'e, Database = Any>,
    pipeline_id: &str,
) -> sqlx::Result<Option<Lease>> {
    sqlx::query_as(concat!(
        "SELECT ",
        lease_columns!(),
        " FROM leases WHERE pipeline_id = $1"
    ))
    .bind(pipeline_id)
    .fetch_optional(db)
    .await
}

/// Releases a pipeline's lease.
pub(super) async fn release_pipeline<'e>(
    db: impl Executor<'e, Database = Any>,
    pipeline_id: &str,
) -> sqlx::Result<u64> {
    let done = sqlx::query("DELETE FROM leases WHERE pipeline_id = $1")
        .bind(pipeline_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected())
}

/// Moves a pipeline's lease to `key` (its canonical form); a unique violation means another
/// pipeline holds that key.
pub async fn rekey(db: &Db, pipeline_id: &str, key: &LeaseKey) -> Result<bool, DbError> {
    let done = sqlx::query("UPDATE leases SET analyzer = $1, host_id = $2 WHERE pipeline_id = $3")
        .bind(&key.analyzer)
        .bind(&key.host_id)
        .bind(pipeline_id)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Every lease, by analyzer and host_id.
pub async fn list(db: &Db) -> Result<Vec<Lease>, DbError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        lease_columns!(),
        " FROM leases ORDER BY analyzer, host_id"
    ))
    .fetch_all(db.pool())
    .await?)
}

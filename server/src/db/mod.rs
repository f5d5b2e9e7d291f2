//! Persistence for `sluice serve`: sqlx over SQLite (WAL) in `<data_dir>/sluice.db`, one file per
//! table, migrations from `migrations/` run at start. The only module that knows sqlx: callers
//! get [`DbError`].
//!
//! Queries are plain SQL with `$n` binds and no SQLite-only syntax (upserts use
//! `ON CONFLICT ... DO UPDATE`, which PostgreSQL has too). Each table's module holds its
//! queries as functions over [`Db`]; [`Db`] composes the ones that must be atomic.

pub mod account;
mod error;
pub mod leases;
pub mod modules;
pub mod pipelines;
pub mod tenants;
pub mod tokens;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use error::DbError;
pub use leases::{Lease, LeaseKey};
pub use modules::ModuleRow;
pub use pipelines::{DesiredState, PipelineRow};
pub use tenants::Tenant;

/// The migrations of `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Connections in the pool. SQLite has one writer at a time anyway; a few readers suffice.
const MAX_CONNECTIONS: u32 = 4;

/// Why a pipeline could not be created or replaced.
#[derive(Debug, thiserror::Error)]
pub enum PipelineWriteError {
    /// The tenant already has `limit` pipelines.
    #[error("the tenant already has {limit} pipelines, the most allowed")]
    LimitReached {
        /// The limit.
        limit: u64,
    },
    /// Another pipeline holds the (analyzer, host_id) lease.
    #[error("host_id `{}` on {} is leased by pipeline {}", .0.host_id, .0.analyzer, .0.pipeline_id)]
    LeaseConflict(Box<Lease>),
    /// No such pipeline (for this tenant).
    #[error("no such pipeline")]
    NotFound,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for PipelineWriteError {
    fn from(e: sqlx::Error) -> Self {
        PipelineWriteError::Db(e.into())
    }
}

/// A lease wanted by a pipeline being created or replaced.
#[derive(Debug, Clone)]
pub struct LeaseRequest {
    /// What is leased.
    pub key: LeaseKey,
    /// The node that will renew it.
    pub node: String,
    /// Its first expiry (epoch ms).
    pub expires_at: i64,
}

/// The database handle: a cheap clone around the pool.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
    lists: Arc<ListCache>,
}

/// Each tenant's pipeline list (without definitions), as [`Db::pipeline_list`] last read
/// it: a list is read far more often than written, and reading it from SQLite cost most of a
/// `GET /v1/pipelines` (`cargo bench -p sluice --bench api`). Every write through [`Db`]
/// drops the tenant's entry; an entry also lives at most [`ListCache::TTL`], how stale a list
/// can be after a write by another server sharing the database.
#[derive(Debug, Default)]
struct ListCache {
    lists: std::sync::Mutex<HashMap<String, CachedList>>,
}

#[derive(Debug)]
struct CachedList {
    list: Arc<Vec<PipelineRow>>,
    read: std::time::Instant,
    /// Since when one caller has been reading it again (the others keep the old list
    /// meanwhile, rather than all reading it at once).
    refreshing: Option<std::time::Instant>,
}

impl ListCache {
    const TTL: Duration = Duration::from_secs(1);

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedList>> {
        self.lists.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The list, unless the caller is to read it (missing, or stale and nobody reading it).
    fn get(&self, tenant: &str) -> Option<Arc<Vec<PipelineRow>>> {
        let mut lists = self.lock();
        let entry = lists.get_mut(tenant)?;
        if entry.read.elapsed() < Self::TTL {
            return Some(entry.list.clone());
        }
        match entry.refreshing {
            Some(since) if since.elapsed() < Self::TTL => Some(entry.list.clone()),
            _ => {
                entry.refreshing = Some(std::time::Instant::now());
                None
            }
        }
    }

    fn put(&self, tenant: &str, list: Arc<Vec<PipelineRow>>) {
        self.lock().insert(
            tenant.to_string(),
            CachedList {
                list,
                read: std::time::Instant::now(),
                refreshing: None,
            },
        );
    }

    fn forget(&self, tenant: &str) {
        self.lock().remove(tenant);
    }
}

impl Db {
    /// Opens (creating if needed) the database file in WAL mode and runs the migrations.
    pub async fn open(path: &Path) -> Result<Db, DbError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Db::from_pool(pool))
    }

    /// A new, migrated database in memory (tests).
    #[cfg(test)]
    pub(crate) async fn open_in_memory() -> Result<Db, DbError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let options = SqliteConnectOptions::new()
            .filename(format!("file:sluice-test-{}-{n}", std::process::id()))
            .in_memory(true)
            .shared_cache(true)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .connect_with(options)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Db::from_pool(pool))
    }

    /// Wraps a pool whose migrations already ran (tests).
    pub(crate) fn from_pool(pool: SqlitePool) -> Db {
        Db {
            pool,
            lists: Arc::default(),
        }
    }

    /// A tenant's pipelines, oldest first, without their definitions (what a list shows).
    pub async fn pipeline_list(&self, tenant: &str) -> Result<Arc<Vec<PipelineRow>>, DbError> {
        if let Some(list) = self.lists.get(tenant) {
            return Ok(list);
        }
        let list = Arc::new(pipelines::list_summaries(self, tenant).await?);
        self.lists.put(tenant, list.clone());
        Ok(list)
    }

    /// Sets a pipeline's desired state; false if there is no such pipeline.
    pub async fn set_desired(
        &self,
        row: &PipelineRow,
        state: DesiredState,
        now: i64,
    ) -> Result<bool, DbError> {
        let done = pipelines::set_desired(self, &row.id, state, now).await;
        self.lists.forget(&row.tenant_id);
        done
    }

    /// Deletes a tenant and everything it owns.
    pub async fn delete_tenant(&self, tenant: &str) -> Result<bool, DbError> {
        let done = tenants::delete(self, tenant).await;
        self.lists.forget(tenant);
        done
    }

    /// The pool, for the tables' queries.
    fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Creates a tenant and its first token in one transaction.
    pub async fn create_tenant(
        &self,
        tenant: &Tenant,
        token_id: &str,
        token_hash: &str,
    ) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await?;
        tenants::insert(&mut *tx, tenant).await?;
        tokens::insert_in(
            &mut *tx,
            token_id,
            &tenant.id,
            token_hash,
            tenant.created_at,
        )
        .await?;
        Ok(tx.commit().await?)
    }

    /// Inserts a pipeline, enforcing the per-tenant limit and taking its host_id lease, all or
    /// nothing. The first statement writes, so SQLite takes its write lock before any read and
    /// two concurrent creates serialise instead of failing.
    pub async fn create_pipeline(
        &self,
        row: &PipelineRow,
        modules: &[pipelines::ModuleUse],
        lease: Option<&LeaseRequest>,
        max_per_tenant: u64,
    ) -> Result<(), PipelineWriteError> {
        self.lists.forget(&row.tenant_id);
        let mut tx = self.pool.begin().await?;
        pipelines::insert(&mut *tx, row).await?;
        pipelines::set_modules(&mut tx, row, modules).await?;
        let count = pipelines::count_for_tenant(&mut *tx, &row.tenant_id).await?;
        if count > max_per_tenant {
            tx.rollback().await?;
            return Err(PipelineWriteError::LimitReached {
                limit: max_per_tenant,
            });
        }
        if let Some(lease) = lease {
            take_lease(&mut tx, row, lease).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Replaces a pipeline's definition, moving its lease if the analyzer or host_id changed.
    pub async fn replace_pipeline(
        &self,
        row: &PipelineRow,
        modules: &[pipelines::ModuleUse],
        lease: Option<&LeaseRequest>,
    ) -> Result<(), PipelineWriteError> {
        self.lists.forget(&row.tenant_id);
        let mut tx = self.pool.begin().await?;
        let updated = pipelines::update_definition(&mut *tx, row).await?;
        if !updated {
            tx.rollback().await?;
            return Err(PipelineWriteError::NotFound);
        }
        pipelines::set_modules(&mut tx, row, modules).await?;
        let current = leases::for_pipeline_in(&mut *tx, &row.id).await?;
        let same = matches!((&current, lease), (Some(c), Some(l)) if c.key() == l.key);
        if !same {
            leases::release_pipeline(&mut *tx, &row.id).await?;
            if let Some(lease) = lease {
                take_lease(&mut tx, row, lease).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Rewrites a stored pipeline's definition and columns in place (an upgrade at start:
    /// nothing else changes, its lease stays).
    pub async fn upgrade_pipeline(
        &self,
        row: &PipelineRow,
        modules: &[pipelines::ModuleUse],
    ) -> Result<(), DbError> {
        self.lists.forget(&row.tenant_id);
        let mut tx = self.pool.begin().await?;
        pipelines::update_definition(&mut *tx, row).await?;
        pipelines::set_modules(&mut tx, row, modules).await?;
        Ok(tx.commit().await?)
    }

    /// Deletes a pipeline with its lease and account; false if there was none.
    pub async fn delete_pipeline(&self, id: &str) -> Result<bool, DbError> {
        // Whose it was is not known here: every list is read again (deletes are rare).
        self.lists.lock().clear();
        let mut tx = self.pool.begin().await?;
        leases::release_pipeline(&mut *tx, id).await?;
        account::delete(&mut *tx, id).await?;
        let deleted = pipelines::delete(&mut *tx, id).await?;
        tx.commit().await?;
        Ok(deleted)
    }
}

/// Takes `lease` for `row` inside a transaction: an expired lease of another node is reclaimed
/// first; a live one makes the primary key refuse the insert, reported with its holder.
async fn take_lease(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    row: &PipelineRow,
    lease: &LeaseRequest,
) -> Result<(), PipelineWriteError> {
    let now = crate::now_ms();
    leases::reclaim_expired(&mut **tx, &lease.key, &lease.node, now).await?;
    let new = Lease {
        analyzer: lease.key.analyzer.clone(),
        host_id: lease.key.host_id.clone(),
        tenant_id: row.tenant_id.clone(),
        pipeline_id: row.id.clone(),
        node: lease.node.clone(),
        acquired_at: now,
        expires_at: lease.expires_at,
    };
    match leases::insert(&mut **tx, &new).await {
        Ok(()) => Ok(()),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            let holder = leases::holder_in(&mut **tx, &lease.key).await?;
            match holder {
                Some(holder) => Err(PipelineWriteError::LeaseConflict(Box::new(holder))),
                None => Err(sqlx::Error::Database(e).into()),
            }
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests;

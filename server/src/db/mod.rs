//! Persistence for `sluice serve`: sqlx over SQLite (WAL, `<data_dir>/sluice.db`, the default)
//! or PostgreSQL (several nodes sharing one database, docs/service.md §9), one file per table,
//! migrations from `migrations/` run at start. The only module that knows sqlx: callers get
//! [`DbError`].
//!
//! Both databases go through sqlx's `Any` driver rather than an enum over a `SqlitePool` and a
//! `PgPool`: the queries are plain SQL with `$n` binds that both run unchanged (upserts use
//! `ON CONFLICT ... DO UPDATE`; ids are text, times BIGINT epoch milliseconds), so one
//! function per query serves both, where an enum would need every query, transaction and row
//! type written twice or made generic over the driver. The price is `Any`'s short list of
//! types (integers, text, bytes), which is all the schema uses, and one statement that differs
//! ([`Backend`] picks it). Each table's module holds its queries as functions over [`Db`];
//! [`Db`] composes the ones that must be atomic.

pub mod account;
mod error;
pub mod leases;
pub mod modules;
pub mod nodes;
pub mod ownership;
pub mod pipelines;
pub mod tenants;
pub mod tokens;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{AnyPool, ConnectOptions as _, Connection as _, Executor as _};

pub use error::DbError;
pub use leases::{Lease, LeaseKey};
pub use modules::ModuleRow;
pub use pipelines::{DesiredState, PipelineRow};
pub use tenants::Tenant;

/// The migrations of `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// Connections in the pool of a SQLite database: one writer at a time anyway; a few readers
/// suffice.
const MAX_CONNECTIONS: u32 = 4;
/// Connections in the pool of a PostgreSQL database, per node: the API's reads, the cluster
/// loop and counter saves run at once.
const MAX_PG_CONNECTIONS: u32 = 8;
/// How long a statement waits for a connection (or for SQLite's write lock).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which database a [`Db`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite, one node (`sqlite://...`).
    Sqlite,
    /// PostgreSQL, any number of nodes (`postgres://...`).
    Postgres,
}

impl Backend {
    /// The backend a database URL names, or why it is not one sluice supports.
    pub fn of_url(url: &str) -> Result<Backend, DbError> {
        let scheme = url.split(':').next().unwrap_or("").to_ascii_lowercase();
        match scheme.as_str() {
            "sqlite" => Ok(Backend::Sqlite),
            "postgres" | "postgresql" => Ok(Backend::Postgres),
            _ => Err(DbError::Url(format!(
                "the database URL must start with sqlite:// or postgres://, got `{}:`",
                scheme
            ))),
        }
    }
}

/// A database URL as logs may show it: its password replaced by `***`.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_string(),
    }
}

/// The URL of a SQLite database file (created if missing).
pub fn sqlite_url(path: &Path) -> String {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // `%`, `?` and `#` would end the path or start an escape in the URL.
    let text = path
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    format!("sqlite://{text}?mode=rwc")
}

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

/// Where a new pipeline goes: the node that will run it, and its first lease expiry.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The node.
    pub node: String,
    /// Epoch ms.
    pub expires_at: i64,
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
    pool: AnyPool,
    backend: Backend,
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
    /// Opens (creating if needed) the SQLite database file in WAL mode and runs the migrations.
    pub async fn open(path: &Path) -> Result<Db, DbError> {
        Db::connect(&sqlite_url(path)).await
    }

    /// Connects to the database at `url` (`sqlite://<path>` or `postgres://...`) and runs the
    /// migrations. A SQLite file is created if missing and put in WAL mode (which persists in
    /// the file); each connection then sets `synchronous = NORMAL` (safe in WAL).
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url)?;
        let pool = match backend {
            Backend::Sqlite => {
                let options: SqliteConnectOptions = url.parse()?;
                // Creates the file and switches it to WAL once, with the SQLite driver (the
                // `Any` driver's options are only a URL).
                options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .connect()
                    .await?
                    .close()
                    .await?;
                AnyPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 10000",
                            )
                            .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await?
            }
            Backend::Postgres => {
                AnyPoolOptions::new()
                    .max_connections(MAX_PG_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await?
            }
        };
        MIGRATOR.run(&pool).await?;
        Ok(Db::from_pool(pool, backend))
    }

    /// A new, migrated SQLite database in memory (tests).
    #[cfg(test)]
    pub(crate) async fn open_in_memory() -> Result<Db, DbError> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        sqlx::any::install_default_drivers();
        let url = format!(
            "sqlite:file:sluice-test-{}-{n}?mode=memory&cache=shared",
            std::process::id()
        );
        // The database lives as long as one connection does: keep one open.
        let pool = AnyPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect(&url)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(Db::from_pool(pool, Backend::Sqlite))
    }

    /// Wraps a pool whose migrations already ran.
    pub(crate) fn from_pool(pool: AnyPool, backend: Backend) -> Db {
        Db {
            pool,
            backend,
            lists: Arc::default(),
        }
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
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
    fn pool(&self) -> &AnyPool {
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
        placement: Option<&Placement>,
        max_per_tenant: u64,
    ) -> Result<(), PipelineWriteError> {
        self.lists.forget(&row.tenant_id);
        let mut tx = self.pool.begin().await?;
        pipelines::insert(&mut *tx, row).await?;
        if let Some(placement) = placement {
            ownership::place(&mut *tx, &row.id, &placement.node, placement.expires_at).await?;
        }
        pipelines::set_modules(&mut tx, row, modules).await?;
        let count = pipelines::count_for_tenant(&mut *tx, &row.tenant_id).await?;
        if count > max_per_tenant {
            tx.rollback().await?;
            return Err(PipelineWriteError::LimitReached {
                limit: max_per_tenant,
            });
        }
        if let Some(lease) = lease
            && let Err(e) = take_lease(&mut tx, row, lease).await
        {
            // At once, not when the connection is next used: SQLite's shared cache (the
            // tests' in-memory database) would refuse other connections meanwhile.
            tx.rollback().await?;
            return Err(e);
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
            if let Some(lease) = lease
                && let Err(e) = take_lease(&mut tx, row, lease).await
            {
                tx.rollback().await?;
                return Err(e);
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

/// Takes `lease` for `row` inside a transaction; a lease on the same key makes the primary key
/// refuse the insert, reported with its holder. A lease is never reclaimed while its pipeline
/// exists, even expired: its pipeline is taken over by another node with it (docs/service.md
/// §9), and would subscribe with the same host_id.
async fn take_lease(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    row: &PipelineRow,
    lease: &LeaseRequest,
) -> Result<(), PipelineWriteError> {
    let now = crate::now_ms();
    let new = Lease {
        analyzer: lease.key.analyzer.clone(),
        host_id: lease.key.host_id.clone(),
        tenant_id: row.tenant_id.clone(),
        pipeline_id: row.id.clone(),
        node: lease.node.clone(),
        acquired_at: now,
        expires_at: lease.expires_at,
    };
    // In a savepoint: PostgreSQL refuses every statement of a transaction after a failed one
    // until it is rolled back, and the holder is read after the refusal.
    let mut attempt = sqlx::Connection::begin(&mut **tx).await?;
    match leases::insert(&mut *attempt, &new).await {
        Ok(()) => Ok(attempt.commit().await?),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            attempt.rollback().await?;
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
pub(crate) mod testing;
#[cfg(test)]
mod tests;

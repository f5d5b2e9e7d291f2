//! [`DbError`]: what the database layer reports to its callers, in its own words, so that no
//! caller needs to know sqlx.

/// A database failure, classified for the caller.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// A row with the same unique key exists (a tenant's name, a host_id lease).
    #[error("already exists ({0})")]
    Conflict(String),
    /// The row the statement needed is not there.
    #[error("not found")]
    NotFound,
    /// A pipeline's write carried a lease generation that is no longer current: another node
    /// took the pipeline over, or the lease lapsed (docs/service.md §9).
    #[error("stale lease: pipeline {pipeline} is no longer held at generation {generation}")]
    Stale {
        /// The pipeline.
        pipeline: String,
        /// The generation the write carried.
        generation: i64,
    },
    /// The database cannot be reached (refused, timed out, connection lost).
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The database failed the statement.
    #[error("database error: {0}")]
    Backend(#[source] sqlx::Error),
    /// The database URL names no database sluice supports.
    #[error("{0}")]
    Url(String),
    /// A migration failed at start.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(d) if d.is_unique_violation() => {
                DbError::Conflict(d.message().to_string())
            }
            sqlx::Error::RowNotFound => DbError::NotFound,
            e @ (sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed) => DbError::Unavailable(e),
            e => DbError::Backend(e),
        }
    }
}

impl DbError {
    /// Whether this is a unique-key conflict.
    pub fn is_conflict(&self) -> bool {
        matches!(self, DbError::Conflict(_))
    }
}

//! `ownership`: which node runs each pipeline, as a lease with an expiry and a generation (the
//! fencing token), and the status its owner last published (docs/service.md §9).
//!
//! Every change of hands is a compare-and-set on the generation, in one statement, so two
//! nodes racing for a pipeline cannot both win; a renewal only extends a lease that has not
//! expired and is still the node's, so a lease that lapsed is never revived under the same
//! generation: it is taken over (generation + 1), by whichever node placement picks.

use sqlx::{Any, Executor};

use super::{Db, DbError, DesiredState};

/// A pipeline a node holds, with what the node needs to run it as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Held {
    /// The pipeline.
    pub pipeline_id: String,
    /// The generation held.
    pub generation: i64,
    /// Epoch ms.
    pub expires_at: i64,
    /// The definition's last change (epoch ms): a newer one is applied by its owner.
    pub updated_at: i64,
    /// The desired state stored.
    #[sqlx(try_from = "String")]
    pub desired_state: DesiredState,
}

/// A pipeline up for placement: its owner's lease expired, or it has no owner yet.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Claimable {
    /// The pipeline.
    pub pipeline_id: String,
    /// The lapsed generation; `None` for a pipeline never placed.
    pub generation: Option<i64>,
}

/// The owner and published status of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Owner {
    /// The pipeline.
    pub pipeline_id: String,
    /// The node holding it.
    pub node: String,
    /// Its generation.
    pub generation: i64,
    /// Epoch ms.
    pub expires_at: i64,
    /// Published state (`RunState` words).
    pub state: String,
    /// Published: subscriber connected (0/1).
    pub connected: i64,
    /// Published restarts.
    pub restarts: i64,
    /// Published last error.
    pub last_error: Option<String>,
    /// Epoch ms of the publication (0: never).
    pub status_at: i64,
}

/// What an owner publishes of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `RunState` word.
    pub state: &'static str,
    /// Subscriber connected.
    pub connected: bool,
    /// Restarts after failures.
    pub restarts: i64,
    /// Last error.
    pub last_error: Option<String>,
}

macro_rules! owner_columns {
    () => {
        "o.pipeline_id, o.node, o.generation, o.expires_at, o.state, o.connected, o.restarts, o.last_error, o.status_at"
    };
}

/// Places a new pipeline on `node` at generation 1 (inside the create's transaction).
pub(super) async fn place<'e>(
    db: impl Executor<'e, Database = Any>,
    pipeline_id: &str,
    node: &str,
    expires_at: i64,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO ownership (pipeline_id, node, generation, expires_at) VALUES ($1, $2, 1, $3)",
    )
    .bind(pipeline_id)
    .bind(node)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Extends every unexpired lease `node` holds to `expires_at`; with its host_id leases.
pub async fn renew(db: &Db, node: &str, now: i64, expires_at: i64) -> Result<u64, DbError> {
    let done =
        sqlx::query("UPDATE ownership SET expires_at = $1 WHERE node = $2 AND expires_at >= $3")
            .bind(expires_at)
            .bind(node)
            .bind(now)
            .execute(db.pool())
            .await?;
    sqlx::query("UPDATE leases SET expires_at = $1 WHERE node = $2")
        .bind(expires_at)
        .bind(node)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}

/// Every pipeline `node` holds (expired or not), with its stored definition's version.
pub async fn held_by(db: &Db, node: &str) -> Result<Vec<Held>, DbError> {
    Ok(sqlx::query_as(
        "SELECT o.pipeline_id, o.generation, o.expires_at, p.updated_at, p.desired_state \
         FROM ownership o JOIN pipelines p ON p.id = o.pipeline_id WHERE o.node = $1 \
         ORDER BY o.pipeline_id",
    )
    .bind(node)
    .fetch_all(db.pool())
    .await?)
}

/// Pipelines whose lease expired before `before` (or that have none), by id.
pub async fn claimable(db: &Db, before: i64) -> Result<Vec<Claimable>, DbError> {
    Ok(sqlx::query_as(
        "SELECT p.id AS pipeline_id, o.generation FROM pipelines p \
         LEFT JOIN ownership o ON o.pipeline_id = p.id \
         WHERE o.pipeline_id IS NULL OR o.expires_at < $1 ORDER BY p.id",
    )
    .bind(before)
    .fetch_all(db.pool())
    .await?)
}

/// Live nodes that take pipelines (heartbeat at or after `live_since`, not draining) with how
/// many unexpired leases each holds at `now`, by id.
pub async fn placement_counts(
    db: &Db,
    live_since: i64,
    now: i64,
) -> Result<Vec<(String, i64)>, DbError> {
    Ok(sqlx::query_as(
        "SELECT n.id, (SELECT COUNT(*) FROM ownership o WHERE o.node = n.id AND o.expires_at >= $2) \
         FROM nodes n WHERE n.heartbeat_at >= $1 AND n.draining = 0 ORDER BY n.id",
    )
    .bind(live_since)
    .bind(now)
    .fetch_all(db.pool())
    .await?)
}

/// Takes a pipeline for `node`: from the lapsed `generation` (which must still be current and
/// expired before `before`) to the next, or at generation 1 if it never had an owner. Its
/// host_id lease follows. Returns the new generation, or `None` if another node won the race
/// (or its owner renewed, or the pipeline was deleted).
pub async fn take(
    db: &Db,
    pipeline_id: &str,
    generation: Option<i64>,
    node: &str,
    before: i64,
    expires_at: i64,
) -> Result<Option<i64>, DbError> {
    let mut tx = db.pool().begin().await?;
    let taken = match generation {
        Some(old) => {
            sqlx::query(
                "UPDATE ownership SET node = $1, generation = generation + 1, expires_at = $2, \
                 state = 'stopped', connected = 0, last_error = NULL, status_at = 0 \
                 WHERE pipeline_id = $3 AND generation = $4 AND expires_at < $5",
            )
            .bind(node)
            .bind(expires_at)
            .bind(pipeline_id)
            .bind(old)
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1
        }
        None => {
            // ON CONFLICT: another node placed it first. A deleted pipeline fails its
            // foreign key: nothing to take.
            match sqlx::query(
                "INSERT INTO ownership (pipeline_id, node, generation, expires_at) \
                 SELECT $1, $2, 1, $3 WHERE EXISTS (SELECT 1 FROM pipelines WHERE id = $1) \
                 ON CONFLICT (pipeline_id) DO NOTHING",
            )
            .bind(pipeline_id)
            .bind(node)
            .bind(expires_at)
            .execute(&mut *tx)
            .await
            {
                Ok(done) => done.rows_affected() == 1,
                Err(sqlx::Error::Database(e)) if e.is_foreign_key_violation() => false,
                Err(e) => return Err(e.into()),
            }
        }
    };
    if !taken {
        tx.rollback().await?;
        return Ok(None);
    }
    sqlx::query("UPDATE leases SET node = $1, expires_at = $2 WHERE pipeline_id = $3")
        .bind(node)
        .bind(expires_at)
        .bind(pipeline_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Some(generation.map_or(1, |g| g + 1)))
}

/// Hands every pipeline of `node` over at once (a node leaving or draining): their leases
/// expire now, so the next placement round of the other nodes takes them.
pub async fn release_all(db: &Db, node: &str) -> Result<u64, DbError> {
    let done = sqlx::query("UPDATE ownership SET expires_at = 0 WHERE node = $1")
        .bind(node)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected())
}

/// Hands one pipeline over (its owner stopped it after losing its fence).
pub async fn release(
    db: &Db,
    pipeline_id: &str,
    node: &str,
    generation: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE ownership SET expires_at = 0 WHERE pipeline_id = $1 AND node = $2 AND generation = $3",
    )
    .bind(pipeline_id)
    .bind(node)
    .bind(generation)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// Publishes the status of a pipeline its holder runs; [`DbError::Stale`] if `generation` is
/// no longer the pipeline's (another node took it over).
pub async fn publish(
    db: &Db,
    pipeline_id: &str,
    node: &str,
    generation: i64,
    status: &Published,
    now: i64,
) -> Result<(), DbError> {
    let done = sqlx::query(
        "UPDATE ownership SET state = $1, connected = $2, restarts = $3, last_error = $4, status_at = $5 \
         WHERE pipeline_id = $6 AND node = $7 AND generation = $8",
    )
    .bind(status.state)
    .bind(i64::from(status.connected))
    .bind(status.restarts)
    .bind(status.last_error.as_deref())
    .bind(now)
    .bind(pipeline_id)
    .bind(node)
    .bind(generation)
    .execute(db.pool())
    .await?;
    if done.rows_affected() == 0 {
        return Err(DbError::Stale {
            pipeline: pipeline_id.to_string(),
            generation,
        });
    }
    Ok(())
}

/// The owner of a pipeline, if placed.
pub async fn owner(db: &Db, pipeline_id: &str) -> Result<Option<Owner>, DbError> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        owner_columns!(),
        " FROM ownership o WHERE o.pipeline_id = $1"
    ))
    .bind(pipeline_id)
    .fetch_optional(db.pool())
    .await?)
}

/// The owners of a tenant's pipelines (every pipeline's with `None`).
pub async fn owners(db: &Db, tenant: Option<&str>) -> Result<Vec<Owner>, DbError> {
    Ok(match tenant {
        Some(tenant) => {
            sqlx::query_as(concat!(
                "SELECT ",
                owner_columns!(),
                " FROM ownership o JOIN pipelines p ON p.id = o.pipeline_id WHERE p.tenant_id = $1"
            ))
            .bind(tenant)
            .fetch_all(db.pool())
            .await?
        }
        None => {
            sqlx::query_as(concat!("SELECT ", owner_columns!(), " FROM ownership o"))
                .fetch_all(db.pool())
                .await?
        }
    })
}

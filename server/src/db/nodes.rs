//! `nodes`: the `sluice serve` nodes sharing this database, with their heartbeats
//! (docs/service.md §9).

use super::{Db, DbError};

/// One node as the database knows it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NodeRow {
    /// `node_id` (default: the hostname).
    pub id: String,
    /// Where other nodes reach its API (`advertise_address`, else its listen address).
    pub address: String,
    /// Epoch ms of its start.
    pub started_at: i64,
    /// Epoch ms of its last heartbeat.
    pub heartbeat_at: i64,
    /// 1 while it hands its pipelines over and takes no new ones.
    pub draining: i64,
    /// Pipelines it holds now.
    pub pipelines: i64,
}

/// Registers a node at its start: address, start time, a first heartbeat, not draining.
pub async fn register(db: &Db, id: &str, address: &str, now: i64) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO nodes (id, address, started_at, heartbeat_at, draining) VALUES ($1, $2, $3, $3, 0) \
         ON CONFLICT (id) DO UPDATE SET address = excluded.address, started_at = excluded.started_at, \
         heartbeat_at = excluded.heartbeat_at, draining = 0",
    )
    .bind(id)
    .bind(address)
    .bind(now)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// A heartbeat; returns whether the node was asked to drain (`None` if its row is gone).
pub async fn heartbeat(db: &Db, id: &str, now: i64) -> Result<Option<bool>, DbError> {
    let draining: Option<i64> =
        sqlx::query_scalar("UPDATE nodes SET heartbeat_at = $1 WHERE id = $2 RETURNING draining")
            .bind(now)
            .bind(id)
            .fetch_optional(db.pool())
            .await?;
    Ok(draining.map(|d| d != 0))
}

/// Asks a node to drain (or marks this node as leaving); false if there is no such node.
pub async fn set_draining(db: &Db, id: &str) -> Result<bool, DbError> {
    let done = sqlx::query("UPDATE nodes SET draining = 1 WHERE id = $1")
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Every node with how many pipelines it holds, by id.
pub async fn list(db: &Db) -> Result<Vec<NodeRow>, DbError> {
    Ok(sqlx::query_as(
        "SELECT n.id, n.address, n.started_at, n.heartbeat_at, n.draining, \
         (SELECT COUNT(*) FROM ownership o WHERE o.node = n.id) AS pipelines \
         FROM nodes n ORDER BY n.id",
    )
    .fetch_all(db.pool())
    .await?)
}

/// One node.
pub async fn get(db: &Db, id: &str) -> Result<Option<NodeRow>, DbError> {
    Ok(sqlx::query_as(
        "SELECT n.id, n.address, n.started_at, n.heartbeat_at, n.draining, \
         (SELECT COUNT(*) FROM ownership o WHERE o.node = n.id) AS pipelines \
         FROM nodes n WHERE n.id = $1",
    )
    .bind(id)
    .fetch_optional(db.pool())
    .await?)
}

//! `tokens`: a tenant's API tokens, kept as SHA-256 hashes.

use sqlx::{Any, Executor};

use super::{Db, DbError};

/// A token's record (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct TokenRow {
    /// `tk_` + 32 hex digits.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Epoch milliseconds.
    pub created_at: i64,
}

/// Stores a token's hash.
pub async fn insert(
    db: &Db,
    id: &str,
    tenant_id: &str,
    hash: &str,
    created_at: i64,
) -> Result<(), DbError> {
    Ok(insert_in(db.pool(), id, tenant_id, hash, created_at).await?)
}

/// [`insert`] inside a transaction.
pub(super) async fn insert_in<'e>(
    db: impl Executor<'e, Database = Any>,
    id: &str,
    tenant_id: &str,
    hash: &str,
    created_at: i64,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO tokens (id, tenant_id, hash, created_at) VALUES ($1, $2, $3, $4)")
        .bind(id)
        .bind(tenant_id)
        .bind(hash)
        .bind(created_at)
        .execute(db)
        .await?;
    Ok(())
}

/// The tenant owning the token with this hash.
pub async fn tenant_of_hash(db: &Db, hash: &str) -> Result<Option<String>, DbError> {
    Ok(
        sqlx::query_scalar("SELECT tenant_id FROM tokens WHERE hash = $1")
            .bind(hash)
            .fetch_optional(db.pool())
            .await?,
    )
}

/// A tenant's tokens, oldest first.
pub async fn list(db: &Db, tenant_id: &str) -> Result<Vec<TokenRow>, DbError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, created_at FROM tokens WHERE tenant_id = $1 ORDER BY created_at, id",
    )
    .bind(tenant_id)
    .fetch_all(db.pool())
    .await?)
}

/// Revokes one of a tenant's tokens.
pub async fn delete(db: &Db, tenant_id: &str, id: &str) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM tokens WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

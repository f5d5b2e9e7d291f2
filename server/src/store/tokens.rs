//! `tokens`: a tenant's API tokens, kept as SHA-256 hashes.

use sqlx::{Executor, Sqlite};

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
pub async fn insert<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    id: &str,
    tenant_id: &str,
    hash: &str,
    created_at: i64,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO tokens (id, tenant_id, hash, created_at) VALUES (?, ?, ?, ?)")
        .bind(id)
        .bind(tenant_id)
        .bind(hash)
        .bind(created_at)
        .execute(db)
        .await?;
    Ok(())
}

/// The tenant owning the token with this hash.
pub async fn tenant_of_hash<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    hash: &str,
) -> sqlx::Result<Option<String>> {
    sqlx::query_scalar("SELECT tenant_id FROM tokens WHERE hash = ?")
        .bind(hash)
        .fetch_optional(db)
        .await
}

/// A tenant's tokens, oldest first.
pub async fn list<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant_id: &str,
) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as(
        "SELECT id, tenant_id, created_at FROM tokens WHERE tenant_id = ? ORDER BY created_at, id",
    )
    .bind(tenant_id)
    .fetch_all(db)
    .await
}

/// Revokes one of a tenant's tokens.
pub async fn delete<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant_id: &str,
    id: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM tokens WHERE tenant_id = ? AND id = ?")
        .bind(tenant_id)
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

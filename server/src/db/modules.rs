//! `modules`: a tenant's uploaded WebAssembly components, by digest. The bytes live in
//! `<data_dir>/modules/<digest>.wasm` (one file per digest, shared by the tenants that uploaded
//! the same bytes); a row says a tenant owns one.

use super::{Db, DbError};

/// One module of a tenant.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ModuleRow {
    /// Lowercase hex SHA-256 of the bytes.
    pub digest: String,
    /// Owner.
    pub tenant_id: String,
    /// Bytes.
    pub size: i64,
    /// `transformer` or `mangler`.
    pub world: String,
    /// Epoch milliseconds.
    pub created_at: i64,
}

/// Inserts a module; `false` (and nothing changed) when the tenant already has it.
pub async fn insert(db: &Db, m: &ModuleRow) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO modules (digest, tenant_id, size, world, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (tenant_id, digest) DO NOTHING",
    )
    .bind(&m.digest)
    .bind(&m.tenant_id)
    .bind(m.size)
    .bind(&m.world)
    .bind(m.created_at)
    .execute(db.pool())
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A tenant's module by digest.
pub async fn get(db: &Db, tenant_id: &str, digest: &str) -> Result<Option<ModuleRow>, DbError> {
    Ok(sqlx::query_as(
        "SELECT digest, tenant_id, size, world, created_at FROM modules \
         WHERE tenant_id = $1 AND digest = $2",
    )
    .bind(tenant_id)
    .bind(digest)
    .fetch_optional(db.pool())
    .await?)
}

/// A tenant's modules (every module when `tenant` is `None`), oldest first.
pub async fn list(db: &Db, tenant: Option<&str>) -> Result<Vec<ModuleRow>, DbError> {
    let rows = match tenant {
        Some(tenant) => {
            sqlx::query_as(
                "SELECT digest, tenant_id, size, world, created_at FROM modules \
                 WHERE tenant_id = $1 ORDER BY created_at, tenant_id, digest",
            )
            .bind(tenant)
            .fetch_all(db.pool())
            .await?
        }
        None => {
            sqlx::query_as(
                "SELECT digest, tenant_id, size, world, created_at FROM modules \
                 ORDER BY created_at, tenant_id, digest",
            )
            .fetch_all(db.pool())
            .await?
        }
    };
    Ok(rows)
}

/// Deletes a tenant's module; `false` when it had none.
pub async fn delete(db: &Db, tenant_id: &str, digest: &str) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM modules WHERE tenant_id = $1 AND digest = $2")
        .bind(tenant_id)
        .bind(digest)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

/// How many tenants own a digest (its file may go when none does).
pub async fn owners(db: &Db, digest: &str) -> Result<i64, DbError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM modules WHERE digest = $1")
            .bind(digest)
            .fetch_one(db.pool())
            .await?,
    )
}

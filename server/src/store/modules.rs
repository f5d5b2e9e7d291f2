//! `modules`: a tenant's uploaded WebAssembly components, by digest. The bytes live in
//! `<data_dir>/modules/<digest>.wasm` (one file per digest, shared by the tenants that uploaded
//! the same bytes); a row says a tenant owns one.

use sqlx::{Executor, Sqlite};

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
pub async fn insert<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    m: &ModuleRow,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO modules (digest, tenant_id, size, world, created_at) VALUES (?, ?, ?, ?, ?) \
         ON CONFLICT (tenant_id, digest) DO NOTHING",
    )
    .bind(&m.digest)
    .bind(&m.tenant_id)
    .bind(m.size)
    .bind(&m.world)
    .bind(m.created_at)
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// A tenant's module by digest.
pub async fn get<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant_id: &str,
    digest: &str,
) -> sqlx::Result<Option<ModuleRow>> {
    sqlx::query_as(
        "SELECT digest, tenant_id, size, world, created_at FROM modules \
         WHERE tenant_id = ? AND digest = ?",
    )
    .bind(tenant_id)
    .bind(digest)
    .fetch_optional(db)
    .await
}

/// A tenant's modules (every module when `tenant` is `None`), oldest first.
pub async fn list<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant: Option<&str>,
) -> sqlx::Result<Vec<ModuleRow>> {
    sqlx::query_as(
        "SELECT digest, tenant_id, size, world, created_at FROM modules \
         WHERE (? IS NULL OR tenant_id = ?) ORDER BY created_at, tenant_id, digest",
    )
    .bind(tenant)
    .bind(tenant)
    .fetch_all(db)
    .await
}

/// Deletes a tenant's module; `false` when it had none.
pub async fn delete<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    tenant_id: &str,
    digest: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM modules WHERE tenant_id = ? AND digest = ?")
        .bind(tenant_id)
        .bind(digest)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// How many tenants own a digest (its file may go when none does).
pub async fn owners<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    digest: &str,
) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT COUNT(*) FROM modules WHERE digest = ?")
        .bind(digest)
        .fetch_one(db)
        .await
}

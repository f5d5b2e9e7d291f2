//! `tenants`: a name and an id.

use sqlx::{Any, Executor};

use super::{Db, DbError};

/// One tenant.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Tenant {
    /// `tn_` + 32 hex digits.
    pub id: String,
    /// Unique, chosen by the admin.
    pub name: String,
    /// Epoch milliseconds.
    pub created_at: i64,
}

/// Inserts a tenant; a duplicate name is a unique violation.
pub(super) async fn insert<'e>(
    db: impl Executor<'e, Database = Any>,
    t: &Tenant,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&t.id)
        .bind(&t.name)
        .bind(t.created_at)
        .execute(db)
        .await?;
    Ok(())
}

/// Every tenant, oldest first.
pub async fn list(db: &Db) -> Result<Vec<Tenant>, DbError> {
    Ok(
        sqlx::query_as("SELECT id, name, created_at FROM tenants ORDER BY created_at, id")
            .fetch_all(db.pool())
            .await?,
    )
}

/// One tenant by id.
pub async fn get(db: &Db, id: &str) -> Result<Option<Tenant>, DbError> {
    Ok(
        sqlx::query_as("SELECT id, name, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(db.pool())
            .await?,
    )
}

/// Deletes a tenant and (by cascade) its tokens, pipelines, leases, modules and accounts.
pub(super) async fn delete(db: &Db, id: &str) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(id)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() > 0)
}

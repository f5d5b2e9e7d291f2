//! `tenants`: a name and an id.

use sqlx::{Executor, Sqlite};

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
pub async fn insert<'e>(db: impl Executor<'e, Database = Sqlite>, t: &Tenant) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)")
        .bind(&t.id)
        .bind(&t.name)
        .bind(t.created_at)
        .execute(db)
        .await?;
    Ok(())
}

/// Every tenant, oldest first.
pub async fn list<'e>(db: impl Executor<'e, Database = Sqlite>) -> sqlx::Result<Vec<Tenant>> {
    sqlx::query_as("SELECT id, name, created_at FROM tenants ORDER BY created_at, id")
        .fetch_all(db)
        .await
}

/// One tenant by id.
pub async fn get<'e>(
    db: impl Executor<'e, Database = Sqlite>,
    id: &str,
) -> sqlx::Result<Option<Tenant>> {
    sqlx::query_as("SELECT id, name, created_at FROM tenants WHERE id = ?")
        .bind(id)
        .fetch_optional(db)
        .await
}

/// Deletes a tenant and (by cascade) its tokens, pipelines, leases, modules and accounts.
pub async fn delete<'e>(db: impl Executor<'e, Database = Sqlite>, id: &str) -> sqlx::Result<bool> {
    let done = sqlx::query("DELETE FROM tenants WHERE id = ?")
        .bind(id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() > 0)
}

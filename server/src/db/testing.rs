//! Databases for tests: every db test runs on a fresh SQLite database in memory and, when a
//! PostgreSQL server is given, on a fresh database there too.
//!
//! `SLUICE_TEST_POSTGRES_URL` names a server whose user may create databases (`.ci/run` and
//! `scripts/test` start one, scripts/postgres-server). `SLUICE_REQUIRE_POSTGRES=1`, which they
//! set too, turns a missing or unreachable server into a failure instead of a SQLite-only run.

use sqlx::{Connection as _, Executor as _};

use super::{Db, DbError};

/// The server URL of the PostgreSQL tests, if any.
pub const POSTGRES_URL_ENV: &str = "SLUICE_TEST_POSTGRES_URL";
/// Set to `1` where PostgreSQL must be tested.
pub const REQUIRE_POSTGRES_ENV: &str = "SLUICE_REQUIRE_POSTGRES";

/// One test database; [`TestDb::finish`] drops it.
#[derive(Debug)]
pub struct TestDb {
    /// The migrated database.
    pub db: Db,
    /// (server URL, database name) of a PostgreSQL database to drop.
    created: Option<(String, String)>,
}

impl TestDb {
    /// Closes the pool and drops a PostgreSQL database.
    pub async fn finish(self) {
        self.db.pool.close().await;
        if let Some((server, name)) = self.created
            && let Ok(mut conn) = sqlx::AnyConnection::connect(&server).await
        {
            let _ = conn
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .await;
        }
    }
}

/// The PostgreSQL server of the tests: `None` when not configured (and not required).
pub fn postgres_server() -> Option<String> {
    let url = std::env::var(POSTGRES_URL_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty());
    let required = std::env::var(REQUIRE_POSTGRES_ENV).is_ok_and(|v| v == "1");
    assert!(
        url.is_some() || !required,
        "{REQUIRE_POSTGRES_ENV}=1 but {POSTGRES_URL_ENV} is not set: the PostgreSQL server was not started (scripts/postgres-server)"
    );
    url
}

/// A fresh, migrated database on the PostgreSQL server at `server`.
pub async fn fresh_postgres(server: &str) -> Result<TestDb, DbError> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    sqlx::any::install_default_drivers();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!(
        "sluice_test_{}_{}_{n}",
        std::process::id(),
        crate::now_ms() % 1_000_000
    );
    let mut conn = sqlx::AnyConnection::connect(server).await?;
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await?;
    conn.close().await?;
    let mut url = url::Url::parse(server).map_err(|e| DbError::Url(e.to_string()))?;
    url.set_path(&format!("/{name}"));
    let db = Db::connect(url.as_str()).await?;
    Ok(TestDb {
        db,
        created: Some((server.to_string(), name)),
    })
}

/// A fresh SQLite database in memory, then a fresh PostgreSQL database if a server is given.
pub async fn databases() -> Vec<TestDb> {
    let mut all = vec![TestDb {
        db: Db::open_in_memory()
            .await
            .expect("an in-memory SQLite database"),
        created: None,
    }];
    if let Some(server) = postgres_server() {
        let db = fresh_postgres(&server)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}", super::redact_url(&server)));
        all.push(db);
    }
    all
}

//! Bearer tokens: generation, hashing, and the [`Caller`] / [`AdminOnly`] extractors.
//!
//! Tokens are 256 random bits, shown once, stored as their SHA-256 (a fast hash is enough for
//! secrets of that entropy). The admin token is compared by hash in constant time.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::App;
use super::error::ApiError;
use crate::db::tokens;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The administrator (server config or `SLUICE_ADMIN_TOKEN`).
    Admin,
    /// A tenant, by id.
    Tenant(String),
}

impl Caller {
    /// The tenant to restrict queries to: `None` for the admin (sees everything).
    pub fn scope(&self) -> Option<&str> {
        match self {
            Caller::Admin => None,
            Caller::Tenant(id) => Some(id),
        }
    }
}

/// Extracts a caller that must be the admin; a tenant gets 403.
#[derive(Debug)]
pub struct AdminOnly;

/// A new random token: `sluice_` + 43 base64url characters (256 bits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "sluice_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A new id: `prefix` + 32 hex digits.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex(&bytes))
}

/// The SHA-256 of a token, as stored.
pub fn hash_token(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares two byte strings without an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| {
            ApiError::Unauthorized("missing `Authorization: Bearer <token>` header".into())
        })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into())
        })?;
    Ok(token)
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let hash = Sha256::digest(token.as_bytes());
        if constant_time_eq(&hash, &app.admin_hash) {
            return Ok(Caller::Admin);
        }
        let hash = hex(&hash);
        if let Some(tenant) = app.tokens.get(&hash) {
            return Ok(Caller::Tenant(tenant));
        }
        match tokens::tenant_of_hash(&app.db, &hash).await? {
            Some(tenant) => {
                app.tokens.put(hash, tenant.clone());
                Ok(Caller::Tenant(tenant))
            }
            None => Err(ApiError::Unauthorized("unknown or revoked token".into())),
        }
    }
}

impl FromRequestParts<Arc<App>> for AdminOnly {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, app).await? {
            Caller::Admin => Ok(AdminOnly),
            Caller::Tenant(_) => Err(ApiError::Forbidden(
                "this route is for the administrator only".into(),
            )),
        }
    }
}

/// Tenant tokens recently seen valid (by hash), so that a request needs no database round trip
/// to know its caller. Revoking a token or deleting a tenant empties it; an entry also lives
/// at most [`TokenCache::TTL`], the longest a token revoked through another server sharing the
/// database stays usable here.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: std::sync::Mutex<std::collections::HashMap<String, (String, std::time::Instant)>>,
}

impl TokenCache {
    /// How long a cached token is trusted.
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(10);
    /// Entries kept at most (a flood of distinct valid tokens can't grow it without bound).
    const MAX: usize = 10_000;

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (String, std::time::Instant)>>
    {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, hash: &str) -> Option<String> {
        let entries = self.lock();
        let (tenant, seen) = entries.get(hash)?;
        (seen.elapsed() < Self::TTL).then(|| tenant.clone())
    }

    fn put(&self, hash: String, tenant: String) {
        let mut entries = self.lock();
        if entries.len() >= Self::MAX {
            entries.clear();
        }
        entries.insert(hash, (tenant, std::time::Instant::now()));
    }

    /// Forgets every token (one was revoked).
    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// A caller that may read `/metrics`: the admin, or the scrape job's `metrics_token`.
#[derive(Debug)]
pub struct MetricsReader;

impl FromRequestParts<Arc<App>> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let hash = Sha256::digest(bearer(parts)?.as_bytes());
        if app
            .metrics_hash
            .is_some_and(|m| constant_time_eq(&hash, &m))
        {
            return Ok(MetricsReader);
        }
        match Caller::from_request_parts(parts, app).await? {
            Caller::Admin => Ok(MetricsReader),
            Caller::Tenant(_) => Err(ApiError::Forbidden(
                "/metrics names every tenant: it is for the administrator (a tenant reads its own at /v1/metrics)".into(),
            )),
        }
    }
}

/// The SHA-256 of the admin token, kept instead of the token.
pub fn admin_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hash_stably() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), "sluice_".len() + 43);
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_eq!(hash_token(&a).len(), 64);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

//! Request bodies read by hand, so that every rejection (too large, wrong type, bad JSON) is an
//! [`ApiError`] with a clear message, never axum's plain-text default.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use super::App;
use super::error::ApiError;

/// The body's media type, lowercased without parameters (`application/json`).
pub fn media_type(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
}

/// Whether a media type is JSON (`application/json` or `*/*+json`).
pub fn is_json(media: &str) -> bool {
    media == "application/json" || media.ends_with("+json")
}

/// Whether a media type is YAML.
pub fn is_yaml(media: &str) -> bool {
    matches!(
        media,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
    )
}

/// The raw body with its media type, limited by `limits.max_body_bytes` (413 past it).
#[derive(Debug)]
pub struct RawBody {
    /// Lowercased media type, if given.
    pub media: Option<String>,
    /// The bytes.
    pub bytes: Bytes,
}

impl FromRequest<Arc<App>> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<App>) -> Result<Self, ApiError> {
        let media = media_type(&request);
        let limit = state.limits.max_body_bytes;
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(limit)
                } else {
                    ApiError::bad_request("bad_body", format!("cannot read the body: {rejection}"))
                }
            })?;
        Ok(RawBody { media, bytes })
    }
}

impl RawBody {
    /// The body as UTF-8 text.
    pub fn text(&self) -> Result<&str, ApiError> {
        std::str::from_utf8(&self.bytes)
            .map_err(|e| ApiError::bad_request("bad_body", format!("the body is not UTF-8: {e}")))
    }

    /// Requires a JSON media type.
    pub fn require_json(&self) -> Result<(), ApiError> {
        match self.media.as_deref() {
            Some(m) if is_json(m) => Ok(()),
            other => Err(ApiError::UnsupportedMediaType(format!(
                "expected `Content-Type: application/json`, got {}",
                other.map_or("none".to_string(), |m| format!("`{m}`"))
            ))),
        }
    }
}

/// A JSON body deserialized into `T`; errors name the field path, line and column.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Arc<App>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<App>) -> Result<Self, ApiError> {
        let body = RawBody::from_request(request, state).await?;
        body.require_json()?;
        parse_json(&body.bytes).map(JsonBody)
    }
}

/// Deserializes JSON with the path of the failing field in the message.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = if path == "." || path.is_empty() {
            format!("invalid JSON body: {inner}")
        } else {
            format!("invalid JSON body at `{path}`: {inner}")
        };
        ApiError::bad_request("bad_json", message)
    })
}

/// Query parameters; a bad one is a 400 [`ApiError`].
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned + Send> axum::extract::FromRequestParts<Arc<App>> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &Arc<App>,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|e| ApiError::bad_request("bad_query", e.body_text()))
    }
}

//! [`ApiError`]: every failure of the REST API, as `{"error": {"code", "message"}}` with the
//! right status. Internal errors are logged and shown to clients only as a generic message.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::config::ConfigError;
use crate::db::DbError;

/// An API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable reason.
        code: &'static str,
        /// For humans.
        message: String,
    },
    /// 400: the pipeline definition has errors (all of them, with key path and line).
    #[error("invalid pipeline definition: {}", join(.0))]
    InvalidConfig(Vec<ConfigError>),
    /// 401: no token, or an unknown one.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token is valid but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 403: the tenant has as many pipelines as allowed.
    #[error("the tenant already has {0} pipelines, the most allowed (limits.pipelines_per_tenant)")]
    PipelineLimit(u64),
    /// 403: the tenant would go past one of its quotas (modules, module bytes, spool bytes).
    #[error("{0}")]
    Quota(String),
    /// 404: no such resource (or not the caller's).
    #[error("{0}")]
    NotFound(String),
    /// 405: the route exists, the method doesn't.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409: a conflict with existing state.
    #[error("{message}")]
    Conflict {
        /// Machine-readable reason.
        code: &'static str,
        /// For humans.
        message: String,
    },
    /// 413: the body is larger than `limits.max_body_bytes`.
    #[error("request body larger than the {0} bytes allowed (limits.max_body_bytes)")]
    PayloadTooLarge(usize),
    /// 413: an uploaded module is larger than `limits.max_module_bytes`.
    #[error("module larger than the {0} bytes allowed (limits.max_module_bytes)")]
    ModuleTooLarge(usize),
    /// 415: a body type this route doesn't read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 504: the analyzer did not answer in time (dry run).
    #[error("{0}")]
    Timeout(String),
    /// 500 (503 when it can't be reached): the database failed.
    #[error("{}", db_message(.0))]
    Db(#[from] DbError),
    /// 500: a bug (a handler panicked).
    #[error("{0}")]
    Internal(String),
}

/// What a client is told of a database failure: never its internals.
fn db_message(e: &DbError) -> &'static str {
    match e {
        DbError::Unavailable(_) => "the database is unavailable; try again",
        _ => "an internal database error occurred",
    }
}

fn join(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl ApiError {
    /// A 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } | ApiError::InvalidConfig(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) | ApiError::PipelineLimit(_) | ApiError::Quota(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) | ApiError::ModuleTooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Db(DbError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Db(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. } | ApiError::Conflict { code, .. } => code,
            ApiError::InvalidConfig(_) => "invalid_config",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::PipelineLimit(_) => "pipeline_limit",
            ApiError::Quota(_) => "quota_exceeded",
            ApiError::NotFound(_) => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge(_) => "body_too_large",
            ApiError::ModuleTooLarge(_) => "module_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::Timeout(_) => "timeout",
            ApiError::Db(DbError::Unavailable(_)) => "unavailable",
            ApiError::Db(_) | ApiError::Internal(_) => "internal",
        }
    }
}

/// The error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// `error` of [`ErrorBody`].
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable reason, e.g. `invalid_config`, `host_id_conflict`, `not_found`.
    pub code: String,
    /// For humans.
    pub message: String,
    /// Every problem of an `invalid_config`, with key path and line (YAML bodies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<ConfigErrorBody>>,
}

/// One problem in a pipeline definition.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfigErrorBody {
    /// Dotted key path, e.g. `pipeline.store.buffered.max_flows_per_object`.
    pub path: String,
    /// 1-based line in a YAML body.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Db(e) = &self {
            tracing::error!(error = %e, "Request failed on the database.");
        }
        let errors = match &self {
            ApiError::InvalidConfig(errors) => Some(
                errors
                    .iter()
                    .map(|e| ConfigErrorBody {
                        path: e.path.clone(),
                        line: e.line,
                        message: e.message.clone(),
                    })
                    .collect(),
            ),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
                errors,
            },
        };
        (status, Json(body)).into_response()
    }
}

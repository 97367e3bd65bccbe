//! The crate's error type and its HTTP mapping. (The gRPC mapping joins it here
//! with the streaming API.) Internal errors are logged once, here, with their
//! cause chain, and answered opaquely.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing, malformed, expired or revoked credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// A webhook whose provider signature is missing or wrong.
    #[error("{0}")]
    InvalidSignature(String),
    /// Authenticated, but the token lacks a scope.
    #[error("this operation requires the `{0}` scope")]
    InsufficientScope(crate::domain::Scope),
    #[error("{0}")]
    Forbidden(String),
    /// Missing, or owned by another tenant: the two are indistinguishable.
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request body did not arrive within the body deadline, or arrived
    /// too slowly.
    #[error("{0}")]
    RequestTimeout(String),
    /// Too many requests (or failed attempts) from one source address, or of
    /// one tenant: 429 with Retry-After.
    #[error("{message}; retry in {retry_after} s")]
    RateLimited {
        message: &'static str,
        retry_after: u64,
    },
    /// Over one of the tenant's quotas (a count): 403 `quota_exceeded`.
    #[error("{0}")]
    QuotaExceeded(String),
    /// Try again shortly: overloaded, shutting down, or the database is away.
    #[error("{0}")]
    Unavailable(String),
    /// A provider refused the access a tenant gave (no hook with our URL, a
    /// token without the permission): 422 saying what to fix.
    #[error("{0}")]
    ProviderCheck(String),
    /// A consumer's cursor is older than the retained events.
    #[error("{0}")]
    BehindRetention(String),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// The stable code in `{"error": code}`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthenticated(_) => "unauthenticated",
            Error::InvalidSignature(_) => "invalid_signature",
            Error::InsufficientScope(_) => "insufficient_scope",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::Invalid { .. } => "invalid_request",
            Error::InvalidJson(_) => "invalid_json",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::RequestTimeout(_) => "request_timeout",
            Error::RateLimited { .. } => "rate_limited",
            Error::QuotaExceeded(_) => "quota_exceeded",
            Error::Unavailable(_) => "unavailable",
            Error::BehindRetention(_) => "behind_retention",
            Error::ProviderCheck(_) => "provider_check_failed",
            Error::Database(error) if database_unavailable(error) => "unavailable",
            Error::Database(_) | Error::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated(_) | Error::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            Error::InsufficientScope(_) | Error::Forbidden(_) | Error::QuotaExceeded(_) => {
                StatusCode::FORBIDDEN
            }
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Invalid { .. } | Error::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::BehindRetention(_) => StatusCode::GONE,
            Error::ProviderCheck(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::Database(error) if database_unavailable(error) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Database(_) | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The same error as a gRPC status.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Error::Unauthenticated(_) | Error::InvalidSignature(_) => tonic::Code::Unauthenticated,
            Error::InsufficientScope(_) | Error::Forbidden(_) => tonic::Code::PermissionDenied,
            Error::NotFound(_) => tonic::Code::NotFound,
            Error::Conflict(_) => tonic::Code::AlreadyExists,
            Error::Invalid { .. } | Error::InvalidJson(_) | Error::UnsupportedMediaType(_) => {
                tonic::Code::InvalidArgument
            }
            Error::PayloadTooLarge { .. } | Error::RateLimited { .. } | Error::QuotaExceeded(_) => {
                tonic::Code::ResourceExhausted
            }
            Error::RequestTimeout(_) => tonic::Code::DeadlineExceeded,
            Error::Unavailable(_) => tonic::Code::Unavailable,
            Error::BehindRetention(_) | Error::ProviderCheck(_) => tonic::Code::FailedPrecondition,
            Error::Database(error) if database_unavailable(error) => tonic::Code::Unavailable,
            Error::Database(_) | Error::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl Error {
    /// The client-facing message; internal errors are logged here, once, and hidden.
    fn public_message(&self) -> String {
        match self {
            Error::Database(error) if database_unavailable(error) => {
                outage_started(error);
                "the database is unavailable; retry later".to_owned()
            }
            Error::Database(error) => {
                tracing::error!(error = %error, "database error");
                "internal error".to_owned()
            }
            Error::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        tonic::Status::new(error.grpc_code(), error.public_message())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.public_message();
        let mut response = (
            status,
            Json(json!({"error": self.code(), "message": message})),
        )
            .into_response();
        match &self {
            // RFC 6750 §3: tell bearer-token clients what went wrong.
            Error::Unauthenticated(_) => {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="hookrelay", error="invalid_token""#),
                );
            }
            Error::InsufficientScope(scope) => {
                if let Ok(value) = HeaderValue::from_str(&format!(
                    r#"Bearer realm="hookrelay", error="insufficient_scope", scope="{scope}""#
                )) {
                    response
                        .headers_mut()
                        .insert(header::WWW_AUTHENTICATE, value);
                }
            }
            Error::RateLimited { retry_after, .. } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

/// What a 503 tells clients to wait before retrying.
pub const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// Whether the database, not the request, is at fault and a retry can succeed:
/// it is unreachable, shutting down, or out of storage. Those answer 503 (with
/// `Retry-After`) rather than 500.
pub fn database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01-57P03: shutting down or starting;
            // 53: insufficient resources; 58: system (I/O) error.
            code.starts_with("08")
                || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
                || storage_code(&code)
        }),
        _ => false,
    }
}

/// A commit failed because the database's storage failed (disk full, I/O error):
/// readiness reports it (see `http::health`).
pub fn storage_failure(error: &Error) -> bool {
    match error {
        Error::Database(sqlx::Error::Database(db)) => db.code().is_some_and(|c| storage_code(&c)),
        _ => false,
    }
}

fn storage_code(code: &str) -> bool {
    (code.starts_with("53") && code != "53300") || code.starts_with("58")
}

/// Set while the database is unavailable: the outage is logged once when it
/// starts and once when it ends, not once per request.
static DATABASE_OUTAGE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn outage_started(error: &sqlx::Error) {
    if !DATABASE_OUTAGE.swap(true, std::sync::atomic::Ordering::AcqRel) {
        tracing::error!(
            %error,
            "the database is unavailable: requests get 503 until it is back"
        );
    }
}

/// Called when the database answers again (the health loop pings it every second).
pub fn database_answered() {
    if DATABASE_OUTAGE.swap(false, std::sync::atomic::Ordering::AcqRel) {
        tracing::warn!("the database is back");
    }
}

/// A named unique constraint violated by this statement, for mapping to Conflict.
pub fn violated_constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) if db.is_unique_violation() || db.is_foreign_key_violation() => {
            db.constraint()
        }
        _ => None,
    }
}

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
    #[error("{0}")]
    Unavailable(String),
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
            Error::Unavailable(_) => "unavailable",
            Error::BehindRetention(_) => "behind_retention",
            Error::Database(_) | Error::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::Unauthenticated(_) | Error::InvalidSignature(_) => StatusCode::UNAUTHORIZED,
            Error::InsufficientScope(_) | Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::Invalid { .. } | Error::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::BehindRetention(_) => StatusCode::GONE,
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
            Error::PayloadTooLarge { .. } => tonic::Code::ResourceExhausted,
            Error::Unavailable(_) => tonic::Code::Unavailable,
            Error::BehindRetention(_) => tonic::Code::FailedPrecondition,
            Error::Database(_) | Error::Internal(_) => tonic::Code::Internal,
        }
    }
}

impl Error {
    /// The client-facing message; internal errors are logged here, once, and hidden.
    fn public_message(&self) -> String {
        match self {
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
            _ => {}
        }
        response
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

//! JSON bodies and query strings, with rejections in the API's error format.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts};
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// `Json` whose rejections are answered in the API's error format.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct ApiJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

impl From<JsonRejection> for Error {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => {
                Error::UnsupportedMediaType("expected Content-Type: application/json".into())
            }
            JsonRejection::JsonDataError(e) => Error::invalid("body", e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Error::InvalidJson(e.body_text()),
            JsonRejection::BytesRejection(e)
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                Error::PayloadTooLarge {
                    limit: super::API_BODY_LIMIT,
                }
            }
            other => Error::invalid("body", other.body_text()),
        }
    }
}

/// `Query` whose rejections (a repeated or malformed parameter) are answered
/// in the API's error format.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct ApiQuery<T>(pub T);

impl From<QueryRejection> for Error {
    fn from(rejection: QueryRejection) -> Self {
        Error::invalid("query", rejection.body_text())
    }
}

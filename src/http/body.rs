//! Reading request bodies within a deadline and, for webhooks, within the
//! memory budget (`server::MemoryBudget`) shared by every body being read.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::time::Instant;

use crate::error::Error;
use crate::server::{MemoryBudget, Reservation};
use crate::state::AppState;

/// Reads a webhook body of at most `limit` bytes before `deadline`, holding
/// budget for it. An announced length is reserved in full before the first byte
/// is read (503 when the budget cannot hold it); a streamed body reserves as its
/// buffer grows.
pub async fn read_webhook(
    body: Body,
    announced: Option<u64>,
    limit: usize,
    budget: &MemoryBudget,
    deadline: Instant,
    timeout: Duration,
) -> Result<(Bytes, Reservation), Error> {
    let capacity = announced.map_or(0, |n| n as usize);
    let mut permit = match announced {
        Some(length) if length > 0 => Some(budget.reserve(length as usize)?),
        _ => None,
    };
    let mut buffer = BytesMut::with_capacity(capacity);
    let mut body = body;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Error::invalid("body", format!("cannot read the request body: {e}"))
            })?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buffer.len() + data.len() > limit {
                return Err(Error::PayloadTooLarge { limit });
            }
            buffer.extend_from_slice(&data);
            let reserved = permit.as_ref().map_or(0, |p| p.num_permits());
            if buffer.capacity() > reserved {
                let more = budget.reserve(buffer.capacity() - reserved)?;
                match &mut permit {
                    Some(permit) => permit.merge(more),
                    None => permit = Some(more),
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(result) => result?,
        Err(_) => return Err(Error::RequestTimeout(timeout.as_secs())),
    }
    Ok((buffer.freeze(), Reservation::from(permit)))
}

/// Buffers the small bodies of the JSON API before their handler runs, so that
/// a body that trickles in is cut at the deadline with 408, and one over the
/// limit gets 413, in the API's error format.
pub async fn buffer_api_body(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let timeout = state.settings.body_timeout;
    let (parts, body) = request.into_parts();
    let limit = super::API_BODY_LIMIT;
    let read = axum::body::to_bytes(body, limit);
    let bytes = match tokio::time::timeout(timeout, read).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(error)) if super::is_length_limit(&error) => {
            return Error::PayloadTooLarge { limit }.into_response();
        }
        Ok(Err(error)) => {
            return Error::invalid("body", format!("cannot read the request body: {error}"))
                .into_response();
        }
        Err(_) => return Error::RequestTimeout(timeout.as_secs()).into_response(),
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

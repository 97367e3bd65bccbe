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
use crate::server::Reservation;
use crate::state::AppState;

/// How a webhook body must arrive.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// When the request's headers arrived.
    pub started: Instant,
    /// The whole body within this of `started` (HOOKRELAY_HTTP_BODY_TIMEOUT).
    pub timeout: Duration,
    /// After the first second, at least this many bytes per second on average
    /// (HOOKRELAY_WEBHOOK_MIN_BODY_RATE): a trickle is cut in seconds, while a
    /// sender that sends its headers and body at once, as GitHub does, never
    /// comes near it.
    pub min_rate: u64,
}

/// The grace before `BodyPace::min_rate` applies.
const BODY_RATE_GRACE: Duration = Duration::from_secs(1);

impl BodyPace {
    /// When the next bytes must have arrived, after `received` so far.
    fn next_by(&self, received: usize) -> Instant {
        let paced = self.started
            + BODY_RATE_GRACE
            + Duration::from_secs_f64(received as f64 / self.min_rate.max(1) as f64);
        paced.min(self.started + self.timeout)
    }
}

/// Reads a webhook body of at most `limit` bytes at `pace`, holding
/// `reservation` for it. An announced length is reserved in full before the
/// first byte is read (503 when a share of the budget cannot hold it); a
/// streamed body reserves as its buffer grows.
pub async fn read_webhook(
    body: Body,
    announced: Option<u64>,
    limit: usize,
    mut reservation: Reservation,
    pace: BodyPace,
) -> Result<(Bytes, Reservation), Error> {
    let capacity = announced.map_or(0, |n| n as usize);
    reservation.grow(capacity)?;
    let mut buffer = BytesMut::with_capacity(capacity);
    let mut body = body;
    loop {
        let by = pace.next_by(buffer.len());
        let frame = match tokio::time::timeout_at(by, body.frame()).await {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(_) if by < pace.started + pace.timeout => {
                return Err(Error::RequestTimeout(format!(
                    "the request body arrived slower than {} bytes/s",
                    pace.min_rate
                )));
            }
            Err(_) => {
                return Err(Error::RequestTimeout(format!(
                    "the request body did not arrive within {} s",
                    pace.timeout.as_secs()
                )));
            }
        };
        let frame = frame
            .map_err(|e| Error::invalid("body", format!("cannot read the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buffer.len() + data.len() > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        buffer.extend_from_slice(&data);
        if buffer.capacity() > reservation.bytes() {
            reservation.grow(buffer.capacity() - reservation.bytes())?;
        }
    }
    Ok((buffer.freeze(), reservation))
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
        Err(_) => {
            return Error::RequestTimeout(format!(
                "the request body did not arrive within {} s",
                timeout.as_secs()
            ))
            .into_response();
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

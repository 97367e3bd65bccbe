//! The access log: one JSON line per request, in the shape of every other
//! log line (`timestamp`, `level`, `message`, the line's fields, `target`,
//! and the request's `span`: route, method, request id, tenant, repository).
//!
//! It is written here rather than through tracing's JSON formatter, which
//! serialises a span's fields on creation and parses and re-serialises them
//! at every `record`: for a webhook (tenant, repository, status) that came to
//! about 15 µs of CPU, a quarter of the webhook's whole cost. Here a line is
//! one `serde_json` serialisation into the log writer's queue. The request's
//! tenant and repository are noted in a task-local slot ([`note_tenant`],
//! [`note_repository`]) that the line reads; they go into the tracing span as
//! well only when traces are exported, where they become span attributes.
//!
//! Which requests get a line: HOOKRELAY_ACCESS_LOG (`all`, `failures`, `off`)
//! and RUST_LOG (target `hookrelay::access`, level info) together.

use std::cell::Cell;
use std::time::Duration;

use serde::Serialize;

use crate::domain::{RepositoryId, TenantId};

/// The access log's target: `RUST_LOG=info,hookrelay::access=off` works as
/// well as `HOOKRELAY_ACCESS_LOG=off`.
pub const TARGET: &str = "hookrelay::access";

/// What a request's handlers learn about it, for its line.
#[derive(Debug, Default)]
pub struct Noted {
    tenant_id: Cell<Option<TenantId>>,
    repository_id: Cell<Option<RepositoryId>>,
}

impl Noted {
    fn copy(&self) -> Self {
        Self {
            tenant_id: Cell::new(self.tenant_id.get()),
            repository_id: Cell::new(self.repository_id.get()),
        }
    }
}

tokio::task_local! {
    static NOTED: Noted;
}

/// Runs one request's handling with a slot for what [`note_tenant`] and
/// [`note_repository`] learn; returns it with the response.
pub async fn scope<F: Future>(handling: F) -> (F::Output, Noted) {
    let noted = Noted::default();
    NOTED
        .scope(noted, async move {
            let output = handling.await;
            (output, NOTED.with(Noted::copy))
        })
        .await
}

/// The tenant the request acts for or on.
pub fn note_tenant(id: TenantId) {
    let _ = NOTED.try_with(|noted| noted.tenant_id.set(Some(id)));
    if hookrelay_telemetry::traces_exported() {
        tracing::Span::current().record("tenant_id", tracing::field::display(id));
    }
}

/// The repository the request concerns.
pub fn note_repository(id: RepositoryId) {
    let _ = NOTED.try_with(|noted| noted.repository_id.set(Some(id)));
    if hookrelay_telemetry::traces_exported() {
        tracing::Span::current().record("repository_id", tracing::field::display(id));
    }
}

/// One request, as its line names it.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    pub route: &'a str,
    pub request_id: &'a str,
}

/// Writes the line of a request answered `status` after `latency`, if the
/// settings want it.
pub fn finished(request: &Request<'_>, noted: &Noted, status: u16, latency: Duration) {
    if !super::access_log().records(status) {
        return;
    }
    // Milliseconds to the microsecond: 9.63, not 9.629577000000001.
    let latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3;
    // On a terminal a person wants what happened: request lines are debug
    // lines there, through the usual formatter.
    if super::text_logs() {
        tracing::debug!(target: TARGET, status, latency_ms, route = request.route, "request finished");
        return;
    }
    if !tracing::enabled!(target: TARGET, tracing::Level::INFO) {
        return;
    }
    let line = Line {
        timestamp: Timestamp,
        level: "INFO",
        message: "request finished",
        status,
        latency_ms,
        target: TARGET,
        span: Span {
            name: "http.request",
            method: request.method,
            route: request.route,
            request_id: request.request_id,
            tenant_id: noted.tenant_id.get(),
            repository_id: noted.repository_id.get(),
        },
    };
    super::write_log_line(|out| serde_json::to_writer(out, &line).map_err(std::io::Error::other));
}

#[derive(Serialize)]
struct Line<'a> {
    timestamp: Timestamp,
    level: &'static str,
    message: &'static str,
    status: u16,
    latency_ms: f64,
    target: &'static str,
    span: Span<'a>,
}

#[derive(Serialize)]
struct Span<'a> {
    name: &'static str,
    method: &'a str,
    route: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant_id: Option<TenantId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repository_id: Option<RepositoryId>,
}

/// Now, as tracing's JSON lines write it (RFC 3339, UTC, microseconds).
struct Timestamp;

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let now = time::OffsetDateTime::now_utc();
        serializer.collect_str(&format_args!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond()
        ))
    }
}

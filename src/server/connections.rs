//! Serves a router (the HTTP API, or the gRPC services) over TCP, plain or TLS,
//! HTTP/1.1 and HTTP/2, with the limits an endpoint on the open internet needs.
//! Each connection is watched, as Go's `http.Server` does it:
//!
//! - **Header timeout.** A new connection must deliver its first complete
//!   request headers within `header_timeout`, and so must a kept-alive HTTP/1.1
//!   connection once it starts sending its next request; otherwise it is closed
//!   (slowloris). The TLS handshake counts as part of the first headers.
//! - **Idle timeout.** A connection with no request in flight (a request is in
//!   flight until its response body ends, so an open gRPC stream counts) is
//!   closed after `idle_timeout`.
//! - **Connection cap.** At most `max_connections` are open across both
//!   listeners. At the cap, a new connection evicts the oldest connection with
//!   no request in flight (a flood of idle sockets cannot lock out health checks
//!   or GitHub); when every connection is busy, the new one is closed at once.
//!
//! The body deadline and the webhook memory budget are enforced where bodies are
//! read (`http::body`), so that they answer 408 and 503 in the API's format.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Connection limits of the HTTP listener (see the module documentation).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    /// HTTP/2 pings find peers that vanished without closing (an agent's laptop lid).
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
}

/// The connections open across both listeners, each with its watch, so that
/// idle ones can be evicted when the cap is reached.
#[derive(Debug)]
pub struct Connections {
    max: usize,
    open: AtomicUsize,
    next_id: AtomicU64,
    watched: Mutex<HashMap<u64, Arc<Watch>>>,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            watched: Mutex::new(HashMap::new()),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// A slot for a new connection: at the cap, the oldest idle connection is
    /// asked to close to make room; None when every connection is busy.
    pub fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open.load(Ordering::Relaxed);
        loop {
            if open >= self.max && !self.evict_one() {
                return None;
            }
            // The evicted connection frees its slot when its task ends; admit
            // now, so the cap is exceeded by at most the evictions in progress.
            match self.open.compare_exchange_weak(
                open,
                open + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Some(Slot {
                        connections: self.clone(),
                    });
                }
                Err(current) => open = current,
            }
            if open >= self.max {
                return None;
            }
        }
    }

    fn evict_one(&self) -> bool {
        let watched = self
            .watched
            .lock()
            .expect("the connection table is not poisoned");
        let oldest = watched
            .values()
            .filter(|watch| watch.is_idle() && !watch.evicted.is_cancelled())
            .min_by_key(|watch| watch.accepted);
        match oldest {
            Some(watch) => {
                watch.evicted.cancel();
                true
            }
            None => false,
        }
    }
}

/// One admitted connection; frees its place when dropped.
#[derive(Debug)]
pub struct Slot {
    connections: Arc<Connections>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.connections.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the watchdog of one HTTP connection knows about it.
#[derive(Debug)]
struct Watch {
    accepted: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `accepted` when the last request finished.
    idle_since: AtomicU64,
    /// Milliseconds after `accepted` when the first byte arrived while idle;
    /// `u64::MAX` while nothing has arrived.
    head_started: AtomicU64,
    served_any: AtomicBool,
    /// HTTP/2 multiplexes: bytes on an idle connection (PING, SETTINGS) are not
    /// the start of a request, so only the idle timeout applies between requests.
    http2: AtomicBool,
    changed: Notify,
    evicted: CancellationToken,
}

const NOT_STARTED: u64 = u64::MAX;

impl Watch {
    fn new() -> Self {
        Self {
            accepted: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(NOT_STARTED),
            served_any: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            changed: Notify::new(),
            evicted: CancellationToken::new(),
        }
    }

    fn millis(&self) -> u64 {
        self.accepted.elapsed().as_millis() as u64
    }

    fn is_idle(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.served_any.store(true, Ordering::Release);
    }

    fn request_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.millis(), Ordering::Release);
            self.head_started.store(NOT_STARTED, Ordering::Release);
            self.changed.notify_one();
        }
    }

    fn bytes_arrived(&self) {
        if self.is_idle()
            && self.head_started.load(Ordering::Acquire) == NOT_STARTED
            && self
                .head_started
                .compare_exchange(
                    NOT_STARTED,
                    self.millis(),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// When the connection must close if it is still idle; None while a request
    /// is in flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if !self.is_idle() {
            return None;
        }
        let at = |millis: u64, timeout: Duration| {
            self.accepted + Duration::from_millis(millis) + timeout
        };
        if !self.served_any.load(Ordering::Acquire) {
            return Some(at(0, limits.header_timeout));
        }
        match self.head_started.load(Ordering::Acquire) {
            _ if self.http2.load(Ordering::Acquire) => Some(at(
                self.idle_since.load(Ordering::Acquire),
                limits.idle_timeout,
            )),
            NOT_STARTED => Some(at(
                self.idle_since.load(Ordering::Acquire),
                limits.idle_timeout,
            )),
            started => Some(at(started, limits.header_timeout)),
        }
    }

    /// Completes when the connection should close: its deadline passed while
    /// idle, or it was evicted.
    async fn expired(&self, limits: &ConnectionLimits) {
        loop {
            let changed = self.changed.notified();
            match self.deadline(limits) {
                Some(deadline) if deadline <= Instant::now() => return,
                Some(deadline) => tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = changed => {}
                    () = self.evicted.cancelled() => return,
                },
                None => tokio::select! {
                    () = changed => {}
                    () = self.evicted.cancelled() => return,
                },
            }
        }
    }
}

/// An I/O stream that tells its watch when bytes arrive.
struct Watched<T> {
    inner: T,
    watch: Arc<Watch>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            if before == 0 && !self.watch.served_any.load(Ordering::Acquire) {
                // Prior-knowledge HTTP/2 (h2c) starts with its preface.
                let read = &buf.filled()[before..];
                if read.starts_with(b"PRI * HTTP/2.0") {
                    self.watch.http2.store(true, Ordering::Release);
                }
            }
            self.watch.bytes_arrived();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Counts one of the connection's requests as in flight until it is dropped:
/// with the response body, so a streaming response counts until it ends.
struct InFlight(Arc<Watch>);

impl InFlight {
    fn start(watch: &Arc<Watch>) -> Self {
        watch.request_started();
        Self(watch.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A response body that keeps its request in flight until it ends.
struct Tracked {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Serves `router` on `listener` until `stop`, then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    connections: Arc<Connections>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let tasks = tokio_util::task::TaskTracker::new();
    let mut accept_errors = AcceptErrors::default();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_errors.record(&error).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.admit() else {
            tracing::debug!(%peer, "connection refused: every connection is busy");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (tls, router, stop) = (tls.clone(), router.clone(), stop.clone());
        let connections = connections.clone();
        tasks.spawn(async move {
            let watch = Arc::new(Watch::new());
            let id = connections.next_id.fetch_add(1, Ordering::Relaxed);
            connections
                .watched
                .lock()
                .expect("the connection table is not poisoned")
                .insert(id, watch.clone());
            serve_connection(stream, peer, tls, router, limits, &watch, stop).await;
            connections
                .watched
                .lock()
                .expect("the connection table is not poisoned")
                .remove(&id);
            drop(slot);
        });
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: ConnectionLimits,
    watch: &Arc<Watch>,
    stop: CancellationToken,
) {
    let stream = Watched {
        inner: stream,
        watch: watch.clone(),
    };
    match tls {
        None => drive(stream, peer, router, limits, watch, stop).await,
        Some(acceptor) => {
            // The handshake is part of the request head: same timeout.
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(stream));
            match handshake.await {
                Ok(Ok(stream)) => {
                    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                        watch.http2.store(true, Ordering::Release);
                    }
                    drive(stream, peer, router, limits, watch, stop).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, %peer, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        }
    }
}

async fn drive<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    watch: &Arc<Watch>,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_watch = watch.clone();
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        let in_flight = InFlight::start(&service_watch);
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(axum::body::Body::new)).await;
            response.map(|response| {
                response.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                })
            })
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The watchdog below times headers and idleness for both protocols.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.keepalive_interval))
        .keep_alive_timeout(limits.keepalive_timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let closing = tokio::select! {
        served = connection.as_mut() => return finished(served, peer),
        () = watch.expired(&limits) => {
            tracing::debug!(
                %peer,
                evicted = watch.evicted.is_cancelled(),
                "closing an idle connection"
            );
            connection.as_mut().graceful_shutdown();
            // Idle: nothing to finish. Give HTTP/2 a moment for its GOAWAY.
            Some(Duration::from_secs(1))
        }
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            // Requests in flight finish; the server's grace period bounds them.
            None
        }
    };
    match closing {
        Some(limit) => {
            if let Ok(served) = tokio::time::timeout(limit, connection).await {
                finished(served, peer);
            }
        }
        None => finished(connection.await, peer),
    }
}

fn finished(served: Result<(), Box<dyn std::error::Error + Send + Sync>>, peer: SocketAddr) {
    if let Err(error) = served {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}

/// Logs failed accepts once a second at most, and backs off when the process is
/// out of file descriptors, so a flood cannot spin the accept loop.
#[derive(Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl AcceptErrors {
    async fn record(&mut self, error: &std::io::Error) {
        let now = Instant::now();
        if self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            tracing::warn!(%error, suppressed = self.suppressed, "accepting a connection failed");
            self.last_logged = Some(now);
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
        // EMFILE/ENFILE: wait for descriptors to free up rather than spin.
        if matches!(error.raw_os_error(), Some(23 | 24)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Raises the soft open-file limit to the hard limit; returns the new limit.
pub fn raise_open_file_limit() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(error) => {
            tracing::warn!(%error, "cannot raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
        }
    }
}

/// The default connection cap for an open-file limit: room is kept for the
/// database pool, the embedded PostgreSQL's pipes, log files and health checks.
pub fn default_max_connections(open_file_limit: u64, db_connections: u32) -> usize {
    let reserve = (open_file_limit / 8).max(256) + u64::from(db_connections);
    usize::try_from(open_file_limit.saturating_sub(reserve).max(64)).unwrap_or(usize::MAX)
}

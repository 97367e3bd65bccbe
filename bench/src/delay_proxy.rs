//! A TCP proxy that delays every byte by a fixed time in each direction: the
//! network between two zones (a Cloud SQL primary and its synchronous standby)
//! on a machine without tc netem. `bench delay-proxy --listen … --upstream …
//! --delay 1ms`.
//!
//! Each direction reads as fast as the peer sends and writes every chunk when
//! its delay has passed, so the delay adds latency without limiting throughput.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Where the proxy connects: `host:port`, or `unix:<path of a socket>` (a
/// PostgreSQL cluster that listens on a Unix socket only).
#[derive(Debug, Clone)]
pub enum Upstream {
    Tcp(std::net::SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for Upstream {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.strip_prefix("unix:") {
            Some(path) => Ok(Self::Unix(path.into())),
            None => value
                .parse()
                .map(Self::Tcp)
                .map_err(|e| format!("{value}: {e} (host:port or unix:<path>)")),
        }
    }
}

/// Serves until the process ends: each accepted connection is joined to a new
/// connection to `upstream`. `received`, when given, counts the bytes that
/// come back from upstream (what a database sends its client).
pub async fn serve(
    listener: TcpListener,
    upstream: Upstream,
    delay: Duration,
    received: Option<Arc<AtomicU64>>,
) -> anyhow::Result<()> {
    loop {
        let (inbound, _) = listener.accept().await?;
        let (upstream, received) = (upstream.clone(), received.clone());
        tokio::spawn(async move {
            let _ = inbound.set_nodelay(true);
            let (from_client, to_client) = inbound.into_split();
            match upstream {
                Upstream::Tcp(address) => {
                    let Ok(outbound) = TcpStream::connect(address).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let (from_upstream, to_upstream) = outbound.into_split();
                    tokio::join!(
                        pipe(from_client, to_upstream, delay, None),
                        pipe(from_upstream, to_client, delay, received)
                    );
                }
                Upstream::Unix(path) => {
                    let Ok(outbound) = UnixStream::connect(path).await else {
                        return;
                    };
                    let (from_upstream, to_upstream) = outbound.into_split();
                    tokio::join!(
                        pipe(from_client, to_upstream, delay, None),
                        pipe(from_upstream, to_client, delay, received)
                    );
                }
            }
        });
    }
}

async fn pipe(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    delay: Duration,
    counted: Option<Arc<AtomicU64>>,
) {
    let (chunks, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(counted) = &counted {
                        counted.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    if chunks
                        .send((Instant::now() + delay, buffer[..n].to_vec()))
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((at, bytes)) = due.recv().await {
            // No timer for no delay: tokio's timers tick in milliseconds, and
            // even a deadline of "now" would wait for the next tick.
            if !delay.is_zero() {
                tokio::time::sleep_until(at).await;
            }
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes pass both ways, in order and unchanged, and a close passes on.
    #[tokio::test]
    async fn it_carries_a_conversation_both_ways() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = echo.accept().await.unwrap();
            let mut buffer = vec![0u8; 1024];
            loop {
                let n = socket.read(&mut buffer).await.unwrap();
                if n == 0 {
                    break;
                }
                socket.write_all(&buffer[..n]).await.unwrap();
            }
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = proxy.local_addr().unwrap();
        let counted = Arc::new(AtomicU64::new(0));
        tokio::spawn(serve(
            proxy,
            Upstream::Tcp(upstream),
            Duration::from_millis(5),
            Some(counted.clone()),
        ));

        let mut client = TcpStream::connect(address).await.unwrap();
        let message: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut read, mut write) = client.split();
        let sent = message.clone();
        let (_, received) = tokio::join!(
            async move {
                write.write_all(&sent).await.unwrap();
                write.shutdown().await.unwrap();
            },
            async move {
                let mut received = Vec::new();
                read.read_to_end(&mut received).await.unwrap();
                received
            }
        );
        assert_eq!(received, message);
        assert_eq!(counted.load(Ordering::Relaxed), message.len() as u64);
    }
}

//! A local HTTP target, as a CI server would run one.

use std::time::{Duration, Instant};

use super::sign;

/// What a test target received.
#[derive(Debug, Clone)]
pub struct Received {
    pub delivery_id: String,
    pub event_type: String,
    pub body: Vec<u8>,
    pub headers: reqwest::header::HeaderMap,
}

/// A local HTTP target, as a CI server would run: it checks the GitHub
/// signature itself and records what it accepted. `answer` picks the status of
/// each request (given the number of requests so far); signatures are checked first.
pub struct TestTarget {
    pub url: String,
    pub received: std::sync::Arc<std::sync::Mutex<Vec<Received>>>,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestTarget {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Answer = std::sync::Arc<dyn Fn(usize) -> (u16, Option<&'static str>) + Send + Sync>;
/// Whether the target accepts a request's signature.
type Check = std::sync::Arc<dyn Fn(&axum::http::HeaderMap, &[u8]) -> bool + Send + Sync>;

impl TestTarget {
    pub async fn start(secrets: Vec<String>) -> TestTarget {
        Self::answering(
            secrets,
            std::sync::Arc::new(|_| (200, None)),
            Duration::ZERO,
        )
        .await
    }

    /// A target that checks `sender`'s scheme itself, as a CI server that
    /// verifies that provider's webhooks does, and answers 200.
    pub async fn verifying(sender: hookrelay_testkit::Sender, secret: String) -> TestTarget {
        let check: Check = std::sync::Arc::new(move |headers, body| {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned)
            };
            sender.accepts(&secret, &header, body)
        });
        Self::serve(check, std::sync::Arc::new(|_| (200, None)), Duration::ZERO).await
    }

    pub async fn answering(secrets: Vec<String>, answer: Answer, delay: Duration) -> TestTarget {
        let check: Check = std::sync::Arc::new(move |headers, body| {
            let signature = headers
                .get("x-hub-signature-256")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            secrets.iter().any(|secret| sign(secret, body) == signature)
        });
        Self::serve(check, answer, delay).await
    }

    async fn serve(check: Check, answer: Answer, delay: Duration) -> TestTarget {
        use axum::http::{HeaderMap, StatusCode};
        let received: std::sync::Arc<std::sync::Mutex<Vec<Received>>> = Default::default();
        let requests: std::sync::Arc<std::sync::atomic::AtomicUsize> = Default::default();
        let handler = {
            let (received, requests) = (received.clone(), requests.clone());
            move |headers: HeaderMap, body: axum::body::Bytes| {
                let (received, requests, check, answer) = (
                    received.clone(),
                    requests.clone(),
                    check.clone(),
                    answer.clone(),
                );
                async move {
                    let n = requests.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if !check(&headers, &body) {
                        return (StatusCode::UNAUTHORIZED, HeaderMap::new());
                    }
                    tokio::time::sleep(delay).await;
                    let (status, retry_after) = answer(n);
                    let mut answer_headers = HeaderMap::new();
                    if let Some(retry_after) = retry_after {
                        answer_headers.insert("retry-after", retry_after.parse().unwrap());
                    }
                    if (200..300).contains(&status) {
                        let text = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let mut copy = reqwest::header::HeaderMap::new();
                        for (name, value) in &headers {
                            copy.append(
                                reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes())
                                    .unwrap(),
                                reqwest::header::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
                            );
                        }
                        received.lock().unwrap().push(Received {
                            delivery_id: text("x-github-delivery"),
                            event_type: text("x-github-event"),
                            body: body.to_vec(),
                            headers: copy,
                        });
                    }
                    (StatusCode::from_u16(status).unwrap(), answer_headers)
                }
            }
        };
        let router = axum::Router::new().route("/hook", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        TestTarget {
            url,
            received,
            requests,
            task,
        }
    }

    pub fn deliveries(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.delivery_id.clone())
            .collect()
    }

    /// Waits until the target has accepted at least `count` deliveries.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let deliveries = self.deliveries();
            if deliveries.len() >= count {
                return deliveries;
            }
            assert!(
                Instant::now() < deadline,
                "the target got {} of {count} deliveries in {timeout:?}",
                deliveries.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

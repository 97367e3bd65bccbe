//! The signup → token → repository flow over plain HTTP, for tests that run
//! whole processes (the primitives are the testkit's, shared with the bench).

pub use hookrelay_testkit::{deliver_at, repository_at, sign, token_at};

/// A signed-up tenant with a token holding every scope.
#[derive(Debug, Clone)]
pub struct TestTenant {
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
    pub token: String,
}

/// A registered repository with its webhook secret.
#[derive(Debug, Clone)]
pub struct TestRepository {
    pub id: String,
    pub secret: String,
}

/// Signs up a tenant at `base` (a server, or Envoy in front of one) and gets
/// it a token.
pub async fn tenant_at(http: &reqwest::Client, base: &str, name: &str) -> TestTenant {
    let signed_up = hookrelay_testkit::sign_up_at(http, base, name).await;
    TestTenant {
        token: token_at(http, base, &signed_up.client_id, &signed_up.client_secret).await,
        tenant_id: signed_up.tenant_id,
        client_id: signed_up.client_id,
        client_secret: signed_up.client_secret,
    }
}

/// Sends a chunked request (no Content-Length) over a raw socket; returns the status.
pub async fn post_chunked(base: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: {address}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    for chunk in body.chunks(512) {
        if stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .is_err()
            || stream.write_all(chunk).await.is_err()
            || stream.write_all(b"\r\n").await.is_err()
        {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    answer.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Reads until the server closes the connection (or `within` passes: None).
pub async fn read_until_closed(
    stream: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> Option<String> {
    let mut answer = Vec::new();
    use tokio::io::AsyncReadExt;
    let read = tokio::time::timeout(within, async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buffer[..n]),
            }
        }
    });
    read.await
        .ok()
        .map(|()| String::from_utf8_lossy(&answer).into_owned())
}

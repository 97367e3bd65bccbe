//! Rules about the contract's values that the server and the agent both apply.

/// A consumer name (`StreamEventsRequest.consumer`): 1 to 100 letters, digits,
/// `.`, `_` or `-`.
pub fn check_consumer_name(name: &str) -> Result<(), &'static str> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err("must be 1 to 100 letters, digits, `.`, `_` or `-`")
    }
}

/// Whether a header is never stored nor replayed (`Event.headers`), whatever
/// the sender sent:
/// - hop-by-hop headers (RFC 9110 §7.6.1), `Host` and `Content-Length`, which
///   the replaying client sets for its own connection;
/// - credentials (`Authorization`, `Proxy-Authorization`, `Cookie`): a sender,
///   or anyone replaying a captured signed body, must not be able to make the
///   agent present credentials to a target inside a private network;
/// - what proxies add on the way (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`,
///   `Via`, `X-Request-Id`, Envoy's `x-envoy-*`): not the sender's, and a
///   target may trust them.
///
/// The server applies it before storing, and the agent again before it
/// replays, so events stored by an older server cannot carry them either.
pub fn never_replayed(name: &str) -> bool {
    const DROPPED: [&str; 17] = [
        "connection",
        "host",
        "content-length",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "authorization",
        "cookie",
        "forwarded",
        "keep-alive",
        "proxy-connection",
        "x-request-id",
        "via",
        "x-real-ip",
    ];
    let name = name.to_ascii_lowercase();
    DROPPED.contains(&name.as_str())
        || name.starts_with("x-forwarded-")
        || name.starts_with("x-envoy-")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_names() {
        assert!(check_consumer_name("jenkins-eu.1_a").is_ok());
        for bad in ["", "has space", "ü", &"x".repeat(101)] {
            assert!(check_consumer_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_hop_by_hop_and_proxy_headers_are_never_replayed() {
        for name in [
            "Authorization",
            "cookie",
            "Proxy-Authorization",
            "X-Forwarded-For",
            "x-forwarded-host",
            "X-Real-IP",
            "Forwarded",
            "Connection",
            "Host",
            "x-envoy-expected-rq-timeout-ms",
        ] {
            assert!(never_replayed(name), "{name}");
        }
        for name in [
            "x-github-event",
            "x-hub-signature-256",
            "content-type",
            "user-agent",
        ] {
            assert!(!never_replayed(name), "{name}");
        }
    }
}

//! Replays one event to the local target: the original headers and the exact
//! body bytes, so the target's own signature check passes.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::{HeaderName, HeaderValue, RETRY_AFTER};

use hookrelay_proto::Event;

/// What one attempt came to.
#[derive(Debug)]
pub enum Attempt {
    Delivered(StatusCode),
    /// Connection errors, 5xx, 408 and 429: try again, after `retry_after` if the target said so.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Any other 4xx: the target will never take it.
    Failed {
        status: StatusCode,
        reason: String,
    },
}

/// The longest Retry-After honoured, so a confused target cannot park the agent for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// Replays `event` once; `traceparent` (from --send-traceparent) replaces any
/// the webhook carried.
pub async fn attempt(
    http: &reqwest::Client,
    target: &url::Url,
    event: &Event,
    traceparent: Option<&str>,
) -> Attempt {
    let mut request = http.post(target.clone()).body(event.body.clone());
    for header in &event.headers {
        if hookrelay_proto::rules::never_replayed(&header.name)
            || (traceparent.is_some() && header.name.eq_ignore_ascii_case("traceparent"))
        {
            continue;
        }
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(header.name.as_bytes()),
            HeaderValue::from_str(&header.value),
        ) {
            request = request.header(name, value);
        }
    }
    if let Some(traceparent) = traceparent
        && let Ok(value) = HeaderValue::from_str(traceparent)
    {
        request = request.header("traceparent", value);
    }
    let response = match request.send().await {
        Ok(response) => response,
        Err(error) => {
            return Attempt::Retry {
                reason: unreachable_reason(&error),
                retry_after: None,
            };
        }
    };
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(parse_retry_after);
    if status.is_success() {
        Attempt::Delivered(status)
    } else if status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
    {
        Attempt::Retry {
            reason: format!("the target answered {status}"),
            retry_after,
        }
    } else {
        Attempt::Failed {
            status,
            reason: format!("the target answered {status}"),
        }
    }
}

/// Retry-After is either delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let value = value.to_str().ok()?.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(SystemTime::now())
            .unwrap_or_default(),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// Why the target could not be reached, without reqwest's "error sending
/// request for url (…)" wrapper: the innermost cause says it best
/// ("Connection refused (os error 111)").
fn unreachable_reason(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "the target did not answer in time".into();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    format!("cannot reach the target: {cause}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("7")),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("99999")),
            Some(MAX_RETRY_AFTER)
        );
        let soon = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let parsed = parse_retry_after(&HeaderValue::from_str(&soon).unwrap()).unwrap();
        assert!(
            parsed > Duration::from_secs(28) && parsed <= Duration::from_secs(30),
            "{parsed:?}"
        );
        assert_eq!(parse_retry_after(&HeaderValue::from_static("soon")), None);
    }
}

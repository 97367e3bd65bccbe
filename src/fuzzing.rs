//! Entry points for the fuzz targets (`fuzz/`) and their seeds: each runs one
//! parser or verifier that anonymous input reaches, on arbitrary bytes, and
//! checks what must hold whatever the input. Not an API: the targets need a
//! public path to code the crate keeps private.
//!
//! Inputs are framed as text a person can read in a crash report: a first
//! line of options, then `name: value` header lines, a blank line, the body.

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::domain::{ClaimConditions, GitlabVerification, Provider, WebhookSettings};
use crate::webhook::Encoding;

/// Splits `input` into its first line, its headers and its body (the framing
/// above). Header lines that are not a valid name and value are skipped.
pub fn frame(input: &[u8]) -> (String, HeaderMap, &[u8]) {
    let (head, body) = match input.windows(2).position(|w| w == b"\n\n") {
        Some(at) => (&input[..at], &input[at + 2..]),
        None => (input, &[][..]),
    };
    let mut lines = head.split(|b| *b == b'\n');
    let first = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            headers.append(name, value);
        }
    }
    (first, headers, body)
}

/// The scheme a first line names: `github`, `gitlab`, `gitlab-signing`,
/// `gitea`, `forgejo`, `bitbucket`, `standard[:field.path]`.
fn scheme(first: &str) -> crate::webhook::Scheme {
    let (name, field) = first.split_once(':').unwrap_or((first, ""));
    let mut settings = WebhookSettings::default();
    let provider = match name.trim() {
        "gitlab-signing" => {
            settings.verification = Some(GitlabVerification::SigningToken);
            Provider::Gitlab
        }
        other => other.parse().unwrap_or(Provider::Github),
    };
    if provider == Provider::Standard && !field.is_empty() {
        settings.event_type_field = Some(field.to_owned());
    }
    crate::webhook::scheme(provider, &settings)
}

/// A delivery, as the webhook handler reads it: the first line names the
/// scheme; verified against a fixed secret (and a `whsec_` one), then its
/// event type, delivery id and git ref read, in both encodings. Must not
/// panic; a verified delivery must verify again (the check is pure).
pub fn webhook(input: &[u8]) {
    let (first, headers, body) = frame(input);
    let scheme = scheme(&first);
    let scheme = scheme.as_dyn();
    let secrets: [&[u8]; 2] = [b"It's a Secret to Everybody", WHSEC];
    let _ = crate::webhook::check_unambiguous(scheme, &headers);
    let verified = scheme.verify(&headers, body, &secrets);
    if verified.is_ok() {
        assert!(scheme.verify(&headers, body, &secrets).is_ok());
    }
    let _ = scheme.delivery_id(&headers);
    let _ = crate::webhook::replayable_headers(&headers);
    for encoding in [Encoding::Json, Encoding::Form] {
        if let Ok(event) = scheme.event_type(&headers, body, encoding) {
            let _ = scheme.git_ref(&event, body, encoding);
        }
    }
}

/// A `whsec_` secret for the Standard Webhooks schemes (24 bytes of key).
pub const WHSEC: &[u8] = b"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The branch or tag of an event: the first line is `<scheme> <event>`.
pub fn git_ref(input: &[u8]) {
    let (first, _, body) = frame(input);
    let (name, event) = first.split_once(' ').unwrap_or((&first, "push"));
    let scheme = scheme(name);
    for encoding in [Encoding::Json, Encoding::Form] {
        let found = scheme.as_dyn().git_ref(event, body, encoding);
        for name in found.branch.iter().chain(&found.tag) {
            assert!(!name.is_empty(), "a ref names something");
        }
    }
}

/// The token endpoint's request: its form (no parameter repeated) and its
/// Basic credentials.
pub fn oauth(input: &[u8]) {
    let (_, headers, body) = frame(input);
    if let Ok(params) = crate::http::fuzzing::parse_form(&headers, body) {
        for (i, (name, _)) in params.iter().enumerate() {
            assert!(
                !params[..i].iter().any(|(n, _)| n == name),
                "{name} repeated"
            );
        }
    }
    let _ = crate::http::fuzzing::basic_credentials(&headers);
}

/// Two trusted issuers' claim conditions and a token's claims, one per line
/// as `a|b|t <name>=<value>`: whenever the token's claims satisfy both sets,
/// `may_overlap` must say they overlap.
pub fn claims(input: &[u8]) {
    let text = String::from_utf8_lossy(input);
    let (mut a, mut b, mut token) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for line in text.lines() {
        let Some((side, pair)) = line.split_once(' ') else {
            continue;
        };
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        let map = match side {
            "a" => &mut a,
            "b" => &mut b,
            _ => &mut token,
        };
        map.insert(name.to_owned(), value.to_owned());
    }
    let (Ok(a), Ok(b)) = (ClaimConditions::parse(a), ClaimConditions::parse(b)) else {
        return;
    };
    let claim = |name: &str| token.get(name).cloned();
    if a.accept(claim) && b.accept(claim) {
        assert!(
            a.may_overlap(&b),
            "one token satisfies both, yet no overlap"
        );
    }
    assert_eq!(a.may_overlap(&b), b.may_overlap(&a), "overlap is symmetric");
}

/// An address (4 or 16 bytes) or a URL: the outbound classifier never calls
/// an address public that the default policy must refuse (loopback, private,
/// link-local, and the IPv6 forms that carry one).
pub fn address(input: &[u8]) {
    let policy = crate::outbound::OutboundPolicy::default();
    let ip = match input.len() {
        4 => IpAddr::from(<[u8; 4]>::try_from(input).expect("4 bytes")),
        16 => IpAddr::from(<[u8; 16]>::try_from(input).expect("16 bytes")),
        _ => {
            if let Ok(text) = std::str::from_utf8(input) {
                let _ = crate::domain::IssuerUrl::parse(text, false);
                if let Ok(ip) = text.trim().parse::<IpAddr>() {
                    let _ = policy.allows(ip);
                }
            }
            return;
        }
    };
    let allowed = policy.allows(ip);
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    if let Some(v4) = v4 {
        let refused = v4.is_loopback() || v4.is_private() || v4.is_link_local();
        assert!(!(allowed && refused), "{ip} allowed");
    }
    if let IpAddr::V6(v6) = ip {
        let refused =
            v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xfe00) == 0xfc00;
        assert!(!(allowed && refused), "{ip} allowed");
    }
}

/// Signature headers as each scheme reads them: lines 1 to 3 are an id, a
/// timestamp and a signature value, set under every scheme's header names;
/// the rest is the body.
pub fn signature_headers(input: &[u8]) {
    let mut parts = input.splitn(4, |b| *b == b'\n');
    let (id, timestamp, signature) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let body = parts.next().unwrap_or_default();
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: &[u8]| {
        if let Ok(value) = HeaderValue::from_bytes(value.trim_ascii()) {
            headers.insert(name, value);
        }
    };
    set("webhook-id", id);
    set("webhook-timestamp", timestamp);
    for name in [
        "webhook-signature",
        "x-hub-signature-256",
        "x-hub-signature",
        "x-gitea-signature",
        "x-forgejo-signature",
        "x-gitlab-token",
    ] {
        set(name, signature);
    }
    let secrets: [&[u8]; 2] = [b"It's a Secret to Everybody", WHSEC];
    for name in [
        "github",
        "gitlab",
        "gitlab-signing",
        "gitea",
        "forgejo",
        "bitbucket",
        "standard",
    ] {
        let scheme = scheme(name);
        if scheme.as_dyn().verify(&headers, body, &secrets).is_ok() {
            // RUSTSEC-2024-0010: a truncated signature must never pass.
            // One byte short of the value as sent (headers are trimmed).
            let sent = signature.trim_ascii();
            let truncated = &sent[..sent.len().saturating_sub(1)];
            let mut shorter = headers.clone();
            for header in [
                "webhook-signature",
                "x-hub-signature-256",
                "x-hub-signature",
                "x-gitea-signature",
                "x-forgejo-signature",
            ] {
                if let Ok(value) = HeaderValue::from_bytes(truncated.trim_ascii()) {
                    shorter.insert(header, value);
                }
            }
            if !signature.trim_ascii().contains(&b' ') && name != "gitlab" {
                assert!(
                    scheme.as_dyn().verify(&shorter, body, &secrets).is_err(),
                    "{name}: a signature one byte short verifies"
                );
            }
        }
    }
}

/// A Standard Webhooks sender's event type: the first line is the field
/// path, the rest the body.
pub fn event_type_path(input: &[u8]) {
    let (path, body) = match input.iter().position(|b| *b == b'\n') {
        Some(at) => (&input[..at], &input[at + 1..]),
        None => (input, &[][..]),
    };
    let path = String::from_utf8_lossy(path);
    let settings = WebhookSettings {
        event_type_field: Some(path.into_owned()),
        ..WebhookSettings::default()
    };
    if settings.validate(Provider::Standard).is_err() {
        return;
    }
    let scheme = crate::webhook::scheme(Provider::Standard, &settings);
    for encoding in [Encoding::Json, Encoding::Form] {
        if let Ok(event) = scheme
            .as_dyn()
            .event_type(&HeaderMap::new(), body, encoding)
        {
            assert!(!event.is_empty() && event.len() <= 100, "{event:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    /// Found by `signature_headers`: GitHub's published signature followed by
    /// spaces. Trimmed, it is the whole signature, and verifies; the harness
    /// now shortens the value as sent, not its padding.
    #[test]
    fn a_signature_padded_with_spaces_is_the_signature() {
        let mut input = b"1\n0\0\0\0\0\0\0\0\0\0\0\nsha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17".to_vec();
        input.extend(std::iter::repeat_n(b' ', 100));
        input.extend(b"\nHello, World!");
        super::signature_headers(&input);
    }
}

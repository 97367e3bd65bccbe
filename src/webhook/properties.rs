//! Every scheme, against the senders as written from each provider's
//! documentation (`hookrelay_testkit::Sender`): what a sender signs verifies,
//! and any change of one byte of the body, the signature or a signed header
//! does not; neither does a signature of another length, an empty one, or
//! its prefix alone (RUSTSEC-2024-0010 passed `v1,`).

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use hookrelay_testkit::Sender;
use proptest::prelude::*;

use super::{Scheme, scheme};
use crate::domain::WebhookSettings;

/// Every header that carries a signature (or GitLab's token), under any sender.
const SIGNATURES: &[&str] = &[
    "x-hub-signature-256",
    "x-hub-signature",
    "x-gitea-signature",
    "x-forgejo-signature",
    "x-gogs-signature",
    "webhook-signature",
    "x-gitlab-token",
];

fn secret(sender: Sender) -> &'static str {
    match sender {
        // The Standard Webhooks libraries' published test secret.
        Sender::Standard | Sender::GitlabSigning => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        _ => "It's a Secret to Everybody",
    }
}

fn scheme_of(sender: Sender) -> Scheme {
    let settings: WebhookSettings = serde_json::from_value(sender.settings()).unwrap();
    scheme(sender.provider().parse().unwrap(), &settings)
}

fn signed(sender: Sender, delivery: &str, body: &[u8]) -> HeaderMap {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (_, event) = sender.fixture();
    let mut headers = HeaderMap::new();
    for (name, value) in sender.headers(secret(sender), event, delivery, body, now) {
        headers.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(&value).unwrap(),
        );
    }
    headers
}

fn verifies(sender: Sender, headers: &HeaderMap, body: &[u8]) -> bool {
    scheme_of(sender)
        .as_dyn()
        .verify(headers, body, &[secret(sender).as_bytes()])
        .is_ok()
}

/// `headers` with every signature header's value replaced by `change(value)`.
fn with_signature(headers: &HeaderMap, change: impl Fn(&str) -> String) -> HeaderMap {
    let mut changed = headers.clone();
    for name in SIGNATURES {
        if let Some(value) = headers.get(*name).and_then(|v| v.to_str().ok()) {
            changed.insert(*name, HeaderValue::from_str(&change(value)).unwrap());
        }
    }
    changed
}

/// Another character of a different meaning: a letter becomes a digit and a
/// digit a letter outside hex (never a mere change of case).
fn other(c: char) -> char {
    if c.is_ascii_alphabetic() {
        '7'
    } else if c.is_ascii_digit() {
        'q'
    } else {
        'x'
    }
}

fn sender() -> impl Strategy<Value = Sender> {
    (0..Sender::ALL.len()).prop_map(|i| Sender::ALL[i])
}

proptest! {
    #[test]
    fn what_a_sender_signs_verifies(sender in sender(), delivery in "[a-z0-9-]{1,36}", body in proptest::collection::vec(any::<u8>(), 0..256)) {
        prop_assert!(verifies(sender, &signed(sender, &delivery, &body), &body));
    }

    #[test]
    fn one_changed_byte_of_the_body_refuses(sender in sender(), body in proptest::collection::vec(any::<u8>(), 1..256), at: prop::sample::Index, flip in 1..=255u8) {
        // GitLab's secret token is sent as is: it signs nothing.
        prop_assume!(sender != Sender::GitlabToken);
        let headers = signed(sender, "d-1", &body);
        let mut changed = body.clone();
        changed[at.index(body.len())] ^= flip;
        prop_assert!(!verifies(sender, &headers, &changed));
    }

    #[test]
    fn one_changed_character_of_the_signature_refuses(sender in sender(), body in proptest::collection::vec(any::<u8>(), 0..64), at: prop::sample::Index) {
        let headers = signed(sender, "d-2", &body);
        let changed = with_signature(&headers, |value| {
            let mut chars: Vec<char> = value.chars().collect();
            let i = at.index(chars.len());
            chars[i] = other(chars[i]);
            chars.into_iter().collect()
        });
        prop_assert!(!verifies(sender, &changed, &body));
    }

    #[test]
    fn a_signature_of_another_length_refuses(sender in sender(), cut in 1..8usize, extra in "[0-9a-f]{1,4}") {
        let body = b"{\"zen\":\"Keep it logically awesome.\"}";
        let headers = signed(sender, "d-3", body);
        let shorter = with_signature(&headers, |v| v[..v.len().saturating_sub(cut)].to_owned());
        let longer = with_signature(&headers, |v| format!("{v}{extra}"));
        prop_assert!(!verifies(sender, &shorter, body));
        prop_assert!(!verifies(sender, &longer, body));
    }

    #[test]
    fn a_changed_signed_header_refuses(sender in prop::sample::select(vec![Sender::Standard, Sender::GitlabSigning]), id in "[a-z0-9]{1,12}") {
        let body = b"{\"type\":\"contact.created\"}";
        let headers = signed(sender, "msg_1", body);
        let mut other_id = headers.clone();
        other_id.insert("webhook-id", HeaderValue::from_str(&format!("msg_1{id}")).unwrap());
        prop_assert!(!verifies(sender, &other_id, body));
        let mut other_time = headers.clone();
        let time: i64 = headers["webhook-timestamp"].to_str().unwrap().parse().unwrap();
        other_time.insert("webhook-timestamp", HeaderValue::from(time - 1));
        prop_assert!(!verifies(sender, &other_time, body));
    }
}

#[test]
fn empty_and_prefix_only_signatures_refuse() {
    let body = b"{}";
    for sender in Sender::ALL {
        let headers = signed(sender, "d-4", body);
        for fake in ["", "sha256=", "sha1=", "v1,", "v1", "v1, v1,", "sha256"] {
            let changed = with_signature(&headers, |_| fake.to_owned());
            assert!(
                !verifies(sender, &changed, body),
                "{sender:?} accepts the signature {fake:?}"
            );
        }
    }
}

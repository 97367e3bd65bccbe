//! The branch or tag an event concerns, extracted once at ingest so that
//! streams can filter on it (`branches`, `tags`) without reading bodies.

use std::borrow::Cow;

/// How a webhook body is encoded (the two content types senders use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Json,
    /// `application/x-www-form-urlencoded`: the JSON is the `payload` field.
    Form,
}

/// The branch or tag an event concerns; both None for most event types.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitRef {
    pub branch: Option<String>,
    pub tag: Option<String>,
}

impl GitRef {
    /// A full ref: `refs/heads/<branch>` or `refs/tags/<tag>`; anything else
    /// (a note, a pull request's merge ref) concerns neither.
    pub fn from_full_ref(full: &str) -> Self {
        if let Some(branch) = full.strip_prefix("refs/heads/") {
            Self::branch(branch)
        } else if let Some(tag) = full.strip_prefix("refs/tags/") {
            Self::tag(tag)
        } else {
            Self::default()
        }
    }

    pub fn branch(name: &str) -> Self {
        Self {
            branch: Some(name.to_owned()).filter(|n| !n.is_empty()),
            tag: None,
        }
    }

    pub fn tag(name: &str) -> Self {
        Self {
            branch: None,
            tag: Some(name.to_owned()).filter(|n| !n.is_empty()),
        }
    }
}

/// The JSON document of a body: the body itself, or the `payload` field of a
/// form-encoded one. None when a form has no payload.
pub fn json_document(body: &[u8], encoding: Encoding) -> Option<Cow<'_, [u8]>> {
    match encoding {
        Encoding::Json => Some(Cow::Borrowed(body)),
        Encoding::Form => form_urlencoded::parse(body)
            .find(|(name, _)| name == "payload")
            .map(|(_, value)| match value {
                Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
                Cow::Owned(text) => Cow::Owned(text.into_bytes()),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_ref_names_a_branch_or_a_tag() {
        assert_eq!(
            GitRef::from_full_ref("refs/heads/release/1.x")
                .branch
                .as_deref(),
            Some("release/1.x")
        );
        assert_eq!(
            GitRef::from_full_ref("refs/tags/v1.2").tag.as_deref(),
            Some("v1.2")
        );
        assert_eq!(
            GitRef::from_full_ref("refs/pull/1/merge"),
            GitRef::default()
        );
        assert_eq!(GitRef::from_full_ref("refs/heads/"), GitRef::default());
    }

    #[test]
    fn a_form_body_carries_its_json_in_payload() {
        let body = b"payload=%7B%22ref%22%3A%22refs%2Fheads%2Fmain%22%7D";
        assert_eq!(
            json_document(body, Encoding::Form).as_deref(),
            Some(&br#"{"ref":"refs/heads/main"}"#[..])
        );
        assert_eq!(json_document(b"other=1", Encoding::Form), None);
    }
}

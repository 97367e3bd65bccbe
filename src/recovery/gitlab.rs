//! GitLab's project webhook API: hooks, their events (17.3+), resend (17.4+).
//! <https://docs.gitlab.com/api/project_webhooks/>

use std::collections::HashMap;

use reqwest::Method;
use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

use super::api::{Api, ApiError};
use super::plan::LogEntry;
use super::{Hook, Page};

const PER_PAGE: usize = 100;

#[derive(Deserialize)]
struct GitlabHook {
    id: i64,
    #[serde(default)]
    url: String,
    #[serde(default)]
    enable_ssl_verification: Option<bool>,
    /// `executable`, `temporarily_disabled`, `disabled`.
    #[serde(default)]
    alert_status: Option<String>,
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

impl From<GitlabHook> for Hook {
    fn from(hook: GitlabHook) -> Self {
        let mut events: Vec<String> = hook
            .rest
            .iter()
            .filter(|(key, value)| key.ends_with("_events") && value.as_bool() == Some(true))
            .map(|(key, _)| key.clone())
            .collect();
        events.sort();
        Hook {
            id: hook.id,
            url: hook.url,
            active: hook
                .alert_status
                .as_deref()
                .is_none_or(|s| s == "executable"),
            content_type: Some("json".into()),
            insecure_ssl: hook.enable_ssl_verification == Some(false),
            events,
            last_response: hook.alert_status.map(serde_json::Value::String),
        }
    }
}

#[derive(Deserialize)]
struct HookEvent {
    id: i64,
    #[serde(default)]
    trigger: String,
    #[serde(default)]
    request_headers: HashMap<String, serde_json::Value>,
    /// "200", "500", or "internal error" when nothing answered.
    #[serde(default)]
    response_status: Option<serde_json::Value>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    created_at: Option<OffsetDateTime>,
}

fn project<'a>(name: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let mut segments = vec!["projects", name];
    segments.extend_from_slice(rest);
    segments
}

pub async fn hooks(api: &mut Api, name: &str) -> Result<Vec<Hook>, ApiError> {
    let url = api.url(&project(name, &["hooks"]), &[("per_page", "100")]);
    let (hooks, _) = api.json::<Vec<GitlabHook>>(Method::GET, &url).await?;
    Ok(hooks
        .unwrap_or_default()
        .into_iter()
        .map(Hook::from)
        .collect())
}

pub async fn hook(api: &mut Api, name: &str, id: i64) -> Result<Hook, ApiError> {
    let url = api.url(&project(name, &["hooks", &id.to_string()]), &[]);
    let (hook, _) = api.json::<GitlabHook>(Method::GET, &url).await?;
    hook.map(Hook::from)
        .ok_or_else(|| ApiError::Unavailable(format!("{url} answered no hook")))
}

fn page_url(api: &Api, name: &str, hook_id: i64, page: usize) -> Url {
    api.url(
        &project(name, &["hooks", &hook_id.to_string(), "events"]),
        &[
            ("per_page", &PER_PAGE.to_string()),
            ("page", &page.to_string()),
        ],
    )
}

pub fn first_page(api: &Api, name: &str, hook_id: i64) -> Url {
    page_url(api, name, hook_id, 1)
}

/// One page of the hook's events (GitLab keeps 7 days) and the next page's
/// URL, from `x-next-page` or, without it, a full page.
pub async fn page(api: &mut Api, name: &str, hook_id: i64, url: &Url) -> Result<Page, ApiError> {
    let (events, headers) = api.json::<Vec<HookEvent>>(Method::GET, url).await?;
    let events = events.unwrap_or_default();
    let current: usize = url
        .query_pairs()
        .find(|(k, _)| k == "page")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(1);
    let next_page = match headers.get("x-next-page").and_then(|v| v.to_str().ok()) {
        Some(next) => next.trim().parse::<usize>().ok(),
        None => (events.len() == PER_PAGE).then_some(current + 1),
    };
    let entries = events
        .into_iter()
        .map(|event| {
            let header = |wanted: &str| {
                event
                    .request_headers
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
                    .and_then(|(_, value)| value.as_str())
                    .map(str::to_owned)
            };
            let status_code = match &event.response_status {
                Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
                Some(serde_json::Value::Number(n)) => {
                    n.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or(0)
                }
                _ => 0,
            };
            LogEntry {
                log_id: event.id.to_string(),
                delivery_id: header("Idempotency-Key").or_else(|| header("X-Gitlab-Event-UUID")),
                delivered_at: event.created_at,
                status_code,
                event: header("X-Gitlab-Event").unwrap_or(event.trigger),
            }
        })
        .collect();
    Ok(Page {
        entries,
        next: next_page.map(|n| page_url(api, name, hook_id, n)),
    })
}

/// Asks GitLab to send the event again (same `Idempotency-Key`); GitLab
/// allows 5 a minute per hook and user, and answers 429 past that, which
/// `Api::call` waits out.
pub async fn redeliver(
    api: &mut Api,
    name: &str,
    hook_id: i64,
    log_id: &str,
) -> Result<(), ApiError> {
    let url = api.url(
        &project(
            name,
            &["hooks", &hook_id.to_string(), "events", log_id, "resend"],
        ),
        &[],
    );
    api.json::<serde_json::Value>(Method::POST, &url).await?;
    Ok(())
}

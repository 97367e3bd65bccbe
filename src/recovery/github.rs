//! GitHub's repository webhook API: hooks, their delivery log, redelivery.
//! <https://docs.github.com/en/rest/repos/webhooks>

use reqwest::Method;
use serde::Deserialize;
use time::OffsetDateTime;
use url::Url;

use super::api::{Api, ApiError, next_link};
use super::plan::LogEntry;
use super::{Hook, Page};

#[derive(Deserialize)]
struct GithubHook {
    id: i64,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    config: GithubHookConfig,
    #[serde(default)]
    last_response: Option<serde_json::Value>,
}

#[derive(Default, Deserialize)]
struct GithubHookConfig {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    /// "0" or "1" (GitHub sends a string; some versions a number).
    #[serde(default)]
    insecure_ssl: Option<serde_json::Value>,
}

impl From<GithubHook> for Hook {
    fn from(hook: GithubHook) -> Self {
        let insecure = match &hook.config.insecure_ssl {
            Some(serde_json::Value::String(s)) => s == "1",
            Some(serde_json::Value::Number(n)) => n.as_i64() == Some(1),
            _ => false,
        };
        Hook {
            id: hook.id,
            url: hook.config.url.unwrap_or_default(),
            active: hook.active,
            content_type: hook.config.content_type,
            insecure_ssl: insecure,
            events: hook.events,
            last_response: hook.last_response,
        }
    }
}

#[derive(Deserialize)]
struct Delivery {
    id: i64,
    guid: Option<String>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    delivered_at: Option<OffsetDateTime>,
    #[serde(default)]
    status_code: u16,
    #[serde(default)]
    event: String,
    #[serde(default)]
    action: Option<String>,
}

fn repo<'a>(name: &'a str, rest: &[&'a str]) -> Vec<&'a str> {
    let (owner, repo) = name.split_once('/').unwrap_or((name, ""));
    let mut segments = vec!["repos", owner, repo];
    segments.extend_from_slice(rest);
    segments
}

/// Every webhook of the repository (100 a page, following `Link`).
pub async fn hooks(api: &mut Api, name: &str) -> Result<Vec<Hook>, ApiError> {
    let mut url = Some(api.url(&repo(name, &["hooks"]), &[("per_page", "100")]));
    let mut found = Vec::new();
    while let Some(page) = url.take() {
        let (hooks, headers) = api.json::<Vec<GithubHook>>(Method::GET, &page).await?;
        found.extend(hooks.unwrap_or_default().into_iter().map(Hook::from));
        url = next_link(&headers).filter(|_| found.len() < 1000);
    }
    Ok(found)
}

pub async fn hook(api: &mut Api, name: &str, id: i64) -> Result<Hook, ApiError> {
    let url = api.url(&repo(name, &["hooks", &id.to_string()]), &[]);
    let (hook, _) = api.json::<GithubHook>(Method::GET, &url).await?;
    hook.map(Hook::from)
        .ok_or_else(|| ApiError::Unavailable(format!("{url} answered no hook")))
}

/// The first page of failed deliveries, newest first, 100 a page.
pub fn first_page(api: &Api, name: &str, hook_id: i64) -> Url {
    api.url(
        &repo(name, &["hooks", &hook_id.to_string(), "deliveries"]),
        &[("per_page", "100"), ("status", "failure")],
    )
}

/// One page of the delivery log and where the next one is (`Link`, on the
/// API's own origin only).
pub async fn page(api: &mut Api, url: &Url) -> Result<Page, ApiError> {
    let (deliveries, headers) = api.json::<Vec<Delivery>>(Method::GET, url).await?;
    let entries = deliveries
        .unwrap_or_default()
        .into_iter()
        .map(|d| LogEntry {
            log_id: d.id.to_string(),
            delivery_id: d.guid,
            delivered_at: d.delivered_at,
            status_code: d.status_code,
            event: match d.action {
                Some(action) => format!("{}.{action}", d.event),
                None => d.event,
            },
        })
        .collect();
    let next = next_link(&headers).filter(|next| api.same_origin(next));
    Ok(Page { entries, next })
}

/// Asks GitHub to send the delivery again: signed, byte-exact, same GUID.
pub async fn redeliver(
    api: &mut Api,
    name: &str,
    hook_id: i64,
    log_id: &str,
) -> Result<(), ApiError> {
    let url = api.url(
        &repo(
            name,
            &[
                "hooks",
                &hook_id.to_string(),
                "deliveries",
                log_id,
                "attempts",
            ],
        ),
        &[],
    );
    api.json::<serde_json::Value>(Method::POST, &url).await?;
    Ok(())
}

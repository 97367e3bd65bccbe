//! Recovering deliveries hookrelay missed while it was down, overloaded or
//! cut off from its database, from the provider's own delivery log.
//!
//! GitHub never retries a failed delivery and GitLab gives up after a few
//! tries, but both keep a log (GitHub 3 days, 7 on Enterprise Server;
//! GitLab 7) and redeliver on request, signed and byte-exact with the same
//! delivery id. For each repository with provider access, a run (at start-up,
//! every `HOOKRELAY_RECOVERY_INTERVAL`, or on request):
//! 1. takes the repository's lease, so one replica at a time reads its log;
//! 2. pages the log back to the window's start: the last complete run's
//!    start less `OVERLAP`, never past the provider's retention;
//! 3. asks again, oldest first, for each delivery hookrelay has not stored
//!    and did not answer (no connection, timeout, 408, 429, 5xx); reports the
//!    ones it refused with another 4xx (a 401 is a wrong secret on the
//!    provider's side) and never asks for those (`plan`);
//! 4. records each ask before making it (`store::recovery::claim`), so two
//!    replicas, or a run resumed after a crash, never ask twice.
//!
//! The redelivery then arrives through the normal webhook path: signature
//! checked, deduplicated by its delivery id, committed, streamed.

pub mod api;
mod github;
mod gitlab;
pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::domain::{
    Provider, ProviderAccess, RecoveryId, RepositoryId, TenantId, log_retention, webhook_url,
};
use crate::error::Error;
use crate::outbound::Fetcher;
use crate::secrets::SecretKey;
use crate::store;
use crate::store::recovery::{OpenedAccess, RunTotals};
use crate::telemetry::{Metrics, OutcomeLabels};
use api::{Api, ApiError};
use plan::LogEntry;

/// How far before the last complete run's start a run reads again: a
/// delivery logged late is not skipped.
pub const OVERLAP: Duration = Duration::from_secs(10 * 60);
/// A run's hold on its repository, renewed at every page and every ask
/// (longer than one call to the provider can take); a run whose replica
/// died is taken over after this.
pub const LEASE: Duration = Duration::from_secs(300);
/// An ask claimed but never confirmed (its replica died between the claim
/// and the provider's answer) may be asked again after this: far longer than
/// one ask can take, so a slow ask is never asked twice.
const CLAIM_TAKEOVER: Duration = Duration::from_secs(15 * 60);
/// Runs at once on one replica, every tenant together.
const RUNS_AT_ONCE: usize = 4;
/// Runs of one tenant at once on one replica.
const RUNS_PER_TENANT: usize = 2;
/// Pages of a log read in one run at most (100 entries each).
const MAX_PAGES: usize = 200;
/// Runs shown by `GET /v1/repositories/{id}/recoveries`.
pub const RUNS_SHOWN: i64 = 20;

/// A provider's webhook, as the doctor and the access check read it.
#[derive(Debug, Clone, Serialize)]
pub struct Hook {
    #[serde(rename = "hook_id")]
    pub id: i64,
    pub url: String,
    pub active: bool,
    pub content_type: Option<String>,
    pub insecure_ssl: bool,
    pub events: Vec<String>,
    pub last_response: Option<serde_json::Value>,
}

/// One page of a delivery log.
pub struct Page {
    pub entries: Vec<LogEntry>,
    pub next: Option<Url>,
}

/// What starts a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Startup,
    Scheduled,
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Startup => "startup",
            Trigger::Scheduled => "scheduled",
            Trigger::Manual => "manual",
        }
    }
}

/// Why a run could not start.
#[derive(Debug)]
pub enum NotStarted {
    /// Another run (maybe on another replica) holds the repository.
    Running(Option<RecoveryId>),
    /// This replica runs as many as it may; try again shortly.
    Busy,
    Failed(Error),
}

impl From<Error> for NotStarted {
    fn from(error: Error) -> Self {
        NotStarted::Failed(error)
    }
}

/// The doctor's reading of the provider's hook.
#[derive(Debug, Serialize)]
pub struct Diagnosis {
    #[serde(flatten)]
    pub hook: Hook,
    pub url_matches: bool,
    /// Deliveries of the latest page of the log hookrelay refused with 401.
    pub recent_unauthorized: usize,
    pub problems: Vec<String>,
}

/// Recovery's shared state: what runs need, and the runs of this replica.
pub struct Recovery {
    pool: PgPool,
    key: Arc<SecretKey>,
    fetcher: Fetcher,
    public_url: String,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
    slots: Arc<Semaphore>,
    per_tenant: Mutex<HashMap<TenantId, usize>>,
    /// Missing deliveries found by each repository's latest run here.
    missing: Mutex<HashMap<RepositoryId, i64>>,
}

impl std::fmt::Debug for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recovery")
    }
}

/// A repository as a run needs it.
struct Target {
    tenant_id: TenantId,
    repository_id: RepositoryId,
    provider: Provider,
    name: String,
}

impl Recovery {
    pub fn new(
        pool: PgPool,
        key: Arc<SecretKey>,
        fetcher: Fetcher,
        public_url: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        let stop = CancellationToken::new();
        Self {
            pool,
            key,
            fetcher,
            public_url,
            metrics,
            stop,
            slots: Arc::new(Semaphore::new(RUNS_AT_ONCE)),
            per_tenant: Mutex::default(),
            missing: Mutex::default(),
        }
    }

    /// Runs in flight stop at their next step (shutdown).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    fn api(&self, provider: Provider, access: &OpenedAccess) -> Api {
        Api::new(
            self.fetcher.clone(),
            provider,
            access.api_url.clone(),
            access.credentials.clone(),
            self.stop.clone(),
        )
    }

    /// Checks new provider access against the provider: finds the hook (by
    /// id, or by its URL being the repository's webhook URL). The error says
    /// what to fix.
    pub async fn check(
        &self,
        provider: Provider,
        name: &str,
        repository_id: RepositoryId,
        access: ProviderAccess,
    ) -> Result<OpenedAccess, String> {
        let mut opened = OpenedAccess {
            credentials: access.credentials,
            api_url: access.api_url,
            hook_id: 0,
        };
        let mut api = self.api(provider, &opened);
        let ours = webhook_url(&self.public_url, repository_id);
        let hook = match access.hook_id {
            Some(id) => {
                let id = i64::try_from(id).map_err(|_| format!("no hook {id} in {name}"))?;
                match hook(&mut api, provider, name, id).await {
                    Ok(hook) => hook,
                    Err(ApiError::Refused(why)) if why.contains(" 404 ") => {
                        return Err(format!(
                            "{provider} has no hook {id} in {name} that this token can see ({why})"
                        ));
                    }
                    Err(error) => return Err(error.to_string()),
                }
            }
            None => {
                let hooks = hooks(&mut api, provider, name)
                    .await
                    .map_err(|e| e.to_string())?;
                let seen = hooks.len();
                hooks.into_iter().find(|h| h.url == ours).ok_or_else(|| {
                    format!(
                        "none of the {seen} webhooks of {name} on {provider} posts to {ours}: \
                         add one with that URL, or give its `hook_id`"
                    )
                })?
            }
        };
        // Reading the log is what runs do: check it now, not at the first run.
        let first = first_page(&api, provider, name, hook.id);
        read_page(&mut api, provider, name, hook.id, &first)
            .await
            .map_err(|e| e.to_string())?;
        opened.hook_id = hook.id;
        Ok(opened)
    }

    /// Reads the provider's hook and says what would break delivery.
    pub async fn diagnose(
        &self,
        tenant_id: TenantId,
        repository_id: RepositoryId,
    ) -> Result<Diagnosis, Error> {
        let target = self.target(tenant_id, repository_id).await?;
        let access = self.access(tenant_id, repository_id).await?;
        let mut api = self.api(target.provider, &access);
        let unavailable = |e: ApiError| Error::ProviderCheck(format!("reading the hook: {e}"));
        let hook = hook(&mut api, target.provider, &target.name, access.hook_id)
            .await
            .map_err(unavailable)?;
        let first = first_page(&api, target.provider, &target.name, hook.id);
        let recent = read_page(&mut api, target.provider, &target.name, hook.id, &first)
            .await
            .map_err(unavailable)?;
        let ours = webhook_url(&self.public_url, repository_id);
        let recent_unauthorized = recent
            .entries
            .iter()
            .filter(|e| e.status_code == 401)
            .count();
        let problems = problems(target.provider, &hook, &ours, recent_unauthorized);
        Ok(Diagnosis {
            url_matches: hook.url == ours,
            hook,
            recent_unauthorized,
            problems,
        })
    }

    /// The repository's provider access, opened; 409 when it has none.
    async fn access(
        &self,
        tenant_id: TenantId,
        repository_id: RepositoryId,
    ) -> Result<OpenedAccess, Error> {
        store::recovery::opened_access(&self.pool, &self.key, tenant_id, repository_id)
            .await?
            .ok_or_else(|| {
                Error::Conflict(
                    "the repository has no provider access: PUT \
                     /v1/repositories/{id}/provider-access first"
                        .into(),
                )
            })
    }

    async fn target(
        &self,
        tenant_id: TenantId,
        repository_id: RepositoryId,
    ) -> Result<Target, Error> {
        let repository = store::repository::get(&self.pool, tenant_id, repository_id)
            .await?
            .ok_or(Error::NotFound("repository"))?;
        Ok(Target {
            tenant_id,
            repository_id,
            provider: repository.provider,
            name: repository.name,
        })
    }

    /// Starts a run in the background and says its id; `since` moves the
    /// window's start back (never past the provider's retention).
    pub async fn start(
        self: &Arc<Self>,
        tenant_id: TenantId,
        repository_id: RepositoryId,
        trigger: Trigger,
        since: Option<OffsetDateTime>,
    ) -> Result<RecoveryId, NotStarted> {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            return Err(NotStarted::Busy);
        };
        let started = self.begin(tenant_id, repository_id, trigger, since).await?;
        let this = self.clone();
        let id = started.id;
        tokio::spawn(async move {
            this.finish(started).await;
            drop(slot);
        });
        Ok(id)
    }

    /// Runs one repository to its end (the scheduled pass; waits for a slot).
    pub async fn run(
        self: &Arc<Self>,
        tenant_id: TenantId,
        repository_id: RepositoryId,
        trigger: Trigger,
    ) -> Result<RecoveryId, NotStarted> {
        let Ok(_slot) = self.slots.acquire().await else {
            return Err(NotStarted::Busy);
        };
        let started = self.begin(tenant_id, repository_id, trigger, None).await?;
        let id = started.id;
        self.finish(started).await;
        Ok(id)
    }

    /// Takes the lease and records the run.
    async fn begin(
        &self,
        tenant_id: TenantId,
        repository_id: RepositoryId,
        trigger: Trigger,
        since: Option<OffsetDateTime>,
    ) -> Result<Started, NotStarted> {
        {
            let mut per_tenant = self.per_tenant.lock().expect("per-tenant runs");
            let running = per_tenant.entry(tenant_id).or_default();
            if *running >= RUNS_PER_TENANT {
                return Err(NotStarted::Busy);
            }
            *running += 1;
        }
        let begun = self
            .begin_counted(tenant_id, repository_id, trigger, since)
            .await;
        if begun.is_err() {
            self.leave(tenant_id);
        }
        begun
    }

    fn leave(&self, tenant_id: TenantId) {
        let mut per_tenant = self.per_tenant.lock().expect("per-tenant runs");
        if let Some(running) = per_tenant.get_mut(&tenant_id) {
            *running = running.saturating_sub(1);
            if *running == 0 {
                per_tenant.remove(&tenant_id);
            }
        }
    }

    async fn begin_counted(
        &self,
        tenant_id: TenantId,
        repository_id: RepositoryId,
        trigger: Trigger,
        since: Option<OffsetDateTime>,
    ) -> Result<Started, NotStarted> {
        let target = self.target(tenant_id, repository_id).await?;
        let access = self.access(tenant_id, repository_id).await?;
        let id = RecoveryId::new();
        if !store::recovery::take_lease(&self.pool, tenant_id, repository_id, id, LEASE).await? {
            let running = store::recovery::running(&self.pool, tenant_id, repository_id).await?;
            return Err(NotStarted::Running(running));
        }
        let now = OffsetDateTime::now_utc();
        let oldest = now - log_retention(target.provider, &access.api_url);
        let since = match since {
            Some(since) => Some(since),
            None => store::recovery::last_complete_start(&self.pool, tenant_id, repository_id)
                .await?
                .map(|at| at - OVERLAP),
        };
        let window_start = since.map_or(oldest, |since| since.max(oldest));
        let recorded = store::recovery::start_run(
            &self.pool,
            tenant_id,
            repository_id,
            id,
            trigger.as_str(),
            window_start,
        )
        .await;
        if let Err(error) = recorded {
            let _ = store::recovery::release_lease(&self.pool, repository_id, id).await;
            return Err(error.into());
        }
        tracing::info!(
            recovery_id = %id,
            tenant_id = %tenant_id,
            repository_id = %repository_id,
            trigger = trigger.as_str(),
            window_start = %window_start,
            "recovery started"
        );
        Ok(Started {
            id,
            target,
            access,
            window_start,
        })
    }

    async fn finish(&self, started: Started) {
        let tenant_id = started.target.tenant_id;
        let repository_id = started.target.repository_id;
        let id = started.id;
        let totals = self.read_and_ask(&started).await;
        let outcome = if totals.error.is_some() {
            "error"
        } else {
            "ok"
        };
        self.metrics
            .recovery_runs
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        {
            let mut missing = self.missing.lock().expect("missing gauge");
            missing.insert(repository_id, totals.missing);
            self.metrics
                .recovery_missing_events
                .set(missing.values().sum());
        }
        if let Err(error) = store::recovery::finish_run(&self.pool, id, &totals).await {
            tracing::warn!(recovery_id = %id, error = %error, "cannot record the end of a recovery run");
        }
        if let Err(error) = store::recovery::release_lease(&self.pool, repository_id, id).await {
            tracing::warn!(recovery_id = %id, error = %error, "cannot release a recovery lease");
        }
        self.leave(tenant_id);
        tracing::info!(
            recovery_id = %id,
            repository_id = %repository_id,
            scanned = totals.scanned,
            missing = totals.missing,
            refused = totals.refused.len(),
            api_calls = totals.api_calls,
            error = totals.error.as_deref().unwrap_or(""),
            "recovery finished"
        );
    }

    /// The run itself: read the log, ask for what is missing. Never fails:
    /// what went wrong is the run's `error`.
    async fn read_and_ask(&self, started: &Started) -> RunTotals {
        let mut api = self.api(started.target.provider, &started.access);
        let mut totals = RunTotals::default();
        let result = self.read_and_ask_with(started, &mut api, &mut totals).await;
        totals.api_calls = api.calls;
        if let Err(error) = result {
            totals.error = Some(error);
        }
        totals
    }

    async fn read_and_ask_with(
        &self,
        started: &Started,
        api: &mut Api,
        totals: &mut RunTotals,
    ) -> Result<(), String> {
        let Started {
            id,
            target,
            access,
            window_start,
        } = started;
        let (provider, name, hook_id) = (target.provider, target.name.as_str(), access.hook_id);
        let keep_lease = || async {
            match store::recovery::take_lease(
                &self.pool,
                target.tenant_id,
                target.repository_id,
                *id,
                LEASE,
            )
            .await
            {
                Ok(true) => Ok(()),
                Ok(false) => {
                    Err("another run took over the repository (this one stalled)".to_owned())
                }
                Err(error) => Err(error.to_string()),
            }
        };

        // 1. The log, newest first, back to the window's start.
        let mut entries: Vec<LogEntry> = Vec::new();
        let mut next = Some(first_page(api, provider, name, hook_id));
        let mut pages = 0;
        while let Some(url) = next.take() {
            keep_lease().await?;
            let page = read_page(api, provider, name, hook_id, &url)
                .await
                .map_err(|e| e.to_string())?;
            pages += 1;
            let reached_start = page
                .entries
                .iter()
                .any(|e| e.delivered_at.is_some_and(|at| at < *window_start));
            entries.extend(
                page.entries
                    .into_iter()
                    .filter(|e| e.delivered_at.is_none_or(|at| at >= *window_start)),
            );
            if !reached_start && pages < MAX_PAGES {
                next = page.next;
            }
        }
        totals.scanned = entries.len() as i64;

        // 2. What hookrelay has, and what was asked before.
        let mut ids: Vec<String> = entries
            .iter()
            .filter_map(|e| e.delivery_id.clone())
            .collect();
        ids.sort();
        ids.dedup();
        let stored =
            store::recovery::stored(&self.pool, target.tenant_id, target.repository_id, &ids)
                .await
                .map_err(|e| e.to_string())?;
        let asked = store::recovery::asked(&self.pool, target.repository_id, &ids)
            .await
            .map_err(|e| e.to_string())?;
        let plan = plan::plan(&entries, &stored, &asked);
        totals.missing = plan.missing as i64;
        totals.refused = plan.refused;

        // 3. Ask, oldest first; each ask claimed before it is made.
        for entry in &plan.redeliver {
            if self.stop.is_cancelled() {
                return Err("stopped: the server is shutting down; the next run resumes".into());
            }
            keep_lease().await?;
            let delivery = entry.delivery_id.as_deref().unwrap_or_default();
            let claimed = store::recovery::claim(
                &self.pool,
                target.repository_id,
                &entry.log_id,
                delivery,
                *id,
                CLAIM_TAKEOVER,
            )
            .await
            .map_err(|e| e.to_string())?;
            if !claimed {
                continue;
            }
            let asked = redeliver(api, provider, name, hook_id, &entry.log_id).await;
            store::recovery::settle(
                &self.pool,
                target.repository_id,
                &entry.log_id,
                asked.is_ok(),
            )
            .await
            .map_err(|e| e.to_string())?;
            match asked {
                Ok(()) => {
                    self.metrics.recovery_redeliveries_requested.inc();
                }
                Err(ApiError::Refused(why)) => {
                    return Err(format!("asking {provider} to redeliver {delivery}: {why}"));
                }
                Err(error) => return Err(error.to_string()),
            }
        }
        Ok(())
    }
}

/// A run that holds its repository's lease.
struct Started {
    id: RecoveryId,
    target: Target,
    access: OpenedAccess,
    window_start: OffsetDateTime,
}

async fn hooks(api: &mut Api, provider: Provider, name: &str) -> Result<Vec<Hook>, ApiError> {
    match provider {
        Provider::Gitlab => gitlab::hooks(api, name).await,
        _ => github::hooks(api, name).await,
    }
}

async fn hook(api: &mut Api, provider: Provider, name: &str, id: i64) -> Result<Hook, ApiError> {
    match provider {
        Provider::Gitlab => gitlab::hook(api, name, id).await,
        _ => github::hook(api, name, id).await,
    }
}

fn first_page(api: &Api, provider: Provider, name: &str, hook_id: i64) -> Url {
    match provider {
        Provider::Gitlab => gitlab::first_page(api, name, hook_id),
        _ => github::first_page(api, name, hook_id),
    }
}

async fn read_page(
    api: &mut Api,
    provider: Provider,
    name: &str,
    hook_id: i64,
    url: &Url,
) -> Result<Page, ApiError> {
    match provider {
        Provider::Gitlab => gitlab::page(api, name, hook_id, url).await,
        _ => github::page(api, url).await,
    }
}

async fn redeliver(
    api: &mut Api,
    provider: Provider,
    name: &str,
    hook_id: i64,
    log_id: &str,
) -> Result<(), ApiError> {
    match provider {
        Provider::Gitlab => gitlab::redeliver(api, name, hook_id, log_id).await,
        _ => github::redeliver(api, name, hook_id, log_id).await,
    }
}

/// What in the hook's settings, or its recent deliveries, breaks delivery.
fn problems(provider: Provider, hook: &Hook, ours: &str, unauthorized: usize) -> Vec<String> {
    let mut problems = Vec::new();
    if hook.url != ours {
        problems.push(format!(
            "the hook posts to {}, not to this repository's webhook URL {ours}",
            hook.url
        ));
    }
    if !hook.active {
        problems.push(match provider {
            Provider::Gitlab => "GitLab disabled the hook after failed deliveries: re-enable it \
                                 (Settings > Webhooks > Edit > Save) once hookrelay answers"
                .to_owned(),
            _ => "the hook is inactive: GitHub sends it nothing (tick \"Active\")".to_owned(),
        });
    }
    if let Some(content_type) = &hook.content_type
        && !matches!(content_type.as_str(), "json" | "form")
    {
        problems.push(format!(
            "the hook sends content type {content_type}; hookrelay reads json (and GitHub's form)"
        ));
    }
    if hook.insecure_ssl {
        problems.push(
            "TLS certificate verification is off: anyone on the path can read or change \
             deliveries; turn SSL verification on"
                .to_owned(),
        );
    }
    if hook.events.is_empty() {
        problems.push("the hook subscribes to no events".to_owned());
    }
    if unauthorized > 0 {
        problems.push(format!(
            "{unauthorized} recent deliveries were refused with 401: the secret on {provider}'s \
             side does not match hookrelay's (rotate it with POST \
             /v1/repositories/{{id}}/rotate-secret and paste the new one into the hook)"
        ));
    }
    problems
}

//! `hookrelay.v1.EventService`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use super::proto::event_service_server::EventService;
use super::proto::{self, AckOutcome};
use super::watch::{SharedPolls, WatchStream, Watches};
use crate::auth::caller;
use crate::domain::{ConsumerName, EventFilter, EventId, Quota, RepositoryId, TenantId};
use crate::error::Error;
use crate::relay::stream::{Start, Streams, to_proto};
use crate::state::AppState;
use crate::store;
use crate::store::consumer::Ack;
use crate::store::event::StreamScope;
use crate::telemetry::OutcomeLabels;

const MAX_PAGE_SIZE: i32 = 1000;
const DEFAULT_PAGE_SIZE: i32 = 100;
const MAX_ACKS: usize = 10_000;
#[derive(Clone)]
pub struct EventsService {
    state: AppState,
    streams: Streams,
    watches: Arc<Watches>,
}

impl EventsService {
    /// The service on the server's state; its streams end when `shutdown` is cancelled.
    pub fn new(state: AppState, shutdown: CancellationToken) -> Self {
        Self {
            streams: Streams {
                pool: state.pool.clone(),
                hub: state.streams.clone(),
                secret_key: state.secret_key.clone(),
                events_sent: state.metrics.stream_events_sent.clone(),
                shutdown: shutdown.clone(),
                max_age: state.settings.max_stream_age,
            },
            watches: Arc::new(Watches {
                pool: state.pool.clone(),
                hub: state.streams.clone(),
                shutdown,
                stall_threshold: state.settings.stall_threshold,
                polls: Arc::new(SharedPolls::new(state.metrics.watch_polls.clone())),
            }),
            state,
        }
    }
}

impl EventsService {
    /// A watch may open: at the tenant's set-up rate, within its quota of
    /// open watches on this server.
    async fn admit_watch(&self, tenant: TenantId) -> Result<(), Error> {
        self.admit(tenant)?;
        let quotas = self.state.quotas(tenant).await?;
        Quota::OpenWatches
            .check(&quotas, self.state.streams.watches_of(tenant) as u64)
            .map_err(Error::QuotaExceeded)
    }

    /// Streams and watches open at a bounded rate per tenant, before any
    /// database work: a burst of thousands waits its turn (the agent retries
    /// RESOURCE_EXHAUSTED after a backoff) instead of taking the pool.
    fn admit(&self, tenant: TenantId) -> Result<(), Error> {
        self.state
            .rate_limits
            .stream_setup
            .take(tenant)
            .map_err(|retry_after| {
                self.state.metrics.limited("stream_setup");
                Error::RateLimited {
                    message: "this tenant opens streams and watches faster than \
                              HOOKRELAY_STREAM_SETUP_RATE_LIMIT allows",
                    retry_after,
                }
            })
    }
}

fn parse_repository(id: &str) -> Result<RepositoryId, Error> {
    RepositoryId::parse(id).ok_or(Error::NotFound("repository"))
}

fn parse_consumer(name: &str) -> Result<ConsumerName, Error> {
    ConsumerName::parse(name).map_err(|reason| Error::invalid("consumer", reason))
}

/// Every id must name one of the tenant's repositories; otherwise NOT_FOUND.
async fn owned_repositories(
    pool: &sqlx::PgPool,
    tenant: TenantId,
    ids: &[String],
) -> Result<Vec<RepositoryId>, Error> {
    let ids = ids
        .iter()
        .map(|id| parse_repository(id))
        .collect::<Result<Vec<_>, _>>()?;
    let owned = store::repository::owned(pool, tenant, &ids).await?;
    if ids.iter().any(|id| !owned.contains(id)) {
        return Err(Error::NotFound("repository"));
    }
    Ok(ids)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl EventService for EventsService {
    type StreamEventsStream = ReceiverStream<Result<proto::Event, Status>>;
    type WatchEventsStream = WatchStream<proto::EventSummary>;
    type WatchDeliveriesStream = WatchStream<proto::DeliveryRecord>;
    type WatchConsumersStream = WatchStream<proto::ConsumersSnapshot>;

    async fn watch_events(
        &self,
        request: Request<proto::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let caller = caller(&request)?;
        self.admit_watch(caller.tenant.id).await?;
        let request = request.into_inner();
        let repositories = if request.repository_ids.is_empty() {
            Vec::new()
        } else {
            owned_repositories(&self.state.pool, caller.tenant.id, &request.repository_ids).await?
        };
        Ok(Response::new(
            self.watches.events(&caller, request, repositories).await?,
        ))
    }

    async fn watch_deliveries(
        &self,
        request: Request<proto::WatchDeliveriesRequest>,
    ) -> Result<Response<Self::WatchDeliveriesStream>, Status> {
        let caller = caller(&request)?;
        self.admit_watch(caller.tenant.id).await?;
        Ok(Response::new(
            self.watches.deliveries(&caller, request.into_inner()),
        ))
    }

    async fn watch_consumers(
        &self,
        request: Request<proto::WatchConsumersRequest>,
    ) -> Result<Response<Self::WatchConsumersStream>, Status> {
        let caller = caller(&request)?;
        self.admit_watch(caller.tenant.id).await?;
        Ok(Response::new(self.watches.consumers(&caller)))
    }

    async fn stream_events(
        &self,
        request: Request<proto::StreamEventsRequest>,
    ) -> Result<Response<Self::StreamEventsStream>, Status> {
        let caller = caller(&request)?;
        let tenant = caller.tenant.id;
        self.admit(tenant)?;
        let request = request.into_inner();
        let consumer = parse_consumer(&request.consumer)?;
        let repositories = if request.repository_ids.is_empty() {
            None
        } else {
            Some(owned_repositories(&self.state.pool, tenant, &request.repository_ids).await?)
        };
        if request.after_event_id.is_some_and(|after| after < 0) {
            return Err(Error::invalid("after_event_id", "must not be negative").into());
        }
        let filter = EventFilter::parse(request.event_types, request.branches, request.tags)
            .map_err(|(field, reason)| Error::invalid(field, reason))?;

        // Where each repository resumes: after_event_id for all, else the acks.
        let after_event_id = request.after_event_id.map(EventId::new);
        let (cursors, default_cursor): (HashMap<RepositoryId, EventId>, _) = match after_event_id {
            Some(after) => (HashMap::new(), after),
            None => (
                store::consumer::cursors(&self.state.pool, tenant, &consumer)
                    .await?
                    .into_iter()
                    .collect(),
                EventId::ZERO,
            ),
        };
        // A cursor older than what retention deleted has lost events: refuse
        // rather than skip them. (0 and a new consumer mean "oldest retained".)
        let in_scope = |repository: &RepositoryId| {
            repositories.as_ref().is_none_or(|r| r.contains(repository))
        };
        for (repository, deleted_through) in
            store::consumer::retention_horizons(&self.state.pool, tenant).await?
        {
            let cursor = cursors
                .get(&repository)
                .copied()
                .or(after_event_id.filter(|after| *after > EventId::ZERO));
            if in_scope(&repository) && cursor.is_some_and(|cursor| cursor < deleted_through) {
                return Err(Error::BehindRetention(format!(
                    "consumer `{}` is behind retention in repository {repository}: events up to {deleted_through} \
                     were deleted; reconnect with after_event_id >= {deleted_through} to skip them",
                    consumer.as_str()
                ))
                .into());
            }
        }

        let quotas = self.state.quotas(tenant).await?;
        store::quota::admit_stream(&self.state.pool, tenant, &consumer, &quotas).await?;

        // Registered before it is recorded, so that no signal sent once the
        // consumer exists can miss this stream.
        let registration =
            self.state
                .streams
                .register(caller.tenant.principal.clone(), tenant, consumer.clone());
        store::consumer::open_stream(
            &self.state.pool,
            tenant,
            &consumer,
            &filter,
            repositories.as_deref(),
            registration.stream_id,
            self.state.streams.server_id(),
        )
        .await?;
        let expires_in = Duration::from_secs(caller.expires_at.saturating_sub(unix_now()));
        tracing::info!(tenant_id = %tenant, consumer = consumer.as_str(), "stream opened");
        Ok(Response::new(self.streams.start(Start {
            tenant,
            consumer,
            scope: StreamScope {
                repositories,
                cursors,
                default_cursor,
                filter,
            },
            registration,
            expires_in,
        })))
    }

    async fn ack_events(
        &self,
        request: Request<proto::AckEventsRequest>,
    ) -> Result<Response<proto::AckEventsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let consumer = parse_consumer(&request.consumer)?;
        if request.acks.is_empty() || request.acks.len() > MAX_ACKS {
            return Err(Error::invalid("acks", format!("send 1 to {MAX_ACKS} acks")).into());
        }
        let acks = request
            .acks
            .into_iter()
            .map(|ack| {
                let failure = match AckOutcome::try_from(ack.outcome) {
                    Ok(AckOutcome::Delivered) => None,
                    Ok(AckOutcome::Failed) => Some(if ack.failure_reason.is_empty() {
                        "delivery failed".to_owned()
                    } else {
                        ack.failure_reason.chars().take(1000).collect()
                    }),
                    _ => return Err(Error::invalid("outcome", "must be DELIVERED or FAILED")),
                };
                if ack.event_id <= 0 {
                    return Err(Error::invalid("event_id", "must be positive"));
                }
                let redelivery_id = match ack.redelivery_id.as_str() {
                    "" => None,
                    id => Some(
                        uuid::Uuid::parse_str(id)
                            .map_err(|_| Error::invalid("redelivery_id", "must be a UUID"))?,
                    ),
                };
                Ok(Ack {
                    repository_id: parse_repository(&ack.repository_id)?,
                    event_id: EventId::new(ack.event_id),
                    failure,
                    redelivery_id,
                    status_code: ack.status_code.filter(|code| (100..=999).contains(code)),
                    attempts: ack.attempts.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
                    duration_ms: ack.duration_ms.map(i64::from),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let skipped =
            store::consumer::ack(&self.state.pool, caller.tenant.id, &consumer, &acks).await?;
        for ack in &acks {
            let outcome = if ack.failure.is_some() {
                "failed"
            } else {
                "delivered"
            };
            self.state
                .metrics
                .acks
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        }
        Ok(Response::new(proto::AckEventsResponse {
            skipped_repository_ids: skipped.iter().map(ToString::to_string).collect(),
        }))
    }

    async fn list_events(
        &self,
        request: Request<proto::ListEventsRequest>,
    ) -> Result<Response<proto::ListEventsResponse>, Status> {
        let caller = caller(&request)?;
        let request = request.into_inner();
        let repository =
            owned_repositories(&self.state.pool, caller.tenant.id, &[request.repository_id])
                .await?[0];
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            size if size < 0 => {
                return Err(Error::invalid("page_size", "must not be negative").into());
            }
            size => size.min(MAX_PAGE_SIZE),
        };
        // One more than asked tells whether another page follows.
        let mut events = store::event::list(
            &self.state.pool,
            caller.tenant.id,
            repository,
            EventId::new(request.after_event_id.max(0)),
            i64::from(page_size) + 1,
        )
        .await?;
        let more = events.len() > page_size as usize;
        events.truncate(page_size as usize);
        let next_after_event_id = more
            .then(|| events.last().map(|e| e.event_id.get()))
            .flatten();
        Ok(Response::new(proto::ListEventsResponse {
            events: events
                .into_iter()
                .map(|event| to_proto(&event, event.headers_redacted()))
                .collect(),
            next_after_event_id,
        }))
    }
}

-- Streaming: per-consumer cursors, failed deliveries, and the retention horizon.

-- The last event each consumer acknowledged, per repository. Only moves forward.
create table consumer_cursor (
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    consumer text not null,
    repository_id uuid not null references repository (repository_id) on delete cascade,
    acked_event_id bigint not null,
    updated_at timestamptz not null default now(),
    primary key (tenant_id, consumer, repository_id)
);

-- Events a consumer's target refused for good (a 4xx other than 408/429).
create table delivery_failure (
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    consumer text not null,
    repository_id uuid not null references repository (repository_id) on delete cascade,
    event_id bigint not null,
    reason text not null,
    failed_at timestamptz not null default now(),
    primary key (tenant_id, consumer, event_id)
);
create index delivery_failure_tenant_id_failed_at_idx on delivery_failure (tenant_id, failed_at);

-- The highest event id the retention job has deleted, per repository: a cursor
-- below it has lost events, and its stream is refused instead of skipping them.
create table retention_horizon (
    repository_id uuid primary key references repository (repository_id) on delete cascade,
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    deleted_through_event_id bigint not null
);

-- Streams over all of a tenant's repositories read by (tenant_id, event_id).
create index event_tenant_id_event_id_idx on event (tenant_id, event_id);

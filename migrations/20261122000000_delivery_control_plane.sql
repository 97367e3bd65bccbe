-- The delivery control plane: consumers as rows of their own (with their
-- latest filter), the streams they hold open, every delivery's outcome,
-- durable redeliveries, and the branch or tag each event concerns.

-- Extracted once at ingest (see `webhook::GitRef`); null when the event
-- concerns no branch or tag. Events stored before this migration have none.
alter table event add column branch text, add column tag text;

create table consumer (
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    consumer text not null,
    -- The filter of its latest stream, as given: {"event_types":[..],"branches":[..],"tags":[..]}.
    filter jsonb not null default '{}',
    -- The same globs as LIKE patterns (see `store::consumer::Filter`), for SQL.
    event_type_likes text[] not null default '{}',
    branch_likes text[] not null default '{}',
    tag_likes text[] not null default '{}',
    -- The repositories its latest stream asked for; null: all of the tenant's.
    repository_ids uuid[],
    last_seen_at timestamptz,
    created_at timestamptz not null default now(),
    primary key (tenant_id, consumer)
);

insert into consumer (tenant_id, consumer, last_seen_at)
select tenant_id, consumer, max(updated_at) from consumer_cursor group by tenant_id, consumer;
insert into consumer (tenant_id, consumer, last_seen_at)
select tenant_id, consumer, max(failed_at) from delivery_failure group by tenant_id, consumer
on conflict do nothing;

alter table consumer_cursor
    add constraint consumer_cursor_consumer_fkey foreign key (tenant_id, consumer)
        references consumer (tenant_id, consumer) on delete cascade;

-- The open streams of every server. Each server refreshes heartbeat_at of its
-- own rows; a row whose server died stops counting once it is stale.
create table consumer_stream (
    stream_id uuid primary key,
    tenant_id uuid not null,
    consumer text not null,
    server_id uuid not null,
    opened_at timestamptz not null default now(),
    heartbeat_at timestamptz not null default now(),
    foreign key (tenant_id, consumer) references consumer (tenant_id, consumer) on delete cascade
);
create index consumer_stream_consumer_idx on consumer_stream (tenant_id, consumer);
create index consumer_stream_server_id_idx on consumer_stream (server_id);

create view live_consumer_stream as
select * from consumer_stream where heartbeat_at > now() - interval '30 seconds';

-- One row per (consumer, event) for the live delivery (the latest outcome
-- wins when an event is delivered again after a reconnect), and one per
-- redelivery.
create table delivery (
    delivery_pk bigint generated always as identity primary key,
    tenant_id uuid not null,
    consumer text not null,
    event_id bigint not null references event (event_id) on delete cascade,
    redelivery_id uuid,
    outcome text not null check (outcome in ('delivered', 'failed')),
    status_code integer,
    attempts integer,
    duration_ms bigint,
    error text,
    completed_at timestamptz not null default now(),
    foreign key (tenant_id, consumer) references consumer (tenant_id, consumer) on delete cascade
);
create unique index delivery_live_key on delivery (tenant_id, consumer, event_id) where redelivery_id is null;
create unique index delivery_redelivery_key on delivery (redelivery_id) where redelivery_id is not null;
create index delivery_event_id_idx on delivery (event_id);
create index delivery_failed_idx on delivery (tenant_id, completed_at) where outcome = 'failed';

insert into delivery (tenant_id, consumer, event_id, outcome, error, completed_at)
select f.tenant_id, f.consumer, f.event_id, 'failed', f.reason, f.failed_at
from delivery_failure f join event e on e.event_id = f.event_id and e.tenant_id = f.tenant_id;
drop table delivery_failure;

-- Requested through the API; pending until the consumer acks the event again.
create table redelivery (
    redelivery_id uuid primary key,
    tenant_id uuid not null,
    consumer text not null,
    event_id bigint not null references event (event_id) on delete cascade,
    requested_at timestamptz not null default now(),
    completed_at timestamptz,
    foreign key (tenant_id, consumer) references consumer (tenant_id, consumer) on delete cascade
);
create index redelivery_pending_idx on redelivery (tenant_id, consumer) where completed_at is null;
create index redelivery_event_id_idx on redelivery (event_id);

-- Each consumer's position in each repository it streams: the rows that
-- pending counts, stall detection and retention work on.
create view consumer_position as
select c.tenant_id, c.consumer, r.repository_id, r.created_at as repository_created_at,
       k.acked_event_id, c.event_type_likes, c.branch_likes, c.tag_likes
from consumer c
join repository r on r.tenant_id = c.tenant_id
     and (c.repository_ids is null or r.repository_id = any (c.repository_ids))
left join consumer_cursor k on k.tenant_id = c.tenant_id and k.consumer = c.consumer
     and k.repository_id = r.repository_id;

-- Each tenant's stored event bytes (its stored-bytes quota), followed rather
-- than recounted.
--
-- Every server used to count the whole event table once a minute
-- (`sum(octet_length(body)) group by tenant_id`): a scan that grows with every
-- tenant's retained events. Now a server counts the table once at start (and
-- once an hour, to correct what it cannot see), and in between reads only what
-- changed since its last read: the events of transactions its last snapshot
-- did not see (the `(txid, event_id)` index), minus what was deleted in them,
-- which the statements that delete events record here.
--
-- A row per tenant and deleting transaction. No key to `tenant`: a deleted
-- tenant's rows would only be scanned by its cascade; they are pruned by age.
create table event_bytes_deleted (
    txid bigint not null default pg_current_xact_id()::text::bigint,
    tenant_id uuid not null,
    bytes bigint not null,
    deleted_at timestamptz not null default now()
);

create index event_bytes_deleted_txid_idx on event_bytes_deleted (txid);
create index event_bytes_deleted_deleted_at_idx on event_bytes_deleted (deleted_at);

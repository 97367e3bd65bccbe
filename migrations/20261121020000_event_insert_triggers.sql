-- Commit order and wake-ups move into the database, so that every insert into
-- `event` keeps the invariants and one ingest batch is one statement (one round
-- trip, committed on its own) instead of BEGIN, lock, INSERT, NOTIFY, COMMIT.

-- Before any row of an INSERT draws its event_id, take the transaction-scoped
-- lock that orders ingest commits (key 0x686f6f6b72656c61, "hookrela"). It is
-- held until commit, so ids become visible in commit order and a reader paging
-- with `event_id > cursor` never skips one. A BEFORE STATEMENT trigger fires
-- before the statement pulls its first row, and the id default is evaluated per
-- row, so no id is drawn outside the lock.
create function event_lock_commit_order() returns trigger
language plpgsql as $$
begin
    perform pg_advisory_xact_lock(7525356009630821473);
    return null;
end
$$;

create trigger event_lock_commit_order
    before insert on event
    for each statement execute function event_lock_commit_order();

-- After the statement, announce the newest id on `hookrelay_events`. PostgreSQL
-- delivers it to listeners only once the transaction has committed.
create function event_notify_listeners() returns trigger
language plpgsql as $$
declare
    newest bigint;
begin
    select max(event_id) into newest from inserted;
    if newest is not null then
        perform pg_notify('hookrelay_events', newest::text);
    end if;
    return null;
end
$$;

create trigger event_notify_listeners
    after insert on event
    referencing new table as inserted
    for each statement execute function event_notify_listeners();

-- Webhook bodies are JSON of a few KiB, so most are compressed when stored: lz4
-- costs a fraction of the default pglz's CPU on that path (and on every read).
-- Existing rows keep their compression until rewritten; both are readable.
-- A server built without lz4 keeps pglz.
do $$
begin
    alter table event alter column body set compression lz4,
                      alter column headers set compression lz4;
exception when feature_not_supported then
    raise notice 'lz4 is not available on this server; event bodies stay pglz-compressed';
end
$$;

-- Stream pages walk (repository_id, event_id) per repository (see
-- `store::event::stream_batch`); nothing reads by (tenant_id, event_id) any
-- more, and every ingest paid for keeping it.
drop index event_tenant_id_event_id_idx;

-- Commit order without a global lock, and no NOTIFY inside ingest transactions.
--
-- Until now every insert into `event` took one advisory lock, held through the
-- commit's WAL flush (and, on an HA database, the synchronous standby's
-- acknowledgement), so that ids became visible in commit order; and each
-- insert sent a NOTIFY, which takes a database-wide lock at commit. Both
-- serialised every ingest commit of the fleet.
--
-- Now (the argument is in `src/store/event.rs`):
-- - writers lock only the repositories they append to (`append_events`), and
--   only while they draw their transaction id and event ids, not through the
--   commit: all writers commit in parallel;
-- - each event records its transaction id (`txid`), and readers that read
--   across repositories take only events whose transaction id lies below their
--   snapshot's xmin: every transaction below it has ended, so no event can
--   later appear there;
-- - wake-ups are sent by the servers after the commit (`crate::streams`).
drop trigger event_lock_commit_order on event;
drop function event_lock_commit_order();
drop trigger event_notify_listeners on event;
drop function event_notify_listeners();

-- Rows written before this migration committed long ago: 0 is below every
-- horizon. New rows must name their transaction (no default): an insert that
-- bypasses `append_events` fails instead of breaking the order.
alter table event add column txid bigint not null default 0;
alter table event alter column txid drop default;
create index event_txid_event_id_idx on event (txid, event_id);

-- Appends a batch of events and returns the ids of those that were new. It
-- must be the first write of its transaction (it refuses otherwise).
--
-- 1. Takes the advisory lock of every repository in the batch, in key order
--    (so two writers never deadlock).
-- 2. Only then is the transaction id assigned, and the ids drawn: within a
--    repository, a transaction that appends after another has both a higher
--    transaction id and higher event ids.
-- 3. Inserts the rows in arrival order; a delivery id already stored for the
--    repository is skipped (the caller looks it up).
-- 4. Releases the locks before the commit: they order the drawing of ids, not
--    the commits, so writers of one repository share the WAL flush and the
--    standby's acknowledgement instead of waiting for each other's. (They are
--    session locks for that reason, released on every way out.)
create function append_events(
    p_tenant_ids uuid[], p_repository_ids uuid[], p_providers text[], p_event_types text[],
    p_delivery_ids text[], p_received timestamptz[], p_headers jsonb[], p_bodies bytea[],
    p_branches text[], p_tags text[], p_traceparents text[])
returns table (appended_event_id bigint, appended_repository_id uuid, appended_delivery_id text)
language plpgsql as $$
declare
    v_txid bigint;
begin
    if pg_current_xact_id_if_assigned() is not null then
        raise exception 'append_events must be the first write of its transaction';
    end if;
    -- 1752132971 is "hook" in ASCII: the namespace of these locks.
    perform pg_advisory_lock(1752132971, lock_key)
    from (select distinct hashtext(r::text) as lock_key from unnest(p_repository_ids) r order by 1) keys;
    begin
        v_txid := pg_current_xact_id()::text::bigint;
        return query
        insert into event as e (tenant_id, repository_id, provider, event_type, delivery_id, received_at,
                                headers, body, branch, tag, traceparent, txid)
        select i_tenant_id, i_repository_id, i_provider, i_event_type, i_delivery_id, i_received_at,
               i_headers, i_body, i_branch, i_tag, i_traceparent, v_txid
        from unnest(p_tenant_ids, p_repository_ids, p_providers, p_event_types, p_delivery_ids, p_received,
                    p_headers, p_bodies, p_branches, p_tags, p_traceparents)
             with ordinality as input(i_tenant_id, i_repository_id, i_provider, i_event_type, i_delivery_id,
                                      i_received_at, i_headers, i_body, i_branch, i_tag, i_traceparent, ord)
        order by ord
        on conflict (repository_id, delivery_id) do nothing
        returning e.event_id, e.repository_id, e.delivery_id;
    exception when query_canceled or others then
        perform pg_advisory_unlock_all();
        raise;
    end;
    perform pg_advisory_unlock_all();
end
$$;

-- Stream pages walk each repository's (repository_id, event_id) index and
-- now also test the transaction id: carry it in the index, so the walk needs
-- no heap visit for it.
create index event_repository_id_event_id_txid_idx on event (repository_id, event_id) include (txid);
drop index event_repository_id_event_id_idx;

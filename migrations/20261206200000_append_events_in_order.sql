-- A commit's own events go to its server's streams without being read back.
--
-- `append_events_in_order` appends exactly as `append_events` does (the same
-- steps; see there) and also tells its caller, on every row, where the batch
-- stands in commit order:
-- - `batch_txid`: the batch's transaction;
-- - `batch_oldest`: whether no older transaction was running once the
--   transaction id was assigned. A statement of its own, so its snapshot is
--   taken after the id was; that snapshot's xmin is this transaction's own id
--   exactly when no transaction below it is still running, and then none can
--   commit an event below it later;
-- - `newest_below`: the newest transaction below the batch's that appended
--   events (null: none).
-- A server whose shared tail is complete up to above `newest_below` then has
-- every event below the batch, and once the batch commits its own events are
-- the next in commit order (`crate::relay`). Otherwise it reads them back as
-- before.
--
-- Release N-1 keeps calling `append_events`, which now calls this one and
-- returns its first three columns: one body of the append, not two. (This
-- release calls the body directly: a wrapper costs about 0.04 ms a commit,
-- docs/benchmarks.md.) The release after this one can drop `append_events`.
create function append_events_in_order(
    p_tenant_ids uuid[], p_repository_ids uuid[], p_providers text[], p_event_types text[],
    p_delivery_ids text[], p_received timestamptz[], p_headers jsonb[], p_bodies bytea[],
    p_branches text[], p_tags text[], p_traceparents text[])
returns table (appended_event_id bigint, appended_repository_id uuid, appended_delivery_id text,
               appended_repository_name text, batch_txid bigint, batch_oldest boolean,
               newest_below bigint)
language plpgsql as $$
declare
    v_txid bigint;
    v_oldest boolean;
    v_below bigint;
begin
    if pg_current_xact_id_if_assigned() is not null then
        raise exception 'append_events must be the first write of its transaction';
    end if;
    -- 1752132971 is "hook" in ASCII: the namespace of these locks.
    perform pg_advisory_lock(1752132971, lock_key)
    from (select distinct hashtext(r::text) as lock_key from unnest(p_repository_ids) r order by 1) keys;
    begin
        v_txid := pg_current_xact_id()::text::bigint;
        select pg_snapshot_xmin(pg_current_snapshot())::text::bigint = v_txid,
               (select max(e.txid) from event e where e.txid < v_txid)
        into v_oldest, v_below;
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
        returning e.event_id, e.repository_id, e.delivery_id,
                  coalesce((select r.name from repository r where r.repository_id = e.repository_id), ''),
                  v_txid, v_oldest, v_below;
    exception when query_canceled or others then
        perform pg_advisory_unlock_all();
        raise;
    end;
    perform pg_advisory_unlock_all();
end
$$;

create or replace function append_events(
    p_tenant_ids uuid[], p_repository_ids uuid[], p_providers text[], p_event_types text[],
    p_delivery_ids text[], p_received timestamptz[], p_headers jsonb[], p_bodies bytea[],
    p_branches text[], p_tags text[], p_traceparents text[])
returns table (appended_event_id bigint, appended_repository_id uuid, appended_delivery_id text)
language sql as $$
    select a.appended_event_id, a.appended_repository_id, a.appended_delivery_id
    from append_events_in_order(p_tenant_ids, p_repository_ids, p_providers, p_event_types, p_delivery_ids,
                                p_received, p_headers, p_bodies, p_branches, p_tags, p_traceparents) a
$$;

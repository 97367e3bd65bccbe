-- A commit's own events go to its server's streams without being read back.
--
-- `append_events_in_order` appends exactly as `append_events` does (it calls
-- it) and then tells its caller, on every row, where the batch stands in
-- commit order:
-- - `batch_txid`: the batch's transaction;
-- - `batch_oldest`: whether no older transaction was running once the rows
--   were in. A statement of its own, so its snapshot is taken after the
--   transaction id was assigned; that snapshot's xmin is this transaction's
--   own id exactly when no transaction below it is still running, so none
--   can commit an event below it later;
-- - `newest_below`: the newest transaction below the batch's that appended
--   events (null: none).
-- A server whose shared tail is complete up to above `newest_below` then has
-- every event below the batch, and once the batch commits its own events are
-- the next in commit order (`crate::relay`). Otherwise it reads them back as
-- before.
--
-- Release N-1 keeps calling `append_events`, which is unchanged.
create function append_events_in_order(
    p_tenant_ids uuid[], p_repository_ids uuid[], p_providers text[], p_event_types text[],
    p_delivery_ids text[], p_received timestamptz[], p_headers jsonb[], p_bodies bytea[],
    p_branches text[], p_tags text[], p_traceparents text[])
returns table (appended_event_id bigint, appended_repository_id uuid, appended_delivery_id text,
               appended_repository_name text, batch_txid bigint, batch_oldest boolean,
               newest_below bigint)
language plpgsql as $$
declare
    v_ids bigint[];
    v_repositories uuid[];
    v_deliveries text[];
    v_txid bigint;
    v_oldest boolean;
    v_below bigint;
begin
    select coalesce(array_agg(a.appended_event_id order by a.appended_event_id), '{}'),
           coalesce(array_agg(a.appended_repository_id order by a.appended_event_id), '{}'),
           coalesce(array_agg(a.appended_delivery_id order by a.appended_event_id), '{}')
    into v_ids, v_repositories, v_deliveries
    from append_events(p_tenant_ids, p_repository_ids, p_providers, p_event_types, p_delivery_ids,
                       p_received, p_headers, p_bodies, p_branches, p_tags, p_traceparents) a;
    v_txid := pg_current_xact_id()::text::bigint;
    select pg_snapshot_xmin(pg_current_snapshot())::text::bigint = v_txid,
           (select max(e.txid) from event e where e.txid < v_txid)
    into v_oldest, v_below;
    return query
    select u.id, u.repository_id, u.delivery_id, coalesce(r.name, ''), v_txid, v_oldest, v_below
    from unnest(v_ids, v_repositories, v_deliveries) with ordinality as u(id, repository_id, delivery_id, ord)
    left join repository r on r.repository_id = u.repository_id
    order by u.ord;
end
$$;

// Live events: the newest first, new ones arriving over gRPC-Web as they
// commit. Watching creates no consumer and moves no cursor.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { events as grpc, keepWatching } from "../grpc";
import { api, can, repositoryNames } from "../session";
import type { EventView } from "../types";
import { Empty, ErrorNote, refOf, size, time } from "../ui";

const KEEP = 500;

export function Events() {
  const [events, setEvents] = useState<EventView[]>([]);
  const [names, setNames] = useState<Map<string, string>>(new Map());
  const [repositoryFilter, setRepositoryFilter] = useState("");
  const [typeFilter, setTypeFilter] = useState("");
  const [paused, setPaused] = useState(false);
  const [held, setHeld] = useState<EventView[]>([]);
  const [live, setLive] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const pausedRef = useRef(paused);
  pausedRef.current = paused;

  useEffect(() => {
    const abort = new AbortController();
    (async () => {
      try {
        const [page, repos] = await Promise.all([
          api<{ events: EventView[] }>("GET", "/v1/events?limit=100"),
          repositoryNames(),
        ]);
        setNames(repos);
        setEvents(page.events);
        let after = page.events[0]?.id ?? 0;
        await keepWatching(
          async (signal) => {
            for await (const e of grpc.watchEvents({ afterEventId: BigInt(after) }, { signal })) {
              const event: EventView = {
                id: Number(e.id),
                repository_id: e.repositoryId,
                provider: e.provider,
                event_type: e.eventType,
                delivery_id: e.deliveryId,
                received_at: e.receivedAt ? timestampDate(e.receivedAt).toISOString() : "",
                branch: e.branch ?? null,
                tag: e.tag ?? null,
                size: Number(e.size),
              };
              after = event.id;
              if (pausedRef.current) setHeld((h) => [event, ...h]);
              else setEvents((list) => [event, ...list].slice(0, KEEP));
            }
          },
          abort.signal,
          setLive,
        );
      } catch (err) {
        setError(err);
      }
    })();
    return () => abort.abort();
  }, []);

  // Without repos:read, the repositories the events name, by id.
  const repositories = useMemo(
    () =>
      names.size > 0
        ? [...names].map(([id, name]) => ({ id, name }))
        : [...new Set(events.map((e) => e.repository_id))].map((id) => ({ id, name: id })),
    [names, events],
  );
  const types = useMemo(() => [...new Set(events.map((e) => e.event_type))].sort(), [events]);
  const shown = events.filter(
    (e) => (!repositoryFilter || e.repository_id === repositoryFilter) && (!typeFilter || e.event_type === typeFilter),
  );
  return (
    <section>
      <h1>
        Events <span class={live ? "badge ok" : "badge"}>{live ? "live" : "reconnecting"}</span>
      </h1>
      <div class="toolbar">
        <label>
          Repository
          <select value={repositoryFilter} onChange={(e) => setRepositoryFilter(e.currentTarget.value)}>
            <option value="">All</option>
            {repositories.map((r) => (
              <option value={r.id} key={r.id}>
                {r.name}
              </option>
            ))}
          </select>
        </label>
        <label>
          Event type
          <select value={typeFilter} onChange={(e) => setTypeFilter(e.currentTarget.value)}>
            <option value="">All</option>
            {types.map((t) => (
              <option value={t} key={t}>
                {t}
              </option>
            ))}
          </select>
        </label>
        <button
          type="button"
          class="secondary"
          onClick={() => {
            if (paused) {
              setEvents((list) => [...held, ...list].slice(0, KEEP));
              setHeld([]);
            }
            setPaused(!paused);
          }}
        >
          {paused ? `Resume${held.length ? ` (${held.length} new)` : ""}` : "Pause"}
        </button>
      </div>
      {!can("repos:read") && (
        <p class="hint">Repositories are shown by id: their names need the repos:read scope.</p>
      )}
      <ErrorNote error={error} />
      {events.length === 0 && !error && (
        <Empty>
          No events yet. Register a repository, enter its webhook URL and secret on GitHub, and its webhooks appear here as
          they arrive.
        </Empty>
      )}
      {shown.length > 0 && (
        <table class="events">
          <thead>
            <tr>
              <th>Event</th>
              <th>Repository</th>
              <th>Branch or tag</th>
              <th>Delivery</th>
              <th>Received</th>
              <th>Size</th>
            </tr>
          </thead>
          <tbody>
            {shown.map((e) => (
              <tr key={e.id} data-event-id={e.id}>
                <td>
                  <a href={`#/events/${e.id}`}>{e.event_type}</a>
                </td>
                <td>{names.get(e.repository_id) ?? e.repository_id}</td>
                <td>{refOf(e)}</td>
                <td>
                  <code class="wrap">{e.delivery_id}</code>
                </td>
                <td>{time(e.received_at)}</td>
                <td>{size(e.size)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

// One event: headers, body, deliveries per consumer (live), redelivery, and
// "copy as curl".
import { useEffect, useState } from "preact/hooks";
import { events as grpc, keepWatching } from "../grpc";
import { api, listAll, repositoryNames } from "../session";
import type { Consumer, Delivery, EventDetail } from "../types";
import { CopyButton, Empty, ErrorNote, refOf, size, time } from "../ui";

function decode(base64: string): Uint8Array {
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/// A command that replays the event to $TARGET with its original headers and exact body.
function curlCommand(event: EventDetail): string {
  const headers = event.headers.map(([name, value]) => `  -H ${shellQuote(`${name}: ${value}`)} \\`).join("\n");
  return `printf %s ${shellQuote(event.body_base64)} | base64 -d | curl -sS -X POST "$TARGET" \\\n${headers}\n  --data-binary @-`;
}

function Body({ base64 }: { base64: string }) {
  const text = new TextDecoder().decode(decode(base64));
  let pretty = text;
  try {
    pretty = JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    // Not JSON (a form-encoded delivery, say): shown as received.
  }
  return <pre class="body">{pretty}</pre>;
}

export function Event({ id }: { id: string }) {
  const [event, setEvent] = useState<EventDetail | null>(null);
  const [deliveries, setDeliveries] = useState<Delivery[]>([]);
  const [consumers, setConsumers] = useState<Consumer[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [notice, setNotice] = useState("");
  const [repositories, setRepositories] = useState<Map<string, string>>(new Map());

  const loadDeliveries = () =>
    api<{ deliveries: Delivery[] }>("GET", `/v1/events/${id}/deliveries`).then((d) => setDeliveries(d.deliveries));

  useEffect(() => {
    const abort = new AbortController();
    setEvent(null);
    Promise.all([
      api<EventDetail>("GET", `/v1/events/${id}`).then(setEvent),
      loadDeliveries(),
      listAll<Consumer>("/v1/consumers").then(setConsumers),
      repositoryNames().then(setRepositories),
    ]).catch(setError);
    keepWatching(
      async (signal) => {
        // Each record says "this event's deliveries changed": the list is read again.
        for await (const record of grpc.watchDeliveries({ eventId: BigInt(id) }, { signal })) {
          if (record.eventId === BigInt(id)) await loadDeliveries();
        }
      },
      abort.signal,
      () => {},
    );
    return () => abort.abort();
  }, [id]);

  if (error) return <ErrorNote error={error} />;
  if (!event) return <p>Loading…</p>;
  const latest = new Map<string, Delivery>();
  for (const d of deliveries) if (!latest.has(d.consumer)) latest.set(d.consumer, d);
  const names = new Set([...consumers.map((c) => c.name), ...latest.keys()]);
  return (
    <section>
      <p>
        <a href="#/events">← Events</a>
      </p>
      <h1>
        {event.event_type} <small>#{event.id}</small>
      </h1>
      <dl class="facts">
        <dt>Repository</dt>
        <dd>{repositories.get(event.repository_id) ?? <code>{event.repository_id}</code>}</dd>
        <dt>Delivery</dt>
        <dd>
          <code>{event.delivery_id}</code>
        </dd>
        <dt>Branch or tag</dt>
        <dd>{refOf(event) || "none"}</dd>
        <dt>Received</dt>
        <dd>{time(event.received_at)}</dd>
        <dt>Size</dt>
        <dd>{size(event.size)}</dd>
      </dl>

      <h2>Deliveries</h2>
      {notice && (
        <p class="notice" role="status">
          {notice}
        </p>
      )}
      {names.size === 0 && <Empty>No consumer yet. Start an agent (hookrelay-agent) to deliver events.</Empty>}
      {names.size > 0 && (
        <table class="deliveries">
          <thead>
            <tr>
              <th>Consumer</th>
              <th>Outcome</th>
              <th>Status</th>
              <th>Attempts</th>
              <th>Duration</th>
              <th>Error</th>
              <th>Completed</th>
              <th>
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {[...names].sort().map((name) => {
              const d = latest.get(name);
              return (
                <tr key={name} data-consumer={name}>
                  <td>{name}</td>
                  <td>
                    <span class={`outcome ${d?.outcome ?? "pending"}`}>{d?.outcome ?? "pending"}</span>
                    {d?.redelivery_id ? " (redelivery)" : ""}
                  </td>
                  <td>{d?.status_code ?? ""}</td>
                  <td>{d?.attempts ?? ""}</td>
                  <td>{d?.duration_ms != null ? `${d.duration_ms} ms` : ""}</td>
                  <td>{d?.error ?? ""}</td>
                  <td>{d ? time(d.completed_at) : ""}</td>
                  <td>
                    <button
                      type="button"
                      class="small"
                      onClick={async () => {
                        setError(null);
                        try {
                          await api("POST", `/v1/events/${event.id}/redeliver`, { consumer: name });
                          setNotice(`Redelivery to ${name} requested; its outcome appears here.`);
                        } catch (err) {
                          setNotice("");
                          setError(err);
                        }
                      }}
                    >
                      Redeliver
                    </button>
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {deliveries.length > latest.size && (
        <details>
          <summary>Every delivery ({deliveries.length})</summary>
          <ul>
            {deliveries.map((d, i) => (
              <li key={i}>
                {time(d.completed_at)}: {d.consumer} {d.outcome} {d.status_code ?? ""} {d.error ?? ""}
                {d.redelivery_id ? " (redelivery)" : ""}
              </li>
            ))}
          </ul>
        </details>
      )}

      <h2>
        Request <CopyButton text={curlCommand(event)} label="Copy as curl" />
      </h2>
      <table class="headers">
        <tbody>
          {event.headers.map(([name, value], i) => (
            <tr key={i}>
              <th scope="row">{name}</th>
              <td>
                <code class="wrap">{value}</code>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Body base64={event.body_base64} />
    </section>
  );
}

// Consumers, live over gRPC-Web: connected streams, last seen, filter, pending
// events per repository, stalled; seek a repository's cursor.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import type { ConsumerStatus } from "../gen/hookrelay/v1/events_pb";
import { events as grpc, keepWatching } from "../grpc";
import { api, listAll, repositoryNames } from "../session";
import { Empty, ErrorNote, time } from "../ui";

function Seek({ consumer, repositoryId }: { consumer: string; repositoryId: string }) {
  const [after, setAfter] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState(false);
  return (
    <form
      class="inline seek"
      onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        setDone(false);
        const what =
          after === "0"
            ? `Deliver everything retained for this repository to ${consumer} again, from the start?`
            : `Move ${consumer} to continue after event ${after}? Events up to it count as delivered; later ones are delivered (again).`;
        if (!window.confirm(what)) return;
        try {
          await api("POST", `/v1/consumers/${encodeURIComponent(consumer)}/seek`, {
            repository_id: repositoryId,
            after_event_id: Number(after),
          });
          setDone(true);
        } catch (err) {
          setError(err);
        }
      }}
    >
      <label title="0: from the start of what is retained">
        Continue after event (0: from the start)
        <input type="number" min="0" required value={after} onInput={(e) => setAfter(e.currentTarget.value)} />
      </label>
      <button type="submit" class="secondary small">
        Seek
      </button>
      {done && (
        <span role="status">
          Moved: {consumer} continues after event {after}
          {after === "0" ? " (from the start of what is retained)" : ""}; its open streams follow at once.
        </span>
      )}
      <ErrorNote error={error} />
    </form>
  );
}

export function Consumers() {
  const [consumers, setConsumers] = useState<ConsumerStatus[] | null>(null);
  const [names, setNames] = useState<Map<string, string>>(new Map());
  const [failed, setFailed] = useState<Map<string, number>>(new Map());
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    const abort = new AbortController();
    repositoryNames().then(setNames).catch(setError);
    // Deliveries each consumer's target refused for good (Failed deliveries).
    listAll<{ consumer: string }>("/v1/deliveries/failed")
      .then((list) => {
        const counts = new Map<string, number>();
        for (const f of list) counts.set(f.consumer, (counts.get(f.consumer) ?? 0) + 1);
        setFailed(counts);
      })
      .catch(setError);
    keepWatching(
      async (signal) => {
        for await (const snapshot of grpc.watchConsumers({}, { signal })) setConsumers(snapshot.consumers);
      },
      abort.signal,
      () => {},
    );
    return () => abort.abort();
  }, []);
  const filter = (c: ConsumerStatus) =>
    [
      c.eventTypes.length ? `types ${c.eventTypes.join(", ")}` : "",
      c.branches.length ? `branches ${c.branches.join(", ")}` : "",
      c.tags.length ? `tags ${c.tags.join(", ")}` : "",
    ]
      .filter(Boolean)
      .join("; ") || "everything";
  return (
    <section>
      <h1>Consumers</h1>
      <ErrorNote error={error} />
      {consumers && consumers.length === 0 && (
        <Empty>No consumer yet. Start an agent with --consumer NAME and it appears here.</Empty>
      )}
      {consumers?.map((c) => (
        <article class={c.stalled ? "consumer stalled" : "consumer"} key={c.name} data-consumer={c.name}>
          <h2>
            {c.name}{" "}
            {c.stalled ? (
              <span class="badge bad">stalled</span>
            ) : c.connectedStreams > 0n ? (
              <span class="badge ok">connected</span>
            ) : (
              <span class="badge">offline</span>
            )}
          </h2>
          {c.stalled && (
            <p class="warning">
              An agent is connected but the oldest pending event has waited too long: check the agent's target and its
              logs.
            </p>
          )}
          <dl class="facts">
            <dt>Connected streams</dt>
            <dd>{String(c.connectedStreams)}</dd>
            <dt>Last seen</dt>
            <dd>{c.lastSeenAt ? time(timestampDate(c.lastSeenAt)) : "never"}</dd>
            <dt>Filter</dt>
            <dd>{filter(c)}</dd>
            <dt>Failed</dt>
            <dd data-failed-count>
              {failed.get(c.name) ? <a href="#/failed">{failed.get(c.name)} failed for good</a> : "none"}
            </dd>
          </dl>
          <table>
            <thead>
              <tr>
                <th>Repository</th>
                <th>Acked through</th>
                <th>Pending</th>
                <th>Oldest pending</th>
                <th>Seek</th>
              </tr>
            </thead>
            <tbody>
              {c.repositories.map((p) => (
                <tr key={p.repositoryId}>
                  <td>{names.get(p.repositoryId) ?? p.repositoryId}</td>
                  <td>{p.ackedEventId != null ? String(p.ackedEventId) : "nothing yet"}</td>
                  <td class="pending">{String(p.pendingEvents)}</td>
                  <td>{p.oldestPendingReceivedAt ? time(timestampDate(p.oldestPendingReceivedAt)) : ""}</td>
                  <td>
                    <Seek consumer={c.name} repositoryId={p.repositoryId} />
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </article>
      ))}
    </section>
  );
}

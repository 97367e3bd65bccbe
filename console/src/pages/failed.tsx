// Deliveries a target refused for good, each linking to its event; redeliver
// one, or every one shown (after fixing the target).
import { useEffect, useState } from "preact/hooks";
import { api, can, listAll } from "../session";
import type { FailedDelivery } from "../types";
import { Empty, ErrorNote, time } from "../ui";

const key = (f: FailedDelivery) => `${f.consumer}-${f.event_id}`;

export function Failed() {
  const [failed, setFailed] = useState<FailedDelivery[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [asked, setAsked] = useState<Set<string>>(new Set());
  const [note, setNote] = useState<string | null>(null);
  useEffect(() => {
    listAll<FailedDelivery>("/v1/deliveries/failed").then(setFailed).catch(setError);
  }, []);
  const redeliver = async (deliveries: FailedDelivery[]) => {
    setError(null);
    let done = 0;
    for (const f of deliveries) {
      try {
        await api("POST", `/v1/events/${f.event_id}/redeliver`, { consumer: f.consumer });
        done += 1;
        setAsked((s) => new Set(s).add(key(f)));
      } catch (err) {
        setError(err);
        break;
      }
    }
    setNote(
      `Asked for ${done} redeliver${done === 1 ? "y" : "ies"}: each consumer's agent gets them now (or when it next connects), and a delivery that succeeds leaves this list.`,
    );
  };
  const writable = can("events:write");
  const waiting = failed?.filter((f) => !asked.has(key(f))) ?? [];
  return (
    <section>
      <h1>Failed deliveries</h1>
      {!writable && <p class="hint">Redelivering needs the events:write scope.</p>}
      <ErrorNote error={error} />
      {note && <p role="status">{note}</p>}
      {failed && failed.length === 0 && <Empty>No failed deliveries. Events a target refuses for good show up here.</Empty>}
      {failed && failed.length > 0 && writable && (
        <div class="toolbar">
          <button
            type="button"
            disabled={waiting.length === 0}
            onClick={() => {
              if (window.confirm(`Redeliver all ${waiting.length} shown? Fix the target first, or they fail again.`)) {
                redeliver(waiting);
              }
            }}
          >
            Redeliver all ({waiting.length})
          </button>
        </div>
      )}
      {failed && failed.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Event</th>
              <th>Consumer</th>
              <th>Reason</th>
              <th>Delivery</th>
              <th>Failed</th>
              <th>
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {failed.map((f) => (
              <tr key={key(f)} data-failed={key(f)}>
                <td>
                  <a href={`#/events/${f.event_id}`}>
                    {f.event_type} #{f.event_id}
                  </a>
                </td>
                <td>{f.consumer}</td>
                <td>{f.reason}</td>
                <td>
                  <code class="wrap">{f.delivery_id}</code>
                </td>
                <td>{time(f.failed_at)}</td>
                <td class="actions">
                  {asked.has(key(f)) ? (
                    <span class="badge">asked</span>
                  ) : (
                    writable && (
                      <button type="button" class="secondary small" onClick={() => redeliver([f])}>
                        Redeliver
                      </button>
                    )
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

// Deliveries a target refused for good, each linking to its event.
import { useEffect, useState } from "preact/hooks";
import { listAll } from "../session";
import type { FailedDelivery } from "../types";
import { Empty, ErrorNote, time } from "../ui";

export function Failed() {
  const [failed, setFailed] = useState<FailedDelivery[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    listAll<FailedDelivery>("/v1/deliveries/failed").then(setFailed).catch(setError);
  }, []);
  return (
    <section>
      <h1>Failed deliveries</h1>
      <ErrorNote error={error} />
      {failed && failed.length === 0 && <Empty>No failed deliveries. Events a target refuses for good show up here.</Empty>}
      {failed && failed.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Event</th>
              <th>Consumer</th>
              <th>Reason</th>
              <th>Delivery</th>
              <th>Failed</th>
            </tr>
          </thead>
          <tbody>
            {failed.map((f) => (
              <tr key={`${f.consumer}-${f.event_id}`}>
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
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

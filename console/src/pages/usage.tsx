// The tenant's quotas, and how much of each it uses (GET /v1/usage).
import { useEffect, useState } from "preact/hooks";
import { api } from "../session";
import { ErrorNote } from "../ui";

type Counts = Record<string, number>;

interface Usage {
  quotas: Counts;
  usage: Counts;
}

const LABELS: Record<string, string> = {
  repositories: "Repositories",
  clients: "Clients",
  trusted_issuers: "Trusted issuers",
  consumers: "Consumers",
  open_streams: "Open streams",
  open_watches: "Open console views (this server)",
  webhooks_per_second: "Webhooks in the last second (this server)",
  webhook_burst: "Webhook burst in use (this server)",
  stored_event_bytes: "Stored event bytes",
};

export function UsagePage() {
  const [usage, setUsage] = useState<Usage | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    api<Usage>("GET", "/v1/usage").then(setUsage).catch(setError);
  }, []);
  return (
    <section>
      <h1>Usage</h1>
      <p class="hint">
        What this tenant uses of its quotas. Past a quota, creating more is refused (403), webhooks get 429 and streams
        are told to retry; the operator can raise a tenant's quotas.
      </p>
      <ErrorNote error={error} />
      {usage && (
        <table>
          <thead>
            <tr>
              <th>Quota</th>
              <th>Used</th>
              <th>Limit</th>
            </tr>
          </thead>
          <tbody>
            {Object.keys(usage.quotas).map((key) => (
              <tr key={key} data-quota={key}>
                <td>{LABELS[key] ?? key}</td>
                <td>{usage.usage[key] ?? 0}</td>
                <td>{usage.quotas[key]}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

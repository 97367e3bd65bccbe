// Device login (RFC 8628): `hookrelay-agent login` prints a code and this page's
// address (/console/device?user_code=…). A signed-in person with clients:write
// sees what asks (device name, scopes, the address it asked from) and approves,
// which creates a client of the tenant named after the device, or denies.
import { useEffect, useState } from "preact/hooks";
import { api } from "../session";
import { navigate } from "../router";
import { ErrorNote, time } from "../ui";

interface Pending {
  user_code: string;
  device_name: string;
  scopes: string[];
  requested_from: string;
  created_at: string;
  expires_at: string;
}

interface Approved {
  client_id: string;
  name: string;
  scopes: string[];
}

export function Device({ code }: { code?: string }) {
  const [input, setInput] = useState(code ?? "");
  const [pending, setPending] = useState<Pending | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const [error, setError] = useState<unknown>(null);
  const look = async (userCode: string) => {
    setError(null);
    setPending(null);
    try {
      setPending(await api<Pending>("POST", "/v1/device", { user_code: userCode }));
    } catch (err) {
      setError(err);
    }
  };
  useEffect(() => {
    if (code) look(code);
  }, [code]);
  return (
    <section>
      <h1>Approve a device</h1>
      <p class="hint">
        <code>hookrelay-agent login</code> shows a code. Approving it gives that device a client of this tenant, named
        after the device, with the scopes it asks for. Approving needs the clients:write scope and every scope asked for.
      </p>
      {!pending && !done && (
        <form
          onSubmit={(e) => {
            e.preventDefault();
            navigate(`/device/${encodeURIComponent(input.trim())}`);
            look(input.trim());
          }}
        >
          <label>
            Code
            <input
              name="user_code"
              required
              autocomplete="off"
              placeholder="XXXX-XXXX"
              value={input}
              onInput={(e) => setInput(e.currentTarget.value)}
            />
          </label>
          <button type="submit">Continue</button>
        </form>
      )}
      <ErrorNote error={error} />
      {pending && !done && (
        <div class="panel">
          <dl>
            <dt>Code</dt>
            <dd>
              <code>{pending.user_code}</code>
            </dd>
            <dt>Device</dt>
            <dd>{pending.device_name}</dd>
            <dt>Scopes</dt>
            <dd>{pending.scopes.join(" ")}</dd>
            <dt>Asked from</dt>
            <dd>{pending.requested_from}</dd>
            <dt>Expires</dt>
            <dd>{time(pending.expires_at)}</dd>
          </dl>
          <p class="hint">Approve only a device you are signing in yourself: check the code matches what it shows.</p>
          <div class="actions">
            <button
              type="button"
              onClick={async () => {
                setError(null);
                try {
                  const approved = await api<Approved>("POST", "/v1/device/approve", { user_code: pending.user_code });
                  setDone(`Approved: ${approved.name} is signed in as client ${approved.client_id} (${approved.scopes.join(" ")}). You can close this page.`);
                } catch (err) {
                  setError(err);
                }
              }}
            >
              Approve
            </button>
            <button
              type="button"
              class="secondary"
              onClick={async () => {
                setError(null);
                try {
                  await api("POST", "/v1/device/deny", { user_code: pending.user_code });
                  setDone("Denied: the device gets no credentials.");
                } catch (err) {
                  setError(err);
                }
              }}
            >
              Deny
            </button>
          </div>
        </div>
      )}
      {done && (
        <p class="panel" role="status">
          {done}
        </p>
      )}
    </section>
  );
}

/// /console/device?user_code=XXXX-XXXX (RFC 8628's verification_uri_complete) as
/// this console's hash route, kept through signing in.
export function deviceRouteFromPath(): void {
  const { pathname, search } = window.location;
  if (!/\/console\/device\/?$/.test(pathname)) return;
  const code = new URLSearchParams(search).get("user_code") ?? "";
  window.history.replaceState(null, "", `/console/#/device${code ? `/${encodeURIComponent(code)}` : ""}`);
}

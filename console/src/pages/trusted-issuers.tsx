// Trusted issuers: workloads (GitHub Actions, Kubernetes service accounts, any
// OpenID provider) exchange their own tokens for the tenant's, with no secret.
import { useEffect, useState } from "preact/hooks";
import { api, listAll } from "../session";
import type { TrustedIssuer } from "../types";
import { DeleteButton, Empty, ErrorNote, ScopePicker, time } from "../ui";

/** `name=glob` lines to the claims object the API takes; blank lines are skipped. */
function parseClaims(text: string): Record<string, string> {
  const claims: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const trimmed = line.trim();
    if (!trimmed) continue;
    const at = trimmed.indexOf("=");
    if (at <= 0) throw new Error(`"${trimmed}" is not name=pattern`);
    claims[trimmed.slice(0, at).trim()] = trimmed.slice(at + 1).trim();
  }
  return claims;
}

export function TrustedIssuers() {
  const [issuers, setIssuers] = useState<TrustedIssuer[] | null>(null);
  const [issuer, setIssuer] = useState("https://token.actions.githubusercontent.com");
  const [audience, setAudience] = useState("");
  const [claims, setClaims] = useState("repository=\nref=refs/heads/main");
  const [scopes, setScopes] = useState<string[]>(["events:read"]);
  const [error, setError] = useState<unknown>(null);
  const load = () => listAll<TrustedIssuer>("/v1/trusted-issuers").then(setIssuers).catch(setError);
  useEffect(() => {
    load();
  }, []);
  return (
    <section>
      <h1>Trusted issuers</h1>
      <p class="hint">
        An agent with no secret: it exchanges a token its platform gives it (GitHub Actions' OIDC token, a Kubernetes
        service account token) for one of yours. A token is accepted when its issuer and audience are these and every
        claim matches its pattern (<code>*</code> matches anything). Pick an audience of your own: the workload asks for
        it.
      </p>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          try {
            await api("POST", "/v1/trusted-issuers", {
              issuer: issuer.trim(),
              audience: audience.trim(),
              claims: parseClaims(claims),
              scopes,
            });
            setAudience("");
            load();
          } catch (err) {
            setError(err);
          }
        }}
      >
        <label>
          Issuer
          <input name="issuer" required type="url" value={issuer} onInput={(e) => setIssuer(e.currentTarget.value)} />
        </label>
        <label>
          Audience
          <input
            name="audience"
            required
            placeholder="hookrelay-acme"
            value={audience}
            onInput={(e) => setAudience(e.currentTarget.value)}
          />
        </label>
        <label>
          Claims (one name=pattern per line)
          <textarea name="claims" rows={3} required value={claims} onInput={(e) => setClaims(e.currentTarget.value)} />
        </label>
        <ScopePicker scopes={scopes} onChange={setScopes} />
        <button type="submit">Trust issuer</button>
      </form>
      <ErrorNote error={error} />
      {issuers && issuers.length === 0 && <Empty>No trusted issuers.</Empty>}
      {issuers && issuers.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Issuer</th>
              <th>Audience</th>
              <th>Claims</th>
              <th>Scopes</th>
              <th>Created</th>
              <th>
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {issuers.map((trusted) => (
              <tr key={trusted.id}>
                <td class="wrap">
                  <code>{trusted.issuer}</code>
                </td>
                <td>
                  <code>{trusted.audience}</code>
                </td>
                <td class="wrap">
                  {Object.entries(trusted.claims).map(([name, pattern]) => (
                    <div key={name}>
                      <code>
                        {name}={pattern}
                      </code>
                    </div>
                  ))}
                </td>
                <td>{trusted.scopes.join(" ")}</td>
                <td>{time(trusted.created_at)}</td>
                <td class="actions">
                  <DeleteButton
                    path={`/v1/trusted-issuers/${trusted.id}`}
                    confirm={`Stop trusting ${trusted.issuer} for ${trusted.audience}? Tokens exchanged under it stop working at once.`}
                    onDeleted={load}
                    onError={setError}
                  />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

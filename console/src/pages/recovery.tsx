// One repository's recovery: access to its provider's API (a token or a
// GitHub App), the hook doctor, the recovery runs and "Recover now".
// hookrelay reads the provider's delivery log and asks it to redeliver what
// it missed while it was down (GitHub and GitLab only).
import { useEffect, useState } from "preact/hooks";
import { ApiError, api } from "../session";
import type { HookDiagnosis, ProviderAccess, RecoveryRun, Repository } from "../types";
import { Empty, ErrorNote, time } from "../ui";

const DEFAULT_API: Record<string, string> = {
  github: "https://api.github.com",
  gitlab: "https://gitlab.com/api/v4",
};

function AccessForm(props: { repository: Repository; onSaved: (access: ProviderAccess) => void }) {
  const { repository } = props;
  const [kind, setKind] = useState<"token" | "github_app">("token");
  const [token, setToken] = useState("");
  const [appId, setAppId] = useState("");
  const [installationId, setInstallationId] = useState("");
  const [privateKey, setPrivateKey] = useState("");
  const [apiUrl, setApiUrl] = useState("");
  const [hookId, setHookId] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const github = repository.provider === "github";
  return (
    <form
      aria-label="provider access"
      onSubmit={async (e) => {
        e.preventDefault();
        setError(null);
        setBusy(true);
        const body: Record<string, unknown> =
          kind === "token"
            ? { token: token.trim() }
            : { app_id: Number(appId), installation_id: Number(installationId), private_key: privateKey };
        if (apiUrl.trim()) body.api_url = apiUrl.trim();
        if (hookId.trim()) body.hook_id = Number(hookId);
        try {
          const saved = await api<ProviderAccess>("PUT", `/v1/repositories/${repository.id}/provider-access`, body);
          setToken("");
          setPrivateKey("");
          props.onSaved(saved);
        } catch (err) {
          setError(err);
        } finally {
          setBusy(false);
        }
      }}
    >
      {github && (
        <label>
          Credentials
          <select name="kind" value={kind} onChange={(e) => setKind(e.currentTarget.value as "token" | "github_app")}>
            <option value="token">Token</option>
            <option value="github_app">GitHub App</option>
          </select>
        </label>
      )}
      {kind === "token" ? (
        <label>
          Token
          <input
            name="token"
            type="password"
            autocomplete="off"
            required
            value={token}
            onInput={(e) => setToken(e.currentTarget.value)}
          />
        </label>
      ) : (
        <>
          <label>
            App ID
            <input name="app_id" inputMode="numeric" required value={appId} onInput={(e) => setAppId(e.currentTarget.value)} />
          </label>
          <label>
            Installation ID
            <input
              name="installation_id"
              inputMode="numeric"
              required
              value={installationId}
              onInput={(e) => setInstallationId(e.currentTarget.value)}
            />
          </label>
          <label>
            Private key
            <textarea
              name="private_key"
              rows={4}
              required
              placeholder="-----BEGIN RSA PRIVATE KEY-----"
              value={privateKey}
              onInput={(e) => setPrivateKey(e.currentTarget.value)}
            />
          </label>
        </>
      )}
      <label>
        API URL
        <input
          name="api_url"
          placeholder={DEFAULT_API[repository.provider]}
          value={apiUrl}
          onInput={(e) => setApiUrl(e.currentTarget.value)}
        />
      </label>
      <label>
        Hook ID
        <input
          name="hook_id"
          inputMode="numeric"
          placeholder="found by its URL"
          value={hookId}
          onInput={(e) => setHookId(e.currentTarget.value)}
        />
      </label>
      <button type="submit" disabled={busy}>
        {busy ? "Checking…" : "Save and check"}
      </button>
      <ErrorNote error={error} />
    </form>
  );
}

function Doctor({ repository }: { repository: Repository }) {
  const [diagnosis, setDiagnosis] = useState<HookDiagnosis | null>(null);
  const [error, setError] = useState<unknown>(null);
  useEffect(() => {
    api<HookDiagnosis>("GET", `/v1/repositories/${repository.id}/hook`)
      .then(setDiagnosis)
      .catch(setError);
  }, [repository.id]);
  if (error) return <ErrorNote error={error} />;
  if (!diagnosis) return <p class="hint">Reading the hook…</p>;
  return (
    <div aria-label="hook doctor">
      <p>
        Hook {diagnosis.hook_id} posts to <code class="wrap">{diagnosis.url}</code>
        {diagnosis.active ? "" : " (inactive)"}; events: {diagnosis.events.join(", ") || "none"}.
      </p>
      {diagnosis.problems.length === 0 ? (
        <p class="ok">No problems: the hook posts here, is active, and verifies TLS.</p>
      ) : (
        <ul class="problems" aria-label="problems">
          {diagnosis.problems.map((problem) => (
            <li key={problem} class="warning">
              {problem}
            </li>
          ))}
        </ul>
      )}
    </div>
  );
}

function Runs(props: { runs: RecoveryRun[] }) {
  if (props.runs.length === 0) return <Empty>No recovery has run yet.</Empty>;
  return (
    <table aria-label="recovery runs">
      <thead>
        <tr>
          <th>Started</th>
          <th>Trigger</th>
          <th>Read back to</th>
          <th>Scanned</th>
          <th>Missing</th>
          <th>Asked again</th>
          <th>Recovered</th>
          <th>Refused</th>
          <th>Outcome</th>
        </tr>
      </thead>
      <tbody>
        {props.runs.map((run) => (
          <tr key={run.id} data-recovery={run.id}>
            <td>{time(run.started_at)}</td>
            <td>{run.trigger}</td>
            <td>{time(run.window_start)}</td>
            <td class="scanned">{run.scanned}</td>
            <td class="missing">{run.missing}</td>
            <td class="asked">{run.redelivery_requested}</td>
            <td class="recovered">{run.recovered}</td>
            <td>
              {run.refused.length === 0
                ? "0"
                : run.refused.map((r) => (
                    <div key={r.delivery_id}>
                      {r.event} {r.delivery_id}: {r.status_code}
                    </div>
                  ))}
            </td>
            <td class="outcome">{run.finished_at === null ? "running" : run.error ? run.error : "done"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function Recovery({ id }: { id: string }) {
  const [repository, setRepository] = useState<Repository | null>(null);
  const [access, setAccess] = useState<ProviderAccess | null | undefined>(undefined);
  const [runs, setRuns] = useState<RecoveryRun[]>([]);
  const [error, setError] = useState<unknown>(null);
  const [note, setNote] = useState("");
  const loadRuns = () =>
    api<{ items: RecoveryRun[] }>("GET", `/v1/repositories/${id}/recoveries`)
      .then((page) => setRuns(page.items))
      .catch(setError);
  useEffect(() => {
    api<Repository>("GET", `/v1/repositories/${id}`).then(setRepository).catch(setError);
    api<ProviderAccess>("GET", `/v1/repositories/${id}/provider-access`)
      .then(setAccess)
      .catch((err) => (err instanceof ApiError && err.status === 404 ? setAccess(null) : setError(err)));
    loadRuns();
  }, [id]);
  // While a run is going, or the redeliveries it asked for are arriving, follow it.
  useEffect(() => {
    const recent = (run: RecoveryRun) => Date.now() - Date.parse(run.started_at) < 10 * 60_000;
    const arriving = (run: RecoveryRun) => recent(run) && run.recovered < run.redelivery_requested;
    if (!runs.some((run) => run.finished_at === null || arriving(run))) return;
    const timer = setTimeout(loadRuns, 1000);
    return () => clearTimeout(timer);
  }, [runs]);
  if (!repository) {
    return (
      <section>
        <h1>Recovery</h1>
        <ErrorNote error={error} />
      </section>
    );
  }
  const supported = repository.provider in DEFAULT_API;
  return (
    <section>
      <h1>Recovery of {repository.name}</h1>
      <p class="hint">
        <a href="#/repositories">← Repositories</a>
      </p>
      {!supported ? (
        <p class="hint">
          {repository.provider} has no API to list or redeliver webhook deliveries, so hookrelay cannot recover what it
          missed. GitHub and GitLab have one.
        </p>
      ) : (
        <>
          <p class="hint">
            GitHub and GitLab keep a log of their deliveries (GitHub 3 days, GitLab 7) and send one again on request,
            signed and unchanged. With access to that log, hookrelay asks for every delivery it missed while it was
            down, at start, every few minutes, and when you press Recover now. A token needs the repository's
            "Webhooks" permission (read and write; GitLab: the Maintainer role). It is stored encrypted and never shown
            again.
          </p>
          <h2>Provider access</h2>
          {access && (
            <dl class="facts" aria-label="current access">
              <dt>Credentials</dt>
              <dd>{access.kind === "github_app" ? "GitHub App" : "token"}</dd>
              <dt>API</dt>
              <dd>{access.api_url}</dd>
              <dt>Hook</dt>
              <dd class="hook-id">{access.hook_id}</dd>
              <dt>Checked</dt>
              <dd>{time(access.checked_at)}</dd>
            </dl>
          )}
          {access && (
            <button
              type="button"
              class="secondary small"
              onClick={async () => {
                if (!window.confirm("Remove the provider access? hookrelay stops recovering missed deliveries.")) return;
                try {
                  await api("DELETE", `/v1/repositories/${id}/provider-access`);
                  setAccess(null);
                } catch (err) {
                  setError(err);
                }
              }}
            >
              Remove access
            </button>
          )}
          {access === null && <Empty>No provider access yet: hookrelay cannot recover missed deliveries.</Empty>}
          <AccessForm repository={repository} onSaved={setAccess} />
          {access && (
            <>
              <h2>Hook</h2>
              <Doctor repository={repository} key={access.checked_at} />
              <h2>Recovery runs</h2>
              <button
                type="button"
                onClick={async () => {
                  setError(null);
                  setNote("");
                  try {
                    await api("POST", `/v1/repositories/${id}/recover`, {});
                    setNote("Started.");
                    loadRuns();
                  } catch (err) {
                    setError(err);
                  }
                }}
              >
                Recover now
              </button>{" "}
              <span role="status">{note}</span>
              <ErrorNote error={error} />
              <Runs runs={runs} />
            </>
          )}
        </>
      )}
    </section>
  );
}

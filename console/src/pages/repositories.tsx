// Repositories: register one of any provider (the webhook URL and secret,
// once, with that provider's setup steps), rotate the secret, delete.
import type { ComponentChildren } from "preact";
import { useEffect, useState } from "preact/hooks";
import { api, listAll } from "../session";
import type { Repository } from "../types";
import { CopyButton, DeleteButton, Empty, ErrorNote, Secret, time } from "../ui";

interface ProviderInfo {
  label: string;
  placeholder: string;
}

export const PROVIDERS: Record<string, ProviderInfo> = {
  github: { label: "GitHub", placeholder: "owner/repo" },
  gitlab: { label: "GitLab", placeholder: "group/project" },
  gitea: { label: "Gitea", placeholder: "owner/repo" },
  forgejo: { label: "Forgejo", placeholder: "owner/repo" },
  bitbucket: { label: "Bitbucket", placeholder: "workspace/repo" },
  standard: { label: "Standard Webhooks", placeholder: "billing-events" },
};

/// Gitea's and Forgejo's settings pages are the same under their own names.
function giteaSteps(label: string, name: string) {
  return (
    <>
      <p>
        On {label}, open <em>{name}</em> → Settings → Webhooks → Add webhook → {label}, and enter:
      </p>
      <ul>
        <li>Target URL: the URL above, HTTP method POST</li>
        <li>
          POST content type: <code>application/json</code>
        </li>
        <li>Secret: the secret above</li>
      </ul>
    </>
  );
}

/// What to enter on the provider's side, after registering or rotating.
function Steps({ repository }: { repository: Repository }) {
  const signing = repository.settings?.verification === "signing_token";
  const steps: Record<string, ComponentChildren> = {
    github: (
      <>
        <p>
          On GitHub, open <em>{repository.name}</em> → Settings → Webhooks → Add webhook, and enter:
        </p>
        <ul>
          <li>Payload URL: the URL above</li>
          <li>
            Content type: <code>application/json</code>
          </li>
          <li>Secret: the secret above</li>
          <li>Which events: "Send me everything", or the events your CI needs (usually pushes and pull requests)</li>
        </ul>
      </>
    ),
    gitlab: (
      <>
        <p>
          On GitLab, open <em>{repository.name}</em> → Settings → Webhooks → Add new webhook, and enter:
        </p>
        <ul>
          <li>URL: the URL above</li>
          {signing ? (
            <li>Signing token: the secret above (a delivery older than five minutes is refused)</li>
          ) : (
            <li>Secret token: the secret above</li>
          )}
          <li>Trigger: push events, tag push events, merge request events, or what your CI needs</li>
        </ul>
      </>
    ),
    gitea: giteaSteps("Gitea", repository.name),
    forgejo: giteaSteps("Forgejo", repository.name),
    bitbucket: (
      <>
        <p>
          On Bitbucket Cloud, open <em>{repository.name}</em> → Repository settings → Webhooks → Add webhook; on
          Bitbucket Data Center, Repository settings → Webhooks → Create webhook. Enter:
        </p>
        <ul>
          <li>URL: the URL above</li>
          <li>Secret: the secret above (hookrelay refuses unsigned deliveries)</li>
          <li>Triggers: repository push and pull request events, or what your CI needs</li>
        </ul>
      </>
    ),
    standard: (
      <>
        <p>In the sender's webhook settings, add an endpoint:</p>
        <ul>
          <li>Endpoint URL: the URL above</li>
          <li>
            Signing secret: the secret above; if the sender makes its own, register with it instead (
            <code>webhook_secret</code> in the API)
          </li>
          <li>
            The event type is read from the body's <code>{repository.settings?.event_type_field ?? "type"}</code> field
          </li>
        </ul>
      </>
    ),
  };
  return <>{steps[repository.provider]}</>;
}

/** Whether a webhook URL is on this machine or a private network, out of a provider's reach. */
function unreachable(url: string): boolean {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
  return (
    host === "localhost" ||
    host.endsWith(".localhost") ||
    host === "::1" ||
    /^127\./.test(host) ||
    /^10\./.test(host) ||
    /^192\.168\./.test(host) ||
    /^172\.(1[6-9]|2\d|3[01])\./.test(host)
  );
}

function WebhookSettings({ repository }: { repository: Repository }) {
  return (
    <div class="panel" aria-label="webhook settings">
      <p class="warning" role="alert">
        <strong>Save the secret now.</strong> It is shown only once.
      </p>
      <Secret label="Payload URL" value={repository.webhook_url} />
      {unreachable(repository.webhook_url) && (
        <p class="hint" data-unreachable>
          {repository.provider === "github" ? "GitHub" : "The provider"} cannot reach this address from the internet. For a
          real repository, give hookrelay a public address: deploy it (see the README's Deploy), or run it behind a tunnel
          and start it with <code>HOOKRELAY_PUBLIC_URL</code> set to the tunnel's URL. To try it here, send a signed
          webhook with curl (the README's walkthrough).
        </p>
      )}
      {repository.webhook_secret && <Secret label="Secret" value={repository.webhook_secret} />}
      <Steps repository={repository} />
    </div>
  );
}

export function Repositories() {
  const [repositories, setRepositories] = useState<Repository[] | null>(null);
  const [created, setCreated] = useState<Repository | null>(null);
  const [name, setName] = useState("");
  const [provider, setProvider] = useState("github");
  const [signing, setSigning] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const load = () =>
    listAll<Repository>("/v1/repositories")
      .then(setRepositories)
      .catch(setError);
  useEffect(() => {
    load();
  }, []);
  return (
    <section>
      <h1>Repositories</h1>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          try {
            const settings = provider === "gitlab" && signing ? { verification: "signing_token" } : undefined;
            setCreated(await api<Repository>("POST", "/v1/repositories", { provider, name: name.trim(), settings }));
            setName("");
            load();
          } catch (err) {
            setError(err);
          }
        }}
      >
        <label>
          Provider
          <select name="provider" value={provider} onChange={(e) => setProvider(e.currentTarget.value)}>
            {Object.entries(PROVIDERS).map(([value, info]) => (
              <option value={value} key={value}>
                {info.label}
              </option>
            ))}
          </select>
        </label>
        <label>
          {provider === "standard" ? "Name" : "Repository"}
          <input
            name="name"
            placeholder={PROVIDERS[provider].placeholder}
            required
            value={name}
            onInput={(e) => setName(e.currentTarget.value)}
          />
        </label>
        {provider === "gitlab" && (
          <label class="check">
            <input type="checkbox" name="signing" checked={signing} onChange={(e) => setSigning(e.currentTarget.checked)} />
            Signing token
          </label>
        )}
        <button type="submit">Register</button>
      </form>
      <ErrorNote error={error} />
      {created && <WebhookSettings repository={created} />}
      {repositories && repositories.length === 0 && <Empty>Register a repository to get a webhook URL.</Empty>}
      {repositories && repositories.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Repository</th>
              <th>Provider</th>
              <th>Webhook URL</th>
              <th>Registered</th>
              <th>
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {repositories.map((repository) => (
              <tr key={repository.id}>
                <td>{repository.name}</td>
                <td>{PROVIDERS[repository.provider]?.label ?? repository.provider}</td>
                <td>
                  <code class="wrap">{repository.webhook_url}</code> <CopyButton text={repository.webhook_url} />
                </td>
                <td>{time(repository.created_at)}</td>
                <td class="actions">
                  {(repository.provider === "github" || repository.provider === "gitlab") && (
                    <a class="button secondary small" href={`#/repositories/${repository.id}`}>
                      Recovery
                    </a>
                  )}
                  <button
                    type="button"
                    class="secondary small"
                    onClick={async () => {
                      setError(null);
                      try {
                        setCreated(await api<Repository>("POST", `/v1/repositories/${repository.id}/rotate-secret`));
                      } catch (err) {
                        setError(err);
                      }
                    }}
                  >
                    Rotate secret
                  </button>
                  <DeleteButton
                    path={`/v1/repositories/${repository.id}`}
                    confirm={`Delete ${repository.name}? Its webhook URL stops working and its events are deleted.`}
                    onDeleted={() => {
                      if (created?.id === repository.id) setCreated(null);
                      load();
                    }}
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

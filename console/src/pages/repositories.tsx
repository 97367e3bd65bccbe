// Repositories: register (the webhook URL and secret, once, with GitHub's
// settings), rotate the secret, delete.
import { useEffect, useState } from "preact/hooks";
import { api } from "../session";
import type { Repository } from "../types";
import { CopyButton, DeleteButton, Empty, ErrorNote, Secret, time } from "../ui";

function GitHubSettings({ repository }: { repository: Repository }) {
  return (
    <div class="panel" aria-label="webhook settings">
      <p class="warning" role="alert">
        <strong>Save the secret now.</strong> It is shown only once.
      </p>
      <Secret label="Payload URL" value={repository.webhook_url} />
      {repository.webhook_secret && <Secret label="Secret" value={repository.webhook_secret} />}
      <p>
        On GitHub, open <em>{repository.name}</em> → Settings → Webhooks → Add webhook, and enter:
      </p>
      <ul>
        <li>
          Payload URL: the URL above
        </li>
        <li>
          Content type: <code>application/json</code>
        </li>
        <li>Secret: the secret above</li>
        <li>Which events: "Send me everything", or the events your CI needs (usually pushes and pull requests)</li>
      </ul>
    </div>
  );
}

export function Repositories() {
  const [repositories, setRepositories] = useState<Repository[] | null>(null);
  const [created, setCreated] = useState<Repository | null>(null);
  const [name, setName] = useState("");
  const [error, setError] = useState<unknown>(null);
  const load = () =>
    api<Repository[]>("GET", "/v1/repositories")
      .then(setRepositories)
      .catch(setError);
  useEffect(() => {
    load();
  }, []);
  return (
    <section>
      <h1>Repositories</h1>
      <form
        class="inline"
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          try {
            setCreated(await api<Repository>("POST", "/v1/repositories", { provider: "github", name: name.trim() }));
            setName("");
            load();
          } catch (err) {
            setError(err);
          }
        }}
      >
        <label>
          Provider
          <select name="provider">
            <option value="github">GitHub</option>
          </select>
        </label>
        <label>
          Repository
          <input name="name" placeholder="owner/repo" required value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <button type="submit">Register</button>
      </form>
      <ErrorNote error={error} />
      {created && <GitHubSettings repository={created} />}
      {repositories && repositories.length === 0 && <Empty>Register a repository to get a webhook URL.</Empty>}
      {repositories && repositories.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Repository</th>
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
                <td>
                  <code class="wrap">{repository.webhook_url}</code> <CopyButton text={repository.webhook_url} />
                </td>
                <td>{time(repository.created_at)}</td>
                <td class="actions">
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

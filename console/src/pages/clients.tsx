// Clients: more credentials for the tenant (an agent's read-only one, say).
import { useEffect, useState } from "preact/hooks";
import { api, listAll } from "../session";
import type { Client } from "../types";
import { CopyButton, DeleteButton, Empty, ErrorNote, ScopePicker, Secret, time } from "../ui";

interface Created {
  client_id: string;
  client_secret: string;
  scopes: string[];
}

/** The agent's command for a new client: the secret typed at a prompt, not kept in shell history. */
function AgentCommand({ clientId }: { clientId: string }) {
  const command = [
    "read -rsp 'Client secret: ' HOOKRELAY_CLIENT_SECRET && export HOOKRELAY_CLIENT_SECRET",
    `hookrelay-agent --server ${window.location.origin} --client-id ${clientId} \\`,
    "  --consumer laptop --target http://127.0.0.1:9000/hook",
  ].join("\n");
  return (
    <div class="agent-command">
      <p>Run an agent with this client (it asks for the secret; change the consumer name and target to yours):</p>
      <pre>
        <code>{command}</code>
      </pre>
      <CopyButton text={command} label="Copy command" />
    </div>
  );
}

export function Clients() {
  const [clients, setClients] = useState<Client[] | null>(null);
  const [created, setCreated] = useState<Created | null>(null);
  const [name, setName] = useState("");
  const [scopes, setScopes] = useState<string[]>(["events:read"]);
  const [error, setError] = useState<unknown>(null);
  const load = () => listAll<Client>("/v1/clients").then(setClients).catch(setError);
  useEffect(() => {
    load();
  }, []);
  return (
    <section>
      <h1>Clients</h1>
      <p class="hint">
        A client is a set of credentials. An agent needs only events:read. A client can grant only scopes it holds itself.
        On a laptop or CI runner, <code>hookrelay-agent login --server {window.location.origin}</code> gets the agent a
        client of its own, approved at <a href="#/device">Approve a device</a>, with no secret to copy.
      </p>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setError(null);
          try {
            setCreated(await api<Created>("POST", "/v1/clients", { name: name.trim(), scopes }));
            setName("");
            load();
          } catch (err) {
            setError(err);
          }
        }}
      >
        <label>
          Name
          <input name="client_name" required placeholder="laptop agent" value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <ScopePicker scopes={scopes} onChange={setScopes} />
        <button type="submit">Create client</button>
      </form>
      <ErrorNote error={error} />
      {created && (
        <div class="panel">
          <p class="warning" role="alert">
            <strong>Save this now.</strong> The secret is shown only once.
          </p>
          <Secret label="Client ID" value={created.client_id} />
          <Secret label="Client secret" value={created.client_secret} />
          {created.scopes.includes("events:read") && <AgentCommand clientId={created.client_id} />}
        </div>
      )}
      {clients && clients.length === 0 && <Empty>No clients.</Empty>}
      {clients && clients.length > 0 && (
        <table>
          <thead>
            <tr>
              <th>Name</th>
              <th>Client ID</th>
              <th>Scopes</th>
              <th>Created</th>
              <th>
                <span class="visually-hidden">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {clients.map((client) => (
              <tr key={client.client_id}>
                <td>
                  {client.name}
                  {client.device && (
                    <span class="badge" title="Approved with hookrelay-agent login">
                      device
                    </span>
                  )}
                  {client.device && <div class="hint">last used {client.last_used_at ? time(client.last_used_at) : "never"}</div>}
                </td>
                <td>
                  <code>{client.client_id}</code>
                </td>
                <td>{client.scopes.join(" ")}</td>
                <td>{time(client.created_at)}</td>
                <td class="actions">
                  <DeleteButton
                    path={`/v1/clients/${client.client_id}`}
                    confirm={`Delete the client ${client.name}? Its tokens stop working at once.`}
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

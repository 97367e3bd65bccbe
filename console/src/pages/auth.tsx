// Sign up (credentials shown once) and sign in.
import { useState } from "preact/hooks";
import { api, signIn } from "../session";
import { currentRoute, navigate } from "../router";
import { ErrorNote, Secret } from "../ui";

export function SignIn() {
  const [clientId, setClientId] = useState("");
  const [clientSecret, setClientSecret] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  return (
    <main class="auth">
      <h1>Sign in to hookrelay</h1>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            await signIn(clientId, clientSecret);
            // Signing in on the way to approve a device: go on to it.
            if (currentRoute()[0] !== "device") navigate("/events");
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      >
        <label>
          Client ID
          <input name="client_id" autocomplete="username" required value={clientId} onInput={(e) => setClientId(e.currentTarget.value)} />
        </label>
        <label>
          Client secret
          <input
            name="client_secret"
            type="password"
            autocomplete="current-password"
            required
            value={clientSecret}
            onInput={(e) => setClientSecret(e.currentTarget.value)}
          />
        </label>
        <ErrorNote error={error} />
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
      <p>
        New to hookrelay? <a href="#/signup">Create an account</a>
      </p>
    </main>
  );
}

interface SignedUp {
  tenant_id: string;
  client_id: string;
  client_secret: string;
}

export function SignUp() {
  const [name, setName] = useState("");
  const [created, setCreated] = useState<SignedUp | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  if (created) {
    return (
      <main class="auth">
        <h1>Your credentials</h1>
        <p class="warning" role="alert">
          <strong>Save this now.</strong> The client secret is shown only once; hookrelay keeps only its hash.
        </p>
        <Secret label="Client ID" value={created.client_id} />
        <Secret label="Client secret" value={created.client_secret} />
        <ErrorNote error={error} />
        <button
          type="button"
          disabled={busy}
          onClick={async () => {
            setBusy(true);
            try {
              await signIn(created.client_id, created.client_secret);
              navigate("/repositories");
            } catch (err) {
              setError(err);
            } finally {
              setBusy(false);
            }
          }}
        >
          I saved them: continue
        </button>
      </main>
    );
  }
  return (
    <main class="auth">
      <h1>Create a hookrelay account</h1>
      <form
        onSubmit={async (e) => {
          e.preventDefault();
          setBusy(true);
          setError(null);
          try {
            setCreated(await api<SignedUp>("POST", "/v1/tenants", { name }));
          } catch (err) {
            setError(err);
          } finally {
            setBusy(false);
          }
        }}
      >
        <label>
          Organisation name
          <input name="name" required maxLength={100} value={name} onInput={(e) => setName(e.currentTarget.value)} />
        </label>
        <ErrorNote error={error} />
        <button type="submit" disabled={busy}>
          Sign up
        </button>
      </form>
      <p>
        Already have credentials? <a href="#/signin">Sign in</a>
      </p>
    </main>
  );
}

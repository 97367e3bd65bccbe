// The signed-in session: the access token and the credentials that renew it.
// It lives in memory only (never localStorage or cookies): a reload or
// "Sign out" forgets everything.

export interface Session {
  clientId: string;
  /** The tenant the client belongs to (the token's `tenant_id` claim). */
  tenantId: string;
  token: string;
  scopes: string[];
  expiresAt: number;
}

let current: Session | null = null;
let secret: string | null = null;
let renewal: number | undefined;
const listeners = new Set<() => void>();

export function session(): Session | null {
  return current;
}

export function onSessionChange(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

function changed() {
  for (const listener of listeners) listener();
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/// What a person should read for a failed call: what failed and what to do.
export function explain(error: unknown): string {
  if (error instanceof ApiError) {
    switch (error.status) {
      case 0:
        return "Cannot reach hookrelay. Check your connection and that the server is running.";
      case 401:
        return error.code === "invalid_client"
          ? "The client ID or secret is wrong. Check them and try again."
          : "Your session has ended. Sign in again.";
      case 403:
        return `This client is not allowed to do that (${error.message}). Sign in with a client that has the scope, or create one under Clients.`;
      case 404:
        return `Not found: ${error.message}. It may have been deleted.`;
      case 409:
        return error.message;
      case 410:
        return `${error.message}.`;
      case 429:
        return "Too many attempts. Wait a minute, then try again.";
      case 503:
        return "hookrelay cannot reach its database right now. Try again in a few seconds.";
      default:
        return error.message || `The request failed (${error.status}).`;
    }
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

async function tokenRequest(clientId: string, clientSecret: string): Promise<Session> {
  let response: Response;
  try {
    response = await fetch("/oauth/token", {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ grant_type: "client_credentials", client_id: clientId, client_secret: clientSecret }),
    });
  } catch {
    throw new ApiError(0, "network", "network error");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new ApiError(response.status, body.error ?? "error", body.error_description ?? body.error ?? "");
  }
  return {
    clientId,
    tenantId: tenantOf(String(body.access_token ?? "")),
    token: body.access_token,
    scopes: String(body.scope ?? "").split(" ").filter(Boolean),
    expiresAt: Date.now() + Number(body.expires_in) * 1000,
  };
}

/** The `tenant_id` claim of an access token, read for display only. */
function tenantOf(token: string): string {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return String(JSON.parse(atob(payload)).tenant_id ?? "");
  } catch {
    return "";
  }
}

function scheduleRenewal() {
  window.clearTimeout(renewal);
  if (!current || !secret) return;
  // Renew at 80% of the token's life, so calls and streams never carry an expired one.
  const delay = Math.max(5_000, (current.expiresAt - Date.now()) * 0.8);
  renewal = window.setTimeout(async () => {
    if (!current || !secret) return;
    try {
      current = await tokenRequest(current.clientId, secret);
      changed();
    } catch {
      // Try again shortly; the session stays until the token really expires.
    }
    scheduleRenewal();
  }, delay);
}

export async function signIn(clientId: string, clientSecret: string): Promise<void> {
  current = await tokenRequest(clientId.trim(), clientSecret.trim());
  secret = clientSecret.trim();
  scheduleRenewal();
  changed();
}

export function signOut(): void {
  window.clearTimeout(renewal);
  current = null;
  secret = null;
  changed();
}

/// A call to the JSON API with the session's token.
/** A page of a list that grows with the tenant (GET /v1/repositories and the like). */
interface Page<T> {
  items: T[];
  next_after: string | null;
}

/** Whether the signed-in client holds `scope`: pages leave out what needs more. */
export function can(scope: string): boolean {
  return current?.scopes.includes(scope) ?? false;
}

/**
 * The tenant's repositories, for names next to ids; none without repos:read (an
 * agent's events:read client still sees events, consumers and deliveries).
 */
export async function repositoryNames(): Promise<Map<string, string>> {
  if (!can("repos:read")) return new Map();
  const repositories = await listAll<{ id: string; name: string }>("/v1/repositories");
  return new Map(repositories.map((r) => [r.id, r.name]));
}

/** Every item of a paged list, following `next_after` (at most 20 pages of 500). */
export async function listAll<T>(path: string): Promise<T[]> {
  const items: T[] = [];
  let after: string | null = null;
  for (let pages = 0; pages < 20; pages++) {
    const separator = path.includes("?") ? "&" : "?";
    const cursor: string = after === null ? "" : `&after=${encodeURIComponent(after)}`;
    const page: Page<T> = await api<Page<T>>("GET", `${path}${separator}limit=500${cursor}`);
    items.push(...page.items);
    after = page.next_after;
    if (after === null) break;
  }
  return items;
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (current) headers.authorization = `Bearer ${current.token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch {
    throw new ApiError(0, "network", "network error");
  }
  if (response.status === 204) return undefined as T;
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new ApiError(response.status, answer.error ?? "error", answer.message ?? "");
  }
  return answer as T;
}

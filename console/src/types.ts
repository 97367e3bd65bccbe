// The JSON API's answers, as the console reads them.

export interface Repository {
  id: string;
  provider: string;
  name: string;
  webhook_url: string;
  created_at: string;
  previous_secret_expires_at?: string;
  webhook_secret?: string;
  settings?: { verification?: string; event_type_field?: string; timestamp_tolerance_seconds?: number };
}

/** GET /v1/repositories/{id}/provider-access: never the credentials. */
export interface ProviderAccess {
  kind: "token" | "github_app";
  api_url: string;
  hook_id: number;
  checked_at: string;
}

/** GET /v1/repositories/{id}/hook: the provider's hook and what would break delivery. */
export interface HookDiagnosis {
  hook_id: number;
  url: string;
  url_matches: boolean;
  active: boolean;
  content_type: string | null;
  insecure_ssl: boolean;
  events: string[];
  recent_unauthorized: number;
  problems: string[];
}

export interface RecoveryRun {
  id: string;
  trigger: "startup" | "scheduled" | "manual";
  started_at: string;
  finished_at: string | null;
  window_start: string;
  scanned: number;
  missing: number;
  redelivery_requested: number;
  recovered: number;
  refused: { delivery_id: string; status_code: number; delivered_at: string | null; event: string }[];
  api_calls: number;
  error: string | null;
}

export interface Client {
  client_id: string;
  name: string;
  scopes: string[];
  created_at: string;
  /** Made by approving `hookrelay-agent login`. */
  device: boolean;
  /** When a device client last renewed its access. */
  last_used_at: string | null;
}

export interface TrustedIssuer {
  id: string;
  issuer: string;
  audience: string;
  claims: Record<string, string>;
  scopes: string[];
  created_at: string;
}

export interface EventView {
  id: number;
  repository_id: string;
  provider: string;
  event_type: string;
  delivery_id: string;
  received_at: string;
  branch: string | null;
  tag: string | null;
  size: number;
}

export interface EventDetail extends EventView {
  headers: [string, string][];
  body_base64: string;
}

export interface Delivery {
  consumer: string;
  redelivery_id: string | null;
  outcome: "delivered" | "failed";
  status_code: number | null;
  attempts: number | null;
  duration_ms: number | null;
  error: string | null;
  completed_at: string;
}

export interface Position {
  repository_id: string;
  acked_event_id: number | null;
  pending_events: number;
  oldest_pending_received_at: string | null;
}

export interface Consumer {
  name: string;
  connected_streams: number;
  last_seen_at: string | null;
  stalled: boolean;
  filter: { event_types: string[]; branches: string[]; tags: string[] };
  repositories: Position[];
}

export interface FailedDelivery {
  consumer: string;
  repository_id: string;
  event_id: number;
  event_type: string;
  delivery_id: string;
  reason: string;
  failed_at: string;
}

export const SCOPES = ["repos:read", "repos:write", "clients:write", "events:read", "events:write"] as const;

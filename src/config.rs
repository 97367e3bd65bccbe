//! Command line and environment configuration. Every flag has an environment
//! fallback; `Cli::parse_or_exit` turns a bad setting into one line naming it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};
use secrecy::SecretString;
use url::Url;

// No Debug on the argument types: they hold secrets as plain strings until
// `into_config` wraps them in SecretString.
#[derive(Parser)]
#[command(name = "hookrelay", version = hookrelay_telemetry::LONG_VERSION, about = "Multi-tenant webhook relay")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the HTTP and gRPC APIs until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Apply pending database migrations and exit.
    Migrate(DatabaseArgs),
    /// Run the agent, as `hookrelay-agent` does: relay events to a local target.
    #[command(visible_alias = "agent")]
    Relay(Box<crate::agent::AgentArgs>),
    /// Check a running relay: HTTP readiness and gRPC health (exit 0 when both pass).
    Probe(crate::probe::ProbeArgs),
    /// Token signing keys kept in the database: list them, or rotate without a restart.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Operate on tenants: list, show, suspend, resume, delete, set-quota.
    #[command(subcommand)]
    Tenants(TenantsCommand),
    /// Change the key-encryption key.
    #[command(subcommand)]
    Secrets(SecretsCommand),
}

#[derive(Clone, Subcommand)]
pub enum SecretsCommand {
    /// Re-seal every secret at rest under HOOKRELAY_SECRET_KEY, opening what
    /// HOOKRELAY_PREVIOUS_SECRET_KEY sealed. Run while the servers run with both
    /// keys; afterwards remove the previous key from them.
    Rekey(AdminArgs),
}

#[derive(Clone, Subcommand)]
pub enum TenantsCommand {
    /// Every tenant, with its clients, repositories, events and whether it is suspended.
    List(AdminArgs),
    /// One tenant, with its quotas (the defaults as HOOKRELAY_QUOTA_* give
    /// them here, and the ones set for it).
    Show(ShowTenantArgs),
    /// Refuse the tenant's tokens, token requests, streams (closed within
    /// seconds) and webhooks (403, within 30 s) until it is resumed. Nothing is
    /// deleted.
    Suspend(TenantArgs),
    /// Lift a suspension.
    Resume(TenantArgs),
    /// Delete the tenant and everything it owns: clients, repositories, events,
    /// consumers. Irreversible: needs --yes.
    Delete(DeleteTenantArgs),
    /// Set quotas of one tenant: a number, or `default` for HOOKRELAY_QUOTA_*'s.
    /// Quotas not named keep their setting. Counts apply at once; webhooks per
    /// second within 30 s.
    SetQuota(SetQuotaArgs),
}

#[derive(Clone, Args)]
pub struct ShowTenantArgs {
    #[command(flatten)]
    pub tenant: TenantArgs,
    #[command(flatten)]
    pub quotas: QuotaArgs,
}

/// A quota as `set-quota` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaSetting {
    Limit(i64),
    Default,
}

fn parse_quota(value: &str) -> Result<QuotaSetting, String> {
    match value.trim() {
        "default" => Ok(QuotaSetting::Default),
        number => number
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(QuotaSetting::Limit)
            .ok_or_else(|| format!("`{value}`: give a number (0 or more) or `default`")),
    }
}

#[derive(Clone, Args)]
pub struct SetQuotaArgs {
    #[command(flatten)]
    pub tenant: TenantArgs,
    #[arg(long, value_parser = parse_quota)]
    pub repositories: Option<QuotaSetting>,
    #[arg(long, value_parser = parse_quota)]
    pub clients: Option<QuotaSetting>,
    #[arg(long, value_parser = parse_quota)]
    pub trusted_issuers: Option<QuotaSetting>,
    #[arg(long, value_parser = parse_quota)]
    pub consumers: Option<QuotaSetting>,
    #[arg(long, value_parser = parse_quota)]
    pub open_streams: Option<QuotaSetting>,
    #[arg(long, value_parser = parse_quota)]
    pub open_watches: Option<QuotaSetting>,
    #[arg(long, value_parser = parse_quota)]
    pub webhooks_per_second: Option<QuotaSetting>,
    #[arg(long, value_parser = parse_quota)]
    pub webhook_burst: Option<QuotaSetting>,
    #[arg(long, value_parser = parse_quota)]
    pub stored_event_bytes: Option<QuotaSetting>,
}

impl SetQuotaArgs {
    /// `current` with these changes.
    pub fn apply(&self, current: &crate::domain::QuotaOverrides) -> crate::domain::QuotaOverrides {
        let change = |setting: Option<QuotaSetting>, current: Option<i64>| match setting {
            None => current,
            Some(QuotaSetting::Default) => None,
            Some(QuotaSetting::Limit(n)) => Some(n),
        };
        crate::domain::QuotaOverrides {
            repositories: change(self.repositories, current.repositories),
            clients: change(self.clients, current.clients),
            trusted_issuers: change(self.trusted_issuers, current.trusted_issuers),
            consumers: change(self.consumers, current.consumers),
            open_streams: change(self.open_streams, current.open_streams),
            open_watches: change(self.open_watches, current.open_watches),
            webhooks_per_second: change(self.webhooks_per_second, current.webhooks_per_second)
                .map(|n| n.max(1)),
            webhook_burst: change(self.webhook_burst, current.webhook_burst).map(|n| n.max(1)),
            stored_event_bytes: change(self.stored_event_bytes, current.stored_event_bytes),
        }
    }
}

#[derive(Clone, Args)]
pub struct TenantArgs {
    #[command(flatten)]
    pub admin: AdminArgs,
    /// The tenant's id (`hookrelay tenants list`).
    pub tenant_id: String,
}

#[derive(Clone, Args)]
pub struct DeleteTenantArgs {
    #[command(flatten)]
    pub tenant: TenantArgs,
    /// Confirm the deletion.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Clone, Subcommand)]
pub enum KeysCommand {
    /// Every signing key, and whether it signs, is only published, or is retiring.
    List(AdminArgs),
    /// Add a new signing key: every replica publishes it in the JWKS at once, signs
    /// with it after --publish-delay, and stops accepting the old keys once the
    /// longest token signed with them has expired.
    Rotate(RotateKeysArgs),
}

#[derive(Clone, Args)]
pub struct RotateKeysArgs {
    #[command(flatten)]
    pub admin: AdminArgs,

    /// How long the new key is published before it signs, so that every verifier
    /// (and any cache of the JWKS) knows it before the first token it signs.
    #[arg(long, default_value = "10m", value_parser = parse_duration_or_zero)]
    pub publish_delay: Duration,

    /// The longest lifetime of a token signed with the old keys: the servers'
    /// HOOKRELAY_TOKEN_TTL.
    #[arg(long, env = "HOOKRELAY_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Added to the token lifetime before the old keys retire: the clocks of
    /// the servers may disagree by this much.
    #[arg(long, default_value = "1m", value_parser = parse_duration_or_zero)]
    pub clock_skew: Duration,
}

#[derive(Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL. When unset, a private PostgreSQL server is run from the
    /// machine's PostgreSQL binaries, inside the data directory.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Directory for local state: the embedded database and its generated secret key.
    #[arg(long, env = "HOOKRELAY_DATA_DIR", default_value = ".hookrelay")]
    pub data_dir: PathBuf,

    /// Directory holding initdb and postgres for the embedded database.
    /// Default: PATH, then the newest /usr/lib/postgresql/*/bin.
    #[arg(long, env = "HOOKRELAY_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<PathBuf>,

    /// Size of the database connection pool.
    #[arg(long, env = "HOOKRELAY_DB_MAX_CONNECTIONS", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub db_max_connections: u32,
}

/// Where the key-encryption key comes from (serve and the admin commands).
#[derive(Clone, Args)]
pub struct SecretKeyArgs {
    /// Key-encryption key for secrets at rest: 32 bytes, base64 (`openssl rand -base64 32`).
    /// Default: read from, or generated into, <data dir>/secret.key.
    #[arg(
        long,
        env = "HOOKRELAY_SECRET_KEY",
        hide_env_values = true,
        conflicts_with = "secret_key_file"
    )]
    pub secret_key: Option<String>,

    /// File holding the key-encryption key (base64), e.g. a mounted Kubernetes secret.
    #[arg(long, env = "HOOKRELAY_SECRET_KEY_FILE")]
    pub secret_key_file: Option<PathBuf>,

    /// During a change of key-encryption key: the previous key, which still opens
    /// what it sealed until `hookrelay secrets rekey` has re-sealed everything.
    #[arg(
        long,
        env = "HOOKRELAY_PREVIOUS_SECRET_KEY",
        hide_env_values = true,
        conflicts_with = "previous_secret_key_file"
    )]
    pub previous_secret_key: Option<String>,

    /// File holding the previous key-encryption key (base64).
    #[arg(long, env = "HOOKRELAY_PREVIOUS_SECRET_KEY_FILE")]
    pub previous_secret_key_file: Option<PathBuf>,
}

/// A key given as a value (checked now) or as a file (read at start).
fn key_source(
    value: Option<String>,
    file: Option<PathBuf>,
    setting: &'static str,
) -> Result<Option<SecretKeySource>, InvalidSetting> {
    Ok(match (value, file) {
        (Some(value), _) => {
            let value = SecretString::from(value);
            crate::secrets::SecretKey::from_base64(&value).map_err(|e| InvalidSetting {
                setting,
                reason: format!("{e} (generate one with `openssl rand -base64 32`)"),
            })?;
            Some(SecretKeySource::Value(value))
        }
        (None, Some(path)) => Some(SecretKeySource::File(path)),
        (None, None) => None,
    })
}

impl SecretKeyArgs {
    /// The previous key, if a change of key is under way.
    pub fn previous_source(&self) -> Result<Option<SecretKeySource>, InvalidSetting> {
        key_source(
            self.previous_secret_key.clone(),
            self.previous_secret_key_file.clone(),
            "HOOKRELAY_PREVIOUS_SECRET_KEY",
        )
    }

    pub fn into_source(self) -> Result<SecretKeySource, InvalidSetting> {
        Ok(key_source(
            self.secret_key,
            self.secret_key_file,
            "HOOKRELAY_SECRET_KEY",
        )?
        .unwrap_or(SecretKeySource::DataDir))
    }
}

/// What the operator commands (`hookrelay keys`, `hookrelay tenants`) need: the
/// database and the key-encryption key, as `serve` takes them.
#[derive(Clone, Args)]
pub struct AdminArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub secret: SecretKeyArgs,
}

#[derive(Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address of the HTTP API.
    #[arg(long, env = "HOOKRELAY_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,

    /// Address of the gRPC API.
    #[arg(long, env = "HOOKRELAY_GRPC_ADDR", default_value = "127.0.0.1:50051")]
    pub grpc_addr: SocketAddr,

    /// Public base URL: the token issuer and the base of webhook URLs.
    /// Default: http://<HTTP address>.
    #[arg(long, env = "HOOKRELAY_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<Url>,

    /// When set, POST /v1/tenants requires `Authorization: Bearer <token>`.
    #[arg(long, env = "HOOKRELAY_SIGNUP_TOKEN", hide_env_values = true)]
    pub signup_token: Option<String>,

    #[command(flatten)]
    pub secret: SecretKeyArgs,

    /// PEM private keys (EC P-256 PKCS#8 for ES256, or RSA for RS256) for access
    /// tokens, comma-separated: the first signs, every one verifies and is in the
    /// JWKS (rotation: add the new key second, then make it first, then drop the
    /// old one after the token lifetime). Default: keys generated and kept
    /// encrypted in the database (`hookrelay keys`).
    #[arg(long, env = "HOOKRELAY_JWT_KEY_FILE", value_delimiter = ',')]
    pub jwt_key_file: Vec<PathBuf>,

    /// The `aud` claim of issued access tokens, required on every verified token.
    #[arg(long, env = "HOOKRELAY_JWT_AUDIENCE", default_value = "hookrelay")]
    pub jwt_audience: String,

    /// Lifetime of issued access tokens.
    #[arg(long, env = "HOOKRELAY_TOKEN_TTL", default_value = "15m", value_parser = parse_duration)]
    pub token_ttl: Duration,

    /// Largest accepted webhook body in bytes (GitHub caps payloads at 25 MiB).
    #[arg(long, env = "HOOKRELAY_MAX_WEBHOOK_BYTES", default_value_t = 25 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub max_webhook_bytes: u64,

    /// How long a rotated-out webhook secret keeps verifying deliveries.
    #[arg(long, env = "HOOKRELAY_SECRET_ROTATION_GRACE", default_value = "24h",
          value_parser = parse_duration)]
    pub secret_rotation_grace: Duration,

    /// Events older than this are deleted by a background job.
    #[arg(long, env = "HOOKRELAY_RETENTION", default_value = "7d", value_parser = parse_duration)]
    pub retention: Duration,

    /// How often each server reads what changed in every tenant's stored
    /// event bytes (the stored-bytes quota): the events and deletions since
    /// its last read. A whole count runs at start and every hour.
    #[arg(long, env = "HOOKRELAY_STORED_BYTES_INTERVAL", default_value = "1m", value_parser = parse_duration)]
    pub stored_bytes_interval: Duration,

    /// PEM certificate chain: serve both listeners over TLS (with --tls-key).
    #[arg(long, env = "HOOKRELAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "HOOKRELAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Browser origins allowed to call the gRPC API over gRPC-Web (comma-separated),
    /// e.g. https://console.example.com. Empty: no cross-origin calls.
    #[arg(long, env = "HOOKRELAY_CORS_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// On SIGTERM or Ctrl-C, how long to keep serving while reporting not-ready,
    /// so load balancers (Envoy, Kubernetes) move new requests to other replicas;
    /// a second signal exits at once. `auto`: 5s in Kubernetes or Cloud Run
    /// (KUBERNETES_SERVICE_HOST or K_SERVICE set), 0s elsewhere, where nothing
    /// routes traffic to this process (set it behind a load balancer of your own).
    #[arg(long, env = "HOOKRELAY_DRAIN_DELAY", default_value = "auto", value_parser = parse_drain_delay)]
    pub drain_delay: Duration,

    /// On SIGTERM, the most time until exit, drain delay included (Kubernetes
    /// kills at 30 s by default).
    #[arg(long, env = "HOOKRELAY_SHUTDOWN_GRACE", default_value = "25s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub outbound: OutboundArgs,

    /// Do not apply pending migrations at start (run `hookrelay migrate` instead).
    #[arg(long, env = "HOOKRELAY_NO_MIGRATE")]
    pub no_migrate: bool,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub quotas: QuotaArgs,
}

/// What outbound requests to URLs a tenant names (trusted issuers' keys, git
/// providers' APIs) may reach, and how often delivery logs are read.
#[derive(Clone, Args)]
pub struct OutboundArgs {
    /// Let outbound requests use plain http URLs. For local tests only: what is
    /// fetched over http can be swapped by anyone on the path.
    #[arg(long, env = "HOOKRELAY_OUTBOUND_ALLOW_HTTP")]
    pub outbound_allow_http: bool,

    /// Networks (comma-separated CIDRs) that outbound requests may reach
    /// although they are not public, e.g. 127.0.0.0/8 for a local test issuer
    /// or a GitHub Enterprise Server on a private network. Default: only
    /// public addresses.
    #[arg(long, env = "HOOKRELAY_OUTBOUND_ALLOW_NETWORKS", value_delimiter = ',', value_parser = parse_net)]
    pub outbound_allow_networks: Vec<ipnet::IpNet>,

    /// The earlier name of --outbound-allow-http, still read.
    #[arg(long, env = "HOOKRELAY_ISSUER_ALLOW_HTTP", hide = true)]
    pub issuer_allow_http: bool,

    /// The earlier name of --outbound-allow-networks, still read (the two lists add up).
    #[arg(long, env = "HOOKRELAY_ISSUER_ALLOW_NETWORKS", value_delimiter = ',', value_parser = parse_net, hide = true)]
    pub issuer_allow_networks: Vec<ipnet::IpNet>,

    /// How often each repository with provider access has its provider's
    /// delivery log read for deliveries hookrelay missed (also at start).
    #[arg(long, env = "HOOKRELAY_RECOVERY_INTERVAL", default_value = "5m", value_parser = parse_duration)]
    pub recovery_interval: Duration,
}

impl OutboundArgs {
    fn policy(self) -> crate::outbound::OutboundPolicy {
        let mut allowed_networks = self.outbound_allow_networks;
        allowed_networks.extend(self.issuer_allow_networks);
        crate::outbound::OutboundPolicy {
            allow_http: self.outbound_allow_http || self.issuer_allow_http,
            allowed_networks,
        }
    }
}

/// Limits on what callers, anonymous ones included, can make the server hold.
#[derive(Clone, Args)]
pub struct LimitArgs {
    /// An HTTP client must send complete request headers within this time of
    /// connecting, or of starting its next request on a kept-alive connection.
    #[arg(long, env = "HOOKRELAY_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// A request body must arrive in full within this time of its headers (408 otherwise).
    #[arg(long, env = "HOOKRELAY_HTTP_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_body_timeout: Duration,

    /// A kept-alive HTTP connection with no request is closed after this time.
    #[arg(long, env = "HOOKRELAY_HTTP_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub http_idle_timeout: Duration,

    /// Most connections open at once, HTTP and gRPC together. At the cap, a new
    /// connection replaces the oldest idle HTTP one. Default: the open-file
    /// limit (raised to its hard limit at start) minus room for the database
    /// pool, files and health checks.
    #[arg(long, env = "HOOKRELAY_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections: Option<u64>,

    /// Bytes of webhook bodies held in memory at once, across all requests.
    /// A webhook that would exceed it gets 503 with Retry-After before its body is read.
    #[arg(long, env = "HOOKRELAY_WEBHOOK_MEMORY", default_value_t = 256 * 1024 * 1024,
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024 * 1024))]
    pub webhook_memory: u64,

    /// Of HOOKRELAY_WEBHOOK_MEMORY, what one tenant's webhooks may hold at once
    /// (whatever addresses they come from): a tenant over it gets 503 for its
    /// own webhooks, and the rest of the budget stays for the others.
    /// Default: a quarter of HOOKRELAY_WEBHOOK_MEMORY.
    #[arg(long, env = "HOOKRELAY_WEBHOOK_MEMORY_PER_TENANT",
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024 * 1024))]
    pub webhook_memory_per_tenant: Option<u64>,

    /// Of HOOKRELAY_WEBHOOK_MEMORY, what the webhooks from one source address
    /// (an IPv6 /64) may hold at once, whatever tenants they go to.
    /// Default: an eighth of HOOKRELAY_WEBHOOK_MEMORY, and at least
    /// HOOKRELAY_MAX_WEBHOOK_BYTES.
    #[arg(long, env = "HOOKRELAY_WEBHOOK_MEMORY_PER_SOURCE",
          value_parser = clap::value_parser!(u64).range(1..=64 * 1024 * 1024 * 1024))]
    pub webhook_memory_per_source: Option<u64>,

    /// After its first second, a webhook body must arrive at least this fast
    /// on average (bytes per second), or it gets 408: a body that trickles in
    /// is cut in seconds, not at HOOKRELAY_HTTP_BODY_TIMEOUT. GitHub sends its
    /// headers and body at once.
    #[arg(long, env = "HOOKRELAY_WEBHOOK_MIN_BODY_RATE", default_value_t = 64 * 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub webhook_min_body_rate: u64,

    /// Signups (POST /v1/tenants) per source address: N/s, N/min or N/h, or off.
    #[arg(long, env = "HOOKRELAY_SIGNUP_RATE_LIMIT", default_value = "10/min",
          value_parser = parse_rate)]
    pub signup_rate_limit: RateSetting,

    /// Device authorizations (`hookrelay-agent login`, POST
    /// /oauth/device_authorization) per source address: N/s, N/min or N/h, or off.
    #[arg(long, env = "HOOKRELAY_DEVICE_AUTHORIZATION_RATE_LIMIT", default_value = "10/min",
          value_parser = parse_rate)]
    pub device_authorization_rate_limit: RateSetting,

    /// Failed client authentications at /oauth/token per source address: N/s,
    /// N/min or N/h, or off. A source over it gets 429 until its bucket refills.
    #[arg(long, env = "HOOKRELAY_TOKEN_FAILURE_RATE_LIMIT", default_value = "20/min",
          value_parser = parse_rate)]
    pub token_failure_rate_limit: RateSetting,

    /// Streams and watches a tenant may open (StreamEvents, Watch*), per server:
    /// N/s, N/min or N/h (a burst of N), or off. Over it: RESOURCE_EXHAUSTED,
    /// which the agent retries after a backoff.
    #[arg(long, env = "HOOKRELAY_STREAM_SETUP_RATE_LIMIT", default_value = "20/s",
          value_parser = parse_rate)]
    pub stream_setup_rate_limit: RateSetting,

    /// Requests of a tenant that call its git provider's API (setting
    /// provider access, the hook doctor, recovery on request), per server:
    /// N/s, N/min or N/h, or off. Over it: 429 with Retry-After.
    #[arg(long, env = "HOOKRELAY_PROVIDER_CALL_RATE_LIMIT", default_value = "30/min",
          value_parser = parse_rate)]
    pub provider_call_rate_limit: RateSetting,

    /// Proxies (comma-separated addresses or CIDRs) whose X-Forwarded-For is
    /// believed: the source address is the right-most X-Forwarded-For entry
    /// that is not one of them. Behind the Envoy sidecar: 127.0.0.1,::1.
    #[arg(long, env = "HOOKRELAY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// HTTP/2 connections (gRPC streams) are pinged this often; a peer that
    /// does not answer within HOOKRELAY_HTTP2_KEEPALIVE_TIMEOUT (a frozen or
    /// vanished agent) is disconnected and its streams end.
    #[arg(long, env = "HOOKRELAY_HTTP2_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub http2_keepalive_interval: Duration,

    #[arg(long, env = "HOOKRELAY_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// A consumer with a connected stream whose oldest pending event is older
    /// than this is `stalled` (GET /v1/consumers, hookrelay_consumers_stalled).
    #[arg(long, env = "HOOKRELAY_STALL_THRESHOLD", default_value = "60s", value_parser = parse_duration)]
    pub stall_threshold: Duration,

    /// An event stream is ended cleanly (UNAVAILABLE "…; reconnect now", which
    /// the agent answers by reconnecting at once) after this long, less up to
    /// 10% of jitter, so that no proxy timeout ever cuts one mid-event: keep it
    /// below the load balancer's (Cloud Run allows at most 60 min). 0: never.
    #[arg(long, env = "HOOKRELAY_MAX_STREAM_AGE", default_value = "50m", value_parser = parse_duration_or_zero)]
    pub max_stream_age: Duration,
}

/// Every tenant's quotas, unless the operator set its own
/// (`hookrelay tenants set-quota`). Generous: no honest tenant meets them.
#[derive(Clone, Copy, Args)]
pub struct QuotaArgs {
    /// Repositories a tenant may register (403 quota_exceeded past it).
    #[arg(long, env = "HOOKRELAY_QUOTA_REPOSITORIES", default_value_t = 1000)]
    pub quota_repositories: u64,
    /// OAuth2 clients a tenant may hold.
    #[arg(long, env = "HOOKRELAY_QUOTA_CLIENTS", default_value_t = 100)]
    pub quota_clients: u64,
    /// Trusted issuers a tenant may hold.
    #[arg(long, env = "HOOKRELAY_QUOTA_TRUSTED_ISSUERS", default_value_t = 100)]
    pub quota_trusted_issuers: u64,
    /// Consumers a tenant may have (a new consumer's stream is refused past it).
    #[arg(long, env = "HOOKRELAY_QUOTA_CONSUMERS", default_value_t = 1000)]
    pub quota_consumers: u64,
    /// Event streams a tenant may hold open at once, on all servers together
    /// (RESOURCE_EXHAUSTED past it).
    #[arg(long, env = "HOOKRELAY_QUOTA_OPEN_STREAMS", default_value_t = 1000)]
    pub quota_open_streams: u64,
    /// Console watches a tenant may hold open at once, per server.
    #[arg(long, env = "HOOKRELAY_QUOTA_OPEN_WATCHES", default_value_t = 100)]
    pub quota_open_watches: u64,
    /// Webhooks a tenant may send per second, per server (429 with
    /// Retry-After past it), with bursts of HOOKRELAY_QUOTA_WEBHOOK_BURST.
    #[arg(long, env = "HOOKRELAY_QUOTA_WEBHOOKS_PER_SECOND", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub quota_webhooks_per_second: u64,
    #[arg(long, env = "HOOKRELAY_QUOTA_WEBHOOK_BURST", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub quota_webhook_burst: u64,
    /// Bytes of event bodies a tenant may keep stored (retained) at once; its
    /// webhooks past it get 403. Read every HOOKRELAY_STORED_BYTES_INTERVAL (and by each server
    /// for what it stores meanwhile).
    #[arg(long, env = "HOOKRELAY_QUOTA_STORED_EVENT_BYTES", default_value_t = 10 * 1024 * 1024 * 1024)]
    pub quota_stored_event_bytes: u64,
}

impl QuotaArgs {
    pub fn quotas(&self) -> crate::domain::Quotas {
        crate::domain::Quotas {
            repositories: self.quota_repositories,
            clients: self.quota_clients,
            trusted_issuers: self.quota_trusted_issuers,
            consumers: self.quota_consumers,
            open_streams: self.quota_open_streams,
            open_watches: self.quota_open_watches,
            webhooks_per_second: self.quota_webhooks_per_second,
            webhook_burst: self.quota_webhook_burst,
            stored_event_bytes: self.quota_stored_event_bytes,
        }
    }
}

impl Default for crate::domain::Quotas {
    /// The defaults of `hookrelay serve`.
    fn default() -> Self {
        let args = Cli::parse_from(["hookrelay", "serve"]);
        let Command::Serve(serve) = args.command else {
            unreachable!("parsed `serve`")
        };
        serve.quotas.quotas()
    }
}

/// A parsed rate limit; `None` is `off`.
#[derive(Debug, Clone, Copy)]
pub struct RateSetting(pub Option<crate::server::Rate>);

fn parse_rate(value: &str) -> Result<RateSetting, String> {
    crate::server::Rate::parse(value).map(RateSetting)
}

fn parse_net(value: &str) -> Result<ipnet::IpNet, String> {
    let value = value.trim();
    value
        .parse::<ipnet::IpNet>()
        .or_else(|_| value.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{value}` is not an address or CIDR such as 10.0.0.0/8"))
}

/// The validated limits (see `LimitArgs`).
#[derive(Debug, Clone)]
pub struct Limits {
    pub http_header_timeout: Duration,
    pub http_body_timeout: Duration,
    pub http_idle_timeout: Duration,
    /// None: derived from the open-file limit at start.
    pub max_connections: Option<usize>,
    pub webhook_memory: usize,
    /// None: derived from `webhook_memory` (see `LimitArgs`).
    pub webhook_memory_per_tenant: Option<usize>,
    pub webhook_memory_per_source: Option<usize>,
    pub webhook_min_body_rate: u64,
    pub signup_rate: Option<crate::server::Rate>,
    pub token_failure_rate: Option<crate::server::Rate>,
    pub device_authorization_rate: Option<crate::server::Rate>,
    pub stream_setup_rate: Option<crate::server::Rate>,
    pub provider_call_rate: Option<crate::server::Rate>,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    pub stall_threshold: Duration,
    /// Zero: streams end only with their token.
    pub max_stream_age: Duration,
}

impl Limits {
    /// The webhook memory budget and its shares, with their defaults: a
    /// quarter of the budget per tenant, an eighth per source address, each at
    /// least one webhook of `max_webhook_bytes` and at most the whole budget.
    pub fn memory_shares(&self, max_webhook_bytes: usize) -> crate::server::MemoryShares {
        let total = self.webhook_memory;
        let share = |explicit: Option<usize>, part: usize| {
            explicit
                .unwrap_or((total / part).max(max_webhook_bytes))
                .min(total)
        };
        crate::server::MemoryShares {
            total,
            per_tenant: share(self.webhook_memory_per_tenant, 4),
            per_source: share(self.webhook_memory_per_source, 8),
        }
    }
}

impl Default for Limits {
    /// The defaults of `hookrelay serve`.
    fn default() -> Self {
        let args = Cli::parse_from(["hookrelay", "serve"]);
        let Command::Serve(serve) = args.command else {
            unreachable!("parsed `serve`")
        };
        serve.limits.into_limits()
    }
}

impl LimitArgs {
    fn into_limits(self) -> Limits {
        Limits {
            http_header_timeout: self.http_header_timeout,
            http_body_timeout: self.http_body_timeout,
            http_idle_timeout: self.http_idle_timeout,
            max_connections: self
                .max_connections
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            webhook_memory: usize::try_from(self.webhook_memory).unwrap_or(usize::MAX),
            webhook_memory_per_tenant: self
                .webhook_memory_per_tenant
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            webhook_memory_per_source: self
                .webhook_memory_per_source
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
            webhook_min_body_rate: self.webhook_min_body_rate,
            signup_rate: self.signup_rate_limit.0,
            token_failure_rate: self.token_failure_rate_limit.0,
            device_authorization_rate: self.device_authorization_rate_limit.0,
            stream_setup_rate: self.stream_setup_rate_limit.0,
            provider_call_rate: self.provider_call_rate_limit.0,
            trusted_proxies: self.trusted_proxies,
            http2_keepalive_interval: self.http2_keepalive_interval,
            http2_keepalive_timeout: self.http2_keepalive_timeout,
            stall_threshold: self.stall_threshold,
            max_stream_age: self.max_stream_age,
        }
    }
}

/// Where the key-encryption key comes from.
#[derive(Debug, Clone)]
pub enum SecretKeySource {
    Value(SecretString),
    File(PathBuf),
    /// `<data dir>/secret.key`, generated with mode 0600 on first use.
    DataDir,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: Option<SecretString>,
    pub data_dir: PathBuf,
    pub postgres_bin_dir: Option<PathBuf>,
    pub max_connections: u32,
}

/// The validated configuration of `hookrelay serve`.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// None: derived from the bound HTTP address.
    pub public_url: Option<Url>,
    pub signup_token: Option<SecretString>,
    pub secret_key: SecretKeySource,
    /// During a change of key-encryption key, the previous key.
    pub previous_secret_key: Option<SecretKeySource>,
    /// Empty: keys kept in the database.
    pub jwt_key_file: Vec<PathBuf>,
    pub jwt_audience: String,
    pub token_ttl: Duration,
    pub max_webhook_bytes: usize,
    pub secret_rotation_grace: Duration,
    pub retention: Duration,
    pub tls: Option<crate::server::tls::TlsFiles>,
    pub cors_origins: Vec<String>,
    pub drain_delay: Duration,
    pub shutdown_grace: Duration,
    pub migrate: bool,
    pub limits: Limits,
    /// Every tenant's quotas but those the operator set.
    pub quotas: crate::domain::Quotas,
    /// What outbound requests (trusted issuers' keys, git providers' APIs) may reach.
    pub outbound: crate::outbound::OutboundPolicy,
    /// How often delivery logs are read for missed deliveries.
    pub recovery_interval: Duration,
    /// How often tenants' stored event bytes are brought up to date.
    pub stored_bytes_interval: Duration,
}

/// A setting that parsed but makes no sense; rendered as one line naming it.
#[derive(Debug, thiserror::Error)]
#[error("invalid {setting}: {reason}")]
pub struct InvalidSetting {
    pub setting: &'static str,
    pub reason: String,
}

impl Cli {
    /// Parses the command line. `--help` and `--version` print and exit 0. Any
    /// invalid flag or environment value exits 2 with clap's whole message (what
    /// is wrong, "did you mean", the usage line), plus the environment variable
    /// behind the flag when it has one.
    pub fn parse_or_exit() -> Self {
        let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
        // `hookrelay relay --config agent.toml`: the agent's settings file.
        if argv.get(1).is_some_and(|a| a == "relay") {
            let command = Self::command();
            let relay = command
                .find_subcommand("relay")
                .expect("the relay subcommand");
            argv = match hookrelay_agent::with_config_file(argv, 2, relay) {
                Ok(argv) => argv,
                Err(error) => {
                    eprintln!("hookrelay: {error}");
                    std::process::exit(2);
                }
            };
        }
        match Self::try_parse_from(argv) {
            Ok(cli) => cli,
            Err(error) => match error.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => error.exit(),
                _ => {
                    // Colours only on a terminal, as clap decides.
                    let _ = error.print();
                    if let Some(env) = environment_variable(&error) {
                        eprintln!(
                            "\nThe flag can also be set with the environment variable {env}."
                        );
                    }
                    std::process::exit(2);
                }
            },
        }
    }
}

/// The environment variable behind the flag a clap error names, if any.
fn environment_variable(error: &clap::Error) -> Option<String> {
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    Cli::command().get_subcommands().find_map(|sub| {
        sub.get_arguments()
            .find(|a| {
                a.get_long()
                    .is_some_and(|long| arg.starts_with(&format!("--{long}")))
            })
            .and_then(|a| a.get_env())
            .map(|env| env.to_string_lossy().into_owned())
    })
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value)
        .map_err(|e| format!("{e}; use a duration such as 30s, 15m or 24h"))?;
    if duration.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(duration)
}

fn parse_duration_or_zero(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{e}; use a duration such as 0s, 5s or 1m"))
}

/// A duration, or `auto` (see `ServeArgs::drain_delay`).
fn parse_drain_delay(value: &str) -> Result<Duration, String> {
    if value != "auto" {
        return parse_duration_or_zero(value);
    }
    let routed = ["KUBERNETES_SERVICE_HOST", "K_SERVICE"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
    Ok(if routed {
        Duration::from_secs(5)
    } else {
        Duration::ZERO
    })
}

fn parse_origin(value: &str) -> Result<String, String> {
    let url = Url::parse(value.trim()).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.path() != "/" {
        return Err("must be an origin such as https://console.example.com".into());
    }
    Ok(url.origin().ascii_serialization())
}

fn parse_public_url(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".into());
    }
    if url.host().is_none() || url.query().is_some() || url.fragment().is_some() {
        return Err("must be a base URL with a host and no query or fragment".into());
    }
    Ok(url)
}

impl DatabaseArgs {
    pub fn into_config(self) -> Result<DatabaseConfig, InvalidSetting> {
        let url = match self.database_url {
            Some(url) if url.trim().is_empty() => None,
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(InvalidSetting {
                        setting: "DATABASE_URL",
                        reason: "must start with postgres:// or postgresql://".into(),
                    });
                }
                Some(SecretString::from(url))
            }
            None => None,
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(InvalidSetting {
                setting: "HOOKRELAY_DATA_DIR",
                reason: "must not be empty".into(),
            });
        }
        Ok(DatabaseConfig {
            url,
            data_dir: self.data_dir,
            postgres_bin_dir: self.postgres_bin_dir,
            max_connections: self.db_max_connections,
        })
    }
}

impl ServeArgs {
    pub fn into_config(self) -> Result<Config, InvalidSetting> {
        let previous_secret_key = self.secret.previous_source()?;
        let secret_key = self.secret.into_source()?;
        if self.jwt_audience.trim().is_empty() {
            return Err(InvalidSetting {
                setting: "HOOKRELAY_JWT_AUDIENCE",
                reason: "must not be empty".into(),
            });
        }
        if self.drain_delay >= self.shutdown_grace {
            return Err(InvalidSetting {
                setting: "HOOKRELAY_DRAIN_DELAY",
                reason: "must be shorter than HOOKRELAY_SHUTDOWN_GRACE".into(),
            });
        }
        let signup_token = match self.signup_token {
            Some(token) if token.len() < 16 => {
                return Err(InvalidSetting {
                    setting: "HOOKRELAY_SIGNUP_TOKEN",
                    reason: "must be at least 16 characters".into(),
                });
            }
            token => token.map(SecretString::from),
        };
        for (setting, bytes) in [
            ("HOOKRELAY_WEBHOOK_MEMORY", Some(self.limits.webhook_memory)),
            (
                "HOOKRELAY_WEBHOOK_MEMORY_PER_TENANT",
                self.limits.webhook_memory_per_tenant,
            ),
            (
                "HOOKRELAY_WEBHOOK_MEMORY_PER_SOURCE",
                self.limits.webhook_memory_per_source,
            ),
        ] {
            if bytes.is_some_and(|bytes| bytes < self.max_webhook_bytes) {
                return Err(InvalidSetting {
                    setting,
                    reason: format!(
                        "must hold at least one webhook of HOOKRELAY_MAX_WEBHOOK_BYTES ({} bytes)",
                        self.max_webhook_bytes
                    ),
                });
            }
        }
        Ok(Config {
            limits: self.limits.into_limits(),
            quotas: self.quotas.quotas(),
            database: self.database.into_config()?,
            http_addr: self.http_addr,
            grpc_addr: self.grpc_addr,
            public_url: self.public_url,
            signup_token,
            secret_key,
            previous_secret_key,
            jwt_key_file: self.jwt_key_file,
            jwt_audience: self.jwt_audience,
            token_ttl: self.token_ttl,
            max_webhook_bytes: usize::try_from(self.max_webhook_bytes).unwrap_or(usize::MAX),
            secret_rotation_grace: self.secret_rotation_grace,
            retention: self.retention,
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| crate::server::tls::TlsFiles { cert, key }),
            cors_origins: self.cors_origins,
            drain_delay: self.drain_delay,
            shutdown_grace: self.shutdown_grace,
            migrate: !self.no_migrate,
            recovery_interval: self.outbound.recovery_interval,
            stored_bytes_interval: self.stored_bytes_interval,
            outbound: self.outbound.policy(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["hookrelay", "serve"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Command::Serve(serve) = cli.command else {
            unreachable!("parsed serve")
        };
        serve.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_work_on_a_laptop() {
        let config = serve(&[]).unwrap();
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:8080");
        assert!(config.migrate);
        assert_eq!(config.limits.http_header_timeout, Duration::from_secs(10));
        assert_eq!(config.limits.webhook_memory, 256 * 1024 * 1024);
        assert_eq!(
            config.limits.signup_rate.map(|r| (r.count.get(), r.per)),
            Some((10, Duration::from_secs(60)))
        );
    }

    #[test]
    fn outbound_settings_take_their_new_and_their_earlier_names() {
        let strict = serve(&[]).unwrap();
        assert!(!strict.outbound.allow_http && strict.outbound.allowed_networks.is_empty());
        assert_eq!(strict.recovery_interval, Duration::from_secs(300));
        let config = serve(&[
            "--outbound-allow-networks",
            "127.0.0.0/8",
            "--issuer-allow-networks",
            "10.0.0.0/8",
            "--issuer-allow-http",
            "--recovery-interval",
            "1m",
        ])
        .unwrap();
        assert!(
            config.outbound.allow_http,
            "the earlier name still allows http"
        );
        assert_eq!(
            config.outbound.allowed_networks.len(),
            2,
            "the lists add up"
        );
        assert_eq!(config.recovery_interval, Duration::from_secs(60));
    }

    #[test]
    fn settings_are_validated_against_each_other() {
        let error = serve(&["--drain-delay", "30s", "--shutdown-grace", "10s"]).unwrap_err();
        assert!(error.contains("HOOKRELAY_DRAIN_DELAY"), "{error}");
        let error =
            serve(&["--webhook-memory", "1000", "--max-webhook-bytes", "2000"]).unwrap_err();
        assert!(error.contains("HOOKRELAY_WEBHOOK_MEMORY"), "{error}");
        let config = serve(&["--trusted-proxies", "127.0.0.1,10.0.0.0/8,::1"]).unwrap();
        assert_eq!(config.limits.trusted_proxies.len(), 3);
        assert!(serve(&["--trusted-proxies", "lb"]).is_err());
        assert!(
            serve(&["--signup-rate-limit", "off"])
                .unwrap()
                .limits
                .signup_rate
                .is_none()
        );
        assert!(serve(&["--public-url", "https://relay.example.com/?x=1"]).is_err());
    }
}

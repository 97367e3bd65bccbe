//! The agent's settings: flags, environment variables and the config file's
//! keys (`config_file`), checked at start.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use secrecy::SecretString;

use crate::token;
use hookrelay_telemetry::LogFormat;

// No Debug: it holds the client secret as a plain string.
#[derive(Clone, Args)]
pub struct AgentArgs {
    /// A TOML file with any of these settings under their long names (e.g.
    /// `server = "https://…"`, `branch = ["main"]`); flags and environment
    /// variables override it.
    #[arg(long, env = "HOOKRELAY_CONFIG")]
    pub config: Option<PathBuf>,

    /// The relay's URL: its public URL (Envoy's single port), its HTTP listener
    /// (http://127.0.0.1:8080), or its gRPC listener (then give --token-url too).
    #[arg(long, env = "HOOKRELAY_SERVER", value_parser = parse_http_url)]
    pub server: url::Url,

    /// The OAuth2 token endpoint (any OAuth2 server works). Default: the one the
    /// server's /.well-known/oauth-authorization-server names.
    #[arg(long, env = "HOOKRELAY_TOKEN_URL", value_parser = parse_http_url)]
    pub token_url: Option<url::Url>,

    /// The OAuth2 client. Not needed after `hookrelay-agent login` (the stored
    /// login is used), nor with --subject-token-file or --github-actions-oidc.
    #[arg(
        long,
        env = "HOOKRELAY_CLIENT_ID",
        conflicts_with_all = ["subject_token_file", "github_actions_oidc"]
    )]
    pub client_id: Option<String>,

    /// The client secret: better in HOOKRELAY_CLIENT_SECRET or a file
    /// (--client-secret-file) than on the command line, where `ps` shows it.
    #[arg(
        long,
        env = "HOOKRELAY_CLIENT_SECRET",
        hide_env_values = true,
        requires = "client_id",
        conflicts_with = "client_secret_file"
    )]
    pub client_secret: Option<String>,

    /// A file holding the client secret (surrounding whitespace ignored), as
    /// Kubernetes mounts a Secret.
    #[arg(long, env = "HOOKRELAY_CLIENT_SECRET_FILE")]
    pub client_secret_file: Option<PathBuf>,

    /// Instead of a client secret: a file holding a JWT from an issuer the
    /// tenant trusts (POST /v1/trusted-issuers), such as a Kubernetes projected
    /// service account token. Re-read before every token exchange (RFC 8693),
    /// so the kubelet's rotations are picked up.
    #[arg(
        long,
        env = "HOOKRELAY_SUBJECT_TOKEN_FILE",
        conflicts_with = "github_actions_oidc"
    )]
    pub subject_token_file: Option<PathBuf>,

    /// Instead of a client secret: GitHub Actions' OIDC token for --oidc-audience
    /// (the job needs `permissions: id-token: write`), exchanged for an access
    /// token under the tenant's trusted issuer.
    #[arg(
        long,
        env = "HOOKRELAY_GITHUB_ACTIONS_OIDC",
        requires = "oidc_audience"
    )]
    pub github_actions_oidc: bool,

    /// The audience to ask GitHub Actions for: the trusted issuer's `audience`.
    #[arg(long, env = "HOOKRELAY_OIDC_AUDIENCE")]
    pub oidc_audience: Option<String>,

    /// A repository id to relay (repeatable, or comma-separated in the environment).
    /// None: all of the tenant's repositories.
    #[arg(
        long = "repository",
        env = "HOOKRELAY_REPOSITORIES",
        value_delimiter = ','
    )]
    pub repositories: Vec<String>,

    /// This agent's consumer name; its acks are kept under it, e.g. jenkins-eu.
    /// Default with a stored login: the device's name.
    #[arg(long, env = "HOOKRELAY_CONSUMER")]
    pub consumer: Option<String>,

    /// The local URL that receives each event, e.g. http://127.0.0.1:8080/github-webhook/.
    #[arg(long, env = "HOOKRELAY_TARGET", value_parser = parse_target_url)]
    pub target: url::Url,

    /// A PEM CA certificate to trust besides the system roots (server and token endpoint).
    #[arg(long, env = "HOOKRELAY_CA_FILE")]
    pub ca_file: Option<PathBuf>,

    /// Deliver only events of these types (glob patterns, repeatable or
    /// comma-separated), e.g. push,pull_request. Default: every type.
    #[arg(
        long = "event",
        visible_alias = "event-type",
        env = "HOOKRELAY_EVENTS",
        value_delimiter = ','
    )]
    pub event_types: Vec<String>,

    /// Deliver only events concerning these branches (glob patterns, e.g.
    /// main,release/*), or the tags below. Default: no branch or tag filter.
    #[arg(long = "branch", env = "HOOKRELAY_BRANCHES", value_delimiter = ',')]
    pub branches: Vec<String>,

    /// Deliver only events concerning these tags (glob patterns, e.g. v*), or
    /// the branches above.
    #[arg(long = "tag", env = "HOOKRELAY_TAGS", value_delimiter = ',')]
    pub tags: Vec<String>,

    /// HTTP/2 pings to the server this often; a server that does not answer
    /// within --keepalive-timeout (frozen, or a silently dropped connection)
    /// counts as lost and the agent reconnects.
    #[arg(long, env = "HOOKRELAY_KEEPALIVE_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub keepalive_interval: Duration,

    #[arg(long, env = "HOOKRELAY_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub keepalive_timeout: Duration,

    /// Deliveries in flight at once, over all repositories. Each repository's
    /// events are still delivered one at a time, in order.
    #[arg(long, env = "HOOKRELAY_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// Serve Prometheus metrics at /metrics, and /healthz and /readyz for
    /// Kubernetes probes, on this address (e.g. 0.0.0.0:9090). Off by default.
    #[arg(long, env = "HOOKRELAY_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// /readyz fails while the oldest event not yet delivered is older than this
    /// (or while no stream is connected).
    #[arg(long, env = "HOOKRELAY_READY_MAX_LAG", default_value = "60s", value_parser = humantime::parse_duration)]
    pub ready_max_lag: Duration,

    /// How often to log a summary line (delivered, retried, failed, pending, lag).
    #[arg(long, env = "HOOKRELAY_SUMMARY_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub summary_interval: Duration,

    /// Send each delivery's W3C `traceparent` to the target (replacing one the
    /// webhook carried), so the target's trace continues the webhook's.
    #[arg(long, env = "HOOKRELAY_SEND_TRACEPARENT")]
    pub send_traceparent: bool,

    /// `text`: short lines for a person; `json`: one object per line; `auto`:
    /// text on a terminal, JSON otherwise.
    #[arg(long, env = "HOOKRELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// Print warnings and errors only (-qq: errors only).
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "verbose")]
    pub quiet: u8,

    /// Print more: -v the agent's debug lines, -vv all debug lines, -vvv traces.
    /// RUST_LOG, when set, wins over -q and -v.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// How the agent proves who it is: its settings as `token::Credentials`.
pub(crate) fn credentials(args: &AgentArgs) -> anyhow::Result<token::Credentials> {
    if let Some(path) = &args.subject_token_file {
        return Ok(token::Credentials::Subject(token::SubjectToken::File(
            path.clone(),
        )));
    }
    if args.github_actions_oidc {
        let audience = args
            .oidc_audience
            .clone()
            .context("--github-actions-oidc needs --oidc-audience")?;
        return Ok(token::Credentials::Subject(
            token::SubjectToken::GitHubActions { audience },
        ));
    }
    let Some(id) = args.client_id.clone() else {
        if let Some((login, _)) = crate::login::Login::find(&args.server)? {
            return Ok(token::Credentials::Login(login));
        }
        anyhow::bail!(
            "no credentials for {server}: run `hookrelay-agent login --server {server}`, or give \
             --client-id with HOOKRELAY_CLIENT_SECRET or --client-secret-file, or \
             --subject-token-file or --github-actions-oidc",
            server = args.server.as_str().trim_end_matches('/')
        );
    };
    Ok(token::Credentials::Client {
        id,
        secret: client_secret(args)?,
    })
}

/// The consumer name: given, or the stored login's device name.
pub(crate) fn consumer(args: &AgentArgs) -> anyhow::Result<String> {
    if let Some(consumer) = &args.consumer {
        return Ok(consumer.clone());
    }
    if args.client_id.is_none()
        && let Some((_, stored)) = crate::login::Login::find(&args.server)?
    {
        return Ok(crate::login::consumer_name(&stored.device_name));
    }
    anyhow::bail!("give --consumer (HOOKRELAY_CONSUMER): the name this agent's acks are kept under")
}

/// The client secret, from the flag or environment, or read from its file.
fn client_secret(args: &AgentArgs) -> anyhow::Result<SecretString> {
    match (&args.client_secret, &args.client_secret_file) {
        (Some(secret), _) => Ok(SecretString::from(secret.clone())),
        (None, Some(path)) => {
            let secret = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read --client-secret-file {}", path.display()))?;
            let secret = secret.trim();
            anyhow::ensure!(
                !secret.is_empty(),
                "--client-secret-file {} is empty",
                path.display()
            );
            Ok(SecretString::from(secret.to_owned()))
        }
        (None, None) => anyhow::bail!(
            "--client-id needs its secret: set HOOKRELAY_CLIENT_SECRET, or give --client-secret-file"
        ),
    }
}

/// An http or https URL with a host: `localhost:9000` (a URL whose scheme
/// is "localhost") is refused at start, naming the flag, instead of failing
/// every delivery later. Each flag's message shows an example of its own kind.
fn http_url(value: &str, example: &str) -> Result<url::Url, String> {
    let value = value.trim();
    // `127.0.0.1:8080` and `localhost:8080` parse as a scheme and a path, or not
    // at all: say what is missing in words.
    let scheme = value.split_once("://").map(|(scheme, _)| scheme);
    if scheme.is_none() {
        return Err(format!(
            "`{value}` has no http:// or https://; did you mean http://{value}? (a URL such as {example})"
        ));
    }
    let url = url::Url::parse(value)
        .map_err(|e| format!("`{value}` is not a URL ({e}); use a URL such as {example}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(format!(
            "`{value}` is not an http:// or https:// URL; use a URL such as {example}"
        ));
    }
    Ok(url)
}

/// `--server`: the relay.
pub(crate) fn parse_http_url(value: &str) -> Result<url::Url, String> {
    http_url(value, "http://127.0.0.1:8080 or https://relay.example.com")
}

/// `--target`: the local endpoint events go to.
fn parse_target_url(value: &str) -> Result<url::Url, String> {
    http_url(value, "http://127.0.0.1:9000/hook")
}

//! `hookrelay-agent login`, `logout` and `status`: a person approves this
//! device in the console (RFC 8628, through the oauth2 crate's device flow),
//! and the agent keeps the login, a client id and a refresh token, in
//! `$XDG_CONFIG_HOME/hookrelay/credentials.toml` (default
//! `~/.config/hookrelay/credentials.toml`; mode 0600 in a 0700 directory), one
//! entry per server. Running with no secret then renews access tokens with the
//! refresh token, which rotates on every use: the file is rewritten each time,
//! under a lock, so agents sharing one login never present a spent token (which
//! the server takes for theft and answers by revoking the login).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use hookrelay_telemetry::error_chain;
use oauth2::basic::BasicClient;
use oauth2::{
    ClientId, DeviceAuthorizationUrl, Scope, StandardDeviceAuthorizationResponse, TokenResponse,
    TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::token::TokenError;

/// The public client the server's device grant is for.
pub const AGENT_CLIENT_ID: &str = "hookrelay-agent";

#[derive(Debug, Clone, Args)]
pub struct LoginArgs {
    /// The relay's URL (its public URL).
    #[arg(long, env = "HOOKRELAY_SERVER", value_parser = crate::args::parse_http_url)]
    pub server: url::Url,
    /// The name the approver sees, and the agent's consumer name by default.
    /// Default: this machine's host name.
    #[arg(long)]
    pub name: Option<String>,
    /// The scopes to ask for (space-separated).
    #[arg(long, default_value = "events:read")]
    pub scope: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServerArg {
    /// The relay's URL. Default: the only server logged in to.
    #[arg(long, env = "HOOKRELAY_SERVER", value_parser = crate::args::parse_http_url)]
    pub server: Option<url::Url>,
}

/// One server's login, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub client_id: String,
    pub refresh_token: String,
    pub device_name: String,
    pub scope: String,
    pub token_endpoint: String,
    pub revocation_endpoint: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File_ {
    #[serde(default)]
    servers: BTreeMap<String, Stored>,
}

/// The key of a server in the file: its URL without a trailing slash.
fn key(server: &url::Url) -> String {
    server.as_str().trim_end_matches('/').to_owned()
}

/// `$XDG_CONFIG_HOME/hookrelay/credentials.toml`, or under `~/.config`.
pub fn credentials_path() -> anyhow::Result<PathBuf> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").context("neither XDG_CONFIG_HOME nor HOME is set")?,
        )
        .join(".config"),
    };
    Ok(base.join("hookrelay").join("credentials.toml"))
}

/// The credentials file, locked for as long as this lives.
struct Locked {
    path: PathBuf,
    _lock: File,
    file: File_,
}

impl Locked {
    fn open(path: &Path) -> anyhow::Result<Locked> {
        let dir = path
            .parent()
            .context("the credentials file has a directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot make {} private", dir.display()))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path.with_extension("lock"))
            .with_context(|| format!("cannot open {}.lock", path.display()))?;
        lock.lock().context("cannot lock the credentials file")?;
        let file = match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .with_context(|| format!("{} is not a credentials file", path.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => File_::default(),
            Err(error) => {
                return Err(error).with_context(|| format!("cannot read {}", path.display()));
            }
        };
        Ok(Locked {
            path: path.to_owned(),
            _lock: lock,
            file,
        })
    }

    /// Writes the file anew (mode 0600), replacing the old one at once.
    fn save(&self) -> anyhow::Result<()> {
        let text = toml::to_string(&self.file)?;
        let temporary = self.path.with_extension("tmp");
        let mut out = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&temporary)
            .with_context(|| format!("cannot write {}", temporary.display()))?;
        out.write_all(
            b"# hookrelay-agent logins (hookrelay-agent login / logout). Secret: keep it 0600.\n",
        )?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&temporary, &self.path)
            .with_context(|| format!("cannot replace {}", self.path.display()))?;
        Ok(())
    }
}

/// The stored login for `server`, if any.
pub fn stored(server: &url::Url) -> anyhow::Result<Option<Stored>> {
    let path = credentials_path()?;
    if !path.exists() {
        return Ok(None);
    }
    Ok(Locked::open(&path)?.file.servers.get(&key(server)).cloned())
}

#[derive(Deserialize)]
struct Metadata {
    token_endpoint: String,
    device_authorization_endpoint: Option<String>,
    revocation_endpoint: Option<String>,
}

async fn metadata(http: &oauth2::reqwest::Client, server: &url::Url) -> anyhow::Result<Metadata> {
    let url = server.join("/.well-known/oauth-authorization-server")?;
    let response = http.get(url.clone()).send().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach {server}: {}",
            hookrelay_telemetry::connection_failure(&e)
        )
    })?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "{url} answered {status}: is {server} a hookrelay server?"
    );
    response
        .json()
        .await
        .with_context(|| format!("{url} is not OAuth2 server metadata"))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "hookrelay-agent".into())
}

/// A consumer name from a device name: letters, digits, `.`, `_` and `-`.
pub fn consumer_name(device_name: &str) -> String {
    let name: String = device_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let name = name.trim_matches('-');
    if name.is_empty() {
        "hookrelay-agent".into()
    } else {
        name.chars().take(100).collect()
    }
}

/// `hookrelay-agent login`: prints the code, waits for a person, stores the login.
pub async fn login(args: LoginArgs, http: oauth2::reqwest::Client) -> anyhow::Result<()> {
    let metadata = metadata(&http, &args.server).await?;
    let device_endpoint = metadata
        .device_authorization_endpoint
        .clone()
        .with_context(|| {
            format!(
                "{} offers no device login (an older hookrelay?): use a client id and secret",
                args.server
            )
        })?;
    let name = args.name.clone().unwrap_or_else(host_name);
    let client = BasicClient::new(ClientId::new(AGENT_CLIENT_ID.into()))
        .set_device_authorization_url(DeviceAuthorizationUrl::new(device_endpoint)?)
        .set_token_uri(TokenUrl::new(metadata.token_endpoint.clone())?);
    let mut request = client
        .exchange_device_code()
        .add_extra_param("device_name", name.clone());
    for scope in args.scope.split_whitespace() {
        request = request.add_scope(Scope::new(scope.into()));
    }
    let details: StandardDeviceAuthorizationResponse = request
        .request_async(&http)
        .await
        .map_err(|e| anyhow::anyhow!("the server refused the login: {}", describe(&e)))?;
    let code = details.user_code().secret();
    println!("To approve this device (\"{name}\"), open");
    println!();
    println!("    {}", details.verification_uri().as_str());
    println!();
    println!("and enter the code {code}, or open");
    println!(
        "    {}",
        details
            .verification_uri_complete()
            .map_or(details.verification_uri().to_string(), |u| u
                .secret()
                .clone())
    );
    println!();
    println!(
        "Waiting for approval (the code expires in {} min)…",
        details.expires_in().as_secs() / 60
    );
    let _ = std::io::stdout().flush();
    let token = client
        .exchange_device_access_token(&details)
        .request_async(&http, tokio::time::sleep, Some(details.expires_in()))
        .await
        .map_err(|e| match describe(&e).as_str() {
            d if d.starts_with("access_denied") => {
                anyhow::anyhow!("the login was denied in the console")
            }
            d if d.starts_with("expired_token") => {
                anyhow::anyhow!(
                    "the code expired before it was approved: run `hookrelay-agent login` again"
                )
            }
            d => anyhow::anyhow!("the login failed: {d}"),
        })?;
    let refresh_token = token
        .refresh_token()
        .context("the server issued no refresh token")?
        .secret()
        .clone();
    let claims = claims(token.access_token().secret());
    let scope = token
        .scopes()
        .map(|s| s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| args.scope.clone());
    let path = credentials_path()?;
    let mut locked = Locked::open(&path)?;
    locked.file.servers.insert(
        key(&args.server),
        Stored {
            client_id: claims.sub.clone(),
            refresh_token,
            device_name: name.clone(),
            scope: scope.clone(),
            token_endpoint: metadata.token_endpoint,
            revocation_endpoint: metadata.revocation_endpoint,
        },
    );
    locked.save()?;
    println!(
        "Logged in to {} as \"{name}\" (client {}, tenant {}, scopes {scope}); saved in {}.",
        key(&args.server),
        claims.sub,
        claims.tenant_id,
        path.display()
    );
    println!(
        "Run: hookrelay-agent --server {} --target http://127.0.0.1:3000/hook",
        key(&args.server)
    );
    Ok(())
}

/// The server the command is about: given, or the only one logged in to.
fn which_server(locked: &Locked, server: Option<&url::Url>) -> anyhow::Result<String> {
    match server {
        Some(server) => Ok(key(server)),
        None => match locked.file.servers.keys().collect::<Vec<_>>().as_slice() {
            [] => bail!("not logged in to any server: run `hookrelay-agent login --server URL`"),
            [only] => Ok((*only).clone()),
            several => bail!(
                "logged in to {} servers ({}): say which with --server",
                several.len(),
                several
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    }
}

/// `hookrelay-agent logout`: revokes the login at the server and forgets it.
pub async fn logout(args: ServerArg, http: oauth2::reqwest::Client) -> anyhow::Result<()> {
    let path = credentials_path()?;
    let mut locked = Locked::open(&path)?;
    let server = which_server(&locked, args.server.as_ref())?;
    let Some(stored) = locked.file.servers.get(&server).cloned() else {
        bail!("not logged in to {server}");
    };
    let revoked = match &stored.revocation_endpoint {
        Some(endpoint) => http
            .post(endpoint)
            .form(&[
                ("token", stored.refresh_token.as_str()),
                ("token_type_hint", "refresh_token"),
                ("client_id", AGENT_CLIENT_ID),
            ])
            .send()
            .await
            .map_err(|e| error_chain(&e))
            .and_then(|r| {
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("it answered {}", r.status()))
                }
            }),
        None => Err("it names no revocation endpoint".into()),
    };
    locked.file.servers.remove(&server);
    locked.save()?;
    match revoked {
        Ok(()) => println!(
            "Logged out of {server}: the login is revoked and removed from {}.",
            path.display()
        ),
        Err(why) => println!(
            "Removed the login for {server} from {}, but the server did not revoke it ({why}): \
             delete the client \"{}\" in the console.",
            path.display(),
            stored.device_name
        ),
    }
    Ok(())
}

/// `hookrelay-agent status`: who this device is, and whether the server agrees.
pub async fn status(args: ServerArg, http: oauth2::reqwest::Client) -> anyhow::Result<()> {
    let path = credentials_path()?;
    let server = which_server(&Locked::open(&path)?, args.server.as_ref())?;
    let login = Login {
        path: path.clone(),
        server: server.clone(),
    };
    let stored = login.read()?;
    println!("Server:   {server}");
    println!(
        "Device:   {} (client {})",
        stored.device_name, stored.client_id
    );
    println!("Scopes:   {}", stored.scope);
    println!("Saved in: {}", path.display());
    match login.access_token(&http).await {
        Ok((token, _)) => {
            let claims = claims(token.expose_secret());
            println!("Tenant:   {}", claims.tenant_id);
            println!("The server accepts this login.");
            Ok(())
        }
        Err(error) => bail!("{error}"),
    }
}

#[derive(Deserialize, Default)]
struct Claims {
    #[serde(default)]
    sub: String,
    #[serde(default)]
    tenant_id: String,
}

/// An access token's claims, read for display (the server verifies tokens,
/// not the agent).
fn claims(token: &str) -> Claims {
    use base64::Engine;
    token
        .split('.')
        .nth(1)
        .and_then(|payload| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .ok()
        })
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or_default()
}

fn describe<E: std::error::Error>(error: &E) -> String {
    error_chain(error)
}

/// A stored login the agent runs with.
#[derive(Debug, Clone)]
pub struct Login {
    pub path: PathBuf,
    pub server: String,
}

impl Login {
    /// The login for `server`, if one is stored.
    pub fn find(server: &url::Url) -> anyhow::Result<Option<(Login, Stored)>> {
        Ok(stored(server)?.map(|stored| {
            (
                Login {
                    path: credentials_path().expect("found above"),
                    server: key(server),
                },
                stored,
            )
        }))
    }

    fn read(&self) -> anyhow::Result<Stored> {
        Locked::open(&self.path)?
            .file
            .servers
            .get(&self.server)
            .cloned()
            .with_context(|| {
                format!(
                    "not logged in to {}: run `hookrelay-agent login --server {}`",
                    self.server, self.server
                )
            })
    }

    fn again(&self) -> String {
        format!("run `hookrelay-agent login --server {}` again", self.server)
    }

    /// A new access token, by the refresh token grant; the rotated refresh
    /// token replaces the old one in the file before anything else happens.
    pub async fn access_token(
        &self,
        http: &oauth2::reqwest::Client,
    ) -> Result<(SecretString, Option<Duration>), TokenError> {
        let path = self.path.clone();
        let mut locked = tokio::task::spawn_blocking(move || Locked::open(&path))
            .await
            .map_err(|e| TokenError::Refused(e.to_string()))?
            .map_err(|e| TokenError::Refused(format!("{e:#}")))?;
        let Some(stored) = locked.file.servers.get(&self.server).cloned() else {
            return Err(TokenError::Refused(format!(
                "the login for {} was removed: {}",
                self.server,
                self.again()
            )));
        };
        let response = http
            .post(&stored.token_endpoint)
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", stored.refresh_token.as_str()),
                ("client_id", AGENT_CLIENT_ID),
            ])
            .send()
            .await
            .map_err(|e| {
                TokenError::Unavailable(format!(
                    "cannot reach the token endpoint {}: {}",
                    stored.token_endpoint,
                    error_chain(&e)
                ))
            })?;
        let status = response.status();
        #[derive(Deserialize)]
        struct Answer {
            access_token: Option<String>,
            refresh_token: Option<String>,
            expires_in: Option<u64>,
            error: Option<String>,
        }
        let answer: Answer = response.json().await.map_err(|_| {
            TokenError::Unavailable(format!(
                "the token endpoint {} answered {status} without an OAuth2 response",
                stored.token_endpoint
            ))
        })?;
        match (answer.access_token, answer.refresh_token) {
            (Some(access), Some(refresh)) if status.is_success() => {
                locked.file.servers.insert(
                    self.server.clone(),
                    Stored {
                        refresh_token: refresh,
                        ..stored
                    },
                );
                locked.save().map_err(|e| {
                    TokenError::Refused(format!("cannot save the renewed login: {e:#}"))
                })?;
                Ok((
                    SecretString::from(access),
                    answer.expires_in.map(Duration::from_secs),
                ))
            }
            _ => match answer.error.as_deref() {
                Some("invalid_grant") => Err(TokenError::Refused(format!(
                    "the login for {} is revoked or expired: {}",
                    self.server,
                    self.again()
                ))),
                Some("unauthorized_client") => Err(TokenError::Refused(format!(
                    "the tenant of this login is suspended ({})",
                    self.server
                ))),
                other => Err(TokenError::Unavailable(format!(
                    "the token endpoint {} answered {status} {}",
                    stored.token_endpoint,
                    other.unwrap_or("")
                ))),
            },
        }
    }
}

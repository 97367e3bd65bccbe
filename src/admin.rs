//! The operator's commands: `hookrelay keys list|rotate`, `hookrelay tenants
//! list|show|suspend|resume|delete` and `hookrelay secrets rekey`. They run against the
//! database a deployment uses (DATABASE_URL and the key-encryption key, as
//! `serve` takes them), next to running servers, which follow within seconds.

use std::fmt::Write as _;

use anyhow::Context;
use time::OffsetDateTime;

use crate::auth::keys;
use crate::config::{
    AdminArgs, KeysCommand, SecretsCommand, SetQuotaArgs, ShowTenantArgs, TenantArgs,
    TenantsCommand,
};
use crate::database::Database;
use crate::domain::{QuotaOverrides, Quotas, TenantId};
use crate::secrets::SecretKey;
use crate::store;

/// The database, migrated, and the key-encryption key that opens its secrets.
async fn open(admin: AdminArgs) -> anyhow::Result<(Database, SecretKey)> {
    let database_config = admin.database.into_config()?;
    let previous = admin.secret.previous_source()?;
    let source = admin.secret.into_source()?;
    let database = Database::open(&database_config).await?;
    store::check_migrated(&database.pool).await?;
    let mut secret_key = crate::startup::open_secret_key(&source, &database_config)?;
    if let Some(previous) = previous {
        secret_key = secret_key.with_previous(crate::startup::open_secret_key(
            &previous,
            &database_config,
        )?);
    }
    store::check_secret_key(&database.pool, &secret_key)
        .await
        .context("the key-encryption key does not open this database's secrets")?;
    Ok((database, secret_key))
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::List(admin) => {
            let (database, _) = open(admin).await?;
            let listed = store::signing_key::list(&database.pool).await;
            database.close().await;
            print!("{}", key_table(&listed?, OffsetDateTime::now_utc()));
        }
        KeysCommand::Rotate(args) => {
            let (database, secret_key) = open(args.admin).await?;
            let new = keys::generate()?;
            // A token signed just before the switch lives one lifetime more.
            let retire_delay = args.token_ttl + args.clock_skew;
            let rotated = store::signing_key::rotate(
                &database.pool,
                &secret_key,
                &new,
                args.publish_delay,
                retire_delay,
            )
            .await;
            database.close().await;
            let (signs_from, retiring) = rotated?;
            println!(
                "added signing key {} ({}): published now, signs from {}",
                new.kid,
                new.algorithm,
                rfc3339(signs_from)
            );
            for (kid, at) in retiring {
                println!(
                    "  {kid} keeps verifying until {}, then retires",
                    rfc3339(at)
                );
            }
            println!(
                "running servers pick this up within {} s; no restart is needed",
                crate::jobs::KEY_RELOAD_INTERVAL.as_secs()
            );
        }
    }
    Ok(())
}

/// `hookrelay keys list`: one line per key, newest first.
fn key_table(keys: &[store::signing_key::KeyInfo], now: OffsetDateTime) -> String {
    let mut table = format!(
        "{:<45} {:<6} {:<10} {:<22} {}\n",
        "KID", "ALG", "STATE", "CREATED", "UNTIL"
    );
    let mut signing_found = false;
    for key in keys {
        let retired = key.retired_at.is_some() || key.retire_after.is_some_and(|at| at <= now);
        let state = if retired {
            "retired"
        } else if key.signs_from.is_some_and(|at| at > now) {
            "published"
        } else if !signing_found {
            signing_found = true;
            "signing"
        } else {
            "verifying"
        };
        let until = match (state, key.signs_from, key.retire_after) {
            ("published", Some(at), _) => format!("signs from {}", rfc3339(at)),
            ("retired", _, _) => String::new(),
            (_, _, Some(at)) => format!("retires at {}", rfc3339(at)),
            _ => String::new(),
        };
        let _ = writeln!(
            table,
            "{:<45} {:<6} {:<10} {:<22} {}",
            key.kid,
            key.algorithm,
            state,
            rfc3339(key.created_at),
            until
        );
    }
    table
}

fn tenant_id(args: &TenantArgs) -> anyhow::Result<TenantId> {
    TenantId::parse(&args.tenant_id)
        .with_context(|| format!("`{}` is not a tenant id (a UUID)", args.tenant_id))
}

pub async fn tenants(command: TenantsCommand) -> anyhow::Result<()> {
    let (admin, id) = match &command {
        TenantsCommand::List(admin) => (admin.clone(), None),
        TenantsCommand::Show(ShowTenantArgs { tenant: args, .. })
        | TenantsCommand::SetQuota(SetQuotaArgs { tenant: args, .. })
        | TenantsCommand::Suspend(args)
        | TenantsCommand::Resume(args) => (args.admin.clone(), Some(tenant_id(args)?)),
        TenantsCommand::Delete(args) => {
            anyhow::ensure!(
                args.yes,
                "deleting a tenant deletes its clients, repositories and events: add --yes"
            );
            (args.tenant.admin.clone(), Some(tenant_id(&args.tenant)?))
        }
    };
    let (database, _) = open(admin).await?;
    let pool = &database.pool;
    let result = async {
        let missing = || {
            anyhow::anyhow!(
                "no tenant {}",
                id.map(|i| i.to_string()).unwrap_or_default()
            )
        };
        match (&command, id) {
            (TenantsCommand::List(_), _) => {
                print!("{}", tenant_table(&store::tenant::list(pool).await?));
            }
            (TenantsCommand::Show(args), Some(id)) => {
                let tenant = store::tenant::get(pool, id).await?.ok_or_else(missing)?;
                print!("{}", tenant_table(&[tenant]));
                let overrides = store::quota::overrides(pool, id).await?;
                print!("\n{}", quota_table(&overrides, &args.quotas.quotas()));
            }
            (TenantsCommand::SetQuota(args), Some(id)) => {
                let current = store::quota::overrides(pool, id).await?;
                let changed = args.apply(&current);
                anyhow::ensure!(
                    store::quota::set_overrides(pool, id, &changed).await?,
                    missing()
                );
                tracing::warn!(tenant_id = %id, "tenant quotas set by the operator");
                println!("set the quotas of {id}");
            }
            (TenantsCommand::Suspend(_), Some(id)) => {
                anyhow::ensure!(
                    store::tenant::set_suspended(pool, id, true).await?,
                    missing()
                );
                tracing::warn!(tenant_id = %id, "tenant suspended by the operator");
                println!(
                    "suspended {id}: its tokens and token requests are refused now, its streams \
                     close within seconds, and its webhooks get 403 within 30 s"
                );
            }
            (TenantsCommand::Resume(_), Some(id)) => {
                anyhow::ensure!(
                    store::tenant::set_suspended(pool, id, false).await?,
                    missing()
                );
                println!("resumed {id}");
            }
            (TenantsCommand::Delete(_), Some(id)) => {
                anyhow::ensure!(store::tenant::delete(pool, id).await?, missing());
                tracing::warn!(tenant_id = %id, "tenant deleted by the operator");
                println!("deleted {id} with its clients, repositories, events and consumers");
            }
            _ => unreachable!("every command but list names a tenant"),
        }
        Ok(())
    }
    .await;
    database.close().await;
    result
}

/// Each quota with its limit, marked when set for this tenant.
fn quota_table(overrides: &QuotaOverrides, defaults: &Quotas) -> String {
    let quotas = overrides.over(defaults);
    let rows = [
        ("repositories", quotas.repositories, overrides.repositories),
        ("clients", quotas.clients, overrides.clients),
        (
            "trusted_issuers",
            quotas.trusted_issuers,
            overrides.trusted_issuers,
        ),
        ("consumers", quotas.consumers, overrides.consumers),
        ("open_streams", quotas.open_streams, overrides.open_streams),
        ("open_watches", quotas.open_watches, overrides.open_watches),
        (
            "webhooks_per_second",
            quotas.webhooks_per_second,
            overrides.webhooks_per_second,
        ),
        (
            "webhook_burst",
            quotas.webhook_burst,
            overrides.webhook_burst,
        ),
        (
            "stored_event_bytes",
            quotas.stored_event_bytes,
            overrides.stored_event_bytes,
        ),
    ];
    let mut table = format!("{:<20} {:>12}  {}\n", "QUOTA", "LIMIT", "SET");
    for (name, limit, set) in rows {
        let origin = if set.is_some() {
            "for this tenant"
        } else {
            "default"
        };
        let _ = writeln!(table, "{name:<20} {limit:>12}  {origin}");
    }
    table
}

fn tenant_table(tenants: &[store::tenant::TenantSummary]) -> String {
    let mut table = format!(
        "{:<36}  {:<24} {:<10} {:>7} {:>12} {:>9}  {}\n",
        "TENANT", "NAME", "STATE", "CLIENTS", "REPOSITORIES", "EVENTS", "CREATED"
    );
    for tenant in tenants {
        let name: String = tenant.name.chars().take(24).collect();
        let _ = writeln!(
            table,
            "{:<36}  {:<24} {:<10} {:>7} {:>12} {:>9}  {}",
            tenant.tenant_id,
            name,
            if tenant.suspended_at.is_some() {
                "suspended"
            } else {
                "active"
            },
            tenant.clients,
            tenant.repositories,
            tenant.events,
            rfc3339(tenant.created_at)
        );
    }
    table
}

pub async fn secrets(command: SecretsCommand) -> anyhow::Result<()> {
    let SecretsCommand::Rekey(admin) = command;
    let (database, secret_key) = open(admin).await?;
    anyhow::ensure!(
        secret_key.has_previous(),
        "set HOOKRELAY_PREVIOUS_SECRET_KEY to the key being replaced (and HOOKRELAY_SECRET_KEY to the new one)"
    );
    let result = store::rekey::rekey(&database.pool, &secret_key).await;
    database.close().await;
    let done = result?;
    println!(
        "re-sealed under the new key: {} key check, {} webhook secrets, {} signing keys, {} event headers, {} provider credentials",
        done.key_check,
        done.webhook_secrets,
        done.signing_keys,
        done.event_headers,
        done.provider_credentials
    );
    println!(
        "every secret now opens with HOOKRELAY_SECRET_KEY alone: remove HOOKRELAY_PREVIOUS_SECRET_KEY from the servers"
    );
    Ok(())
}

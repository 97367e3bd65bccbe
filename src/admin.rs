//! The operator's commands: `hookrelay keys list|rotate`. They run against the
//! database a deployment uses (DATABASE_URL and the key-encryption key, as
//! `serve` takes them), next to running servers, which follow within seconds.

use std::fmt::Write as _;

use anyhow::Context;
use time::OffsetDateTime;

use crate::auth::keys;
use crate::config::{AdminArgs, KeysCommand};
use crate::database::Database;
use crate::secrets::SecretKey;
use crate::store;

/// The database, migrated, and the key-encryption key that opens its secrets.
async fn open(admin: AdminArgs) -> anyhow::Result<(Database, SecretKey)> {
    let database_config = admin.database.into_config()?;
    let source = admin.secret.into_source()?;
    let database = Database::open(&database_config).await?;
    store::check_migrated(&database.pool).await?;
    let secret_key = crate::startup::open_secret_key(&source, &database_config)?;
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
                crate::startup::KEY_RELOAD_INTERVAL.as_secs()
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

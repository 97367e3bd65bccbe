//! Releases side by side on one database: which releases migrated it, and
//! whether this one may serve it.
//!
//! The rule (README, "Upgrades"): release N's migrations are expand-only with
//! respect to N-1, so N-1 keeps reading and writing on a database N migrated.
//! Each release records itself with the oldest release that can serve what it
//! left (`SERVES_FROM`). A binary then
//! - starts on a database migrated by a newer release when that release says
//!   this one can serve it (the rollback case: migrations it does not know,
//!   which the rule guarantees it can live with);
//! - refuses, in one line naming both releases, a database migrated beyond
//!   that;
//! - never undoes a migration: `hookrelay migrate` on a newer database applies
//!   nothing and says so.

use std::collections::HashSet;

use anyhow::Context;
use sqlx::PgPool;

use super::MIGRATOR;

/// This release.
pub const VERSION: &str = hookrelay_telemetry::VERSION;
/// The oldest release that can serve a database this release migrated: the
/// release before it, by the expand-only rule.
pub const SERVES_FROM: &str = "0.1.0"; // tests/upgrade/PREVIOUS

/// What a database says about the releases that migrated it.
#[derive(Debug, Default)]
pub struct Migrated {
    /// No migration was ever applied (no `_sqlx_migrations` table).
    pub fresh: bool,
    /// This release's migrations not applied yet.
    pub pending: usize,
    /// Applied migrations this binary does not know: a newer release's.
    pub unknown: usize,
    /// The newest release recorded, and the oldest release any recorded one
    /// lets serve.
    pub newest: Option<semver::Version>,
    pub required: Option<semver::Version>,
}

fn parse(version: &str) -> anyhow::Result<semver::Version> {
    semver::Version::parse(version).with_context(|| format!("release version `{version}`"))
}

/// Reads the applied migrations and the recorded releases (a fresh database
/// has neither).
pub async fn migrated(pool: &PgPool) -> anyhow::Result<Migrated> {
    let undefined = |e: &sqlx::Error| matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01"));
    let applied: Option<Vec<i64>> =
        match sqlx::query_scalar("select version from _sqlx_migrations where success")
            .fetch_all(pool)
            .await
        {
            Ok(applied) => Some(applied),
            Err(e) if undefined(&e) => None,
            Err(e) => return Err(e).context("cannot read the applied migrations"),
        };
    let fresh = applied.is_none();
    let applied = applied.unwrap_or_default();
    let known: HashSet<i64> = MIGRATOR.iter().map(|m| m.version).collect();
    let releases: Vec<(String, String)> =
        match sqlx::query_as("select version, serves_from from hookrelay_release")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            Err(e) if undefined(&e) => Vec::new(),
            Err(e) => return Err(e).context("cannot read the releases that migrated the database"),
        };
    let mut migrated = Migrated {
        fresh,
        pending: MIGRATOR
            .iter()
            .filter(|m| !applied.contains(&m.version))
            .count(),
        unknown: applied.iter().filter(|v| !known.contains(v)).count(),
        ..Migrated::default()
    };
    for (version, serves_from) in releases {
        let (version, serves_from) = (parse(&version)?, parse(&serves_from)?);
        migrated.newest = migrated.newest.max(Some(version));
        migrated.required = migrated.required.max(Some(serves_from));
    }
    Ok(migrated)
}

/// Whether this release may serve (and migrate) the database; the error is
/// one line naming both releases.
pub fn check(migrated: &Migrated) -> anyhow::Result<()> {
    let this = parse(VERSION)?;
    let newest = migrated.newest.as_ref().map_or_else(
        || "a newer release".to_owned(),
        |v| format!("hookrelay {v}"),
    );
    if let Some(required) = &migrated.required
        && this < *required
    {
        anyhow::bail!(
            "this is hookrelay {this}, and the database was migrated by {newest}, which \
             releases before {required} cannot serve: run hookrelay {required} or later"
        );
    }
    if migrated.unknown > 0 && migrated.newest.is_none() {
        anyhow::bail!(
            "the database has {} migration(s) this release (hookrelay {this}) does not know, \
             and no record of the release that applied them: run that release",
            migrated.unknown
        );
    }
    Ok(())
}

/// Records that this release migrated the database.
pub async fn record(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query(
        "insert into hookrelay_release (version, serves_from) values ($1, $2) \
         on conflict (version) do update set serves_from = excluded.serves_from, \
             migrated_at = now()",
    )
    .bind(VERSION)
    .bind(SERVES_FROM)
    .execute(pool)
    .await
    .context("cannot record this release in the database")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn migrated(unknown: usize, newest: Option<&str>, required: Option<&str>) -> Migrated {
        Migrated {
            fresh: false,
            pending: 0,
            unknown,
            newest: newest.map(|v| semver::Version::parse(v).unwrap()),
            required: required.map(|v| semver::Version::parse(v).unwrap()),
        }
    }

    #[test]
    fn a_release_serves_what_the_next_one_migrated_and_nothing_beyond() {
        // A fresh database, or one this release migrated.
        assert!(check(&migrated(0, None, None)).is_ok());
        assert!(check(&migrated(0, Some(VERSION), Some(SERVES_FROM))).is_ok());
        // The next release: its migrations are unknown here, and it says this
        // release can serve them.
        assert!(check(&migrated(2, Some("99.0.0"), Some(VERSION))).is_ok());
        // A release that says only 99.x can serve its schema.
        let error = check(&migrated(2, Some("99.1.0"), Some("99.0.0")))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("this is hookrelay {VERSION}"))
                && error.contains("hookrelay 99.1.0")
                && error.contains("run hookrelay 99.0.0 or later"),
            "{error}"
        );
        // Unknown migrations with no record of who applied them.
        assert!(check(&migrated(1, None, None)).is_err());
    }

    #[test]
    fn a_pre_release_is_older_than_its_release() {
        let dev = semver::Version::parse("0.2.0-dev").unwrap();
        assert!(dev < semver::Version::parse("0.2.0").unwrap());
        assert!(dev > semver::Version::parse("0.1.0").unwrap());
    }
}

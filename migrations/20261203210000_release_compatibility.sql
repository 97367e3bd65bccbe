-- Which releases have migrated this database, and, for each, the oldest release
-- that can still serve the schema it left: under the expand-only rule, release N
-- migrates so that N-1 keeps working (README, "Upgrades"). A release refuses to
-- start on a database one of whose migrators says it is too old, and starts on
-- migrations it does not know when none does.
create table hookrelay_release (
    version text primary key,
    serves_from text not null,
    migrated_at timestamptz not null default now()
);

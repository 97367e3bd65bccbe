-- Per-tenant overrides of the quota defaults (HOOKRELAY_QUOTA_*), set by the
-- operator with `hookrelay tenants set-quota`; null: the default. A new table
-- only: releases that do not know it keep working beside this one.
create table tenant_quota (
    tenant_id uuid primary key references tenant (tenant_id) on delete cascade,
    repositories bigint check (repositories >= 0),
    clients bigint check (clients >= 0),
    trusted_issuers bigint check (trusted_issuers >= 0),
    consumers bigint check (consumers >= 0),
    open_streams bigint check (open_streams >= 0),
    open_watches bigint check (open_watches >= 0),
    webhooks_per_second bigint check (webhooks_per_second >= 1),
    webhook_burst bigint check (webhook_burst >= 1),
    stored_event_bytes bigint check (stored_event_bytes >= 0),
    updated_at timestamptz not null default now()
);

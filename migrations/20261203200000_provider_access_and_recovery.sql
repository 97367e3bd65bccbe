-- Recovering missed deliveries from the provider's own delivery log (GitHub's
-- "Recent Deliveries", GitLab's webhook events). New tables only: a release
-- that predates them keeps working on a database that has them.

-- A repository's access to its provider's API. The credentials (a token, or a
-- GitHub App's key) are sealed under the key-encryption key, bound to the
-- repository. The lease makes one replica at a time read a repository's log.
create table provider_access (
    repository_id uuid primary key references repository (repository_id) on delete cascade,
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    kind text not null,
    api_url text not null,
    hook_id bigint not null,
    credentials bytea not null,
    checked_at timestamptz not null,
    lease_holder uuid,
    lease_until timestamptz
);
create index provider_access_tenant_id_idx on provider_access (tenant_id);

-- One read of a repository's delivery log, with what it found.
create table recovery_run (
    recovery_id uuid primary key,
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    repository_id uuid not null references repository (repository_id) on delete cascade,
    trigger text not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    window_start timestamptz not null,
    scanned integer not null default 0,
    missing integer not null default 0,
    -- Deliveries hookrelay refused with a 4xx other than 429: not redelivered.
    refused jsonb not null default '[]',
    api_calls integer not null default 0,
    error text
);
create index recovery_run_repository_started_idx on recovery_run (repository_id, started_at desc);

-- Every redelivery asked of the provider, once per entry of its log: two
-- replicas, or a run resumed after a crash, never ask for the same one twice.
-- A run claims the entry first (claimed_at), asks, then records the provider's
-- yes (requested_at); a claim never confirmed is taken over after the lease.
create table recovery_redelivery (
    repository_id uuid not null references repository (repository_id) on delete cascade,
    -- The provider's id of the log entry (GitHub's delivery id, GitLab's hook event id).
    log_id text not null,
    -- The id hookrelay stores the event under (X-GitHub-Delivery, Idempotency-Key).
    delivery_id text not null,
    recovery_id uuid not null references recovery_run (recovery_id) on delete cascade,
    claimed_at timestamptz not null default now(),
    requested_at timestamptz,
    primary key (repository_id, log_id)
);
create index recovery_redelivery_recovery_idx on recovery_redelivery (recovery_id);
create index recovery_redelivery_delivery_idx on recovery_redelivery (repository_id, delivery_id);

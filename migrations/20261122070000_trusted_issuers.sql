-- A tenant's trusted issuers (issue 18): workload identity providers (GitHub
-- Actions, GKE, any OIDC issuer) whose tokens the tenant accepts, through the
-- token exchange grant, in place of a client secret. A token is accepted when
-- its `iss` is `issuer`, its audience holds `audience`, and every claim named
-- in `claims` matches its glob; it gets `scopes`.
create table trusted_issuer (
    trusted_issuer_id uuid primary key,
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    issuer text not null,
    audience text not null,
    -- {"claim name": "glob", ...}: at least one.
    claims jsonb not null check (jsonb_typeof(claims) = 'object'),
    scopes text[] not null,
    created_at timestamptz not null default now()
);
create index trusted_issuer_issuer_idx on trusted_issuer (issuer, audience);
create index trusted_issuer_tenant_id_idx on trusted_issuer (tenant_id);

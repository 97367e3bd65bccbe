-- `hookrelay-agent login`: RFC 8628 device authorizations, and the refresh tokens a
-- device client renews its access with (RFC 6749 §6). Expand only (README,
-- "Upgrades"): two new tables, and two defaulted columns on client that the
-- previous release neither reads nor writes.

-- A client made by approving a device (it has no usable secret), and when it last
-- renewed its access.
alter table client add column device boolean not null default false;
alter table client add column last_used_at timestamptz;

-- One per `POST /oauth/device_authorization`. The device code is stored hashed;
-- the user code, which a person types, is unique among pending ones.
create table device_authorization (
    device_authorization_id uuid primary key,
    device_code_hash bytea not null unique,
    user_code text not null,
    device_name text not null,
    scopes text[] not null,
    requested_from text not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    -- The polling interval the device must keep; slow_down adds 5 s.
    interval_seconds integer not null,
    polled_at timestamptz,
    -- pending → approved | denied; approved → issued once the device took its tokens.
    status text not null default 'pending'
        check (status in ('pending', 'approved', 'denied', 'issued')),
    tenant_id uuid references tenant (tenant_id) on delete cascade,
    client_id text references client (client_id) on delete cascade
);
create unique index device_authorization_pending_user_code
    on device_authorization (user_code) where status = 'pending';
create index device_authorization_expires_at_idx on device_authorization (expires_at);

-- Refresh tokens, stored hashed. Each use rotates it: the used one is marked, a new
-- one of the same family issued. Presenting a rotated one again revokes the family.
create table refresh_token (
    token_hash bytea primary key,
    family_id uuid not null,
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    client_id text not null references client (client_id) on delete cascade,
    created_at timestamptz not null default now(),
    rotated_at timestamptz,
    revoked_at timestamptz
);
create index refresh_token_family_idx on refresh_token (family_id);
create index refresh_token_client_idx on refresh_token (client_id);

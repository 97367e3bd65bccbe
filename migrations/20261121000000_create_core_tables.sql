-- Core tables of the relay server. Every tenant-owned table carries tenant_id.

create table tenant (
    tenant_id uuid primary key,
    name text not null,
    created_at timestamptz not null default now()
);

-- OAuth2 clients (client-credentials grant). Secrets are stored as SHA-256 hashes.
create table client (
    client_id text primary key,
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    name text not null,
    secret_hash bytea not null,
    scopes text[] not null,
    created_at timestamptz not null default now()
);
create index client_tenant_id_idx on client (tenant_id);

-- Webhook secrets are encrypted under the key-encryption key. During a rotation the
-- previous secret keeps verifying until previous_secret_expires_at.
create table repository (
    repository_id uuid primary key,
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    provider text not null,
    name text not null,
    webhook_secret bytea not null,
    previous_webhook_secret bytea,
    previous_secret_expires_at timestamptz,
    created_at timestamptz not null default now(),
    constraint repository_tenant_provider_name_key unique (tenant_id, provider, name)
);

-- Events are appended in commit order: event_id is drawn under a transaction-scoped
-- advisory lock held until commit (see src/store/event.rs), so a reader that has
-- seen id N will never later find a committed event with an id below N.
create sequence event_event_id_seq as bigint;
create table event (
    event_id bigint primary key default nextval('event_event_id_seq'),
    tenant_id uuid not null references tenant (tenant_id) on delete cascade,
    repository_id uuid not null references repository (repository_id) on delete cascade,
    provider text not null,
    event_type text not null,
    delivery_id text not null,
    received_at timestamptz not null,
    -- [[name, value], ...] in the order received, for a byte-for-byte replay.
    headers jsonb not null,
    body bytea not null,
    constraint event_repository_delivery_key unique (repository_id, delivery_id)
);
alter sequence event_event_id_seq owned by event.event_id;
create index event_repository_id_event_id_idx on event (repository_id, event_id);
create index event_received_at_idx on event (received_at);

-- JWT signing keys shared by every replica. The private key (PKCS#8 DER) is
-- encrypted; the public JWK is served at /.well-known/jwks.json.
create table signing_key (
    kid text primary key,
    algorithm text not null,
    private_key bytea not null,
    public_jwk jsonb not null,
    created_at timestamptz not null default now(),
    retired_at timestamptz
);

-- A known value encrypted under the key-encryption key: a replica started with a
-- different HOOKRELAY_SECRET_KEY fails at start instead of failing every request.
create table secret_key_check (
    singleton boolean primary key default true check (singleton),
    sealed bytea not null
);

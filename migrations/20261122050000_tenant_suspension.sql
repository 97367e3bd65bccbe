-- `hookrelay tenants suspend`: a suspended tenant's tokens, token requests,
-- streams and webhooks are refused until `hookrelay tenants resume`.
alter table tenant add column suspended_at timestamptz;

-- The console watches a tenant's deliveries as they complete.
create index delivery_tenant_id_completed_at_idx on delivery (tenant_id, completed_at);

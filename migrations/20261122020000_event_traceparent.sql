-- The W3C trace context of the webhook's ingest, when the server exports
-- traces: the agent's delivery span continues it. Nullable, so adding it
-- rewrites nothing.
alter table event add column traceparent text;

-- Per-repository webhook settings of the providers that have any (GitLab's
-- verification mode, a Standard Webhooks sender's event-type field and
-- timestamp tolerance); `{}` takes the defaults.
alter table repository add column settings jsonb not null default '{}';

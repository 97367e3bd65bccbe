-- Signing-key rotation without a restart (`hookrelay keys rotate`): a new key is
-- published at once and signs from `signs_from`; the keys it replaces verify
-- until `retire_after`, when the last token they signed has expired.
alter table signing_key add column signs_from timestamptz;
alter table signing_key add column retire_after timestamptz;

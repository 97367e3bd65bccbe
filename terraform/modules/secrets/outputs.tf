output "secret_ids" {
  description = "Secret ids by name: database-url, secret-key and (optionally) signup-token."
  value       = { for name, secret in google_secret_manager_secret.this : name => secret.secret_id }
}

output "secret_versions" {
  description = "The current version of each secret, by name."
  value       = { for name, version in google_secret_manager_secret_version.this : name => version.version }
}

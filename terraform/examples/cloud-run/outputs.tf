output "url" {
  description = "The service's run.app URL."
  value       = module.cloud_run.uri
}

output "image_repository" {
  description = "Where to push the hookrelay image."
  value       = "${module.artifact_registry.repository_url}/hookrelay"
}

output "signup_token_secret" {
  description = "The Secret Manager secret holding the signup token."
  value       = module.secrets.secret_ids["signup-token"]
}

output "public_url" {
  description = "The relay's public URL (the issuer and webhook URLs): public_url, or the deterministic run.app URL."
  value       = module.cloud_run.public_url
}

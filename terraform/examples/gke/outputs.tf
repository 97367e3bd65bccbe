output "get_credentials" {
  description = "Points kubectl and helm at the cluster."
  value       = module.gke.get_credentials
}

output "image_repository" {
  description = "Where to push the hookrelay image."
  value       = "${module.artifact_registry.repository_url}/hookrelay"
}

output "secret_ids" {
  description = "Secret Manager secrets to copy into Kubernetes Secrets (README.md)."
  value       = module.secrets.secret_ids
}

output "helm_values" {
  description = "Values for `helm upgrade --install` (write them to a file with -raw)."
  value = yamlencode({
    publicUrl = "https://${var.hostname}"
    image     = { repository = "${module.artifact_registry.repository_url}/hookrelay" }
    serviceAccount = {
      gcpServiceAccount = module.service_accounts.email
    }
    database    = { existingSecret = "hookrelay-database" }
    secretKey   = { existingSecret = "hookrelay-secret-key" }
    signupToken = { existingSecret = "hookrelay-signup-token" }
    ingress = {
      enabled   = true
      className = "gce"
      host      = var.hostname
    }
    networkPolicy = { databaseCidr = module.network.private_services_cidr }
  })
}

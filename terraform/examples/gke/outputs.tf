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
    ingress     = { host = var.hostname }
    # Google's load balancer through a GKE Ingress: HTTP/2 over TLS to Envoy, an
    # hour-long backend timeout, a managed certificate, this static IP.
    gke = {
      # Trusted in X-Forwarded-For with Google's front ends (rate limits per client).
      loadBalancerAddress = google_compute_global_address.relay.address
      loadBalancer = {
        enabled      = true
        staticIpName = google_compute_global_address.relay.name
      }
    }
    networkPolicy = { databaseCidr = module.network.private_services_cidr }
  })
}

output "static_ip_name" {
  description = "The load balancer's global address (the chart's gke.loadBalancer.staticIpName)."
  value       = google_compute_global_address.relay.name
}

output "static_ip_address" {
  description = "Point the hostname's DNS A record here; the managed certificate issues once it resolves."
  value       = google_compute_global_address.relay.address
}

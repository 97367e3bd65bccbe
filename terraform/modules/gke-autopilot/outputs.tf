output "name" {
  description = "The cluster's name."
  value       = google_container_cluster.this.name
}

output "location" {
  description = "The cluster's region."
  value       = google_container_cluster.this.location
}

output "endpoint" {
  description = "The control plane's endpoint."
  value       = google_container_cluster.this.endpoint
  sensitive   = true
}

output "get_credentials" {
  description = "The command that points kubectl and helm at the cluster."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --region ${google_container_cluster.this.location} --project ${var.project_id}"
}

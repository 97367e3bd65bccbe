output "uri" {
  description = "The service's run.app URL."
  value       = google_cloud_run_v2_service.this.uri
}

output "name" {
  description = "The service's name."
  value       = google_cloud_run_v2_service.this.name
}

output "public_url" {
  description = "The relay's public URL: the given one, or the deterministic run.app URL."
  value       = local.public_url
}

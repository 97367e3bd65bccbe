output "email" {
  description = "The runtime service account's email."
  value       = google_service_account.runtime.email
}

output "id" {
  description = "The runtime service account's id."
  value       = google_service_account.runtime.id
}

output "network_id" {
  description = "The VPC's id."
  value       = google_compute_network.this.id
}

output "network_name" {
  description = "The VPC's name."
  value       = google_compute_network.this.name
}

output "subnet_id" {
  description = "The subnet's id."
  value       = google_compute_subnetwork.this.id
}

output "subnet_name" {
  description = "The subnet's name."
  value       = google_compute_subnetwork.this.name
}

output "pods_range_name" {
  description = "Name of the secondary range for GKE pods."
  value       = "pods"
}

output "services_range_name" {
  description = "Name of the secondary range for GKE services."
  value       = "services"
}

output "private_services_cidr" {
  description = "The range reserved for private service access (Cloud SQL private IPs)."
  value       = "${google_compute_global_address.private_services.address}/${google_compute_global_address.private_services.prefix_length}"
}

output "private_services_connection" {
  description = "The private service access connection; Cloud SQL must be created after it."
  value       = google_service_networking_connection.private_services.id
}

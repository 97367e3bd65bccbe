output "instance_name" {
  description = "The instance's name."
  value       = google_sql_database_instance.this.name
}

output "connection_name" {
  description = "The instance connection name (project:region:instance)."
  value       = google_sql_database_instance.this.connection_name
}

output "private_ip" {
  description = "The instance's private IP."
  value       = google_sql_database_instance.this.private_ip_address
}

output "database_url" {
  description = "DATABASE_URL for hookrelay (TLS required). Goes into Secret Manager, nowhere else."
  value       = "postgres://${google_sql_user.this.name}:${random_password.user.result}@${google_sql_database_instance.this.private_ip_address}:5432/${google_sql_database.this.name}?sslmode=require"
  sensitive   = true
}

# Cloud SQL for PostgreSQL 15 with a private IP only, automated backups with
# point-in-time recovery, TLS required, and the database and user hookrelay uses.

resource "google_sql_database_instance" "this" {
  #checkov:skip=CKV_GCP_6:ssl_mode ENCRYPTED_ONLY requires TLS on every connection; client certificates are not used (private IP, password over TLS)
  #checkov:skip=CKV_GCP_79:hookrelay is tested against PostgreSQL 15, the version its test machines run; raise this together with the tests
  project             = var.project_id
  name                = var.name
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = var.deletion_protection

  settings {
    tier              = var.tier
    availability_type = var.high_availability ? "REGIONAL" : "ZONAL"
    disk_autoresize   = true
    disk_type         = "PD_SSD"

    ip_configuration {
      ipv4_enabled    = false
      private_network = var.network_id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      start_time                     = "02:00"
      transaction_log_retention_days = 7
      backup_retention_settings {
        retained_backups = var.retained_backups
      }
    }

    maintenance_window {
      day          = 7
      hour         = 3
      update_track = "stable"
    }

    insights_config {
      query_insights_enabled = true
    }

    database_flags {
      name  = "log_checkpoints"
      value = "on"
    }
    database_flags {
      name  = "log_connections"
      value = "on"
    }
    database_flags {
      name  = "log_disconnections"
      value = "on"
    }
    database_flags {
      name  = "log_lock_waits"
      value = "on"
    }
    database_flags {
      name  = "log_min_messages"
      value = "error"
    }
    database_flags {
      name  = "log_min_error_statement"
      value = "error"
    }
    database_flags {
      name  = "log_min_duration_statement"
      value = "-1"
    }
    database_flags {
      name  = "log_duration"
      value = "on"
    }
    database_flags {
      name  = "log_hostname"
      value = "on"
    }
    database_flags {
      name  = "log_temp_files"
      value = "0"
    }
    database_flags {
      name  = "log_statement"
      value = "ddl"
    }
    database_flags {
      name  = "cloudsql.enable_pgaudit"
      value = "on"
    }
    database_flags {
      # hookrelay streams wait on LISTEN/NOTIFY; each server holds one connection for it.
      name  = "max_connections"
      value = tostring(var.max_connections)
    }
  }

  depends_on = [var.private_services_connection]
}

resource "google_sql_database" "this" {
  project  = var.project_id
  name     = "hookrelay"
  instance = google_sql_database_instance.this.name
}

# The password only ever lives in Terraform state and in Secret Manager (DATABASE_URL);
# keep the state in a protected bucket.
resource "random_password" "user" {
  length  = 32
  special = false
}

resource "google_sql_user" "this" {
  project  = var.project_id
  name     = "hookrelay"
  instance = google_sql_database_instance.this.name
  password = random_password.user.result
}

# hookrelay on Cloud Run: a multi-container service with Envoy as the ingress
# container (the one port, HTTP/2 cleartext so gRPC streams work) and the relay
# beside it on localhost. Cloud SQL is reached over its private IP through direct
# VPC egress. The Envoy config is envoy/generated/sidecar.json, read here directly
# from the one source, and mounted from Secret Manager (Cloud Run has no config maps).

resource "google_secret_manager_secret" "envoy_config" {
  project   = var.project_id
  secret_id = "${var.name}-envoy-config"

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}

resource "google_secret_manager_secret_version" "envoy_config" {
  secret      = google_secret_manager_secret.envoy_config.id
  secret_data = file(coalesce(var.envoy_config_path, "${path.module}/../../../envoy/generated/sidecar.json"))
}

resource "google_secret_manager_secret_iam_member" "envoy_config" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.envoy_config.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${var.service_account_email}"
}

# The URL is known before the service exists: Cloud Run's deterministic URL is
# https://<service>-<project number>.<region>.run.app
# (https://cloud.google.com/run/docs/triggering/https-request#deterministic), so the
# relay's issuer and webhook URLs need no second apply. A mapped domain overrides it.
data "google_project" "this" {
  project_id = var.project_id
}

locals {
  public_url = coalesce(var.public_url, "https://${var.name}-${data.google_project.this.number}.${var.region}.run.app")
}

resource "google_cloud_run_v2_service" "this" {
  project             = var.project_id
  name                = var.name
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection

  template {
    service_account                  = var.service_account_email
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    timeout                          = "3600s"
    max_instance_request_concurrency = var.concurrency

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = var.network_id
        subnetwork = var.subnet_id
      }
    }

    containers {
      name    = "envoy"
      image   = var.envoy_image
      command = ["/usr/local/bin/envoy"]
      # One worker per CPU of the limit below; Envoy would otherwise size itself to the host.
      args       = ["-c", "/etc/envoy/envoy.json", "--disable-hot-restart", "--log-level", "warn", "--concurrency", "1"]
      depends_on = ["relay"]

      ports {
        name           = "h2c"
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "512Mi"
        }
      }

      startup_probe {
        tcp_socket {
          port = 8080
        }
      }

      volume_mounts {
        name       = "envoy-config"
        mount_path = "/etc/envoy"
      }
    }

    containers {
      name  = "relay"
      image = var.image
      # On Cloud Run every instance applies pending migrations at start; sqlx
      # serialises them with an advisory lock, so concurrent starts are safe.
      args = ["serve"]

      env {
        # Not exposed: only the ingress container's port is. 0.0.0.0 lets Cloud Run probe it.
        name  = "HOOKRELAY_HTTP_ADDR"
        value = "0.0.0.0:8081"
      }
      env {
        name  = "HOOKRELAY_GRPC_ADDR"
        value = "127.0.0.1:50051"
      }
      env {
        name  = "HOOKRELAY_PUBLIC_URL"
        value = local.public_url
      }
      env {
        name  = "HOOKRELAY_DATA_DIR"
        value = "/tmp/hookrelay"
      }
      env {
        # Streams end cleanly before the 3600 s request timeout above cuts them.
        name  = "HOOKRELAY_MAX_STREAM_AGE"
        value = "50m"
      }
      env {
        # Cloud Run replaces X-Forwarded-For with the client's address before
        # Envoy appends its peer: every hop after the client is Google's or ours.
        name  = "HOOKRELAY_TRUSTED_PROXIES"
        value = "0.0.0.0/0,::/0"
      }
      env {
        # Cloud Run sends SIGTERM and allows 10 seconds before SIGKILL.
        name  = "HOOKRELAY_DRAIN_DELAY"
        value = "2s"
      }
      env {
        name  = "HOOKRELAY_SHUTDOWN_GRACE"
        value = "9s"
      }
      env {
        name = "DATABASE_URL"
        value_source {
          secret_key_ref {
            secret  = var.secret_ids["database-url"]
            version = "latest"
          }
        }
      }
      env {
        name = "HOOKRELAY_SECRET_KEY"
        value_source {
          secret_key_ref {
            secret  = var.secret_ids["secret-key"]
            version = "latest"
          }
        }
      }
      dynamic "env" {
        for_each = contains(keys(var.secret_ids), "signup-token") ? [var.secret_ids["signup-token"]] : []
        content {
          name = "HOOKRELAY_SIGNUP_TOKEN"
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      resources {
        # Streams and background jobs run between requests: CPU stays allocated.
        cpu_idle          = false
        startup_cpu_boost = true
        limits = {
          cpu    = "2"
          memory = "1Gi"
        }
      }

      # Ready, not only alive: a new revision takes traffic once it reaches the
      # database with this release's schema.
      startup_probe {
        period_seconds    = 2
        failure_threshold = 30
        http_get {
          path = "/readyz"
          port = 8081
        }
      }

      liveness_probe {
        http_get {
          path = "/healthz"
          port = 8081
        }
      }
    }

    volumes {
      name = "envoy-config"
      secret {
        secret = google_secret_manager_secret.envoy_config.secret_id
        items {
          version = "latest"
          path    = "envoy.json"
        }
      }
    }
  }

  # A rolling upgrade: the new revision takes all traffic once its instances pass
  # the startup probe (/readyz); the previous revision's instances keep serving
  # what they hold and drain. Releases side by side are safe (README, "Upgrades").
  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  depends_on = [
    google_secret_manager_secret_version.envoy_config,
    google_secret_manager_secret_iam_member.envoy_config,
  ]
}

# GitHub must reach the webhook URL without Google credentials; hookrelay
# authenticates every request itself (signatures, OAuth2 bearer tokens).
resource "google_cloud_run_v2_service_iam_member" "public" {
  project  = var.project_id
  location = google_cloud_run_v2_service.this.location
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = "allUsers" #checkov:skip=CKV_GCP_102:Webhook senders (GitHub) cannot present Google credentials; hookrelay authenticates each request itself
}

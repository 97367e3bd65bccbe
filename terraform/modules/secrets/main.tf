# Secret Manager secrets hookrelay reads at runtime: DATABASE_URL, the key-encryption
# key (generated here), and optionally the signup token. Only the runtime service
# account can read them.

resource "random_bytes" "secret_key" {
  length = 32
}

resource "random_password" "signup_token" {
  count   = var.signup_token ? 1 : 0
  length  = 40
  special = false
}

locals {
  values = merge(
    {
      "database-url" = var.database_url
      "secret-key"   = random_bytes.secret_key.base64
    },
    var.signup_token ? { "signup-token" = random_password.signup_token[0].result } : {},
  )
}

resource "google_secret_manager_secret" "this" {
  for_each  = toset(keys(local.values))
  project   = var.project_id
  secret_id = "${var.prefix}-${each.key}"

  replication {
    user_managed {
      replicas {
        location = var.region
      }
    }
  }
}

resource "google_secret_manager_secret_version" "this" {
  for_each    = google_secret_manager_secret.this
  secret      = each.value.id
  secret_data = local.values[each.key]
}

resource "google_secret_manager_secret_iam_member" "accessor" {
  for_each  = google_secret_manager_secret.this
  project   = var.project_id
  secret_id = each.value.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${var.accessor_email}"
}

# The Docker repository for the hookrelay image, with cleanup of old untagged images.
resource "google_artifact_registry_repository" "this" {
  #checkov:skip=CKV_GCP_84:The images hold no secrets; Google-managed encryption at rest is enough, and customer keys add a KMS dependency to every pull
  project       = var.project_id
  location      = var.region
  repository_id = var.name
  description   = "hookrelay container images"
  format        = "DOCKER"

  docker_config {
    immutable_tags = true
  }

  cleanup_policies {
    id     = "delete-untagged"
    action = "DELETE"
    condition {
      tag_state  = "UNTAGGED"
      older_than = "2592000s"
    }
  }
}

resource "google_artifact_registry_repository_iam_member" "reader" {
  for_each   = toset(var.reader_emails)
  project    = var.project_id
  location   = google_artifact_registry_repository.this.location
  repository = google_artifact_registry_repository.this.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${each.value}"
}

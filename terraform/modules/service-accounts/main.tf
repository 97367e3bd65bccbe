# Least privilege: the relay's runtime account may connect to Cloud SQL and write
# logs, metrics and traces; reading its secrets is granted per secret (secrets
# module), pulling images per repository (artifact-registry module).

resource "google_service_account" "runtime" {
  project      = var.project_id
  account_id   = var.name
  display_name = "hookrelay runtime"
  description  = "Runs the hookrelay relay (GKE Workload Identity or Cloud Run)."
}

resource "google_project_iam_member" "runtime" {
  for_each = toset([
    "roles/cloudsql.client",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/cloudtrace.agent",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.runtime.email}"
}

# GKE Workload Identity: the chart's Kubernetes ServiceAccount acts as this account.
resource "google_service_account_iam_member" "workload_identity" {
  count              = var.kubernetes_service_account == null ? 0 : 1
  service_account_id = google_service_account.runtime.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.kubernetes_service_account.namespace}/${var.kubernetes_service_account.name}]"
}

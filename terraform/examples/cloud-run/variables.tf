variable "project_id" {
  description = "The GCP project to deploy into."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a valid GCP project id."
  }
}

variable "region" {
  description = "The region of every resource, e.g. europe-west1."
  type        = string
  default     = "europe-west1"
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must look like europe-west1."
  }
}

variable "image" {
  description = "The hookrelay image pushed to Artifact Registry, by digest (terraform output image_repository, then docker push)."
  type        = string
  validation {
    condition     = can(regex("@sha256:[a-f0-9]{64}$", var.image))
    error_message = "image must be pinned by digest: <repository>/hookrelay@sha256:..."
  }
}

variable "public_url" {
  description = "The public base URL (token issuer, webhook URLs), e.g. https://relay.example.com for a mapped domain; null: the service's deterministic run.app URL, https://<name>-<project number>.<region>.run.app."
  type        = string
  default     = null
  validation {
    condition     = var.public_url == null || can(regex("^https://[^/?#]+$", var.public_url))
    error_message = "public_url must be an https:// origin without a path."
  }
}

variable "database_tier" {
  description = "The Cloud SQL machine tier."
  type        = string
  default     = "db-custom-2-7680"
  validation {
    condition     = can(regex("^db-", var.database_tier))
    error_message = "database_tier must be a Cloud SQL tier."
  }
}

variable "min_instances" {
  description = "Instances kept warm (at least one: open streams, background jobs)."
  type        = number
  default     = 1
  validation {
    condition     = var.min_instances >= 1
    error_message = "min_instances must be at least 1."
  }
}

variable "deletion_protection" {
  description = "Protect the database and the service from `terraform destroy`."
  type        = bool
  default     = true
}

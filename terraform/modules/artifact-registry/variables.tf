variable "project_id" {
  description = "The GCP project of the repository."
  type        = string
}

variable "region" {
  description = "The repository's location, e.g. europe-west1."
  type        = string
}

variable "name" {
  description = "The repository id."
  type        = string
  default     = "hookrelay"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,62}$", var.name))
    error_message = "name must be lowercase letters, digits and hyphens."
  }
}

variable "reader_emails" {
  description = "Service accounts that pull images (GKE nodes, Cloud Run)."
  type        = list(string)
  default     = []
}

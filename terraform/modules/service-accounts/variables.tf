variable "project_id" {
  description = "The GCP project of the service account."
  type        = string
}

variable "name" {
  description = "The runtime service account's id."
  type        = string
  default     = "hookrelay"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.name))
    error_message = "name must be 6 to 30 lowercase letters, digits and hyphens."
  }
}

variable "kubernetes_service_account" {
  description = "The Kubernetes ServiceAccount bound through Workload Identity (GKE only); null on Cloud Run."
  type = object({
    namespace = string
    name      = optional(string, "hookrelay")
  })
  default = null
}

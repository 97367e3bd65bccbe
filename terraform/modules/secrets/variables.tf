variable "project_id" {
  description = "The GCP project of the secrets."
  type        = string
}

variable "region" {
  description = "The one region the secrets are replicated to."
  type        = string
}

variable "prefix" {
  description = "Prefix of the secret ids, e.g. hookrelay → hookrelay-database-url."
  type        = string
  default     = "hookrelay"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,40}$", var.prefix))
    error_message = "prefix must be lowercase letters, digits and hyphens."
  }
}

variable "database_url" {
  description = "The DATABASE_URL to store (the cloud-sql module's output)."
  type        = string
  sensitive   = true
}

variable "signup_token" {
  description = "Generate a signup token, so only holders of it can sign up tenants."
  type        = bool
  default     = true
}

variable "accessor_email" {
  description = "The service account that may read the secrets (the relay's runtime account)."
  type        = string
  validation {
    condition     = can(regex("@", var.accessor_email))
    error_message = "accessor_email must be a service account email."
  }
}

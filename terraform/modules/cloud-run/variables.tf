variable "project_id" {
  description = "The GCP project of the service."
  type        = string
}

variable "region" {
  description = "The service's region."
  type        = string
}

variable "name" {
  description = "The service's name."
  type        = string
  default     = "hookrelay"
  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$", var.name))
    error_message = "name must be lowercase letters, digits and hyphens, at most 49 characters."
  }
}

variable "image" {
  description = "The relay image, ideally by digest (<repository>/hookrelay@sha256:...)."
  type        = string
  validation {
    condition     = can(regex("^[^:@]+(:[A-Za-z0-9._-]+|@sha256:[a-f0-9]{64})$", var.image))
    error_message = "image must name a tag or a digest."
  }
}

variable "envoy_image" {
  description = "The Envoy image of the ingress container; the version the tests run."
  type        = string
  default     = "envoyproxy/envoy:v1.40.0"
}

variable "envoy_config_path" {
  description = "Path of the rendered Envoy config (envoy/render --preset sidecar)."
  type        = string
  default     = null
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

variable "service_account_email" {
  description = "The runtime service account."
  type        = string
}

variable "secret_ids" {
  description = "Secret Manager secret ids by name (database-url, secret-key, optional signup-token)."
  type        = map(string)
  validation {
    condition     = contains(keys(var.secret_ids), "database-url") && contains(keys(var.secret_ids), "secret-key")
    error_message = "secret_ids needs database-url and secret-key."
  }
}

variable "network_id" {
  description = "The VPC (id or name) for direct VPC egress to Cloud SQL."
  type        = string
}

variable "subnet_id" {
  description = "The subnet (id or name) for direct VPC egress."
  type        = string
}

variable "min_instances" {
  description = "Instances kept warm: open streams and background jobs need at least one."
  type        = number
  default     = 1
  validation {
    condition     = var.min_instances >= 1
    error_message = "min_instances must be at least 1."
  }
}

variable "max_instances" {
  description = "The most instances."
  type        = number
  default     = 10
  validation {
    condition     = var.max_instances >= 1 && var.max_instances <= 1000
    error_message = "max_instances must be between 1 and 1000."
  }
}

variable "concurrency" {
  description = "Concurrent requests per instance (each open stream is one)."
  type        = number
  default     = 1000
  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 1000
    error_message = "concurrency must be between 1 and 1000."
  }
}

variable "deletion_protection" {
  description = "Refuse to destroy the service."
  type        = bool
  default     = true
}

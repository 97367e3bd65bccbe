variable "project_id" {
  description = "The GCP project of the instance."
  type        = string
}

variable "region" {
  description = "The instance's region."
  type        = string
}

variable "name" {
  description = "The instance's name."
  type        = string
  default     = "hookrelay"
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,78}[a-z0-9]$", var.name))
    error_message = "name must be lowercase letters, digits and hyphens."
  }
}

variable "network_id" {
  description = "The VPC (id) the private IP is allocated in."
  type        = string
}

variable "private_services_connection" {
  description = "The private service access connection the instance depends on (network module output)."
  type        = string
}

variable "tier" {
  description = "The machine tier, e.g. db-custom-2-7680."
  type        = string
  default     = "db-custom-2-7680"
  validation {
    condition     = can(regex("^db-", var.tier))
    error_message = "tier must be a Cloud SQL tier such as db-custom-2-7680."
  }
}

variable "high_availability" {
  description = "A regional (failover) instance rather than a zonal one."
  type        = bool
  default     = true
}

variable "retained_backups" {
  description = "How many daily backups to keep."
  type        = number
  default     = 14
  validation {
    condition     = var.retained_backups >= 7 && var.retained_backups <= 365
    error_message = "retained_backups must be between 7 and 365."
  }
}

variable "max_connections" {
  description = "PostgreSQL max_connections: at least replicas x (pool size + 2)."
  type        = number
  default     = 200
  validation {
    condition     = var.max_connections >= 50
    error_message = "max_connections must be at least 50."
  }
}

variable "deletion_protection" {
  description = "Refuse to destroy the instance (set false only to tear down on purpose)."
  type        = bool
  default     = true
}

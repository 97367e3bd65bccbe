variable "project_id" {
  description = "The GCP project of the cluster."
  type        = string
}

variable "region" {
  description = "The cluster's region (Autopilot clusters are regional)."
  type        = string
}

variable "name" {
  description = "The cluster's name."
  type        = string
  default     = "hookrelay"
  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$", var.name))
    error_message = "name must be a lowercase RFC 1035 label of at most 40 characters."
  }
}

variable "network_id" {
  description = "The VPC (id) of the cluster."
  type        = string
}

variable "subnet_id" {
  description = "The subnet (id) of the nodes."
  type        = string
}

variable "pods_range_name" {
  description = "The subnet's secondary range for pods."
  type        = string
}

variable "services_range_name" {
  description = "The subnet's secondary range for services."
  type        = string
}

variable "master_cidr" {
  description = "The /28 of the control plane's private endpoint."
  type        = string
  default     = "172.16.0.0/28"
  validation {
    condition     = can(cidrhost(var.master_cidr, 0)) && endswith(var.master_cidr, "/28")
    error_message = "master_cidr must be a /28 CIDR block."
  }
}

variable "master_authorized_networks" {
  description = "Networks that may reach the control plane (kubectl, helm), as {cidr, name}."
  type = list(object({
    cidr = string
    name = optional(string, "authorized")
  }))
  validation {
    condition     = alltrue([for n in var.master_authorized_networks : can(cidrhost(n.cidr, 0))])
    error_message = "every master_authorized_networks cidr must be a CIDR block."
  }
}

variable "deletion_protection" {
  description = "Refuse to destroy the cluster (set false only to tear down on purpose)."
  type        = bool
  default     = true
}

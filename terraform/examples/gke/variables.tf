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

variable "namespace" {
  description = "The Kubernetes namespace the chart is installed into (Workload Identity binding)."
  type        = string
  default     = "hookrelay"
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a Kubernetes namespace name."
  }
}

variable "hostname" {
  description = "The public host name of the relay, e.g. relay.example.com."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9.-]+\\.[a-z]{2,}$", var.hostname))
    error_message = "hostname must be a DNS name."
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

variable "master_authorized_networks" {
  description = "Networks allowed to reach the GKE control plane (where kubectl and helm run from)."
  type = list(object({
    cidr = string
    name = optional(string, "operators")
  }))
  validation {
    condition     = length(var.master_authorized_networks) > 0
    error_message = "name at least one network, e.g. your office or CI runner's CIDR."
  }
}

variable "deletion_protection" {
  description = "Protect the database and the cluster from `terraform destroy`."
  type        = bool
  default     = true
}

variable "static_ip_name" {
  description = "Name of the global static IP address of the load balancer (the chart's gke.loadBalancer.staticIpName)."
  type        = string
  default     = "hookrelay"
  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$", var.static_ip_name))
    error_message = "static_ip_name must be a GCP resource name (lowercase letters, digits, hyphens)."
  }
}

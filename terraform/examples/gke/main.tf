# hookrelay on GKE Autopilot with Cloud SQL. After `terraform apply`, deploy the chart
# with the values printed by `terraform output helm_values` (see README.md).

provider "google" {
  project = var.project_id
  region  = var.region
}

module "network" {
  source     = "../../modules/network"
  project_id = var.project_id
  region     = var.region
}

module "service_accounts" {
  source     = "../../modules/service-accounts"
  project_id = var.project_id
  kubernetes_service_account = {
    namespace = var.namespace
  }
}

module "cloud_sql" {
  source                      = "../../modules/cloud-sql"
  project_id                  = var.project_id
  region                      = var.region
  network_id                  = module.network.network_id
  private_services_connection = module.network.private_services_connection
  tier                        = var.database_tier
  deletion_protection         = var.deletion_protection
}

module "secrets" {
  source         = "../../modules/secrets"
  project_id     = var.project_id
  region         = var.region
  database_url   = module.cloud_sql.database_url
  accessor_email = module.service_accounts.email
}

module "artifact_registry" {
  source     = "../../modules/artifact-registry"
  project_id = var.project_id
  region     = var.region
}

module "gke" {
  source                     = "../../modules/gke-autopilot"
  project_id                 = var.project_id
  region                     = var.region
  network_id                 = module.network.network_id
  subnet_id                  = module.network.subnet_id
  pods_range_name            = module.network.pods_range_name
  services_range_name        = module.network.services_range_name
  master_authorized_networks = var.master_authorized_networks
  deletion_protection        = var.deletion_protection
}

# The global address Google's load balancer answers on; the chart names it
# (gke.loadBalancer.staticIpName or gke.gateway.staticIpName, from helm_values).
# Point the hostname's DNS A record at it before the managed certificate can issue.
resource "google_compute_global_address" "relay" {
  project = var.project_id
  name    = var.static_ip_name
}

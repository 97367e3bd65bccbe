# hookrelay on Cloud Run (Envoy ingress container + relay) with Cloud SQL.

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
  source        = "../../modules/artifact-registry"
  project_id    = var.project_id
  region        = var.region
  reader_emails = [module.service_accounts.email]
}

module "cloud_run" {
  source                = "../../modules/cloud-run"
  project_id            = var.project_id
  region                = var.region
  image                 = var.image
  public_url            = var.public_url
  service_account_email = module.service_accounts.email
  secret_ids            = module.secrets.secret_ids
  network_id            = module.network.network_id
  subnet_id             = module.network.subnet_id
  min_instances         = var.min_instances
  deletion_protection   = var.deletion_protection
}

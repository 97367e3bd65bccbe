# A private GKE Autopilot cluster on the regular release channel. Autopilot always
# runs Workload Identity, shielded nodes and secure boot.

resource "google_container_cluster" "this" {
  #checkov:skip=CKV_GCP_12:Autopilot enforces NetworkPolicy through Dataplane V2 (datapath_provider below); the legacy network_policy block is not allowed on Autopilot
  #checkov:skip=CKV_GCP_61:Autopilot manages node networking and does not allow intranode visibility to be set; VPC flow logs are on in the subnet
  #checkov:skip=CKV_GCP_65:Google Groups for RBAC needs a Google Workspace domain; add authenticator_groups_config where one exists
  #checkov:skip=CKV_GCP_69:Autopilot always runs the GKE metadata server (Workload Identity); node_config cannot be set
  project             = var.project_id
  name                = var.name
  location            = var.region
  enable_autopilot    = true
  deletion_protection = var.deletion_protection
  network             = var.network_id
  subnetwork          = var.subnet_id

  # Dataplane V2: Kubernetes NetworkPolicy is enforced (the chart ships one).
  datapath_provider = "ADVANCED_DATAPATH"

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  release_channel {
    channel = "REGULAR"
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  ip_allocation_policy {
    cluster_secondary_range_name  = var.pods_range_name
    services_secondary_range_name = var.services_range_name
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_cidr
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr
        display_name = cidr_blocks.value.name
      }
    }
  }

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  resource_labels = {
    app = "hookrelay"
  }
}

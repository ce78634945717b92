# skyscore on Google Cloud: Cloud Run functions (2nd gen), Cloud Storage, Pub/Sub, Eventarc,
# Cloud Scheduler, Cloud Monitoring and Vertex AI.
# Deploy: `python functions/gcp/package.py`, then `terraform apply` (docs/gcp.md).
terraform {
  required_version = ">= 1.6"
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.20"
    }
  }
}

provider "google" {
  project = var.project
  region  = var.region
}

# skyscore on Azure: Flex Consumption function app, data storage, Event Grid, Azure ML, alerts.
# Deploy: `terraform apply`, then a zip deploy of `python functions/azure/package.py` (docs/azure.md).
terraform {
  required_version = ">= 1.6"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "~> 4.30"
    }
  }
}

provider "azurerm" {
  features {}
  # The data account has no shared keys: the provider reaches its data plane with Entra ID.
  storage_use_azuread = true
}

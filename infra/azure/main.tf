data "azurerm_client_config" "current" {}

locals {
  suffix         = substr(sha1("${data.azurerm_client_config.current.subscription_id}/${var.name}/${var.location}"), 0, 6)
  data_container = "data"
  work_queue     = "work"
  incoming       = "${var.prefix == "" ? "" : "${trim(var.prefix, "/")}/"}incoming/"
  # rule names the core classifies (SKYSCORE_RETRAIN_ALARMS); any other alert is operational
  drift_rule            = "${var.name}-${var.model}-drift"
  prediction_drift_rule = "${var.name}-${var.model}-prediction-drift"
  error_rate_rule       = "${var.name}-${var.model}-error-rate"
  poison_rule           = "${var.name}-work-poison"
}

resource "azurerm_resource_group" "this" {
  name     = "${var.name}-rg"
  location = var.location
  tags     = var.tags
}

# The app's identity: storage, Azure ML and Application Insights, nothing with keys.
resource "azurerm_user_assigned_identity" "app" {
  name                = "${var.name}-app"
  resource_group_name = azurerm_resource_group.this.name
  location            = var.location
  tags                = var.tags
}

resource "azurerm_log_analytics_workspace" "this" {
  name                = "${var.name}-logs"
  resource_group_name = azurerm_resource_group.this.name
  location            = var.location
  sku                 = "PerGB2018"
  retention_in_days   = 30
  tags                = var.tags
}

resource "azurerm_application_insights" "this" {
  name                          = "${var.name}-insights"
  resource_group_name           = azurerm_resource_group.this.name
  location                      = var.location
  workspace_id                  = azurerm_log_analytics_workspace.this.id
  application_type              = "other"
  local_authentication_disabled = true # telemetry is sent with the app's Entra ID token
  tags                          = var.tags
}

# ------------------------------------------------------------------------------------------
# Storage: one account for the Functions host (deployment package, leases, timers), one for
# the data (models, incoming files, predictions, work queue). Entra ID only, TLS 1.2, HTTPS.
# ------------------------------------------------------------------------------------------

resource "azurerm_storage_account" "host" {
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; a customer-managed key needs a Key Vault this module does not own
  #checkov:skip=CKV_AZURE_206:LRS is enough for the host's own state, which a redeploy recreates
  #checkov:skip=CKV2_AZURE_33:Flex Consumption reaches storage over its public endpoint unless VNet-integrated (a network this module does not own)
  #checkov:skip=CKV_AZURE_59:public network access is how an app outside a VNet reaches it (see CKV2_AZURE_33); keys and anonymous access are off
  #checkov:skip=CKV_AZURE_33:queue requests are logged by the diagnostic setting on queueServices (below), not by classic Storage Analytics
  #checkov:skip=CKV_AZURE_43:the name is var.name (validated: 3-11 lower-case) + "host" + 6 hex digits, which checkov cannot evaluate
  name                            = "${var.name}host${local.suffix}"
  resource_group_name             = azurerm_resource_group.this.name
  location                        = var.location
  account_tier                    = "Standard"
  account_replication_type        = "LRS"
  account_kind                    = "StorageV2"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  shared_access_key_enabled       = false
  allow_nested_items_to_be_public = false
  local_user_enabled              = false
  default_to_oauth_authentication = true
  sas_policy {
    expiration_period = "01.00:00:00"
  }
  blob_properties {
    delete_retention_policy {
      days = 7
    }
    container_delete_retention_policy {
      days = 7
    }
  }
  tags = var.tags
}

resource "azurerm_storage_container" "deployment" {
  #checkov:skip=CKV2_AZURE_21:blob reads are logged by the diagnostic setting on blobServices; checkov looks only for Storage Insights
  name                  = "deployment"
  storage_account_id    = azurerm_storage_account.host.id
  container_access_type = "private"
}

resource "azurerm_storage_account" "data" {
  #checkov:skip=CKV2_AZURE_1:Microsoft-managed keys; a customer-managed key needs a Key Vault this module does not own
  #checkov:skip=CKV2_AZURE_33:Flex Consumption reaches storage over its public endpoint unless VNet-integrated (a network this module does not own)
  #checkov:skip=CKV_AZURE_59:public network access is how an app outside a VNet reaches it (see CKV2_AZURE_33); keys and anonymous access are off
  #checkov:skip=CKV_AZURE_33:queue requests are logged by the diagnostic setting on queueServices (below), not by classic Storage Analytics
  #checkov:skip=CKV_AZURE_43:the name is var.name (validated: 3-11 lower-case) + "data" + 6 hex digits, which checkov cannot evaluate
  name                            = "${var.name}data${local.suffix}"
  resource_group_name             = azurerm_resource_group.this.name
  location                        = var.location
  account_tier                    = "Standard"
  account_replication_type        = "GZRS" # models and results survive a zone and a region outage
  account_kind                    = "StorageV2"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  shared_access_key_enabled       = false
  allow_nested_items_to_be_public = false
  local_user_enabled              = false
  default_to_oauth_authentication = true
  sas_policy {
    expiration_period = "01.00:00:00"
  }
  blob_properties {
    versioning_enabled = true # a model version overwritten by mistake can be recovered
    delete_retention_policy {
      days = 30
    }
    container_delete_retention_policy {
      days = 30
    }
  }
  tags = var.tags
}

resource "azurerm_storage_container" "data" {
  #checkov:skip=CKV2_AZURE_21:blob reads are logged by the diagnostic setting on blobServices; checkov looks only for Storage Insights
  name                  = local.data_container
  storage_account_id    = azurerm_storage_account.data.id
  container_access_type = "private"
}

resource "azurerm_storage_queue" "work" {
  name               = local.work_queue
  storage_account_id = azurerm_storage_account.data.id
}

resource "azurerm_storage_queue" "poison" {
  name               = "${local.work_queue}-poison" # where the host moves messages it gave up on
  storage_account_id = azurerm_storage_account.data.id
}

resource "azurerm_monitor_diagnostic_setting" "data_blobs" {
  name                       = "${var.name}-blob-logs"
  target_resource_id         = "${azurerm_storage_account.data.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}

resource "azurerm_monitor_diagnostic_setting" "host_blobs" {
  name                       = "${var.name}-blob-logs"
  target_resource_id         = "${azurerm_storage_account.host.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}

resource "azurerm_monitor_diagnostic_setting" "data_queues" {
  name                       = "${var.name}-queue-logs"
  target_resource_id         = "${azurerm_storage_account.data.id}/queueServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}

resource "azurerm_monitor_diagnostic_setting" "host_queues" {
  name                       = "${var.name}-queue-logs"
  target_resource_id         = "${azurerm_storage_account.host.id}/queueServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.this.id
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}

# ------------------------------------------------------------------------------------------
# Least privilege: each role on the narrowest scope that works.
# ------------------------------------------------------------------------------------------

# The Functions host keeps leases, keys and the deployment package in blobs and uses queues
# for the blob trigger's internal work items: its own account only.
resource "azurerm_role_assignment" "host_blobs" {
  scope                = azurerm_storage_account.host.id
  role_definition_name = "Storage Blob Data Owner"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}

resource "azurerm_role_assignment" "host_queues" {
  scope                = azurerm_storage_account.host.id
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}

# The core reads inputs and models and writes outputs, claims and state in one container.
resource "azurerm_role_assignment" "app_data" {
  scope                = azurerm_storage_container.data.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}

# The work queue and its poison queue: receive, delete, send (fan-out parts, poison moves).
resource "azurerm_role_assignment" "app_work_queue" {
  for_each             = { work = azurerm_storage_queue.work.id, poison = azurerm_storage_queue.poison.id }
  scope                = each.value
  role_definition_name = "Storage Queue Data Contributor"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}

# Telemetry with the app's token (the insights resource accepts no instrumentation key).
resource "azurerm_role_assignment" "app_telemetry" {
  scope                = azurerm_application_insights.this.id
  role_definition_name = "Monitoring Metrics Publisher"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}

# The training jobs read training/<model>/ and write the candidate under staging/<model>/.
# The condition (ABAC) keeps every write and delete inside staging/: the registry (models/),
# inputs, outputs and retraining state stay writable by the app alone, which gates a candidate
# before it registers it.
resource "azurerm_role_assignment" "training_data" {
  scope                = azurerm_storage_container.data.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = var.training_principal_id
  condition_version    = "2.0"
  condition            = <<-EOT
    (
      (
        !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/write'})
        AND !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/add/action'})
        AND !(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/delete'})
      )
      OR
      (
        @Resource[Microsoft.Storage/storageAccounts/blobServices/containers/blobs:path] StringStartsWith '${var.prefix}staging/'
      )
    )
  EOT
}

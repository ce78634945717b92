# BlobCreated under incoming/ → the upload function (one subscription: var.upload_trigger picks
# the plain Event Grid trigger or the Event Grid-based blob trigger's webhook).
resource "azurerm_eventgrid_system_topic" "data" {
  name                   = "${var.name}-data-events"
  resource_group_name    = azurerm_resource_group.this.name
  location               = var.location
  source_arm_resource_id = azurerm_storage_account.data.id
  topic_type             = "Microsoft.Storage.StorageAccounts"
  identity {
    type = "SystemAssigned"
  }
  tags = var.tags
}

resource "azurerm_storage_container" "dead_events" {
  #checkov:skip=CKV2_AZURE_21:blob reads are logged by the diagnostic setting on blobServices; checkov looks only for Storage Insights
  name                  = "eventgrid-deadletter"
  storage_account_id    = azurerm_storage_account.host.id
  container_access_type = "private"
}

# Events Event Grid gave up on are kept (with the reason) instead of dropped.
resource "azurerm_role_assignment" "events_dead_letter" {
  scope                = azurerm_storage_container.dead_events.id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_eventgrid_system_topic.data.identity[0].principal_id
}

locals {
  blob_webhook = "https://${azurerm_function_app_flex_consumption.this.default_hostname}/runtime/webhooks/blobs?functionName=Host.Functions.upload_blob&code=${data.azurerm_function_app_host_keys.this.blobs_extension_key}"
}

resource "azurerm_eventgrid_system_topic_event_subscription" "uploads" {
  name                  = "${var.name}-uploads"
  system_topic          = azurerm_eventgrid_system_topic.data.name
  resource_group_name   = azurerm_resource_group.this.name
  event_delivery_schema = "EventGridSchema"
  included_event_types  = ["Microsoft.Storage.BlobCreated"]

  subject_filter {
    subject_begins_with = "/blobServices/default/containers/${local.data_container}/blobs/${local.incoming}"
  }

  dynamic "azure_function_endpoint" {
    for_each = var.upload_trigger == "eventgrid" ? [1] : []
    content {
      function_id                       = "${azurerm_function_app_flex_consumption.this.id}/functions/upload_event"
      max_events_per_batch              = 1
      preferred_batch_size_in_kilobytes = 64
    }
  }

  dynamic "webhook_endpoint" {
    for_each = var.upload_trigger == "blob" ? [1] : []
    content {
      url = local.blob_webhook
    }
  }

  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }

  dead_letter_identity {
    type = "SystemAssigned"
  }

  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.host.id
    storage_blob_container_name = azurerm_storage_container.dead_events.name
  }

  depends_on = [azurerm_role_assignment.events_dead_letter]
}

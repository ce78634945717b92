resource "azurerm_service_plan" "this" {
  #checkov:skip=CKV_AZURE_225:a Flex Consumption (FC1) plan has no zone balancing setting; the platform places each app's instances
  #checkov:skip=CKV_AZURE_212:a Flex Consumption (FC1) plan has no worker count; instances scale per app (maximum_instance_count)
  name                = "${var.name}-plan"
  resource_group_name = azurerm_resource_group.this.name
  location            = var.location
  os_type             = "Linux"
  sku_name            = "FC1" # Flex Consumption
  tags                = var.tags
}

data "azurerm_machine_learning_workspace" "this" {
  name                = var.azureml_workspace
  resource_group_name = var.azureml_resource_group
}

locals {
  # the storage connection the triggers and the core's clients share (SKYSCORE_STORAGE)
  storage_connection = {
    SKYSCORE_STORAGE__blobServiceUri  = azurerm_storage_account.data.primary_blob_endpoint
    SKYSCORE_STORAGE__queueServiceUri = azurerm_storage_account.data.primary_queue_endpoint
    SKYSCORE_STORAGE__credential      = "managedidentity"
    SKYSCORE_STORAGE__clientId        = azurerm_user_assigned_identity.app.client_id
  }
  app_settings = merge(local.storage_connection, {
    AzureWebJobsStorage__accountName          = azurerm_storage_account.host.name
    AzureWebJobsStorage__credential           = "managedidentity"
    AzureWebJobsStorage__clientId             = azurerm_user_assigned_identity.app.client_id
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING = "ClientId=${azurerm_user_assigned_identity.app.client_id};Authorization=AAD"
    AZURE_CLIENT_ID                           = azurerm_user_assigned_identity.app.client_id
    SKYSCORE_CONTAINER                        = local.data_container
    SKYSCORE_PREFIX                           = var.prefix
    SKYSCORE_QUEUE                            = local.work_queue
    SKYSCORE_QUEUE_MAX_DEQUEUE                = tostring(var.max_dequeue_count)
    SKYSCORE_MODEL                            = var.model
    SKYSCORE_RETRAIN_MODELS                   = var.model
    SKYSCORE_RETRAIN_ALARMS                   = "${local.drift_rule}=drift,${local.prediction_drift_rule}=prediction_drift,${local.error_rate_rule}=error_rate"
    SKYSCORE_AZUREML_SUBSCRIPTION_ID          = data.azurerm_client_config.current.subscription_id
    SKYSCORE_AZUREML_RESOURCE_GROUP           = var.azureml_resource_group
    SKYSCORE_AZUREML_WORKSPACE                = var.azureml_workspace
    SKYSCORE_AZUREML_DATASTORE                = azurerm_machine_learning_datastore_blobstorage.data.name
    SKYSCORE_AZUREML_ENVIRONMENT              = var.azureml_environment_id
    SKYSCORE_AZUREML_CPU_COMPUTE              = var.azureml_cpu_compute
    SKYSCORE_AZUREML_GPU_COMPUTE              = var.azureml_gpu_compute
    SKYSCORE_AZUREML_CLIENT_ID                = azurerm_user_assigned_identity.app.client_id
  })
}

resource "azurerm_function_app_flex_consumption" "this" {
  name                = "${var.name}-func-${local.suffix}"
  resource_group_name = azurerm_resource_group.this.name
  location            = var.location
  service_plan_id     = azurerm_service_plan.this.id

  # the deployment package lives in the host account, read with the app's identity
  storage_container_type            = "blobContainer"
  storage_container_endpoint        = "${azurerm_storage_account.host.primary_blob_endpoint}${azurerm_storage_container.deployment.name}"
  storage_authentication_type       = "UserAssignedIdentity"
  storage_user_assigned_identity_id = azurerm_user_assigned_identity.app.id

  runtime_name           = "python"
  runtime_version        = "3.13"
  maximum_instance_count = var.maximum_instance_count
  instance_memory_in_mb  = var.instance_memory_mb

  https_only                                     = true
  webdeploy_publish_basic_authentication_enabled = false
  client_certificate_mode                        = "Required"

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.app.id]
  }

  site_config {
    application_insights_connection_string = azurerm_application_insights.this.connection_string
    minimum_tls_version                    = "1.2"
    http2_enabled                          = true
  }

  app_settings = local.app_settings
  tags         = var.tags
}

# Function-level keys: the action group's webhook and the blob trigger's Event Grid endpoint.
data "azurerm_function_app_host_keys" "this" {
  name                = azurerm_function_app_flex_consumption.this.name
  resource_group_name = azurerm_resource_group.this.name
  depends_on          = [azurerm_function_app_flex_consumption.this]
}

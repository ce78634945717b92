output "function_app_name" {
  description = "The function app (zip deploy target)."
  value       = azurerm_function_app_flex_consumption.this.name
}

output "resource_group" {
  description = "Resource group of the app and its storage."
  value       = azurerm_resource_group.this.name
}

output "endpoint" {
  description = "Base URL of the HTTP API (function-level key required)."
  value       = "https://${azurerm_function_app_flex_consumption.this.default_hostname}"
}

output "data_container_url" {
  description = "Upload files under incoming/<model>/ here; predictions appear under predictions/."
  value       = "${azurerm_storage_account.data.primary_blob_endpoint}${local.data_container}"
}

output "retrain_alarms" {
  description = "The alert rules the core treats as retraining triggers (SKYSCORE_RETRAIN_ALARMS)."
  value       = local.app_settings.SKYSCORE_RETRAIN_ALARMS
}

# Azure ML: the existing workspace (data source in functions.tf) gets a datastore on the data
# container, identity-based (no key), which the jobs mount: training/<model>/ read-only, the
# candidate's staging/<model>/<stamp>/ read-write.
resource "azurerm_machine_learning_datastore_blobstorage" "data" {
  name                       = "${var.name}data"
  workspace_id               = data.azurerm_machine_learning_workspace.this.id
  storage_container_id       = azurerm_storage_container.data.id
  service_data_auth_identity = "WorkspaceSystemAssignedIdentity"
  description                = "skyscore data container (training data in, candidates out)"
}

# The workspace's identity browses the datastore (the jobs themselves use the compute's).
resource "azurerm_role_assignment" "workspace_data" {
  scope                = azurerm_storage_container.data.id
  role_definition_name = "Storage Blob Data Reader"
  principal_id         = data.azurerm_machine_learning_workspace.this.identity[0].principal_id
}

# The app submits and reads command jobs in this workspace only (no compute or workspace admin).
resource "azurerm_role_assignment" "app_jobs" {
  scope                = data.azurerm_machine_learning_workspace.this.id
  role_definition_name = "AzureML Data Scientist"
  principal_id         = azurerm_user_assigned_identity.app.principal_id
}

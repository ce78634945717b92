"""infra/azure's wiring between the Terraform, host.json and the app (names the app reads, routes
and functions the platform calls, least-privilege roles), read offline; ``terraform fmt`` and
checkov run over every module in tests/infra/test_terraform.py."""

from __future__ import annotations

import re

from azfunc import HOST_JSON, ROOT, functions

from terraform import blocks, module_text

INFRA = ROOT / "infra" / "azure"
TF = {path.name: path.read_text() for path in sorted(INFRA.glob("*.tf"))}
ALL = module_text(INFRA)


def resources(kind: str) -> dict[str, str]:
    return blocks(ALL, kind)


def test_the_app_is_flex_consumption_python_313_with_its_identity() -> None:
    [plan] = resources("azurerm_service_plan").values()
    assert 'sku_name            = "FC1"' in plan
    [app] = resources("azurerm_function_app_flex_consumption").values()
    assert 'runtime_name           = "python"' in app and 'runtime_version        = "3.13"' in app
    assert 'storage_authentication_type       = "UserAssignedIdentity"' in app
    assert "https_only" in app and "webdeploy_publish_basic_authentication_enabled = false" in app
    for account in resources("azurerm_storage_account").values():
        assert "shared_access_key_enabled       = false" in account  # Entra ID only
        assert 'min_tls_version                 = "TLS1_2"' in account


def test_app_settings_name_what_the_app_reads() -> None:
    from functions.azure import function_app

    settings = set(
        re.findall(r"^\s+(\w+)\s+=", ALL.split("app_settings = merge(")[1].split("})")[0], re.M)
    )
    connection = ALL.split("storage_connection = {")[1].split("}")[0]
    for suffix in ("blobServiceUri", "queueServiceUri", "credential", "clientId"):
        assert f"{function_app.CONNECTION}__{suffix}" in connection  # triggers and core alike
    required = {
        "SKYSCORE_CONTAINER",  # the blob trigger's %SKYSCORE_CONTAINER% too
        "SKYSCORE_QUEUE",  # the queue trigger's %SKYSCORE_QUEUE%
        "SKYSCORE_QUEUE_MAX_DEQUEUE",
        "SKYSCORE_MODEL",
        "SKYSCORE_RETRAIN_ALARMS",
        "SKYSCORE_AZUREML_SUBSCRIPTION_ID",
        "SKYSCORE_AZUREML_RESOURCE_GROUP",
        "SKYSCORE_AZUREML_WORKSPACE",
        "SKYSCORE_AZUREML_DATASTORE",
        "SKYSCORE_AZUREML_ENVIRONMENT",
        "SKYSCORE_AZUREML_CPU_COMPUTE",
        "SKYSCORE_AZUREML_CLIENT_ID",
        "AzureWebJobsStorage__accountName",
        "AzureWebJobsStorage__credential",
    }
    assert required <= settings, required - settings
    # every setting the backend requires is one the deployment sets
    source = (ROOT / "shared" / "skyscore" / "adapters" / "azure.py").read_text()
    assert set(re.findall(r'settings\.require\("(\w+)"\)', source)) <= settings
    # the alert rules the core treats as retrain triggers are the rules defined here
    assert re.search(r"SKYSCORE_RETRAIN_ALARMS\s+=\s+\"\$\{local.drift_rule\}=drift,", ALL)
    assert (
        "default     = 5"
        in TF["variables.tf"].split('variable "max_dequeue_count"')[1].split("}")[0]
    )
    assert HOST_JSON["extensions"]["queues"]["maxDequeueCount"] == 5


def test_queues_containers_and_the_event_subscription() -> None:
    queues = resources("azurerm_storage_queue")
    assert set(queues) == {"work", "poison"}
    assert '"${local.work_queue}-poison"' in queues["poison"]
    [subscription] = resources("azurerm_eventgrid_system_topic_event_subscription").values()
    assert 'included_event_types  = ["Microsoft.Storage.BlobCreated"]' in subscription
    assert (
        "/blobServices/default/containers/${local.data_container}/blobs/${local.incoming}"
        in subscription
    )
    assert "storage_blob_dead_letter_destination" in subscription
    registered = set(functions())
    endpoint = re.search(r'/functions/(\w+)"', subscription)
    assert endpoint is not None and endpoint.group(1) == "upload_event" in registered
    webhook = re.search(r"functionName=Host\.Functions\.(\w+)&", ALL)
    assert webhook is not None and webhook.group(1) == "upload_blob" in registered


def test_alerts_reach_the_webhook_in_the_common_schema() -> None:
    from functions.azure import function_app

    [group] = resources("azurerm_monitor_action_group").values()
    assert "use_common_alert_schema = true" in group
    assert f"/{function_app.ALERT_ROUTE}?code=" in group
    rules = resources("azurerm_monitor_scheduled_query_rules_alert_v2")
    assert set(rules) == {"drift", "error_rate", "poison"}
    for rule in rules.values():
        assert "azurerm_monitor_action_group.retrain.id" in rule
    # the drift rule reads the metric records AppInsightsMetrics writes, by model
    assert '\'{"type":"metric","namespace":"skyscore"\'' in TF["monitoring.tf"]
    assert '"max_psi"' in TF["monitoring.tf"] and '"prediction_psi"' in TF["monitoring.tf"]
    assert 'name     = "model"' in rules["drift"]


def test_roles_are_least_privilege() -> None:
    roles = resources("azurerm_role_assignment")
    by_role: dict[str, list[str]] = {}
    for name, body in roles.items():
        role = re.search(r'role_definition_name = "([^"]+)"', body)
        scope = re.search(r"scope\s+= (\S+)", body)
        assert role and scope, name
        by_role.setdefault(role.group(1), []).append(scope.group(1))
    assert not {"Owner", "Contributor", "Storage Account Contributor"} & set(by_role)
    assert by_role["Storage Blob Data Owner"] == ["azurerm_storage_account.host.id"]  # host only
    data_scopes = by_role["Storage Blob Data Contributor"]
    assert (
        "azurerm_storage_account.data.id" not in data_scopes
    )  # the data container, not the account
    assert data_scopes.count("azurerm_storage_container.data.id") == 2  # the app, the training jobs
    assert by_role["Storage Queue Data Contributor"] == [
        "azurerm_storage_account.host.id",
        "each.value",
    ]
    assert by_role["AzureML Data Scientist"] == ["data.azurerm_machine_learning_workspace.this.id"]

# Alerts: log-based rules on the core's metric records (AppTraces, written by
# skyscore.adapters.azure.AppInsightsMetrics) and on the functions' requests. Every rule notifies
# one action group, whose webhook is the app's alerts function (common alert schema). The core
# classifies a rule by its name (SKYSCORE_RETRAIN_ALARMS): drift retrains, error rate rolls a
# fresh promotion back, anything else (the poison queue) only pages people.

resource "azurerm_monitor_action_group" "retrain" {
  name                = "${var.name}-retrain"
  resource_group_name = azurerm_resource_group.this.name
  short_name          = substr("${var.name}rt", 0, 12)

  webhook_receiver {
    name                    = "skyscore-alerts"
    service_uri             = "https://${azurerm_function_app_flex_consumption.this.default_hostname}/hooks/azure-monitor?code=${data.azurerm_function_app_host_keys.this.default_function_key}"
    use_common_alert_schema = true
  }
  tags = var.tags
}

locals {
  # one row per metric record: {"type":"metric","namespace":"skyscore","model":...,"max_psi":...}
  metric_records = <<-KQL
    AppTraces
    | where Message startswith '{"type":"metric","namespace":"skyscore"'
    | extend record = parse_json(Message)
    | extend model = tostring(record.model)
    | where isnotempty(model)
  KQL
  drift_rules = {
    (local.drift_rule)            = "max_psi"
    (local.prediction_drift_rule) = "prediction_psi"
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "drift" {
  for_each                = local.drift_rules
  name                    = each.key
  resource_group_name     = azurerm_resource_group.this.name
  location                = var.location
  scopes                  = [azurerm_application_insights.this.id]
  description             = "skyscore model=${var.model} alarm=${each.value == "max_psi" ? "drift" : "prediction_drift"} (${each.value} of scored batches)"
  severity                = 3
  evaluation_frequency    = "PT15M"
  window_duration         = "PT1H"
  enabled                 = true
  auto_mitigation_enabled = true

  criteria {
    query                   = "${local.metric_records}\n| extend value = todouble(record.${each.value})\n| where isnotnull(value)\n| project TimeGenerated, model, value"
    time_aggregation_method = "Maximum"
    metric_measure_column   = "value"
    operator                = "GreaterThanOrEqual"
    threshold               = var.drift_threshold
    dimension {
      name     = "model"
      operator = "Include"
      values   = ["*"]
    }
    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.retrain.id]
  }
  tags = var.tags
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "error_rate" {
  name                    = local.error_rate_rule
  resource_group_name     = azurerm_resource_group.this.name
  location                = var.location
  scopes                  = [azurerm_application_insights.this.id]
  description             = "skyscore model=${var.model} alarm=error_rate (failed invocations of the scoring functions, percent)"
  severity                = 2
  evaluation_frequency    = "PT5M"
  window_duration         = "PT10M"
  enabled                 = true
  auto_mitigation_enabled = true

  criteria {
    query                   = <<-KQL
      AppRequests
      | where OperationName in ("http", "upload_event", "upload_blob", "work")
      | summarize failed = countif(Success == false), total = count() by bin(TimeGenerated, 5m)
      | extend percent = 100.0 * failed / total
    KQL
    time_aggregation_method = "Maximum"
    metric_measure_column   = "percent"
    operator                = "GreaterThan"
    threshold               = var.error_rate_percent
    failing_periods {
      minimum_failing_periods_to_trigger_alert = 2
      number_of_evaluation_periods             = 2
    }
  }

  action {
    action_groups     = [azurerm_monitor_action_group.retrain.id]
    custom_properties = { model = var.model }
  }
  tags = var.tags
}

# Operational: work messages moved to the poison queue. Not a retrain trigger (it is not in
# SKYSCORE_RETRAIN_ALARMS): the webhook answers it with no decision; it is for people.
resource "azurerm_monitor_scheduled_query_rules_alert_v2" "poison" {
  name                 = local.poison_rule
  resource_group_name  = azurerm_resource_group.this.name
  location             = var.location
  scopes               = [azurerm_application_insights.this.id]
  description          = "Work messages failed ${var.max_dequeue_count} times and wait in ${local.work_queue}-poison"
  severity             = 2
  evaluation_frequency = "PT15M"
  window_duration      = "PT15M"
  enabled              = true

  criteria {
    query                   = <<-KQL
      AppTraces
      | where Message has "${local.work_queue}-poison"
      | summarize moved = count() by bin(TimeGenerated, 15m)
    KQL
    time_aggregation_method = "Total"
    metric_measure_column   = "moved"
    operator                = "GreaterThan"
    threshold               = 0
    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  action {
    action_groups = [azurerm_monitor_action_group.retrain.id]
  }
  tags = var.tags
}

# Log-based metrics from the JSON metric lines the functions write (CloudLoggingMetrics:
# {"type":"metric","namespace":"skyscore","model":...,"max_psi":...}), alert policies on them,
# and a Pub/Sub notification channel that delivers incidents (version 1.2) to the alerts
# function. The policies' display names are the names SKYSCORE_RETRAIN_ALARMS classifies.

locals {
  metric_filter = "resource.type=\"cloud_run_revision\" AND jsonPayload.type=\"metric\" AND jsonPayload.namespace=\"skyscore\""
  gauges        = ["max_psi", "prediction_psi", "row_error_rate"]
}

resource "google_logging_metric" "gauge" {
  for_each        = toset(local.gauges)
  name            = "${var.name}/${each.value}"
  description     = "skyscore ${each.value} per scored batch or HTTP window, by model"
  filter          = "${local.metric_filter} AND jsonPayload.${each.value}:*"
  value_extractor = "EXTRACT(jsonPayload.${each.value})"
  label_extractors = {
    model = "EXTRACT(jsonPayload.model)"
  }

  metric_descriptor {
    metric_kind = "DELTA"
    value_type  = "DISTRIBUTION"
    unit        = "1"
    labels {
      key        = "model"
      value_type = "STRING"
    }
  }

  bucket_options {
    linear_buckets {
      num_finite_buckets = 20
      width              = 0.05
      offset             = 0
    }
  }
}

resource "google_monitoring_notification_channel" "retrain" {
  display_name = "${var.name} retraining (Pub/Sub)"
  type         = "pubsub"
  labels = {
    topic = google_pubsub_topic.alerts.id
  }
}

resource "google_monitoring_alert_policy" "drift" {
  for_each = {
    (local.drift_policy)            = { metric = "max_psi", kind = "drift" }
    (local.prediction_drift_policy) = { metric = "prediction_psi", kind = "prediction_drift" }
  }
  display_name          = each.key
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.retrain.id]
  user_labels           = { model = var.model }

  documentation {
    content   = "model=${var.model} alarm=${each.value.kind}: the inputs no longer look like the training data."
    mime_type = "text/markdown"
  }

  conditions {
    display_name = "${each.value.metric} above ${var.drift_threshold}"
    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.gauge[each.value.metric].name}\" AND metric.label.model=\"${var.model}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.drift_threshold
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_PERCENTILE_99"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["metric.label.model"]
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }
}

resource "google_monitoring_alert_policy" "error_rate" {
  display_name          = local.error_rate_policy
  combiner              = "OR"
  notification_channels = [google_monitoring_notification_channel.retrain.id]
  user_labels           = { model = var.model }

  documentation {
    content   = "model=${var.model} alarm=error_rate: a share of rows fails; a recent promotion is rolled back."
    mime_type = "text/markdown"
  }

  conditions {
    display_name = "row error rate above 5%"
    condition_threshold {
      filter          = "resource.type=\"cloud_run_revision\" AND metric.type=\"logging.googleapis.com/user/${google_logging_metric.gauge["row_error_rate"].name}\" AND metric.label.model=\"${var.model}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0.05
      duration        = "0s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_PERCENTILE_50"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["metric.label.model"]
      }
    }
  }

  alert_strategy {
    auto_close = "3600s"
  }
}

# Operational: anything dead-lettered pages people (email channels are the operator's to add);
# it is not in SKYSCORE_RETRAIN_ALARMS, so it never starts a training job.
resource "google_monitoring_alert_policy" "dead_letters" {
  display_name = local.dead_letter_policy
  combiner     = "OR"

  documentation {
    content   = "Messages reached ${google_pubsub_topic.dead_letter.name}; inspect ${google_pubsub_subscription.dead_letter.name}."
    mime_type = "text/markdown"
  }

  conditions {
    display_name = "undelivered dead letters"
    condition_threshold {
      filter          = "resource.type=\"pubsub_subscription\" AND resource.label.subscription_id=\"${google_pubsub_subscription.dead_letter.name}\" AND metric.type=\"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }
}

# Work topic (object pointers, inline records, fan-out parts), the alert channel's topic, and
# one dead-letter topic. The subscriptions push to the private functions with an OIDC token of
# the invoker account; a message that fails max_delivery_attempts times is dead-lettered.

resource "google_pubsub_topic" "work" {
  name         = "${var.name}-work"
  kms_key_name = var.kms_key
  labels       = var.labels
}

resource "google_pubsub_topic" "alerts" {
  name         = "${var.name}-alerts"
  kms_key_name = var.kms_key
  labels       = var.labels
}

resource "google_pubsub_topic" "dead_letter" {
  name         = "${var.name}-dead-letter"
  kms_key_name = var.kms_key
  labels       = var.labels
}

resource "google_pubsub_subscription" "work" {
  name                 = "${var.name}-work-push"
  topic                = google_pubsub_topic.work.id
  ack_deadline_seconds = 600 # longer than a work function's 540 s
  labels               = var.labels

  push_config {
    push_endpoint = google_cloudfunctions2_function.work.service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloudfunctions2_function.work.service_config[0].uri
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
}

resource "google_pubsub_subscription" "alerts" {
  name                 = "${var.name}-alerts-push"
  topic                = google_pubsub_topic.alerts.id
  ack_deadline_seconds = 120
  labels               = var.labels

  push_config {
    push_endpoint = google_cloudfunctions2_function.alerts.service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloudfunctions2_function.alerts.service_config[0].uri
    }
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }
}

# What was dead-lettered stays a week for inspection (and feeds the dead-letter policy).
resource "google_pubsub_subscription" "dead_letter" {
  name                       = "${var.name}-dead-letter-hold"
  topic                      = google_pubsub_topic.dead_letter.id
  message_retention_duration = "604800s"
  labels                     = var.labels
}

# Dead-lettering: the Pub/Sub service agent publishes to the dead-letter topic and
# acknowledges on the source subscriptions.
resource "google_pubsub_topic_iam_member" "agent_dead_letter" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_agent
}

resource "google_pubsub_subscription_iam_member" "agent_subscriber" {
  for_each = {
    work   = google_pubsub_subscription.work.id
    alerts = google_pubsub_subscription.alerts.id
  }
  subscription = each.value
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_agent
}

# Cloud Monitoring's notification channel publishes incidents to the alerts topic.
resource "google_pubsub_topic_iam_member" "monitoring_alerts" {
  topic  = google_pubsub_topic.alerts.id
  role   = "roles/pubsub.publisher"
  member = local.monitoring_agent
}

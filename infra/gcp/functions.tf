# Five Cloud Run functions (2nd gen) from one source archive, Python 3.13, each running as the
# functions' service account. None is public: callers need roles/run.invoker (main.tf).

locals {
  environment = {
    SKYSCORE_BUCKET                  = google_storage_bucket.data.name
    SKYSCORE_PREFIX                  = var.prefix
    SKYSCORE_GCP_PROJECT             = var.project
    SKYSCORE_MODEL                   = var.model
    SKYSCORE_TOPIC                   = google_pubsub_topic.work.name
    SKYSCORE_DEAD_LETTER_TOPIC       = google_pubsub_topic.dead_letter.name
    SKYSCORE_MAX_DELIVERY_ATTEMPTS   = tostring(var.max_delivery_attempts)
    SKYSCORE_RETRAIN_MODELS          = var.model
    SKYSCORE_RETRAIN_ALARMS          = "${local.drift_policy}=drift,${local.prediction_drift_policy}=prediction_drift,${local.error_rate_policy}=error_rate"
    SKYSCORE_VERTEX_REGION           = var.region
    SKYSCORE_VERTEX_IMAGE            = var.training_image
    SKYSCORE_VERTEX_SERVICE_ACCOUNT  = google_service_account.training.email
    SKYSCORE_VERTEX_MACHINE_TYPE     = "n1-standard-4"
    SKYSCORE_VERTEX_GPU_MACHINE_TYPE = "n1-standard-8"
    SKYSCORE_VERTEX_ACCELERATOR_TYPE = "NVIDIA_TESLA_T4"
    LOG_EXECUTION_ID                 = "true"
  }
  functions = {
    http             = { memory = "1Gi", timeout = 60, max = 20 }
    upload           = { memory = "2Gi", timeout = 540, max = 10 }
    work             = { memory = "2Gi", timeout = 540, max = 20 }
    alerts           = { memory = "512Mi", timeout = 120, max = 2 }
    retrain_schedule = { memory = "512Mi", timeout = 300, max = 1 }
  }
}

resource "google_cloudfunctions2_function" "http" {
  #checkov:skip=CKV_GCP_124:the prediction API is called by clients outside Google Cloud; it stays private through IAM (run.invoker), not ingress
  name     = "${var.name}-http"
  location = var.region
  labels   = var.labels

  build_config {
    runtime     = "python313"
    entry_point = "http"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = local.functions.http.memory
    available_cpu                    = "1"
    timeout_seconds                  = local.functions.http.timeout
    max_instance_count               = local.functions.http.max
    max_instance_request_concurrency = 8
    ingress_settings                 = "ALLOW_ALL" # reachable, but every caller needs run.invoker
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.functions.email
    environment_variables            = local.environment
  }
}

resource "google_cloudfunctions2_function" "upload" {
  name     = "${var.name}-upload"
  location = var.region
  labels   = var.labels

  build_config {
    runtime     = "python313"
    entry_point = "upload"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = local.functions.upload.memory
    available_cpu                    = "1"
    timeout_seconds                  = local.functions.upload.timeout
    max_instance_count               = local.functions.upload.max
    max_instance_request_concurrency = 1
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.functions.email
    environment_variables            = local.environment
  }

  # Eventarc: Cloud Storage finalize events of the data bucket, retried on an error reply
  event_trigger {
    trigger_region        = var.region
    event_type            = "google.cloud.storage.object.v1.finalized"
    retry_policy          = "RETRY_POLICY_RETRY"
    service_account_email = google_service_account.invoker.email
    event_filters {
      attribute = "bucket"
      value     = google_storage_bucket.data.name
    }
  }
}

resource "google_cloudfunctions2_function" "work" {
  name     = "${var.name}-work"
  location = var.region
  labels   = var.labels

  build_config {
    runtime     = "python313"
    entry_point = "work"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  # called by the work topic's push subscription (pubsub.tf), which carries the dead letters
  service_config {
    available_memory                 = local.functions.work.memory
    available_cpu                    = "1"
    timeout_seconds                  = local.functions.work.timeout
    max_instance_count               = local.functions.work.max
    max_instance_request_concurrency = 1
    ingress_settings                 = "ALLOW_INTERNAL_ONLY" # Pub/Sub push, Eventarc and Scheduler of this project count as internal
    all_traffic_on_latest_revision   = true
    service_account_email            = google_service_account.functions.email
    environment_variables            = local.environment
  }
}

resource "google_cloudfunctions2_function" "alerts" {
  name     = "${var.name}-alerts"
  location = var.region
  labels   = var.labels

  build_config {
    runtime     = "python313"
    entry_point = "alerts"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory               = local.functions.alerts.memory
    available_cpu                  = "1"
    timeout_seconds                = local.functions.alerts.timeout
    max_instance_count             = local.functions.alerts.max
    ingress_settings               = "ALLOW_INTERNAL_ONLY" # Pub/Sub push, Eventarc and Scheduler of this project count as internal
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.functions.email
    environment_variables          = local.environment
  }
}

resource "google_cloudfunctions2_function" "retrain_schedule" {
  name     = "${var.name}-retrain-schedule"
  location = var.region
  labels   = var.labels

  build_config {
    runtime     = "python313"
    entry_point = "retrain_schedule"
    source {
      storage_source {
        bucket = google_storage_bucket.source.name
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory               = local.functions.retrain_schedule.memory
    available_cpu                  = "1"
    timeout_seconds                = local.functions.retrain_schedule.timeout
    max_instance_count             = local.functions.retrain_schedule.max
    ingress_settings               = "ALLOW_INTERNAL_ONLY" # Pub/Sub push, Eventarc and Scheduler of this project count as internal
    all_traffic_on_latest_revision = true
    service_account_email          = google_service_account.functions.email
    environment_variables          = local.environment
  }
}

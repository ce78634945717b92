data "google_project" "this" {}

data "google_storage_project_service_account" "gcs" {}

locals {
  incoming = "${var.prefix == "" ? "" : "${trim(var.prefix, "/")}/"}incoming/"
  # policy names the core classifies (SKYSCORE_RETRAIN_ALARMS); any other incident is operational
  drift_policy            = "${var.name}-${var.model}-drift"
  prediction_drift_policy = "${var.name}-${var.model}-prediction-drift"
  error_rate_policy       = "${var.name}-${var.model}-error-rate"
  dead_letter_policy      = "${var.name}-dead-letters"
  pubsub_agent            = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  monitoring_agent        = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-monitoring-notification.iam.gserviceaccount.com"
}

resource "google_project_service" "apis" {
  for_each = toset([
    "aiplatform.googleapis.com",
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com",
    "eventarc.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "storage.googleapis.com",
  ])
  service            = each.value
  disable_on_destroy = false
}

# ------------------------------------------------------------------------------------------
# Service accounts: the functions, the training jobs, and the callers (Pub/Sub push, Eventarc,
# Scheduler). Each gets only the roles below, on the narrowest resource that carries them.
# ------------------------------------------------------------------------------------------

resource "google_service_account" "functions" {
  account_id   = "${var.name}-fn"
  display_name = "skyscore functions (runtime)"
}

resource "google_service_account" "training" {
  account_id   = "${var.name}-train"
  display_name = "skyscore Vertex AI training jobs"
}

resource "google_service_account" "invoker" {
  account_id   = "${var.name}-invoker"
  display_name = "skyscore triggers (Pub/Sub push, Eventarc, Scheduler)"
}

# data: read and write objects of the one bucket (no bucket administration)
resource "google_storage_bucket_iam_member" "functions_data" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectUser"
  member = google_service_account.functions.member
}

# training jobs read training/ and write only their candidate under staging/: the registry
# (models/), inputs, outputs and retraining state stay writable by the functions alone, which
# gate a candidate before they register it (IAM conditions need uniform bucket-level access)
locals {
  objects = "projects/_/buckets/${google_storage_bucket.data.name}/objects/${var.prefix}"
}

resource "google_storage_bucket_iam_member" "training_read" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.training.member
  condition {
    title       = "training-and-staging-only"
    description = "list the bucket; read training data and the job's own staging"
    expression  = "resource.type == \"storage.googleapis.com/Bucket\" || resource.name.startsWith(\"${local.objects}training/\") || resource.name.startsWith(\"${local.objects}staging/\")"
  }
}

resource "google_storage_bucket_iam_member" "training_write" {
  bucket = google_storage_bucket.data.name
  role   = "roles/storage.objectUser"
  member = google_service_account.training.member
  condition {
    title       = "staging-only"
    description = "write the candidate under staging/ and nowhere else"
    expression  = "resource.name.startsWith(\"${local.objects}staging/\")"
  }
}

# fan-out parts go to the work topic; rejected messages to its dead-letter topic
resource "google_pubsub_topic_iam_member" "functions_work" {
  topic  = google_pubsub_topic.work.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.functions.member
}

resource "google_pubsub_topic_iam_member" "functions_dead_letter" {
  topic  = google_pubsub_topic.dead_letter.id
  role   = "roles/pubsub.publisher"
  member = google_service_account.functions.member
}

# Vertex AI: create and read custom jobs, run as the training account (and only that one)
resource "google_project_iam_member" "functions_vertex" {
  project = var.project
  role    = "roles/aiplatform.user"
  member  = google_service_account.functions.member
}

resource "google_service_account_iam_member" "functions_act_as_training" {
  service_account_id = google_service_account.training.name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.functions.member
}

resource "google_project_iam_member" "log_writers" {
  for_each = {
    functions = google_service_account.functions.member
    training  = google_service_account.training.member
  }
  project = var.project
  role    = "roles/logging.logWriter"
  member  = each.value
}

# the callers: invoke the private functions, receive Eventarc events
resource "google_cloud_run_service_iam_member" "invoker" {
  for_each = {
    upload           = google_cloudfunctions2_function.upload.service_config[0].service
    work             = google_cloudfunctions2_function.work.service_config[0].service
    alerts           = google_cloudfunctions2_function.alerts.service_config[0].service
    retrain_schedule = google_cloudfunctions2_function.retrain_schedule.service_config[0].service
  }
  location = var.region
  service  = each.value
  role     = "roles/run.invoker"
  member   = google_service_account.invoker.member
}

resource "google_project_iam_member" "invoker_event_receiver" {
  project = var.project
  role    = "roles/eventarc.eventReceiver"
  member  = google_service_account.invoker.member
}

# Cloud Storage publishes the finalize events Eventarc delivers
resource "google_project_iam_member" "gcs_publisher" {
  project = var.project
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

# Pub/Sub signs the push requests' OIDC tokens as the invoker
resource "google_service_account_iam_member" "pubsub_token_creator" {
  service_account_id = google_service_account.invoker.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_agent
}

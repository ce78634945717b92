# The retraining tick: judge finished Vertex AI jobs, then consider retraining each model.
resource "google_cloud_scheduler_job" "retrain" {
  name        = "${var.name}-retrain"
  region      = var.region
  schedule    = var.schedule
  time_zone   = "Etc/UTC"
  description = "skyscore retraining tick"

  retry_config {
    retry_count = 1
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.retrain_schedule.service_config[0].uri
    oidc_token {
      service_account_email = google_service_account.invoker.email
      audience              = google_cloudfunctions2_function.retrain_schedule.service_config[0].uri
    }
  }
}

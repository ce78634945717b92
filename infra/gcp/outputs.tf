output "http_url" {
  description = "The private HTTP function (send an identity token)."
  value       = google_cloudfunctions2_function.http.service_config[0].uri
}

output "data_bucket" {
  description = "Upload files under gs://<bucket>/incoming/<model>/."
  value       = google_storage_bucket.data.name
}

output "work_topic" {
  description = "Publish work messages here."
  value       = google_pubsub_topic.work.id
}

output "functions_service_account" {
  description = "The functions' runtime identity."
  value       = google_service_account.functions.email
}

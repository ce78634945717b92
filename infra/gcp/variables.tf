variable "project" {
  description = "The Google Cloud project id."
  type        = string
}

variable "region" {
  description = "Region of the functions, buckets, Pub/Sub triggers and Vertex AI jobs."
  type        = string
  default     = "europe-west4"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "skyscore"
}

variable "model" {
  description = "The default model (SKYSCORE_MODEL) and the one the alert policies watch."
  type        = string
  default     = "cancer"
}

variable "prefix" {
  description = "Key prefix of the data inside the bucket (SKYSCORE_PREFIX); empty for the root."
  type        = string
  default     = ""
}

variable "source_zip" {
  description = "The functions' source archive built by `python functions/gcp/package.py`."
  type        = string
  default     = "../../build/gcp.zip"
}

variable "training_image" {
  description = "Container image with the skyscore training entrypoint (python -m skyscore.training.train)."
  type        = string
}

variable "kms_key" {
  description = "Cloud KMS key (projects/.../cryptoKeys/...) that encrypts the buckets and topics."
  type        = string
}

variable "max_delivery_attempts" {
  description = "Pub/Sub deliveries of one message before it goes to the dead-letter topic."
  type        = number
  default     = 5
}

variable "drift_threshold" {
  description = "Population stability index above which the drift policy opens an incident."
  type        = number
  default     = 0.25
}

variable "schedule" {
  description = "Cloud Scheduler cron of the retraining tick."
  type        = string
  default     = "*/15 * * * *"
}

variable "labels" {
  description = "Labels on every resource that takes them."
  type        = map(string)
  default     = { app = "skyscore" }
}

variable "name" {
  description = "Prefix of every resource name (lower-case letters and digits, 3-11 characters)."
  type        = string
  default     = "skyscore"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,10}$", var.name))
    error_message = "name: 3-11 lower-case letters and digits, starting with a letter."
  }
}

variable "location" {
  description = "Azure region of every resource (one with Flex Consumption)."
  type        = string
  default     = "westeurope"
}

variable "model" {
  description = "The default model: files directly under incoming/ and alerts without a model dimension."
  type        = string
  default     = "cancer"
}

variable "prefix" {
  description = "Key prefix inside the data container (SKYSCORE_PREFIX); empty for the container root."
  type        = string
  default     = ""
}

variable "upload_trigger" {
  description = "Which function the BlobCreated subscription delivers to: eventgrid (upload_event, streams the blob) or blob (upload_blob, the Event Grid-based blob trigger)."
  type        = string
  default     = "eventgrid"
  validation {
    condition     = contains(["eventgrid", "blob"], var.upload_trigger)
    error_message = "upload_trigger: eventgrid or blob."
  }
}

variable "maximum_instance_count" {
  description = "Most Flex Consumption instances the app scales out to."
  type        = number
  default     = 40
}

variable "instance_memory_mb" {
  description = "Memory of each Flex Consumption instance (2048 or 4096)."
  type        = number
  default     = 2048
}

variable "max_dequeue_count" {
  description = "Tries of a work message before the host moves it to <queue>-poison (host.json maxDequeueCount)."
  type        = number
  default     = 5
}

variable "azureml_resource_group" {
  description = "Resource group of the existing Azure ML workspace."
  type        = string
}

variable "azureml_workspace" {
  description = "Name of the existing Azure ML workspace that runs the training jobs."
  type        = string
}

variable "azureml_environment_id" {
  description = "The registered environment the training job runs in (the core and scikit-learn), e.g. azureml:skyscore-train:1."
  type        = string
}

variable "azureml_cpu_compute" {
  description = "Compute cluster for estimators that cannot use a GPU."
  type        = string
  default     = "cpu-cluster"
}

variable "azureml_gpu_compute" {
  description = "Compute cluster for an estimator that uses a GPU (xgboost); empty: the CPU cluster."
  type        = string
  default     = ""
}

variable "training_principal_id" {
  description = "Object id of the identity the compute clusters run jobs as (reads training data, writes the candidate)."
  type        = string
}

variable "drift_threshold" {
  description = "Feature or prediction PSI at which the drift alerts fire."
  type        = number
  default     = 0.25
}

variable "error_rate_percent" {
  description = "Failed invocations of the scoring functions, percent over 5 minutes, at which the error-rate alert fires."
  type        = number
  default     = 5
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = { app = "skyscore" }
}

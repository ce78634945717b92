"""Online serving: the transport-neutral dataplane, the Open Inference Protocol and the OpenAPI document."""

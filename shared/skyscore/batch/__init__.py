"""Batch scoring: the streamed file pipeline and the store-level scorer (claims, manifests, fan-out)."""

"""Models: the card, the input schema, ONNX inference and the registry of versions and aliases."""

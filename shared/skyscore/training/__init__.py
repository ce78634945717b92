"""Training side only (scikit-learn, skl2onnx): fit, export to ONNX, the datasets and held-out rows."""

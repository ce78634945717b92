"""The model lifecycle: retraining decisions, the quality gate and promotion."""

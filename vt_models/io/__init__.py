"""Side effects, one small module each: MLflow (tracking and registry), DVC (data versions), files."""

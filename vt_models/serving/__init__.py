"""Packaging models for MLflow: a pyfunc logged as code (no pickles) around a vt checkpoint."""

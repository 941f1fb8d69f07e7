"""Data pipeline: sample videos, probe, extract frames, split."""

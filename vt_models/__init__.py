"""vt-models: transfer learning on video, from a folder of labelled clips to a shipped model."""

__version__ = "0.1.0"

"""Video I/O: decoding (decord, PyAV fallback) and encoding (PyAV)."""

"""Video classification as one vertical slice: its pipeline steps live in :mod:`vt_models.classify.steps`."""

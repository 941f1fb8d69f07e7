"""Backbones and detectors: the registry (data, no torch), the builders, weights loading, the common classifier.

Import from the submodules: this package stays empty so that reading the registry loads no torch.
"""

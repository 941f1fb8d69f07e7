"""Backbones: the registry, weights loading, the common classifier and its transforms."""

from vt_models.models.registry import BackboneSpec, build_backbone, get_spec, list_backbones, register_backbone

__all__ = ["BackboneSpec", "build_backbone", "get_spec", "list_backbones", "register_backbone"]

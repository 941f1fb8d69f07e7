"""One way from a model reference to a ready predictor, for `vt predict`, the pyfunc model and the
dashboard: a checkpoint says what it is (``task: detect`` or a classifier), and gets its predictor."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vt_models.classify.predict import VideoPredictor
    from vt_models.detect.predict import DetectorPredictor


def is_detector(ckpt: dict[str, Any]) -> bool:
    return ckpt.get("task") == "detect"


def predictor_for(ckpt: dict[str, Any], device: str = "cpu") -> VideoPredictor | DetectorPredictor:
    """The predictor a loaded vt checkpoint asks for."""
    if is_detector(ckpt):
        from vt_models.detect.predict import DetectorPredictor

        return DetectorPredictor(ckpt, device=device)
    from vt_models.classify.predict import VideoPredictor

    return VideoPredictor(ckpt, device=device)


def load_predictor(model: str | Path, device: str = "cpu") -> VideoPredictor | DetectorPredictor:
    """``models:/NAME@ALIAS``, ``models:/NAME/VERSION`` (from the current MLflow tracking URI) or a
    checkpoint file -> its predictor."""
    from vt_models.models.checkpoint import load_checkpoint
    from vt_models.models.weights import resolve_mlflow_checkpoint, weights_kind

    path = resolve_mlflow_checkpoint(str(model)) if weights_kind(str(model)) == "mlflow" else Path(model)
    return predictor_for(load_checkpoint(path), device=device)

"""Self-describing checkpoints: everything needed to rebuild the model is inside the file.

Saved with ``torch.save`` as plain containers of tensors and primitives, and always read back
with ``torch.load(..., weights_only=True)``, so loading a checkpoint never runs pickled code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vt_models.io.files import atomic_write

FORMAT = "vt-models/checkpoint/1"
# what only resuming a run needs: left out of best.pt, of runs that are never resumed and of a predictor's meta
RESUME_STATE = frozenset({"optimizer", "scheduler", "scaler", "rng", "ema", "stale_epochs", "objective"})


class CheckpointError(ValueError):
    """A file that is not a usable vt-models checkpoint; says which file and why."""


def save_checkpoint(path: Path | str, payload: dict[str, Any]) -> Path:
    """Write atomically (a temporary file of its own, then a rename): a crash mid-save never leaves a broken
    checkpoint, and two runs saving into one folder at once never clash over the temporary file."""
    return atomic_write(path, lambda fh: torch.save({"format": FORMAT, **payload}, fh))


def weights_only(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint without what only resuming needs (``RESUME_STATE``)."""
    return {k: v for k, v in checkpoint.items() if k not in RESUME_STATE}


def load_checkpoint(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError for unsafe content, RuntimeError for corrupt zips
        raise CheckpointError(f"{path}: cannot be read as a safe (weights-only) torch checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return ckpt


def is_vt_checkpoint(ckpt: dict[str, Any]) -> bool:
    return ckpt.get("format") == FORMAT


def checkpoint_modality(ckpt: dict[str, Any]) -> str:
    """The input modality a vt checkpoint was trained on (checkpoints from before modalities: rgb)."""
    return str(ckpt.get("model_args", {}).get("modality", "rgb"))

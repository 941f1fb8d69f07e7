"""DVC-tracked files (splits, stored frames) and the Predict page's upload checks and predictor."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.data.store import MAX_UPLOAD_MB

# --------------------------------------------------------------------------- DVC-tracked files


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return None


def class_counts(splits: dict[str, Any]) -> pd.DataFrame:
    """Class x split counts from the split stage's ``counts`` (classes in the file's order)."""
    counts = splits.get("counts", {})
    classes = splits.get("classes") or sorted({c for per in counts.values() for c in per})
    order = [s for s in ("train", "val", "test") if s in counts] + [
        s for s in counts if s not in ("train", "val", "test")
    ]
    df = pd.DataFrame(
        {s: [int(counts[s].get(c, 0)) for c in classes] for s in order}, index=pd.Index(classes, name="class")
    )
    df["total"] = df.sum(axis=1)
    return df


def split_of(splits: dict[str, Any]) -> dict[str, str]:
    """video path -> split name."""
    return {p: name for name, paths in splits.get("splits", {}).items() for p in paths}


def samples_per_class(
    index: dict[str, Any], per_class: int = 1, prefer: Sequence[str] = ()
) -> dict[str, list[dict[str, Any]]]:
    """The first ``per_class`` videos of each class in the frames index (``prefer`` paths first)."""
    order = {p: i for i, p in enumerate(prefer)}
    videos = sorted(index.get("videos", []), key=lambda v: (order.get(v["path"], len(order)), v["path"]))
    out: dict[str, list[dict[str, Any]]] = {}
    for v in videos:
        picked = out.setdefault(v["label"], [])
        if len(picked) < per_class:
            picked.append(v)
    return dict(sorted(out.items()))


@st.cache_data(show_spinner=False, max_entries=256)
def load_stored_frames(path: str, mtime: float) -> np.ndarray:
    """Frames the extract stage stored for one video (``mtime`` in the key: a re-extract refreshes)."""
    from vt_models.data.frames import load_frames

    return load_frames(path).frames


# --------------------------------------------------------------------------- prediction


@dataclass(frozen=True)
class UploadCheck:
    ok: bool
    message: str


def check_upload(filename: str, size: int, max_mb: int = MAX_UPLOAD_MB) -> UploadCheck:
    """Type (by extension) and size of an uploaded file, before anything decodes it."""
    from vt_models.config import VIDEO_EXTENSIONS

    suffix = Path(filename).suffix.lower()
    if suffix not in VIDEO_EXTENSIONS:
        return UploadCheck(
            False,
            f"{filename}: '{suffix or 'no extension'}' is not a video type we read; "
            f"use one of {' '.join(VIDEO_EXTENSIONS)}",
        )
    if size <= 0:
        return UploadCheck(False, f"{filename} is empty (0 bytes)")
    if size > max_mb * 1024 * 1024:
        return UploadCheck(False, f"{filename} is {size / 2**20:.0f} MB; the limit is {max_mb} MB")
    return UploadCheck(True, "")


def probe_video(path: Path) -> str | None:
    """None when the file decodes as a video, else the probe's human reason."""
    from vt_models.data.probe import inspect_video

    try:
        inspect_video(path, min_frames=1)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is "not a usable video" here
        return str(exc) or type(exc).__name__
    return None


@st.cache_resource(show_spinner=False, max_entries=4)
def load_predictor(uri: str, model_uri: str) -> Any:
    """The checkpoint behind a ``models:/NAME/VERSION`` URI, ready to predict (kept in memory)."""
    import mlflow

    from vt_models.serving.predictors import load_predictor

    mlflow.set_tracking_uri(uri)
    return load_predictor(model_uri, device="cpu")

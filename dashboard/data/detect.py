"""Detectors from their DVC-tracked files: reports, the detector table, tracks, the last promotion."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard.data.files import read_csv, read_json
from dashboard.data.store import number

# --------------------------------------------------------------------------- detection (DVC-tracked files)

DETECT_EXPERIMENT = "vt-detect"
CMD_DETECT_TRAIN = "vt detect train"
CMD_DETECT_EVALUATE = "vt detect evaluate"
CMD_DETECT_PROMOTE = "vt detect promote"
CMD_REPRO = "dvc repro"
DETECT_PROMOTION = Path("reports") / "detect_promotion.json"
DEFAULT_DETECTOR_MODEL = "vt-video-detector"
# The comparison table's numeric columns, in display order (detector_table fills every one, NaN when missing).
DETECT_COLUMNS = (
    "map",
    "map_50",
    "precision",
    "recall",
    "mota_tracked",
    "mota_untracked",
    "mota_gain",
    "idf1_tracked",
    "idf1_untracked",
    "idf1_gain",
    "hota_tracked",
    "hota_untracked",
    "hota_gain",
    "id_switches_tracked",
    "id_switches_untracked",
    "ms_per_frame",
    "params_m",
    "val_map",
    "train_s",
)


@dataclass(frozen=True)
class DetectorFiles:
    """What the detect stages wrote for one detector (None where a file is missing or unreadable)."""

    name: str
    train: dict[str, Any] | None  # models/detect/NAME/metrics.json (best epoch, validation)
    test: dict[str, Any] | None  # reports/detect/NAME/metrics.json
    mot: dict[str, Any] | None  # reports/detect/NAME/mot.json

    @property
    def any(self) -> bool:
        return self.train is not None or self.test is not None


def detector_model_name(cfg: Any) -> str:
    """The detectors' registered model name (params ``detect.model_name``)."""
    return cfg.detect.model_name if cfg is not None else DEFAULT_DETECTOR_MODEL


def is_detector(predictor: Any) -> bool:
    """A predictor from :func:`vt_models.serving.predictors.load_predictor` that detects and tracks."""
    from vt_models.detect.predict import DetectorPredictor

    return isinstance(predictor, DetectorPredictor)


def detector_names(cfg: Any) -> list[str]:
    """The detectors params.yaml asks for (``detect.detectors``), in its order."""
    return list(cfg.detect.detectors) if cfg is not None else []


def detector_train_dir(cfg: Any, name: str) -> Path:
    return cfg.run_dir("detect", name)


def detector_report_dir(cfg: Any, name: str) -> Path:
    return cfg.detect_eval_dir(name)


def read_detector(cfg: Any, name: str) -> DetectorFiles:
    report = detector_report_dir(cfg, name)
    return DetectorFiles(
        name,
        read_json(detector_train_dir(cfg, name) / "metrics.json"),
        read_json(report / "metrics.json"),
        read_json(report / "mot.json"),
    )


def _mot(files: DetectorFiles, kind: str, key: str) -> float:
    """MOT metric ``key`` of ``kind`` (tracked/untracked): mot.json first, else the flat ``kind_key`` in
    metrics.json."""
    value = number((files.mot or {}).get(kind), key)
    return number(files.test, f"{kind}_{key}") if math.isnan(value) else value


def detector_table(detectors: Iterable[DetectorFiles]) -> pd.DataFrame:
    """One row per detector with any result: test detection and MOT scores, cost, validation mAP, training time.

    ``*_gain`` is tracked minus untracked: what the tracker adds over per-frame detections alone.
    """
    rows = []
    for d in detectors:
        if not d.any:
            continue
        row: dict[str, Any] = {"detector": d.name}
        row.update({k: number(d.test, k) for k in ("map", "map_50", "precision", "recall", "ms_per_frame")})
        for key in ("mota", "idf1", "hota", "id_switches"):
            row[f"{key}_tracked"], row[f"{key}_untracked"] = _mot(d, "tracked", key), _mot(d, "untracked", key)
        for key in ("mota", "idf1", "hota"):
            row[f"{key}_gain"] = row[f"{key}_tracked"] - row[f"{key}_untracked"]
        # test-time count first (the evaluated model), else the training stage's
        params = number(d.test, "params")
        row["params_m"] = (number(d.train, "params_total") if math.isnan(params) else params) / 1e6
        row["val_map"], row["train_s"] = number(d.train, "val_map"), number(d.train, "train_seconds")
        row["data_version"] = str((d.test or {}).get("data_version") or "")
        row["evaluated"], row["trained"] = d.test is not None, d.train is not None
        rows.append(row)
    return pd.DataFrame(rows, columns=["detector", *DETECT_COLUMNS, "data_version", "evaluated", "trained"])


def recommend_detector(table: pd.DataFrame) -> dict[str, Any] | None:
    """The detector to ship: highest test mAP; on a tie, the faster one (lower ms/frame). None without test scores."""
    scored = table.dropna(subset=["map"]) if not table.empty else table
    if scored.empty:
        return None
    # NaN latency sorts last, so a measured detector wins a tie over an unmeasured one
    ranked = scored.assign(_speed=scored["ms_per_frame"].fillna(math.inf)).sort_values(
        ["map", "_speed"], ascending=[False, True], kind="stable"
    )
    return ranked.iloc[0].drop("_speed").to_dict()


def detector_per_class(cfg: Any, name: str) -> pd.DataFrame | None:
    """class, ap, ap50 as floats (NaN: no ground truth of that class in the split), or None without the file."""
    raw = read_csv(detector_report_dir(cfg, name) / "per_class.csv")
    if raw is None or "class" not in raw:
        return None
    out = pd.DataFrame({"class": raw["class"]})
    for col in ("ap", "ap50"):
        out[col] = pd.to_numeric(raw[col], errors="coerce") if col in raw else float("nan")
    return out


def detector_history(cfg: Any, name: str) -> pd.DataFrame | None:
    """history.csv with numeric columns and a 1-based ``epoch`` (the file counts from 0), or None."""
    raw = read_csv(detector_train_dir(cfg, name) / "history.csv")
    if raw is None or raw.empty or "epoch" not in raw:
        return None
    out = raw.apply(pd.to_numeric, errors="coerce")
    out["epoch"] = out["epoch"] + 1
    return out


@st.cache_data(show_spinner=False, max_entries=16)
def load_bytes(path: str, mtime: float) -> bytes:
    """A file's bytes (``mtime`` in the key: a re-render of the clip refreshes)."""
    return Path(path).read_bytes()


def detector_sample(cfg: Any, name: str) -> tuple[bytes | None, dict[str, Any] | None]:
    """The annotated sample clip (MP4 bytes) and its tracks JSON; None for whichever is missing."""
    report = detector_report_dir(cfg, name)
    mp4 = report / "sample.tracks.mp4"
    clip = load_bytes(str(mp4), mp4.stat().st_mtime) if mp4.is_file() and mp4.stat().st_size > 0 else None
    return clip, read_json(report / "sample.tracks.json")


def track_table(tracks: dict[str, Any]) -> pd.DataFrame:
    """One row per track of a tracks JSON: id, label, frames, frames predicted through occlusion, span, mean score."""
    rows = []
    for t in tracks.get("tracks", []):
        frames = t.get("frames", [])
        times = [f["time_s"] for f in frames if f.get("time_s") is not None]
        seen = [f["score"] for f in frames if not f.get("predicted") and f.get("score") is not None]
        rows.append(
            {
                "track_id": int(t["track_id"]),
                "label": t.get("label", ""),
                "frames": len(frames),
                "predicted": sum(bool(f.get("predicted")) for f in frames),
                "first_s": min(times) if times else float("nan"),
                "last_s": max(times) if times else float("nan"),
                "mean_score": float(np.mean(seen)) if seen else float("nan"),
            }
        )
    return pd.DataFrame(rows, columns=["track_id", "label", "frames", "predicted", "first_s", "last_s", "mean_score"])


def detect_promotion(model: str | None = None, path: Path = DETECT_PROMOTION) -> dict[str, Any] | None:
    """The last ``vt detect promote`` decision (``reports/detect_promotion.json``); None if absent or for
    another model."""
    report = read_json(path)
    if report is None or (model is not None and report.get("model_name") not in (None, model)):
        return None
    return report

"""Data access for the dashboard: what MLflow and DVC recorded, as pandas DataFrames.

Nothing here computes a score: every number comes from an MLflow run, a registry version or a
DVC-tracked file of the project in the working directory, so the dashboard cannot disagree with
them. The ``load_*`` functions read and are cached (``st.cache_data``, keyed by the tracking URI so
switching stores never shows stale data); the rest are pure and testable without Streamlit.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

TTL_S = 30  # MLflow reads are cached this long; the sidebar's refresh button clears them at once
TRAIN_EXPERIMENT = "vt-train"
CV_EXPERIMENT = "vt-cv"
DEFAULT_MODEL = "vt-video-classifier"
MAX_UPLOAD_MB = 200

QUALITY = ("accuracy", "macro_precision", "macro_recall", "macro_f1")
LABELS = {
    "accuracy": "accuracy",
    "macro_precision": "macro precision",
    "macro_recall": "macro recall",
    "macro_f1": "macro F1",
}
CURVES = ("train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr")

# What to run for each missing piece (shown next to the gap, never an exception).
CMD_DEMO = "python3 tasks.py demo"
CMD_TRAIN = "vt train"
CMD_EVALUATE = "vt evaluate"
CMD_CV = "vt cv"
CMD_PROMOTE = "vt promote"
NOTHING_TO_SHIP = "nothing to ship yet"  # how the promotion gate words a registry without a champion


# --------------------------------------------------------------------------- project and store


def tracking_uri() -> str:
    """The store the project uses: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` here."""
    from vt_models.io import mlflow as tracking

    return tracking.configure()


def store_exists(uri: str) -> bool:
    """False for an embedded sqlite file that is not there (reading must not create it)."""
    if uri.startswith("sqlite:///"):
        return Path(uri.removeprefix("sqlite:///")).is_file()
    return True


def load_project(params: str = "params.yaml") -> tuple[Any, str | None]:
    """(Config, None) for the project in the working directory, or (None, why not)."""
    from vt_models.config import ConfigError, load_config

    if not Path(params).is_file():
        return None, f"no {params} in {Path.cwd()}: start the dashboard from the project root"
    try:
        return load_config(params), None
    except ConfigError as exc:
        return None, str(exc)


def model_name(cfg: Any) -> str:
    return cfg.registry.model_name if cfg is not None else DEFAULT_MODEL


def dvc_run_ids(cfg: Any, stage: str = "train") -> dict[str, str]:
    """backbone -> the MLflow run id of the checkpoint DVC currently tracks (``models/<stage>/*/run.json``)."""
    root = Path("models") / stage if cfg is None else cfg.run_dir(stage, "x").parent
    out: dict[str, str] = {}
    for run_file in sorted(root.glob("*/run.json")):
        try:
            out[run_file.parent.name] = json.loads(run_file.read_text())["run_id"]
        except (OSError, ValueError, KeyError):
            continue  # a half-written file: fall back to the latest run
    return out


# --------------------------------------------------------------------------- MLflow reads


def _client(uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def runs_frame(runs: Iterable[Any]) -> pd.DataFrame:
    """MLflow runs as one row each: ``metrics.*``, ``params.*``, ``tags.*`` columns plus run info."""
    rows = []
    for run in runs:
        info, data = run.info, run.data
        row: dict[str, Any] = {
            "run_id": info.run_id,
            "run_name": info.run_name,
            "status": info.status,
            "start_time": pd.to_datetime(info.start_time, unit="ms") if info.start_time else pd.NaT,
            "parent_run_id": data.tags.get("mlflow.parentRunId"),
            "datasets": ", ".join(d.dataset.name for d in (run.inputs.dataset_inputs if run.inputs else [])),
        }
        row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
        row.update({f"params.{k}": v for k, v in data.params.items()})
        row.update({f"tags.{k}": v for k, v in data.tags.items() if not k.startswith("mlflow.")})
        rows.append(row)
    return pd.DataFrame(rows)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_experiments(uri: str) -> list[str]:
    """Names of the experiments that have at least one run."""
    if not store_exists(uri):
        return []
    client = _client(uri)
    names = []
    for exp in client.search_experiments():
        if client.search_runs([exp.experiment_id], max_results=1):
            names.append(exp.name)
    return sorted(names)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_runs(uri: str, experiment: str) -> pd.DataFrame:
    """Every run of ``experiment``, newest first (empty when the experiment does not exist)."""
    if not store_exists(uri):
        return pd.DataFrame()
    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return pd.DataFrame()
    runs = client.search_runs([exp.experiment_id], max_results=5000, order_by=["attributes.start_time DESC"])
    return runs_frame(runs)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_run(uri: str, run_id: str) -> dict[str, Any]:
    """One run: info, params, metrics, tags and its dataset inputs."""
    run = _client(uri).get_run(run_id)
    return {
        "run_id": run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "experiment_id": run.info.experiment_id,
        "artifact_uri": run.info.artifact_uri,
        "start_time": pd.to_datetime(run.info.start_time, unit="ms") if run.info.start_time else None,
        "params": dict(run.data.params),
        "metrics": dict(run.data.metrics),
        "tags": dict(run.data.tags),
        "datasets": [
            {
                "name": d.dataset.name,
                "digest": d.dataset.digest,
                "source_type": d.dataset.source_type,
                "source": d.dataset.source,
                "context": ", ".join(t.value for t in d.tags),
            }
            for d in (run.inputs.dataset_inputs if run.inputs else [])
        ],
    }


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_history(uri: str, run_id: str, keys: tuple[str, ...] = CURVES) -> pd.DataFrame:
    """Per-epoch metric values in long form: epoch, metric, value."""
    client = _client(uri)
    rows = [
        {"epoch": m.step + 1, "metric": key, "value": m.value}
        for key in keys
        for m in client.get_metric_history(run_id, key)
    ]
    return pd.DataFrame(rows, columns=["epoch", "metric", "value"])


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_artifact(uri: str, run_id: str, path: str) -> bytes | None:
    """An artifact file's bytes, or None when the run does not have it."""
    import mlflow

    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=path, dst_path=tmp, tracking_uri=uri
            )
        except Exception:  # noqa: BLE001 - missing artifact (or store hiccup) is shown as a gap
            return None
        p = Path(local)
        return p.read_bytes() if p.is_file() else None


def artifact_csv(uri: str, run_id: str, path: str) -> pd.DataFrame | None:
    import io

    raw = load_artifact(uri, run_id, path)
    return pd.read_csv(io.BytesIO(raw)) if raw is not None else None


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_versions(uri: str, name: str) -> pd.DataFrame:
    """Registered versions of ``name``, newest first, with aliases and the promotion tags."""
    if not store_exists(uri):
        return pd.DataFrame()
    client = _client(uri)
    try:
        model = client.get_registered_model(name)
    except Exception:  # noqa: BLE001 - not registered yet
        return pd.DataFrame()
    aliases: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for v in client.search_model_versions(f"name='{name}'"):
        tags = dict(v.tags)
        rows.append(
            {
                "version": int(v.version),
                "aliases": ", ".join(sorted(aliases.get(str(v.version), []))),
                "backbone": tags.get("backbone", ""),
                "run_id": v.run_id or "",
                "status": v.status,
                "created": pd.to_datetime(v.creation_timestamp, unit="ms"),
                "source": v.source,
                **{k: val for k, val in tags.items() if k.startswith("promotion.")},
            }
        )
    df = pd.DataFrame(rows)
    return df.sort_values("version", ascending=False, ignore_index=True) if not df.empty else df


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_registered_models(uri: str) -> list[str]:
    if not store_exists(uri):
        return []
    return sorted(m.name for m in _client(uri).search_registered_models())


def alias_row(versions: pd.DataFrame, alias: str) -> dict[str, Any] | None:
    """The version carrying ``alias`` (e.g. champion), or None."""
    if versions.empty:
        return None
    hit = versions[versions["aliases"].str.split(", ").apply(lambda a: alias in a)]
    return hit.iloc[0].to_dict() if not hit.empty else None


def last_decision(versions: pd.DataFrame) -> dict[str, Any] | None:
    """The registry's newest gate decision: the ``promotion.*`` tags (prefix dropped) of the newest version
    that has them."""
    if versions.empty or "promotion.reason" not in versions:
        return None
    decided = versions[versions["promotion.reason"].fillna("") != ""]  # versions are sorted newest first
    if decided.empty:
        return None
    row = decided.iloc[0]
    return {k.removeprefix("promotion."): v for k, v in row.items() if k.startswith("promotion.") and not _missing(v)}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def nothing_to_ship(decision: dict[str, Any] | None) -> str | None:
    """ "nothing to ship yet: <why>" when the last gate decision left the registry without a champion, else None.

    Works on ``reports/*promotion.json`` and on the registry tags (:func:`last_decision`); a record from
    before the floor existed has no ``champion_after`` and is read as before (candidate if promoted, else
    the old champion).
    """
    if not decision or promotion_champion(decision)[0] is not None:
        return None
    reason = str(decision.get("reason") or "no model has been promoted")
    return reason if reason.startswith(NOTHING_TO_SHIP) else f"{NOTHING_TO_SHIP}: {reason}"


# --------------------------------------------------------------------------- the comparison


def _num(row: pd.Series, col: str) -> float:
    value = row.get(col, float("nan"))
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def current_runs(runs: pd.DataFrame, preferred: dict[str, str] | None = None) -> pd.DataFrame:
    """One top-level run per backbone: the one DVC tracks (``run.json``) if present, else the newest finished."""
    if runs.empty or "tags.backbone" not in runs:
        return runs.iloc[0:0]
    top = runs[runs["parent_run_id"].isna()] if "parent_run_id" in runs else runs
    top = top[top["tags.backbone"].notna()]
    preferred = preferred or {}
    picked = []
    for backbone, group in top.groupby("tags.backbone", sort=False):
        want = preferred.get(str(backbone))
        hit = group[group["run_id"] == want] if want else group.iloc[0:0]
        if hit.empty:
            finished = group[group["status"] == "FINISHED"]
            hit = (finished if not finished.empty else group).sort_values("start_time", ascending=False)
        picked.append(hit.iloc[0])
    return pd.DataFrame(picked).reset_index(drop=True)


def cv_summary(cv_runs: pd.DataFrame) -> pd.DataFrame:
    """Newest CV parent run per backbone (the one with ``mean_*`` metrics)."""
    if cv_runs.empty or "tags.backbone" not in cv_runs:
        return pd.DataFrame(columns=["backbone"])
    parents = cv_runs[cv_runs["parent_run_id"].isna()] if "parent_run_id" in cv_runs else cv_runs
    mean_cols = [c for c in parents.columns if c.startswith("metrics.mean_")]
    if not mean_cols:
        return pd.DataFrame(columns=["backbone"])
    parents = parents[parents[mean_cols].notna().any(axis=1)].sort_values("start_time", ascending=False)
    latest = parents.drop_duplicates("tags.backbone")
    out = latest.rename(columns={"tags.backbone": "backbone", "run_id": "cv_run_id"})
    keep = [
        "backbone",
        "cv_run_id",
        *[c for c in out.columns if c.startswith(("metrics.mean_", "metrics.std_", "metrics.folds"))],
    ]
    return out[keep].reset_index(drop=True)


def backbone_table(
    runs: pd.DataFrame,
    cv: pd.DataFrame,
    metric: str = "macro_f1",
    champion_run_id: str | None = None,
    preferred: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per backbone: test quality, CV mean/std of ``metric``, cost, training time, data version."""
    rows = []
    cv_by = {r["backbone"]: r for _, r in cv.iterrows()} if not cv.empty else {}
    for _, r in current_runs(runs, preferred).iterrows():
        backbone = str(r["tags.backbone"])
        c = cv_by.get(backbone, pd.Series(dtype=object))
        params = _num(r, "metrics.test_params")
        if math.isnan(params):
            params = _num(r, "metrics.best_params_total")
        mean, std = _num(c, f"metrics.mean_{metric}"), _num(c, f"metrics.std_{metric}")
        rows.append(
            {
                "champion": bool(champion_run_id) and r["run_id"] == champion_run_id,
                "backbone": backbone,
                "family": r.get("tags.family", ""),
                **{m: _num(r, f"metrics.test_{m}") for m in QUALITY},
                "cv_mean": mean,
                "cv_std": std,
                "cv": "-" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}",
                "params_m": params / 1e6,
                "gflops": _num(r, "metrics.test_gflops_per_clip"),
                "latency_ms": _num(r, "metrics.test_latency_ms"),
                "train_s": _num(r, "metrics.best_train_seconds"),
                "val_macro_f1": _num(r, "metrics.best_val_macro_f1"),
                "data_version": r.get("tags.data_version", "") or "",
                "run_id": r["run_id"],
            }
        )
    return pd.DataFrame(rows)


def per_class_f1(runs: pd.DataFrame, preferred: dict[str, str] | None = None) -> pd.DataFrame:
    """Long form backbone, class, f1 from the ``test_f1_<class>`` metrics."""
    rows = []
    for _, r in current_runs(runs, preferred).iterrows():
        for col in r.index:
            if col.startswith("metrics.test_f1_") and not pd.isna(r[col]):
                rows.append(
                    {"backbone": r["tags.backbone"], "class": col.removeprefix("metrics.test_f1_"), "f1": float(r[col])}
                )
    return pd.DataFrame(rows, columns=["backbone", "class", "f1"])


def pareto_mask(cost: Sequence[float], value: Sequence[float]) -> list[bool]:
    """True where no other point is at least as cheap and as good, and strictly better in one."""
    pts = [(float(c), float(v)) for c, v in zip(cost, value, strict=True)]
    out = []
    for i, (ci, vi) in enumerate(pts):
        if math.isnan(ci) or math.isnan(vi):
            out.append(False)
            continue
        dominated = any(
            j != i and cj <= ci and vj >= vi and (cj < ci or vj > vi)
            for j, (cj, vj) in enumerate(pts)
            if not (math.isnan(cj) or math.isnan(vj))
        )
        out.append(not dominated)
    return out


def missing_steps(
    table: pd.DataFrame, cv: pd.DataFrame, champion: dict[str, Any] | None, blocked: str | None = None
) -> list[str]:
    """What the comparison lacks, each with the command that produces it (``blocked``: the gate ran and found
    nothing that qualifies, so "run vt promote" is not what is missing)."""
    gaps = []
    if table.empty:
        return [f"no training runs: run `{CMD_DEMO}` (or `{CMD_TRAIN}`)"]
    no_test = table.loc[table["accuracy"].isna(), "backbone"].tolist()
    if no_test:
        gaps.append(f"no test-split scores for {', '.join(no_test)}: run `{CMD_EVALUATE}`")
    no_cv = table.loc[table["cv_mean"].isna(), "backbone"].tolist()
    if no_cv:
        gaps.append(f"no cross-validation for {', '.join(no_cv)}: run `{CMD_CV}`")
    if champion is None and not blocked:
        gaps.append(f"no champion in the registry yet: run `{CMD_PROMOTE}`")
    return gaps


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

    from vt_models.models.weights import resolve_mlflow_checkpoint
    from vt_models.predict import VideoPredictor

    mlflow.set_tracking_uri(uri)
    return VideoPredictor.from_path(resolve_mlflow_checkpoint(model_uri), device="cpu")


# --------------------------------------------------------------------------- detection (DVC-tracked files)

DETECT_EXPERIMENT = "vt-detect"
CMD_DETECT_TRAIN = "vt detect train"
CMD_DETECT_EVALUATE = "vt detect evaluate"
CMD_DETECT_PROMOTE = "vt detect promote"
CMD_REPRO = "dvc repro"
DETECT_PROMOTION = Path("reports") / "detect_promotion.json"
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


def _f(d: dict[str, Any] | None, key: str) -> float:
    """A number from a metrics dict, NaN when absent or not numeric (JSON null, a string)."""
    try:
        return float((d or {})[key])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def _mot(files: DetectorFiles, kind: str, key: str) -> float:
    """MOT metric ``key`` of ``kind`` (tracked/untracked): mot.json first, else the flat ``kind_key`` in
    metrics.json."""
    value = _f((files.mot or {}).get(kind), key)
    return _f(files.test, f"{kind}_{key}") if math.isnan(value) else value


def detector_table(detectors: Iterable[DetectorFiles]) -> pd.DataFrame:
    """One row per detector with any result: test detection and MOT scores, cost, validation mAP, training time.

    ``*_gain`` is tracked minus untracked: what the tracker adds over per-frame detections alone.
    """
    rows = []
    for d in detectors:
        if not d.any:
            continue
        row: dict[str, Any] = {"detector": d.name}
        row.update({k: _f(d.test, k) for k in ("map", "map_50", "precision", "recall", "ms_per_frame")})
        for key in ("mota", "idf1", "id_switches"):
            row[f"{key}_tracked"], row[f"{key}_untracked"] = _mot(d, "tracked", key), _mot(d, "untracked", key)
        row["mota_gain"] = row["mota_tracked"] - row["mota_untracked"]
        row["idf1_gain"] = row["idf1_tracked"] - row["idf1_untracked"]
        # test-time count first (the evaluated model), else the training stage's
        params = _f(d.test, "params")
        row["params_m"] = (_f(d.train, "params_total") if math.isnan(params) else params) / 1e6
        row["val_map"], row["train_s"] = _f(d.train, "val_map"), _f(d.train, "train_seconds")
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


def promotion_champion(report: dict[str, Any]) -> tuple[str | None, str | None, float]:
    """(version, detector, score) of the champion after the decision; version None when there is none.

    ``champion_after`` says it (the gate writes it: the floor can leave no champion, or remove the old
    one); without it: the candidate when promoted, else the old champion.
    """
    if "champion_after" in report:
        version = report.get("champion_after")
        if version in (None, ""):
            return None, None, float("nan")
        if str(version) == str(report.get("candidate_version")):
            return str(version), report.get("candidate_backbone"), _f(report, "candidate_score")
        return str(version), None, _f(report, "champion_score")
    if str(report.get("promoted")).lower() == "true":
        return str(report.get("candidate_version")), report.get("candidate_backbone"), _f(report, "candidate_score")
    version = report.get("champion_version")
    return (None if version in (None, "") else str(version)), None, _f(report, "champion_score")

"""What MLflow and the project recorded: the store, runs, histories, artifacts, registry versions (cached reads)."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

# re-exported: how the gate words a registry without a champion, and how it marks a label-free decision
from vt_models.promotion import LABEL_FREE, LABEL_FREE_DECISION, NOTHING_TO_SHIP  # noqa: F401
from vt_models.reports import champion_after, nothing_to_ship  # noqa: F401  (re-exported: the gate verdict rule)

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


# --------------------------------------------------------------------------- project and store


def tracking_uri() -> str:
    """The store the project uses: ``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///mlflow.db`` here."""
    from vt_models.io import mlflow as tracking

    return tracking.configure()


def shown_uri(uri: str) -> str:
    """The tracking URI as the pages show it: a password in it is replaced by ``***``."""
    from vt_models.io import mlflow as tracking

    return tracking.redacted(uri)


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
def load_alias_history(uri: str, name: str, alias: str = "champion") -> pd.DataFrame:
    """Every recorded move of ``alias`` (by the gate or a rollback), newest first."""
    from vt_models.io.mlflow import alias_history

    if not store_exists(uri):
        return pd.DataFrame()
    try:
        moves = alias_history(name, alias, _client(uri))
    except Exception:  # noqa: BLE001 - not registered yet
        return pd.DataFrame()
    rows = [
        {
            "time (UTC)": m.time,
            "from": f"v{m.from_version}" if m.from_version else "none",
            "to": f"v{m.to_version}" if m.to_version else "none",
            "by": m.by,
            "user": m.user,
            "reason": m.reason,
        }
        for m in reversed(moves)
    ]
    return pd.DataFrame(rows)


@st.cache_data(ttl=TTL_S, show_spinner=False)
def load_registered_models(uri: str) -> list[str]:
    if not store_exists(uri):
        return []
    from vt_models.io.mlflow import LOCK_SUFFIX

    # a promotion's alias lock is a registered model for the length of one alias move: not a model
    return sorted(m.name for m in _client(uri).search_registered_models() if not m.name.endswith(LOCK_SUFFIX))


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


def number(d: dict[str, Any] | None, key: str) -> float:
    """A number from a metrics dict, NaN when absent or not numeric (JSON null, a string)."""
    try:
        return float((d or {})[key])
    except (KeyError, TypeError, ValueError):
        return float("nan")


def promotion_champion(report: dict[str, Any]) -> tuple[str | None, str | None, float]:
    """(version, detector, score) of the champion after the decision; version None when there is none.

    ``champion_after`` says it (the gate writes it: the floor can leave no champion, or remove the old
    one); without it: the candidate when promoted, else the old champion.
    """
    version = champion_after(report)
    if version is None:
        return None, None, float("nan")
    if version == str(report.get("candidate_version")):
        return version, report.get("candidate_backbone"), number(report, "candidate_score")
    return version, None, number(report, "champion_score")

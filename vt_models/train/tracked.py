"""One tracked fit, for classifiers and detectors alike: the MLflow run around the generic loop,
and the files every run leaves next to its checkpoints (metrics.json, history.csv, curves.png,
run.json). Both training runners call :func:`tracked_fit`; nothing else opens a training run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vt_models.config import run_dir
from vt_models.io.files import write_csv, write_json
from vt_models.train import distributed as dist
from vt_models.train.engine import FitResult, NullLogger

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    stage: str
    backbone: str
    run_id: str | None
    best_path: Path
    metrics_path: Path
    result: FitResult

    @property
    def best_score(self) -> float:
        return self.result.best_score


@dataclass
class DatasetInput:
    """The training data as MLflow sees it: one row per video, and its DVC data version."""

    rows: list[dict[str, Any]]
    frames_dir: Path
    name: str
    version: str


@dataclass
class Tracking:
    """Where and how one fit is recorded in MLflow."""

    experiment: str
    run_name: str
    tags: dict[str, str]
    params: dict[str, Any]
    dataset: DatasetInput
    artifacts: Sequence[Path] = ()


def tracked_fit(
    fit: Callable[[Any], FitResult],
    out_dir: Path,
    meta: dict[str, Any],
    stage: str,
    name: str,
    tracking: Tracking | None,
    curves: tuple[str, ...] = ("accuracy", "macro_f1"),
    after_fit: Callable[[FitResult], None] | None = None,
    resume: bool = False,
) -> RunSummary:
    """Run ``fit(logger)``, write its outputs, and (with ``tracking``, on the main rank) record it all in one
    MLflow run whose id lands in ``run.json``: later steps (evaluate, promote) attach their results to it.
    ``after_fit`` runs inside that MLflow run (e.g. to register the model). Checkpoints name their run
    (``mlflow_run_id``), so ``resume`` continues the run of ``last.pt`` rather than starting another."""
    run_id = None
    if tracking is not None and dist.is_main():
        import mlflow

        from vt_models.io import mlflow as mlflow_io

        resumed = _run_of_last_checkpoint(out_dir) if resume else None
        if resumed is not None and not mlflow_io.run_exists(resumed):
            log.warning(
                "MLflow run %s of %s not found at %s: starting a new run", resumed, out_dir, mlflow_io.tracking_uri()
            )
            resumed = None
        # training must not wait minutes on a server that is gone (see BoundedHttp)
        with (
            mlflow_io.BoundedHttp() as bounded,
            mlflow_io.start_run(tracking.experiment, tracking.run_name, tracking.tags, run_id=resumed) as active,
        ):
            run_id = active.info.run_id
            meta["mlflow_run_id"] = run_id
            if resumed is not None:
                log.info("continuing MLflow run %s", run_id)
                mlflow_io.log_params_again(run_id, tracking.params)
            else:
                mlflow_io.log_params(tracking.params)
                d = tracking.dataset
                log_dataset_input(d.rows, d.frames_dir, d.name, d.version)
            logger = mlflow_io.MlflowLogger(run_id)
            result = fit(logger)
            if not logger.flush():
                write_outputs(out_dir, result, meta, curves)
                raise mlflow_io.TrackingUnavailable(
                    f"trained to the end (checkpoints and metrics in {out_dir}), but MLflow at "
                    f"{mlflow_io.redacted(mlflow_io.tracking_uri())} does not answer ({logger.unreachable}): "
                    f"the run's last metrics, its files and its model are not logged. Once the server is back, "
                    f"{resume_hint(stage, name, out_dir)} logs them into the same MLflow run {run_id}"
                )
            if resumed is not None:
                missing = mlflow_io.log_missing_epochs(run_id, result.history)
                log.info("logged %d epoch(s) that MLflow run %s was missing", missing, run_id)
            metrics_path, history_path, curves_path = write_outputs(out_dir, result, meta, curves)
            with bounded.lifted():  # files and a model may rightly take long to upload
                mlflow.log_metrics(
                    {
                        f"best_{k}": float(v)
                        for k, v in json.loads(metrics_path.read_text()).items()
                        if isinstance(v, (int, float)) and "/" not in k
                    }
                )
                for p in (metrics_path, history_path, curves_path, *tracking.artifacts):
                    mlflow.log_artifact(str(p))
                mlflow.log_text(json.dumps(meta["config"], indent=2), "config.json")
                write_json(
                    out_dir / "run.json",
                    {
                        "run_id": run_id,
                        "experiment": tracking.experiment,
                        "tracking_uri": mlflow_io.redacted(mlflow_io.tracking_uri()),
                    },
                )
                if after_fit is not None:
                    after_fit(result)
    else:
        result = fit(NullLogger())
        metrics_path = out_dir / "metrics.json"
        if dist.is_main():
            metrics_path, _, _ = write_outputs(out_dir, result, meta, curves)
    dist.barrier()
    return RunSummary(stage, name, run_id, result.best_path, metrics_path, result)


def resume_hint(stage: str, name: str, out_dir: Path | None = None) -> str:
    """The command that resumes this training (and logs what its MLflow run is missing); a classifier trained
    into a folder of its own (``--out``) is resumed there."""
    commands = {
        "pretrain": "vt pretrain -b",
        "train": "vt train -b",
        "detect": "vt detect train -d",
        "detect_pretrain": "vt detect pretrain -d",
    }
    command = commands.get(stage)
    if stage in ("pretrain", "train") and out_dir is not None and out_dir != run_dir(stage, name):
        name = f"{name} --out {out_dir}"
    return f"`{command} {name} --resume`" if command else f"rerunning {stage} {name} with --resume"


def _run_of_last_checkpoint(out_dir: Path) -> str | None:
    """The MLflow run that ``last.pt`` was trained in (None: no checkpoint, or one from before runs were named)."""
    from vt_models.models.checkpoint import load_checkpoint

    last = out_dir / "last.pt"
    return load_checkpoint(last).get("mlflow_run_id") if last.is_file() else None


def write_outputs(
    out_dir: Path, result: FitResult, meta: dict[str, Any], val_curves: tuple[str, ...] = ("accuracy", "macro_f1")
) -> tuple[Path, Path, Path]:
    """metrics.json (DVC metrics), history.csv (DVC plots) and curves.png next to the checkpoints."""
    best = result.history[result.best_epoch] if result.best_epoch >= 0 else {}
    metrics = {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        **{k: v for k, v in best.items() if k.startswith(("val_", "target_"))},
        "params_total": meta["strategy"]["params_total"],
        "params_trainable": meta["strategy"]["params_trainable"],
        "clips_per_s": best.get("clips_per_s", 0.0),
        "train_seconds": sum(r["epoch_seconds"] for r in result.history),
    }
    metrics_path = write_json(out_dir / "metrics.json", metrics)
    # every epoch's columns, in first-seen order: a fixed schedule's first validated epoch may come after others
    cols = list(dict.fromkeys(k for row in result.history for k in row)) or ["epoch"]
    history_path = write_csv(out_dir / "history.csv", result.history, cols)
    curves_path = out_dir / "curves.png"
    _plot_curves(result.history, curves_path, meta["backbone"], val_curves)
    return metrics_path, history_path, curves_path


def _plot_curves(history: list[dict[str, float]], path: Path, title: str, val_curves: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) + 1 for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    # validated epochs only (a fixed schedule validates every train.val_interval-th)
    val = [(e, r) for e, r in zip(epochs, history, strict=True) if "val_count" in r]
    a.plot([e for e, _ in val], [r.get("val_loss", float("nan")) for _, r in val], "o-", label="val")
    a.set(title=f"{title}: loss", xlabel="epoch")
    a.legend()
    for key in val_curves:
        b.plot([e for e, _ in val], [r.get(f"val_{key}", float("nan")) for _, r in val], "o-", label=f"val {key}")
    b.set(title=f"{title}: validation", xlabel="epoch", ylim=(0, 1.02))
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def log_dataset_input(rows: list[dict[str, Any]], frames_dir: Path, name: str, version: str) -> None:
    """The training data as an MLflow dataset input, with the DVC data version as its digest."""
    import warnings

    import mlflow
    import pandas as pd

    digest = version.split(":", 1)[-1][:36]
    with warnings.catch_warnings():  # a local path "can be interpreted in multiple ways" (both local)
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(
            pd.DataFrame(rows), source=str(frames_dir), name=f"{name}@{version}", digest=digest
        )
    mlflow.log_input(dataset, context="training")

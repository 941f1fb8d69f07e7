"""k-fold cross-validation without leakage: the grouped, stratified folds of the split stage.

Each fold trains on the other folds of train+val and is scored on its own fold; the test split
is never touched. Folds train a fixed number of epochs and score the *last* model, because
picking the best epoch on the scoring fold would leak it into the score. One MLflow parent run
per backbone, a nested run per fold, mean and standard deviation of every metric.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vt_models.classify.data import load_split_data, require_labels
from vt_models.classify.evaluate import evaluate_records
from vt_models.classify.runner import prepare_fit
from vt_models.config import Config
from vt_models.eval.metrics import classification_metrics
from vt_models.io.files import write_csv, write_json
from vt_models.models.checkpoint import load_checkpoint

log = logging.getLogger(__name__)


def cv_dir(backbone: str) -> Path:
    return Path("reports") / "cv" / backbone


def summarise(folds: list[dict[str, float]]) -> dict[str, float]:
    """``mean_<m>`` and ``std_<m>`` (population std, like numpy's default) of every metric."""
    out: dict[str, float] = {"folds": float(len(folds))}
    for key in folds[0]:
        values = np.asarray([f[key] for f in folds], dtype=np.float64)
        out[f"mean_{key}"] = float(values.mean())
        out[f"std_{key}"] = float(values.std())
    return out


def cross_validate(cfg: Config, backbone: str, progress: bool = True, track: bool = True) -> dict[str, Any]:
    # folds of the target's labelled videos: supervised fine-tuning, whatever train.adapt says
    tc = cfg.train.model_copy(
        update={"epochs": cfg.cv.epochs or cfg.train.epochs, "early_stopping_patience": None, "adapt": "none"}
    )
    data = load_split_data(cfg.frames_dir(tc.dataset), cfg.splits_path(tc.dataset))
    require_labels(data.classes, tc.dataset, "cross-validation scores folds against labels")
    if len(data.folds) < 2:
        raise ValueError(
            f"{cfg.splits_path(tc.dataset)} has {len(data.folds)} fold(s): re-run `vt split` with split.k_folds >= 2"
        )
    dev = data.records["train"] + data.records["val"]
    out_root = cv_dir(backbone)
    fold_rows: list[dict[str, float]] = []

    def one_fold(i: int, fold_paths: list[str]) -> dict[str, float]:
        held = set(fold_paths)
        train_recs = [r for r in dev if r.path not in held]
        fold_recs = [r for r in dev if r.path in held]
        fit = prepare_fit(cfg, "train", backbone, data, tc=tc, train_records=train_recs, val_records=fold_recs)
        if track:
            from vt_models.io import mlflow as tracking

            tracking.log_params(fit.params(cfg, {"fold": i, "cv_folds": len(data.folds)}))
        logger = _fold_logger() if track else None
        result = fit.run(out_root / f"fold{i}", cfg.seed, logger, progress, resume_state=False)
        if logger is not None:
            logger.flush()
        labels, probs, _ = evaluate_records(
            load_checkpoint(result.last_path), fold_recs, cfg.cv.views, device=tc.device
        )
        m = classification_metrics(labels, probs.argmax(1), len(data.classes), probs)
        scalars = {k: float(v) for k, v in m.items() if isinstance(v, float)}
        log.info(
            "cv %s fold %d/%d: macro-F1 %.3f on %d videos",
            backbone,
            i + 1,
            len(data.folds),
            scalars["macro_f1"],
            len(fold_recs),
        )
        return scalars

    if track:
        import mlflow

        from vt_models.io import mlflow as tracking

        with tracking.start_run(
            "vt-cv",
            f"cv-{backbone}",
            {"backbone": backbone, "data_version": data.data_version, "folds": str(len(data.folds))},
            system_metrics=False,
        ) as parent:
            for i, fold_paths in enumerate(data.folds):
                with tracking.start_run(
                    "vt-cv",
                    f"cv-{backbone}-fold{i}",
                    {"backbone": backbone, "fold": str(i)},
                    system_metrics=False,
                    nested=True,
                ):
                    scores = one_fold(i, fold_paths)
                    mlflow.log_metrics(scores)
                fold_rows.append(scores)
            summary = summarise(fold_rows)
            mlflow.log_metrics(summary)
            run_id = parent.info.run_id
    else:
        fold_rows = [one_fold(i, f) for i, f in enumerate(data.folds)]
        summary, run_id = summarise(fold_rows), None

    write_csv(out_root / "folds.csv", [{"fold": i, **r} for i, r in enumerate(fold_rows)], ["fold", *fold_rows[0]])
    write_json(out_root / "metrics.json", {**summary, "data_version": data.data_version})
    return {"backbone": backbone, "run_id": run_id, **summary}


def _fold_logger() -> Any:
    import mlflow

    from vt_models.io.mlflow import MlflowLogger

    return MlflowLogger(mlflow.active_run().info.run_id)

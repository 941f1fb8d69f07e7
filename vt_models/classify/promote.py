"""Classification's side of the promotion gate: the candidate, its evidence on the test split (the
evaluate stage's predictions when they fit, else a fresh evaluation), its predictions for a label-free
decision when the target's test split lists no video, and the weekly champion check.
The gate itself, shared with detection, is :func:`vt_models.promotion.gate`."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vt_models.config import Config
from vt_models.promotion import (
    Decision,
    Evidence,
    Floor,
    LabelFree,
    best_on_validation,
    gate,
    seen_by_run,
    unseen_test_split,
)

if TYPE_CHECKING:
    from vt_models.classify.data import SplitData

log = logging.getLogger(__name__)


def pick_candidate(cfg: Config) -> str:
    """The trained backbone with the best validation score of the configured metric."""
    return best_on_validation(
        cfg,
        "train",
        cfg.train.backbones,
        f"val_{cfg.registry.metric}",
        "no trained backbone found under models/train/: run `vt train` (or `dvc repro`) first",
    )


def champion_test_score(cfg: Config, version: object) -> tuple[float, str, int, int]:
    """The registered champion's score on the test videos it did not train on:
    (score, data version, scored, left out)."""
    from vt_models.models.weights import resolve_mlflow_checkpoint

    seen = seen_by_run(version.run_id) or set()
    ckpt = resolve_mlflow_checkpoint(f"models:/{version.name}/{version.version}")
    with unseen_test_split(
        cfg.frames_dir(cfg.train.dataset), cfg.splits_path(cfg.train.dataset), cfg.evaluate.split, seen
    ) as (path, total, dropped):
        ev = test_evidence(cfg, ckpt, splits_path=path)
    return ev.score, ev.data_version, total - dropped, dropped


def reusable_predictions(eval_dir: Path, checkpoint: Path, videos: list[str], cfg: Config) -> list[dict] | None:
    """The evaluate stage's per-video predictions of ``videos`` when they are this checkpoint's, on this
    data version, split and number of views, and the evaluated videos still have the content they were
    scored with; else None (the gate then scores the model itself)."""
    from vt_models.data.extract import load_index
    from vt_models.data.split import videos_digest
    from vt_models.io.dvc import data_version
    from vt_models.io.files import file_md5, read_csv

    metrics_path, preds_path = eval_dir / "metrics.json", eval_dir / "predictions.csv"
    if not metrics_path.is_file() or not preds_path.is_file():
        return None
    m = json.loads(metrics_path.read_text(encoding="utf-8"))
    frames_dir = cfg.frames_dir(cfg.train.dataset)
    same = (
        m.get("checkpoint_md5") == file_md5(checkpoint)
        and m.get("data_version") == data_version(frames_dir, cfg.splits_path(cfg.train.dataset))
        and m.get("split") == cfg.evaluate.split
        and m.get("views") == cfg.evaluate.views
    )
    if not same:
        return None
    by_video = {r["video"]: r for r in read_csv(preds_path)}
    # content too: dvc.lock's frames hash (the data version) lags behind the data during a flow
    if m.get("test_set") != videos_digest(load_index(frames_dir), list(by_video)) or not set(videos) <= set(by_video):
        return None
    return [by_video[v] for v in videos]


def test_evidence(
    cfg: Config,
    checkpoint: Path,
    train_labels: list[int] | None = None,
    splits_path: Path | None = None,
    reuse: Path | None = None,
) -> Evidence:
    """Score a checkpoint on the current test split (of ``splits_path``, default the data set's),
    with the floor's evidence.

    The per-video predictions are the evaluation's own (``predictions.csv``): those of the evaluate stage
    in ``reuse`` when they belong to this checkpoint and data version, else from a fresh evaluation. The
    baseline predicts the most frequent class of ``train_labels`` (the train split) for every test
    video; without training labels, the test split's most frequent class (an easier baseline to state,
    same rule).
    """
    import tempfile

    from vt_models.classify.evaluate import evaluate_checkpoint
    from vt_models.eval.bootstrap import classification_statistic, majority_baseline, majority_class, video_bootstrap
    from vt_models.io.dvc import data_version
    from vt_models.io.files import read_csv
    from vt_models.models.checkpoint import load_checkpoint

    rc = cfg.registry
    frames_dir = cfg.frames_dir(cfg.train.dataset)
    splits_path = splits_path or cfg.splits_path(cfg.train.dataset)
    videos = json.loads(Path(splits_path).read_text(encoding="utf-8"))["splits"][cfg.evaluate.split]
    # the data set's version (not the temporary unseen split's): evidence of two gates on the same data compares
    version = data_version(frames_dir, cfg.splits_path(cfg.train.dataset))
    rows = reusable_predictions(reuse, checkpoint, videos, cfg) if reuse is not None else None
    if rows is not None:
        log.info("gate: %s's predictions of these %d videos come from %s", checkpoint, len(rows), reuse)
        classes = list(load_checkpoint(checkpoint)["classes"])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            report = evaluate_checkpoint(
                checkpoint,
                frames_dir,
                splits_path,
                Path(tmp),
                cfg.evaluate.split,
                cfg.evaluate.views,
                cfg.train.device,
                measure_cost=False,
                probes=False,
            )  # the gate reads the normal predictions only
            rows = read_csv(Path(tmp) / "predictions.csv")
        classes = report.classes
    k = len(classes)
    y_true = np.asarray([classes.index(r["true_label"]) for r in rows], np.int64)
    y_pred = np.asarray([classes.index(r["pred_label"]) for r in rows], np.int64)
    if train_labels:
        majority, source = majority_class(train_labels, k), "train split"
    else:
        majority, source = majority_class(y_true, k), f"{cfg.evaluate.split} split (no training labels)"
    statistic = classification_statistic(y_true, y_pred, k, rc.metric)
    ci = video_bootstrap(
        statistic, len(y_true), resamples=rc.bootstrap_resamples, confidence=rc.confidence, seed=cfg.seed
    )
    return Evidence(
        statistic(np.arange(len(y_true))),
        version,
        ci,
        majority_baseline(y_true, majority, k, rc.metric),
        f"always '{classes[majority]}', the most frequent class of the {source}",
    )


def label_free(cfg: Config, data: SplitData) -> LabelFree:
    """The gate's label-free scoring of a classifier: its video probabilities from ``evaluate.views`` clips
    per video, as the test videos and the adaptation report's label-free scores are scored."""
    from vt_models.classify.evaluate import evaluate_records
    from vt_models.models.checkpoint import load_checkpoint

    def predict(checkpoint: Path, videos: list[str]) -> np.ndarray:
        # the records carry the index's labels, but only the probabilities are read
        return evaluate_records(
            load_checkpoint(checkpoint), data.subset(videos), cfg.evaluate.views, device=cfg.train.device
        )[1]

    return LabelFree(cfg.registry.label_free_metric, cfg.registry.label_free_min_diversity, predict)


def run_backbone(run_dir: Path, backbone: str | None) -> str:
    """The backbone of the classifier in ``run_dir`` (a folder written by ``vt train --out``), checked
    against ``backbone`` when one is named; a clear error when the folder holds no classifier."""
    from vt_models.models.checkpoint import CheckpointError, load_checkpoint
    from vt_models.promotion import PromotionError

    ckpt = run_dir / "best.pt"
    if not ckpt.is_file():
        raise PromotionError(f"{ckpt} missing: --run takes the folder a `vt train -b <backbone> --out {run_dir}` wrote")
    try:
        meta = load_checkpoint(ckpt)
    except CheckpointError as exc:
        raise PromotionError(str(exc)) from None
    if meta.get("training_objective") == "autoencoder":
        raise PromotionError(
            f"{ckpt} is an autoencoder's encoder, which predicts no class: fine-tune a classifier from it "
            f"(`vt -S train.weights={ckpt} train -b {meta.get('backbone', '<backbone>')} --out <folder>`) "
            f"and promote that folder"
        )
    if not meta.get("backbone") or not meta.get("classes"):
        raise PromotionError(f"{ckpt} is not a vt-models classifier checkpoint (no backbone or classes in it)")
    name = str(meta["backbone"])
    if backbone is not None and backbone != name:
        raise PromotionError(f"{ckpt} holds a {name}, not a {backbone}: leave out --backbone, or name {name}")
    return name


def promote(cfg: Config, backbone: str | None = None, run_dir: Path | None = None) -> Decision:
    """Register the classification candidate as ``challenger``; ``champion`` moves only to a qualifying,
    better model. The candidate is ``models/train/<backbone>`` (by default the best on validation), or the
    run folder ``run_dir`` that ``vt train --out`` wrote (an adapted model kept beside the train stage's)."""
    from vt_models.classify.data import load_split_data

    if run_dir is not None:
        name = run_backbone(Path(run_dir), backbone)
        hint = f"vt train -b {name} --out {run_dir}"
    else:
        name = backbone or pick_candidate(cfg)
        run_dir, hint = cfg.run_dir("train", name), f"vt train -b {name}"
    data = load_split_data(cfg.frames_dir(cfg.train.dataset), cfg.splits_path(cfg.train.dataset))
    # a test video; any video when the test split is empty (the gate then decides label-free)
    first = data.records.get(cfg.evaluate.split) or [r for recs in data.records.values() for r in recs]
    example = cfg.datasets[cfg.train.dataset].raw / first[0].path
    train_labels = [r.label for r in data.records.get("train", [])]
    rc = cfg.registry
    return gate(
        rc.model_name,
        rc.metric,
        rc.margin,
        name,
        run_dir,
        # the candidate's own evaluate stage already scored it: reuse those predictions when they fit
        lambda ckpt, splits: test_evidence(
            cfg, ckpt, train_labels, splits, cfg.eval_dir(name) if Path(ckpt) == run_dir / "best.pt" else None
        ),
        example,
        cfg.evaluate.split,
        Path("reports") / "promotion.json",
        hint=hint,
        floor=Floor(rc.min_score, rc.min_test_videos, rc.min_unseen_test_videos),
        frames_dir=cfg.frames_dir(cfg.train.dataset),
        splits_path=cfg.splits_path(cfg.train.dataset),
        label_free=label_free(cfg, data),
    )

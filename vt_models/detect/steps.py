"""The detection pipeline's steps, as the CLI, the DVC stages and the Prefect flow call them.

probe (videos + box sidecars) -> extract (frames with aligned boxes) -> split (grouped) ->
train (:mod:`vt_models.detect.runner`) -> evaluate (mAP, MOT with and without tracking, an annotated
sample clip) -> promote (the registry gate on mAP, shared with classification, with its floor).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vt_models.config import Config
from vt_models.data.extract import ExtractSummary, extract_dataset, load_index
from vt_models.data.probe import ProbeSummary, probe_dataset
from vt_models.data.split import split_dataset
from vt_models.io.mlflow import AliasMove
from vt_models.promotion import Decision, Evidence, Floor, best_on_validation, gate, rollback_champion

log = logging.getLogger(__name__)


def probe(cfg: Config, progress: bool = True, mapper: Any = None, dataset: str | None = None) -> ProbeSummary:
    """Probe ``dataset``'s videos (default ``detect.dataset``) and validate their box annotations (bad ones
    quarantined). Videos unchanged since the classifier probe of the same data set (``vt probe``) are not
    decoded again."""
    dc = cfg.detect
    name = dataset or dc.dataset
    ds = cfg.dataset(name)
    return probe_dataset(
        ds.raw,
        cfg.detect_probe_dir(dataset),
        cfg.probe,
        ds.labels_csv,
        progress=progress,
        mapper=mapper,
        annotations=dc.annotations,
        classes=dc.classes,
        reuse=cfg.probe_dir(name) / "manifest.csv",
    )


def extract(cfg: Config, progress: bool = True, mapper: Any = None, dataset: str | None = None) -> ExtractSummary:
    """Frames plus boxes aligned with them (``detect.extract``), incrementally."""
    return extract_dataset(
        cfg.detect_probe_dir(dataset) / "manifest.csv",
        cfg.dataset(dataset or cfg.detect.dataset).raw,
        cfg.detect_frames_dir(dataset),
        cfg.detect.extract,
        progress=progress,
        mapper=mapper,
    )


def split(cfg: Config, dataset: str | None = None) -> dict[str, Any]:
    """Grouped, stratified splits of the annotated videos (a recording never spans two splits)."""
    return split_dataset(
        load_index(cfg.detect_frames_dir(dataset)),
        cfg.detect_splits_path(dataset),
        cfg.split.of(dataset or cfg.detect.dataset),
        cfg.seed,
    )


def evaluate(cfg: Config, name: str, checkpoint: Path | None = None, sample_clip: bool = True) -> dict[str, Any]:
    """Score a trained detector on the test split, log it to its MLflow run, render an annotated clip."""
    from vt_models.detect.evaluate import evaluate_detector
    from vt_models.io.mlflow import log_evaluation

    run_dir = cfg.run_dir("detect", name)
    out_dir = cfg.detect_eval_dir(name)
    checkpoint = checkpoint or run_dir / "best.pt"
    if sample_clip and checkpoint.is_file():
        # before the detector pass (a missing checkpoint has its own error there): without its raw video the clip
        # cannot be drawn, and the scores written by then would sit in out_dir with no MLflow run to match
        sample_video(cfg)
    report = evaluate_detector(
        checkpoint,
        cfg.detect_frames_dir(),
        cfg.detect_splits_path(),
        out_dir,
        cfg.evaluate.split,
        cfg.detect.device,
        cfg.detect.tracker,
        cfg.detect.batch_size,
    )
    if sample_clip:
        render_sample(cfg, checkpoint, out_dir)
    run_id = log_evaluation(run_dir / "run.json", report.metrics, out_dir)
    return {**report.metrics, "run_id": run_id, "out_dir": str(out_dir)}


def sample_video(cfg: Config) -> Path:
    """The raw first test video, which the annotated clip is drawn from; a clear error when it is not there."""
    splits = json.loads(cfg.detect_splits_path().read_text())
    video = cfg.dataset(cfg.detect.dataset).raw / splits["splits"][cfg.evaluate.split][0]
    if not video.is_file():
        raise FileNotFoundError(
            f"{video}, the first test video, is not there: its annotated clip is drawn from the raw video, not the "
            "extracted frames; bring the raw videos back (`dvc checkout` or `dvc pull`)"
        )
    return video


def render_sample(cfg: Config, checkpoint: Path, out_dir: Path) -> Path:
    """An annotated MP4 (and tracks JSON) of the first test video, for the dashboard."""
    from vt_models.detect.predict import DetectorPredictor

    video = sample_video(cfg)
    predictor = DetectorPredictor.from_path(checkpoint, cfg.detect.device)
    predictor.annotate(video, out_dir / "sample.tracks.mp4", out_dir / "sample.tracks.json")
    return out_dir / "sample.tracks.mp4"


def pick_candidate(cfg: Config) -> str:
    """The trained detector with the best validation mAP."""
    return best_on_validation(
        cfg,
        "detect",
        cfg.detect.detectors,
        "val_map",
        "no trained detector under models/detect/: run `vt detect train` (or `dvc repro`) first",
    )


def reusable_outputs(eval_dir: Path, checkpoint: Path, videos: list[str], cfg: Config) -> dict[str, Any] | None:
    """The evaluate stage's raw outputs (:data:`~vt_models.detect.evaluate.OUTPUTS_FILE`) when they are this
    checkpoint's, on this data version, and on exactly ``videos`` (test videos) with the content they were
    scored with; else None (the gate then runs the detector itself)."""
    import numpy as np

    from vt_models.data.split import videos_digest
    from vt_models.detect.evaluate import OUTPUTS_FILE
    from vt_models.io.dvc import data_version
    from vt_models.io.files import file_md5

    metrics_path, outputs_path = eval_dir / "metrics.json", eval_dir / OUTPUTS_FILE
    if not metrics_path.is_file() or not outputs_path.is_file():
        return None
    m = json.loads(metrics_path.read_text(encoding="utf-8"))
    same = (
        m.get("checkpoint_md5") == file_md5(checkpoint)
        and m.get("data_version") == data_version(cfg.detect_frames_dir(), cfg.detect_splits_path())
        and m.get("split") == cfg.evaluate.split
        # content too: dvc.lock's frames hash (the data version) lags behind the data during a flow
        and m.get("test_set") == videos_digest(load_index(cfg.detect_frames_dir()), videos)
    )
    if not same:
        return None
    with np.load(outputs_path) as stored:
        return {k: stored[k] for k in stored.files}


def test_map(cfg: Config, checkpoint: Path, splits_path: Path | None = None, reuse: Path | None = None) -> Evidence:
    """mAP@[.5:.95] of a detector checkpoint on the current test split, with the floor's evidence.

    The detections are the evaluate stage's in ``reuse`` when they belong to this checkpoint and these test
    videos, else from a fresh run of the detector. The CI resamples test videos and recomputes mAP on the
    resampled set of images (each image's matching to its ground truth is done once and reused; only the
    accumulation is redone). The baseline is a detector that finds nothing: mAP 0.
    """
    import numpy as np

    from vt_models.detect.evaluate import run_detector
    from vt_models.eval.bootstrap import video_bootstrap
    from vt_models.eval.detection_metrics import map_over_videos, match_detections
    from vt_models.io.dvc import data_version
    from vt_models.models.checkpoint import load_checkpoint

    splits_path = splits_path or cfg.detect_splits_path()
    videos = json.loads(Path(splits_path).read_text(encoding="utf-8"))["splits"][cfg.evaluate.split]
    out = reusable_outputs(reuse, checkpoint, videos, cfg) if reuse is not None else None
    if out is not None:
        log.info("gate: %s's detections come from %s", checkpoint, reuse)
        classes = list(load_checkpoint(checkpoint)["classes"])
        video_of_images = out.pop("video_of_images")
        n_videos = len(videos)
        version = data_version(cfg.detect_frames_dir(), splits_path)  # what run_detector records
    else:
        run = run_detector(
            checkpoint,
            cfg.detect_frames_dir(),
            splits_path,
            cfg.evaluate.split,
            cfg.detect.device,
            cfg.detect.batch_size,
        )
        out, classes, video_of_images = run.outputs, run.classes, run.video_of_images()
        n_videos, version = len(run.videos), run.data_version
    matches = match_detections(
        out["det_image"],
        out["det_boxes"],
        out["det_scores"],
        out["det_labels"],
        out["gt_image"],
        out["gt_boxes"],
        out["gt_labels"],
        out["image_ids"],
        classes,
    )
    statistic = map_over_videos(matches, video_of_images, n_videos)
    rc = cfg.registry
    ci = video_bootstrap(statistic, n_videos, resamples=rc.bootstrap_resamples, confidence=rc.confidence, seed=cfg.seed)
    score = statistic(np.arange(n_videos))  # all test videos once: detection_metrics' mAP
    return Evidence(score, version, ci, 0.0, "a detector that finds nothing")


def promote(cfg: Config, name: str | None = None) -> Decision:
    """Register the candidate detector as ``challenger``; ``champion`` moves only to a qualifying detector
    with a better test mAP."""
    dc = cfg.detect
    name = name or pick_candidate(cfg)
    splits = json.loads(cfg.detect_splits_path().read_text())
    example = cfg.dataset(dc.dataset).raw / splits["splits"][cfg.evaluate.split][0]
    return gate(
        dc.model_name,
        "map",
        dc.margin,
        name,
        cfg.run_dir("detect", name),
        lambda ckpt, sp: test_map(cfg, ckpt, sp, reuse=cfg.detect_eval_dir(name)),
        example,
        cfg.evaluate.split,
        Path("reports") / "detect_promotion.json",
        hint=f"vt detect train -d {name}",
        floor=Floor(dc.min_map, cfg.registry.min_test_videos, cfg.registry.min_unseen_test_videos),
        frames_dir=cfg.detect_frames_dir(),
        splits_path=cfg.detect_splits_path(),
    )


def rollback(cfg: Config, reason: str) -> AliasMove:
    """Move the detector's ``champion`` back to the previous champion
    (:func:`vt_models.promotion.rollback_champion`)."""
    return rollback_champion(cfg.detect.model_name, reason)

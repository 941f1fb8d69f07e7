"""One detector training run from the config: data, detector, the generic loop, tracking, outputs.

`vt detect train`, the DVC stage ``detect_train@<detector>`` and the Prefect task call
:func:`train_detector`. The loop, checkpointing, mixed precision, DDP and MLflow logging are the
classification ones (:mod:`vt_models.train.engine`, :mod:`vt_models.train.tracked`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from vt_models.config import Config, DetectConfig
from vt_models.detect.data import DetectionData, collate, frames_per_video, load_detection_data, map_label
from vt_models.detect.task import DetectionTask
from vt_models.io.files import write_json
from vt_models.models.detectors import VideoDetector, build_detector
from vt_models.models.network import count_parameters
from vt_models.models.registry import get_detector_spec
from vt_models.models.weights import resolve_source
from vt_models.train import distributed as dist
from vt_models.train.engine import FitResult, Trainer
from vt_models.train.loaders import build_loaders
from vt_models.train.runtime import precision, resolve_device, seed_everything
from vt_models.train.tracked import DatasetInput, RunSummary, Tracking, tracked_fit

log = logging.getLogger(__name__)

STAGE = "detect"  # fine-tuning on detect.dataset
PRETRAIN = "detect_pretrain"  # on detect.pretrain.dataset (the source domain), for `detect.weights: source`


def stage_config(cfg: Config, stage: str) -> tuple[str, str, DetectConfig]:
    """(dataset, weights, loop config) of a detection stage: the pretrain stage overrides five keys. L2-SP
    (``detect.l2sp``) is off for a detector that starts from random weights: it has no start worth holding."""
    dc = cfg.detect
    if stage == PRETRAIN:
        update = {
            "epochs": dc.pretrain.epochs,
            "lr": dc.pretrain.lr or dc.lr,
            "train_sizes": dc.pretrain.train_sizes or dc.train_sizes,
        }
        dataset, weights, loop = dc.pretrain.dataset, dc.pretrain.weights, dc.model_copy(update=update)
    elif stage == STAGE:
        dataset, weights, loop = dc.dataset, dc.weights, dc
    else:
        raise ValueError(f"unknown detection stage {stage!r}: {STAGE} or {PRETRAIN}")
    if loop.l2sp and weights == "none" and loop.backbone_weights == "none":
        loop = loop.model_copy(update={"l2sp": 0.0})
    return dataset, weights, loop


def detection_meta(
    cfg: Config, name: str, model: VideoDetector, data: DetectionData, stage: str = STAGE
) -> dict[str, Any]:
    """What makes a detector checkpoint self-describing (loading needs nothing else)."""
    dataset, weights, dc = stage_config(cfg, stage)
    return {
        "task": "detect",
        "detector": name,
        "backbone": name,  # generic readers (dashboard, registry tags) look for 'backbone'
        "arch": name,
        "family": "detector",
        "classes": data.classes,
        "num_classes": len(data.classes),
        "class_map": dc.class_map,  # how the annotations' labels became these classes: evaluation maps them alike
        "weights_source": getattr(model, "weights_source", weights),
        "frozen_bn": bool(getattr(model, "frozen_bn", False)),
        "stage": stage,
        "dataset": dataset,
        "data_version": data.data_version,
        "config": dc.model_dump(mode="json"),
        "extract": dc.extract.model_dump(mode="json"),
        "model_args": {"min_size": dc.min_size, "max_size": dc.max_size, **dc.model_options},
        "score_threshold": dc.score_threshold,
        "strategy": {
            "trainable_backbone_layers": dc.trainable_backbone_layers,
            "params_total": count_parameters(model),
            "params_trainable": count_parameters(model, trainable_only=True),
        },
        "seed": cfg.seed,
    }


def load_data(cfg: Config, dataset: str | None = None) -> DetectionData:
    dc = cfg.detect
    classes = None if dc.classes is None else sorted({map_label(c, dc.class_map) for c in dc.classes})
    return load_detection_data(cfg.detect_frames_dir(dataset), cfg.detect_splits_path(dataset), classes, dc.class_map)


def train_detector(
    cfg: Config,
    name: str,
    *,
    stage: str = STAGE,
    resume: bool = False,
    progress: bool = True,
    track: bool = True,
    out_dir: Path | None = None,
    on_epoch_end: Any = None,
) -> RunSummary:
    """Train detector ``name``: fine-tune on ``detect.dataset`` (``stage`` detect) or pretrain on
    ``detect.pretrain.dataset`` (``stage`` detect_pretrain)."""
    dataset, weights, dc = stage_config(cfg, stage)
    if cfg.detect.l2sp and not dc.l2sp:
        log.info("%s: detect.l2sp %g not used: the detector starts from random weights", stage, cfg.detect.l2sp)
    fixed = get_detector_spec(name).fixed_size
    if dc.train_sizes and fixed is not None:
        raise ValueError(
            f"{name} resizes every frame to {fixed} px (SSD): it cannot train at train_sizes {dc.train_sizes}; "
            "set detect.train_sizes (and detect.pretrain.train_sizes) to null"
        )
    if dc.train_sizes:
        log.info(
            "%s: multi-scale training, each batch's short side one of %s (scored at %d)",
            stage,
            dc.train_sizes,
            dc.min_size,
        )
    dist.init_from_env()
    seed_everything(cfg.seed)
    data = load_data(cfg, dataset)
    lost = data.detail_lost(dc.min_size)
    if lost:
        log.warning(
            "%s: %d of %d videos' frames are stored smaller than their source and than the detector's input "
            "(detect.min_size %d), which upsamples them: set detect.extract.short_side to %d and re-run `vt detect "
            "extract` to keep the detail",
            dataset,
            lost,
            len(data.short_sides),
            dc.min_size,
            dc.min_size,
        )
    # the classifier backbone starts a detector that starts from nothing else (a detector checkpoint has its own)
    backbone_weights = dc.backbone_weights if weights == "none" else "none"
    if backbone_weights != dc.backbone_weights:
        log.info("%s: detect.backbone_weights not used: the detector starts from %s", stage, weights)
    model = build_detector(
        name,
        resolve_source(
            weights, cfg.run_dir(PRETRAIN, name) / "best.pt", "detect.weights", f"vt detect pretrain --detector {name}"
        ),
        data.classes,
        trainable_backbone_layers=dc.trainable_backbone_layers,
        min_size=dc.min_size,
        max_size=dc.max_size,
        options=dc.model_options,
        backbone_weights=backbone_weights,
    )
    per_video = frames_per_video(len(data.records["train"]), dc.frames_per_video, dc.min_epoch_frames)
    if per_video != dc.frames_per_video:
        log.info(
            "%s: %d frames a training video an epoch (detect.frames_per_video %d): %d videos would give fewer than "
            "detect.min_epoch_frames %d",
            stage,
            per_video,
            dc.frames_per_video,
            len(data.records["train"]),
            dc.min_epoch_frames,
        )
    train_ds = data.frames("train", True, frames_per_video=per_video, hflip=dc.hflip)
    val_ds = data.frames("val", False, eval_frames=dc.val_frames)
    train_loader, val_loader = build_loaders(train_ds, val_ds, dc, cfg.seed, collate_fn=collate)
    task = DetectionTask(data.classes, dc.score_threshold, dc.train_sizes)
    meta = detection_meta(cfg, name, model, data, stage)
    out_dir = out_dir or cfg.run_dir(stage, name)
    from vt_models.data.split import TRAINED_ON, training_record

    # what it trains on, for the promotion gate (which scores only unseen test videos)
    trained_on = write_json(
        out_dir / TRAINED_ON, training_record(cfg.detect_frames_dir(dataset), cfg.detect_splits_path(dataset))
    )
    device = resolve_device(dc.device)
    log.info(
        "%s %s on %s: %d train / %d val videos of %s, classes %s, weights %s",
        stage,
        name,
        device,
        len(data.records["train"]),
        len(data.records["val"]),
        dataset,
        data.classes,
        meta["weights_source"],
    )

    def fit(logger: Any) -> FitResult:
        trainer = Trainer(
            model, task, dc, out_dir, meta, seed=cfg.seed, logger=logger, progress=progress, on_epoch_end=on_epoch_end
        )
        return trainer.fit(train_loader, val_loader, resume=resume)

    tracking = None
    if track:
        tags = {
            "backbone": name,
            "family": "detector",
            "task": "detect",
            "weights_source": meta["weights_source"],
            "device": str(device),
            "stage": stage,
            "dataset": dataset,
            "data_version": data.data_version,
        }
        params = {
            **meta["config"],
            # a label may hold characters MLflow refuses in a param name ('*'): the map is one value
            "class_map": json.dumps(dc.class_map, sort_keys=True),
            "detector": name,
            "weights_resolved": meta["weights_source"],
            "params_trainable": meta["strategy"]["params_trainable"],
            "train_videos": len(data.records["train"]),
            "val_images": len(val_ds),
            "seed": cfg.seed,
            "world_size": dist.world_size(),
            "precision": precision(dc),
        }
        rows = [{"path": v.path, "split": split} for split, vids in data.records.items() for v in vids]
        inputs = DatasetInput(rows, cfg.detect_frames_dir(dataset), dataset, data.data_version)
        tracking = Tracking("vt-detect", f"{stage}-{name}", tags, params, inputs, [trained_on])
    return tracked_fit(fit, out_dir, meta, stage, name, tracking, curves=("map", "map_50"), resume=resume)

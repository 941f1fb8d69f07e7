"""One training run from the config: data, model, strategy, loop, tracking, outputs.

The CLI (`vt pretrain`, `vt train`), the DVC stages and the Prefect tasks call
:func:`train_backbone`; nothing else builds a training run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from vt_models.classify.data import (
    UNLABELLED,
    ClipDataset,
    SplitData,
    Unlabelled,
    load_split_data,
    require_labels,
    reverse_partners,
)
from vt_models.classify.strategy import apply_strategy
from vt_models.classify.task import ClassificationTask, class_weights
from vt_models.config import Config, PretrainConfig, TrainConfig
from vt_models.data.modality import CHANNELS
from vt_models.io.files import write_json
from vt_models.models.builder import build_backbone
from vt_models.models.registry import get_spec
from vt_models.models.weights import resolve_source, weights_kind
from vt_models.train import distributed as dist
from vt_models.train.engine import FitResult, NullLogger, TargetStream, Trainer
from vt_models.train.loaders import TrainingError, build_loaders
from vt_models.train.objective import FeatureObjective
from vt_models.train.reconstruction import RECON_CELLS, ReconstructionTask, attach_decoder
from vt_models.train.runtime import precision, resolve_device, seed_everything
from vt_models.train.tracked import DatasetInput, RunSummary, Tracking, tracked_fit

log = logging.getLogger(__name__)

STAGES = ("pretrain", "train")


def source_weights(cfg: Config, setting: str, backbone: str, weights: str) -> str:
    """``source``: the pretrain stage's best checkpoint of the same backbone."""
    return resolve_source(
        weights, cfg.run_dir("pretrain", backbone) / "best.pt", setting, f"vt pretrain --backbone {backbone}"
    )


def make_loaders(
    data: SplitData,
    tc: TrainConfig,
    transforms: Any,
    clip_len: int,
    seed: int,
    train_split: str = "train",
    val_split: str = "val",
    train_records: list | None = None,
    val_records: list | None = None,
    reverse_pairs: list[tuple[str, str]] = (),
) -> tuple[DataLoader, DataLoader]:
    train_ds = ClipDataset(
        train_records if train_records is not None else data.records[train_split],
        transforms.train,
        clip_len,
        train=True,
        repeats=tc.clips_per_video,
        cache_mb=tc.cache_mb,
        partners=reverse_partners(data.classes, list(reverse_pairs)),
        reverse_p=tc.reverse_p,
    )
    val_ds = ClipDataset(
        val_records if val_records is not None else data.records[val_split],
        transforms.eval,
        clip_len,
        train=False,
        cache_mb=tc.cache_mb,
    )
    return build_loaders(
        train_ds, val_ds, tc, seed, labels=train_ds.labels if tc.imbalance == "balanced_sampler" else None
    )


def make_target_stream(
    records: list, tc: TrainConfig, transforms: Any, clip_len: int, seed: int, dataset: str
) -> TargetStream:
    """The unlabelled target stream of domain adaptation: ``dataset``'s training videos, labels hidden;
    random training clips (no time reversal: it would need the label) and one centred clip per video for
    the label-free scores."""
    if not records:
        raise TrainingError(
            f"train.adapt {tc.adapt!r} needs unlabelled target videos, but the train split of {dataset!r} is "
            f"empty: run `vt split --dataset {dataset}` on a data set with videos, or set train.adapt: none"
        )
    if len(records) == 1:
        log.warning(
            "train.adapt %s: the train split of %r holds one video; it adapts, but its label-free score cannot "
            "tell models apart (IM is 0 for any model on one video, SND needs two): add videos under "
            "datasets.%s.raw and run `vt probe`, `vt extract` and `vt split` with --dataset %s again",
            tc.adapt,
            dataset,
            dataset,
            dataset,
        )
    train_ds = ClipDataset(
        records, transforms.train, clip_len, train=True, repeats=tc.clips_per_video, cache_mb=tc.cache_mb
    )
    eval_ds = ClipDataset(records, transforms.eval, clip_len, train=False, cache_mb=tc.cache_mb)
    common = dict(num_workers=tc.num_workers, pin_memory=torch.cuda.is_available())
    train = DataLoader(
        Unlabelled(train_ds),
        batch_size=tc.batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed + 1),
        drop_last=len(train_ds) > tc.batch_size,
        **common,
    )
    return TargetStream(train, DataLoader(Unlabelled(eval_ds), batch_size=tc.batch_size, **common))


def unlabelled_classes(cfg: Config, tc: TrainConfig, data: SplitData) -> SplitData:
    """``data`` of an unlabelled data set with the classes it trains toward: the labelled adaptation source's
    (it is then only the unlabelled target stream), or one placeholder for autoencoder pretraining (which reads
    no label and whose head fine-tuning replaces)."""
    if getattr(tc, "objective", "supervised") == "autoencoder":
        return replace(data, classes=["unlabelled"])
    if tc.adapt == "none":
        require_labels(
            data.classes,
            tc.dataset,
            "there is nothing to fit it to; adapt a labelled model to it with train.adapt (dann | mmd | coral) and "
            "train.adapt_source (a labelled data set of the same classes), or pretrain on it with "
            "pretrain.objective: autoencoder",
        )
    source = load_split_data(cfg.frames_dir(tc.adapt_source), cfg.splits_path(tc.adapt_source))
    if not source.classes:
        raise TrainingError(f"train.adapt_source {tc.adapt_source!r} has no labels either: set a labelled data set")
    return replace(data, classes=list(source.classes))


def adaptation_data(cfg: Config, tc: TrainConfig, target: SplitData) -> SplitData:
    """The labelled source data set of domain adaptation; its classes must be the target's, in order."""
    source = load_split_data(cfg.frames_dir(tc.adapt_source), cfg.splits_path(tc.adapt_source))
    if source.classes != target.classes:
        raise TrainingError(
            f"train.adapt_source {tc.adapt_source!r} has classes {source.classes}, train.dataset {tc.dataset!r} "
            f"has {target.classes}: adaptation needs the same classes in both"
        )
    return source


def checkpoint_meta(
    cfg: Config,
    stage: str,
    backbone: str,
    tc: TrainConfig,
    weights_source: str,
    data: SplitData,
    clip_len: int,
    strategy: dict[str, Any],
) -> dict[str, Any]:
    spec = get_spec(backbone)
    return {
        "backbone": backbone,
        "arch": spec.arch,
        "family": spec.family,
        "classes": data.classes,
        "num_classes": len(data.classes),
        "weights_source": weights_source,
        "stage": stage,
        "dataset": tc.dataset,
        "data_version": data.data_version,
        "config": tc.model_dump(mode="json"),
        "extract": cfg.extract.model_dump(mode="json"),
        "model_args": {
            "dropout": tc.dropout,
            "rnn_hidden": tc.rnn_hidden,
            "crop_size": tc.crop_size,
            "crop_scale": list(tc.crop_scale),
            "eval_resize": tc.eval_resize,
            "eval_crop": tc.eval_crop,
            "modality": tc.modality,
            "flow_stabilise": tc.flow_stabilise and tc.modality == "flow",
            "flow_span": tc.flow_span if tc.modality == "flow" else 1,
        },
        "modality": tc.modality,
        "clip_len": clip_len,
        "strategy": strategy,
        "seed": cfg.seed,
    }


@dataclass
class PreparedFit:
    """Everything one fit needs, built from the config (shared by train, CV and the transfer report)."""

    backbone: str
    tc: TrainConfig
    model: Any
    transforms: Any
    task: ClassificationTask | ReconstructionTask
    train_loader: DataLoader
    val_loader: DataLoader
    meta: dict[str, Any]
    device: torch.device
    objective: FeatureObjective | None = None
    target: TargetStream | None = None

    def run(
        self,
        out_dir: Path,
        seed: int,
        logger: Any = None,
        progress: bool = True,
        resume: bool = False,
        on_epoch_end: Any = None,
        resume_state: bool = True,
    ) -> FitResult:
        """Train into ``out_dir``; ``resume_state=False`` for a run scored once and never resumed (a CV fold, a
        report's run): its last.pt then holds only the weights."""
        trainer = Trainer(
            self.model,
            self.task,
            self.tc,
            out_dir,
            self.meta,
            seed=seed,
            logger=logger or NullLogger(),
            progress=progress,
            on_epoch_end=on_epoch_end,
            objective=self.objective,
            resume_state=resume_state,
        )
        return trainer.fit(self.train_loader, self.val_loader, resume=resume, target=self.target)

    def params(self, cfg: Config, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """The run's MLflow params: the resolved training config and what it trained on."""
        return {
            **self.tc.model_dump(mode="json"),
            "backbone": self.backbone,
            "clip_len": self.meta["clip_len"],
            "weights_resolved": self.meta["weights_source"],
            "params_trainable": self.meta["strategy"]["params_trainable"],
            "train_videos": len(self.train_loader.dataset.records),
            "train_clips_per_epoch": len(self.train_loader.dataset),
            "val_videos": len(self.val_loader.dataset),
            "seed": cfg.seed,
            "world_size": dist.world_size(),
            "precision": precision(self.tc),
            **({"target_videos": len(self.target.train.dataset.clips.records)} if self.target is not None else {}),
            **(extra or {}),
        }

    def tags(self) -> dict[str, str]:
        return {
            "backbone": self.backbone,
            "family": self.meta["family"],
            "strategy": self.tc.strategy,
            "modality": self.tc.modality,
            "weights_source": self.meta["weights_source"],
            "device": str(self.device),
            "stage": self.meta["stage"],
            "adapt": self.tc.adapt,
            "dataset": self.tc.dataset,
            "data_version": self.meta["data_version"],
        }


def prepare_fit(
    cfg: Config,
    stage: str,
    backbone: str,
    data: SplitData,
    tc: TrainConfig | None = None,
    train_records: list | None = None,
    val_records: list | None = None,
) -> PreparedFit:
    """Build model (with its weights and strategy), loaders and task for one fit."""
    tc = tc or getattr(cfg, stage)
    if not data.classes:
        data = unlabelled_classes(cfg, tc, data)
    seed_everything(cfg.seed)
    weights = source_weights(cfg, f"{stage}.weights", backbone, tc.weights)
    model, transforms = build_backbone(
        backbone,
        weights,
        len(data.classes),
        dropout=tc.dropout,
        rnn_hidden=tc.rnn_hidden,
        crop_size=tc.crop_size,
        hflip=tc.hflip,
        crop_scale=tc.crop_scale,
        eval_resize=tc.eval_resize,
        eval_crop=tc.eval_crop,
        modality=tc.modality,
        shake_px=tc.shake_px,
        flow_stabilise=tc.flow_stabilise,
        flow_span=tc.flow_span,
    )
    # A random encoder has nothing to preserve, nor has an autoencoder's class features: a smaller LR would only
    # handicap it (the transfer report's scratch baseline; an autoencoder start fine-tuned to target test macro-F1
    # 0.131 / 0.156 on 18 videos at lr x 0.3, seeds 42 / 1, and 0.317 / 0.263 at the full lr: docs/measurements.md)
    if weights_kind(weights) == "none":
        unlearnt: str | None = "weights none"
    elif model.load_report.objective == "autoencoder":
        unlearnt = "weights from an autoencoder"
    else:
        unlearnt = None
    if unlearnt and tc.backbone_lr_mult != 1.0:
        log.info(
            "%s: the encoder trains at the full lr (backbone_lr_mult %g is for encoders trained on labels)",
            unlearnt,
            tc.backbone_lr_mult,
        )
        tc = tc.model_copy(update={"backbone_lr_mult": 1.0})
    clip_len = transforms.clip_len or max(tc.clip_len, get_spec(backbone).min_frames)
    strategy = apply_strategy(model, tc.strategy, tc.unfreeze_stages, tc.freeze_bn)
    # L2-SP holds the encoder weights that train near their start: a linear probe trains none, and a random start is
    # not worth holding (the transfer report runs both beside full fine-tuning under one train config; detection's
    # stage_config drops it for a random start too)
    if tc.l2sp and weights_kind(weights) == "none":
        log.info("%s: train.l2sp %g not used: the encoder starts from random weights (weights none)", stage, tc.l2sp)
        tc = tc.model_copy(update={"l2sp": 0.0})
    elif tc.l2sp and not any(p.requires_grad for p in model.encoder.parameters()):
        log.info("%s: train.l2sp %g not used: strategy %s trains no encoder weight", stage, tc.l2sp, tc.strategy)
        tc = tc.model_copy(update={"l2sp": 0.0})
    labelled, target = data, None
    if tc.adapt != "none":
        if train_records is not None or val_records is not None:
            raise TrainingError(
                f"train.adapt {tc.adapt!r} trains on whole splits (the source's labelled, the target's unlabelled); "
                "cross-validation and the transfer report run with adapt: none"
            )
        labelled = adaptation_data(cfg, tc, data)
        target = make_target_stream(data.records["train"], tc, transforms, clip_len, cfg.seed, tc.dataset)
    objective = None
    if tc.adapt != "none" or tc.bss:
        if dist.is_distributed():
            raise TrainingError("train.adapt and train.bss do not combine with torchrun yet: train on one process")
        # the head's input is the pooled feature (after the RNN for CNN+RNN models)
        objective = FeatureObjective(
            model.head[-1].in_features, tc.adapt, tc.adapt_weight, tc.adapt_ramp, tc.bss, tc.bss_k
        )
    train_loader, val_loader = make_loaders(
        labelled,
        tc,
        transforms,
        clip_len,
        cfg.seed,
        train_records=train_records,
        val_records=val_records,
        reverse_pairs=cfg.evaluate.reverse_pairs,
    )
    if tc.reverse_p > 0:
        pairs = train_loader.dataset.partners or []
        names = sorted({data.classes[i] for i, p in enumerate(pairs) if p >= 0})
        log.info(
            "time-reversal augmentation: p=%.2f for %s", tc.reverse_p, ", ".join(names) or "no class (no pair matches)"
        )
    task: ClassificationTask | ReconstructionTask = ClassificationTask(
        len(data.classes),
        class_weights(train_loader.dataset.labels, len(data.classes)) if tc.imbalance == "class_weights" else None,
        tc.label_smoothing,
    )
    autoencoder = isinstance(tc, PretrainConfig) and tc.objective == "autoencoder"
    if autoencoder:
        # the labels are never read: the clips are encoded corrupted and rebuilt from the encoder's feature map
        attach_decoder(model, CHANNELS[tc.modality], clip_len, tc.crop_size or 64)
        # camera motion is a flow field: other modalities get the mask and the temporal dropout only
        camera = tc.camera_noise if tc.modality == "flow" else 0.0
        task = ReconstructionTask(tc.mask_ratio, cfg.seed, tc.keep_frames, camera, tc.recon_steps)
        log.info(
            "autoencoder pretraining: %s clips, %.0f%% of an 8x8 cell grid masked, camera motion std %s%s, "
            "%s of %d frames kept; rebuilt at %s cells from the encoder's last feature map (labels unused)",
            tc.modality,
            100 * task.mask_ratio,
            camera,
            "" if camera == tc.camera_noise else f" (camera_noise {tc.camera_noise} is for flow only)",
            task.keep_frames if 0 < task.keep_frames < clip_len else "all",
            clip_len,
            "x".join(map(str, (min(task.steps, clip_len), *RECON_CELLS))),
        )
    meta = checkpoint_meta(
        cfg, stage, backbone, tc, getattr(model, "weights_source", weights), data, clip_len, strategy
    )
    meta["training_objective"] = "autoencoder" if autoencoder else "supervised"
    if target is not None:
        meta["adapt"] = {
            "method": tc.adapt,
            "source": tc.adapt_source,
            "source_data_version": labelled.data_version,
            "weight": tc.adapt_weight,
            "ramp": f"2 / (1 + exp(-{tc.adapt_ramp:g} p)) - 1" if tc.adapt_ramp else "constant 1",
            "target_videos": len(data.records["train"]),
        }
        log.info(
            "domain adaptation %s: labelled %s (%d train / %d val videos) -> unlabelled %s (%d videos), "
            "weight %g, ramp %s",
            tc.adapt,
            tc.adapt_source,
            len(labelled.records["train"]),
            len(labelled.records["val"]),
            tc.dataset,
            len(data.records["train"]),
            tc.adapt_weight,
            meta["adapt"]["ramp"],
        )
    device = resolve_device(tc.device)
    log.info(
        "%s %s on %s: %d train / %d val videos, %s (%d of %d params trainable), weights %s",
        stage,
        backbone,
        device,
        len(train_loader.dataset.records),
        len(val_loader.dataset),
        tc.strategy,
        strategy["params_trainable"],
        strategy["params_total"],
        meta["weights_source"],
    )
    return PreparedFit(backbone, tc, model, transforms, task, train_loader, val_loader, meta, device, objective, target)


def train_backbone(
    cfg: Config,
    stage: str,
    backbone: str,
    *,
    resume: bool = False,
    progress: bool = True,
    track: bool = True,
    register: bool | None = None,
    out_dir: Path | None = None,
    on_epoch_end: Any = None,
) -> RunSummary:
    """Fine-tune ``backbone`` for ``stage`` ('pretrain' on the source domain, 'train' on the target)."""
    if stage not in STAGES:
        raise TrainingError(f"unknown stage {stage!r}; choices: {', '.join(STAGES)}")
    tc: TrainConfig = getattr(cfg, stage)
    dist.init_from_env()
    data = load_split_data(cfg.frames_dir(tc.dataset), cfg.splits_path(tc.dataset))
    fit = prepare_fit(cfg, stage, backbone, data)
    out_dir = out_dir or cfg.run_dir(stage, backbone)
    trained_on = _write_training_record(cfg, tc, backbone, out_dir)

    def register_source(result: FitResult) -> None:
        # an autoencoder has no classifier to serve
        if (register if register is not None else stage == "pretrain") and fit.meta[
            "training_objective"
        ] == "supervised":
            from vt_models.serving.package import log_video_model

            example = cfg.datasets[tc.dataset].raw / data.records["val"][0].path
            info = log_video_model(result.best_path, example, registered_model_name=f"vt-{stage}-{backbone}")
            log.info("registered %s version %s", f"vt-{stage}-{backbone}", info.registered_model_version)

    tracking = None
    if track:
        rows = [
            {"path": r.path, "label": data.classes[r.label] if r.label != UNLABELLED else "", "split": split}
            for split, recs in data.records.items()
            for r in recs
        ]
        tracking = Tracking(
            f"vt-{stage}",
            f"{stage}-{backbone}",
            fit.tags(),
            fit.params(cfg),
            DatasetInput(rows, cfg.frames_dir(tc.dataset), tc.dataset, data.data_version),
            [trained_on],
        )
    return tracked_fit(
        lambda logger: fit.run(out_dir, cfg.seed, logger, progress, resume, on_epoch_end),
        out_dir,
        fit.meta,
        stage,
        backbone,
        tracking,
        after_fit=register_source,
        resume=resume,
    )


def interrupted_at(cfg: Config, stage: str, backbone: str) -> int | None:
    """The last epoch that ``last.pt`` of this very training (same stage config, same data version) finished
    before its process stopped short of the end (e.g. killed); None when there is nothing to resume: no
    checkpoint, a finished training, or one of other settings or data."""
    from vt_models.models.checkpoint import load_checkpoint

    tc: TrainConfig = getattr(cfg, stage)
    last = cfg.run_dir(stage, backbone) / "last.pt"
    if not last.is_file():
        return None
    ck = load_checkpoint(last)
    data = load_split_data(cfg.frames_dir(tc.dataset), cfg.splits_path(tc.dataset))
    if ck.get("config") != tc.model_dump(mode="json") or ck.get("data_version") != data.data_version:
        return None
    stopped_early = bool(tc.early_stopping_patience) and ck["stale_epochs"] >= tc.early_stopping_patience
    return None if stopped_early or ck["epoch"] + 1 >= tc.epochs else int(ck["epoch"])


def _write_training_record(cfg: Config, tc: TrainConfig, backbone: str, out_dir: Path) -> Path:
    """``trained_on.json``: the hashes of the train and val videos, and the source model's record when
    fine-tuning starts from it, so that the promotion gate can leave every seen video out of its test."""
    from vt_models.data.split import TRAINED_ON, training_record

    # adaptation reads only the target's train split (unlabelled); it selects epochs on the source's val split
    parts = ("train",) if tc.adapt != "none" else ("train", "val")
    record = training_record(cfg.frames_dir(tc.dataset), cfg.splits_path(tc.dataset), parts)
    source = cfg.run_dir("pretrain", backbone) / TRAINED_ON
    if tc.weights == "source" and source.is_file():
        record["source"] = json.loads(source.read_text(encoding="utf-8"))
    return write_json(Path(out_dir) / TRAINED_ON, record)

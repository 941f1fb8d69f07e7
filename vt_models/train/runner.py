"""One training run from the config: data, model, strategy, loop, tracking, outputs.

The CLI (`vt pretrain`, `vt train`), the DVC stages and the Prefect tasks call
:func:`train_backbone`; nothing else builds a training run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

from vt_models.config import Config, LoopConfig, TrainConfig
from vt_models.io.files import write_csv, write_json
from vt_models.models.builder import build_backbone
from vt_models.models.registry import get_spec
from vt_models.train import distributed as dist
from vt_models.train.classification import ClassificationTask, class_weights
from vt_models.train.data import ClipDataset, SplitData, load_split_data, reverse_partners
from vt_models.train.engine import FitResult, NullLogger, Trainer, resolve_device, seed_everything
from vt_models.train.strategy import apply_strategy

log = logging.getLogger(__name__)

STAGES = ("pretrain", "train")


class TrainingError(RuntimeError):
    """A training run that cannot start; says what to run or change first."""


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


def resolve_weights(cfg: Config, stage: str, backbone: str, weights: str) -> str:
    """``source`` means the pretrain stage's best checkpoint of the same backbone."""
    if weights != "source":
        return weights
    path = cfg.run_dir("pretrain", backbone) / "best.pt"
    if not path.is_file():
        raise TrainingError(
            f"{stage}.weights is 'source' but {path} does not exist: "
            f"run `vt pretrain --backbone {backbone}` (or `dvc repro`) first"
        )
    return str(path)


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


def build_loaders(
    train_ds: Dataset,
    val_ds: Dataset,
    tc: LoopConfig,
    seed: int,
    labels: list[int] | None = None,
    collate_fn: Any = None,
) -> tuple[DataLoader, DataLoader]:
    """Train and val loaders for any task: seeded shuffling, DDP sharding, optional class-balanced sampling."""
    if len(train_ds) == 0 or len(val_ds) == 0:
        raise TrainingError(f"empty split: {len(train_ds)} train / {len(val_ds)} val items; check the splits file")
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if dist.is_distributed():
        if labels is not None:
            raise TrainingError("train.imbalance=balanced_sampler does not combine with torchrun: use class_weights")
        sampler = DistributedSampler(train_ds, shuffle=True, seed=seed)
    elif labels is not None:
        counts = torch.bincount(torch.tensor(labels))
        weights = (1.0 / counts.float())[torch.tensor(labels)]
        sampler = WeightedRandomSampler(weights, num_samples=len(train_ds), replacement=True, generator=generator)
    common = dict(
        num_workers=tc.num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=False,
        collate_fn=collate_fn,
    )
    train_loader = DataLoader(
        train_ds,
        batch_size=tc.batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        generator=generator,
        drop_last=len(train_ds) > tc.batch_size,
        **common,
    )
    val_shard = Subset(val_ds, dist.shard(len(val_ds))) if dist.is_distributed() else val_ds
    val_loader = DataLoader(val_shard, batch_size=tc.batch_size, shuffle=False, **common)
    return train_loader, val_loader


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
            "modality": tc.modality,
            "flow_stabilise": tc.flow_stabilise and tc.modality == "flow",
            "flow_span": tc.flow_span if tc.modality == "flow" else 1,
        },
        "modality": tc.modality,
        "clip_len": clip_len,
        "strategy": strategy,
        "seed": cfg.seed,
    }


def _write_outputs(
    out_dir: Path, result: FitResult, meta: dict[str, Any], val_curves: tuple[str, ...] = ("accuracy", "macro_f1")
) -> tuple[Path, Path, Path]:
    """metrics.json (DVC metrics), history.csv (DVC plots) and curves.png next to the checkpoints."""
    best = result.history[result.best_epoch] if result.best_epoch >= 0 else {}
    metrics = {
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "stopped_early": result.stopped_early,
        **{k: v for k, v in best.items() if k.startswith("val_")},
        "params_total": meta["strategy"]["params_total"],
        "params_trainable": meta["strategy"]["params_trainable"],
        "clips_per_s": best.get("clips_per_s", 0.0),
        "train_seconds": sum(r["epoch_seconds"] for r in result.history),
    }
    metrics_path = write_json(out_dir / "metrics.json", metrics)
    cols = list(result.history[0]) if result.history else ["epoch"]
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
    a.plot(epochs, [r.get("val_loss", float("nan")) for r in history], "o-", label="val")
    a.set(title=f"{title}: loss", xlabel="epoch")
    a.legend()
    for key in val_curves:
        b.plot(epochs, [r.get(f"val_{key}", float("nan")) for r in history], "o-", label=f"val {key}")
    b.set(title=f"{title}: validation", xlabel="epoch", ylim=(0, 1.02))
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@dataclass
class PreparedFit:
    """Everything one fit needs, built from the config (shared by train, CV and the transfer report)."""

    backbone: str
    tc: TrainConfig
    model: Any
    transforms: Any
    task: ClassificationTask
    train_loader: DataLoader
    val_loader: DataLoader
    meta: dict[str, Any]
    device: torch.device

    def run(
        self,
        out_dir: Path,
        seed: int,
        logger: Any = None,
        progress: bool = True,
        resume: bool = False,
        on_epoch_end: Any = None,
    ) -> FitResult:
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
        )
        return trainer.fit(self.train_loader, self.val_loader, resume=resume)

    def log_params(self, cfg: Config, extra: dict[str, Any] | None = None) -> None:
        import mlflow

        from vt_models.io import mlflow as tracking

        mlflow.log_params(
            tracking.flatten(
                "",
                {
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
                    **(extra or {}),
                },
            )
        )

    def tags(self) -> dict[str, str]:
        return {
            "backbone": self.backbone,
            "family": self.meta["family"],
            "strategy": self.tc.strategy,
            "modality": self.tc.modality,
            "weights_source": self.meta["weights_source"],
            "device": str(self.device),
            "stage": self.meta["stage"],
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
    seed_everything(cfg.seed)
    weights = resolve_weights(cfg, stage, backbone, tc.weights)
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
        modality=tc.modality,
        shake_px=tc.shake_px,
        flow_stabilise=tc.flow_stabilise,
        flow_span=tc.flow_span,
    )
    clip_len = transforms.clip_len or max(tc.clip_len, get_spec(backbone).min_frames)
    strategy = apply_strategy(model, tc.strategy, tc.unfreeze_stages, tc.freeze_bn)
    train_loader, val_loader = make_loaders(
        data,
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
    task = ClassificationTask(
        len(data.classes),
        class_weights(train_loader.dataset.labels, len(data.classes)) if tc.imbalance == "class_weights" else None,
        tc.label_smoothing,
    )
    meta = checkpoint_meta(
        cfg, stage, backbone, tc, getattr(model, "weights_source", weights), data, clip_len, strategy
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
    return PreparedFit(backbone, tc, model, transforms, task, train_loader, val_loader, meta, device)


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

    run_id = None
    if track and dist.is_main():
        import mlflow

        from vt_models.io import mlflow as tracking

        with tracking.start_run(f"vt-{stage}", f"{stage}-{backbone}", fit.tags()) as active:
            run_id = active.info.run_id
            fit.log_params(cfg)
            _log_dataset(data, tc.dataset, cfg)
            logger = tracking.MlflowLogger(run_id)
            result = fit.run(out_dir, cfg.seed, logger, progress, resume, on_epoch_end)
            logger.flush()
            metrics_path, history_path, curves_path = _write_outputs(out_dir, result, fit.meta)
            mlflow.log_metrics(
                {
                    f"best_{k}": float(v)
                    for k, v in json.loads(metrics_path.read_text()).items()
                    if isinstance(v, (int, float))
                }
            )
            for p in (metrics_path, history_path, curves_path, trained_on):
                mlflow.log_artifact(str(p))
            mlflow.log_text(json.dumps(fit.meta["config"], indent=2), "config.json")
            # later steps (evaluate, promote) attach their results to this run
            write_json(
                out_dir / "run.json",
                {"run_id": run_id, "experiment": f"vt-{stage}", "tracking_uri": tracking.tracking_uri()},
            )
            if register if register is not None else stage == "pretrain":
                from vt_models.serving.package import log_video_model

                example = cfg.datasets[tc.dataset].raw / data.records["val"][0].path
                info = log_video_model(result.best_path, example, registered_model_name=f"vt-{stage}-{backbone}")
                log.info("registered %s version %s", f"vt-{stage}-{backbone}", info.registered_model_version)
    else:
        result = fit.run(out_dir, cfg.seed, None, progress, resume, on_epoch_end)
        metrics_path = out_dir / "metrics.json"
        if dist.is_main():
            metrics_path, _, _ = _write_outputs(out_dir, result, fit.meta)
    dist.barrier()
    return RunSummary(stage, backbone, run_id, result.best_path, metrics_path, result)


def _write_training_record(cfg: Config, tc: TrainConfig, backbone: str, out_dir: Path) -> Path:
    """``trained_on.json``: the hashes of the train and val videos, and the source model's record when
    fine-tuning starts from it, so that the promotion gate can leave every seen video out of its test."""
    from vt_models.data.split import TRAINED_ON, training_record

    record = training_record(cfg.frames_dir(tc.dataset), cfg.splits_path(tc.dataset))
    source = cfg.run_dir("pretrain", backbone) / TRAINED_ON
    if tc.weights == "source" and source.is_file():
        record["source"] = json.loads(source.read_text(encoding="utf-8"))
    return write_json(Path(out_dir) / TRAINED_ON, record)


def _log_dataset(data: SplitData, name: str, cfg: Config) -> None:
    rows = [
        {"path": r.path, "label": data.classes[r.label], "split": split}
        for split, recs in data.records.items()
        for r in recs
    ]
    log_dataset_input(rows, cfg.frames_dir(name), name, data.data_version)


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

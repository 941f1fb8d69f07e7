"""The one generic train/evaluate loop, for every backbone and task.

A *task* says how to compute the loss of a batch, how to turn a batch into predictions and how
to score them; the loop does everything else: optimiser and schedule, mixed precision on CUDA,
gradient clipping and health checks, checkpoints every epoch with exact resume, early stopping,
DDP, progress bars and metric logging.

Two optional additions: an *objective* (:class:`vt_models.train.objective.FeatureObjective`) computes
the step's loss from the model's pooled features, with an unlabelled *target stream* cycled beside the
labelled loader (domain adaptation) and scored label-free after every epoch; ``l2sp`` adds the L2-SP
penalty toward the starting weights.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from vt_models.config import LoopConfig
from vt_models.eval.unsupervised import label_free_scores
from vt_models.models.checkpoint import load_checkpoint, save_checkpoint, weights_only
from vt_models.train import distributed as dist
from vt_models.train.ema import WeightAverage
from vt_models.train.norm import freeze_norm_stats, hold_encoder, norm_held, recalibrate_bn
from vt_models.train.optim import build_optimizer, encoder_prefixes, warmup_cosine
from vt_models.train.regularise import StartingPoint
from vt_models.train.runtime import (
    amp_dtype,
    dtype_name,
    eval_dtype,
    resolve_device,
    rng_state,
    set_rng_state,
    to_device,
)

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """Loss or gradients became NaN/Inf; names the step and what to change."""


class Task(Protocol):
    monitor: str  # the validation metric that picks the best epoch (higher is better)

    def loss(self, model: nn.Module, batch: Any, device: torch.device) -> tuple[torch.Tensor, int]: ...

    def predict(self, model: nn.Module, batch: Any, device: torch.device) -> dict[str, np.ndarray]: ...

    def score(self, outputs: dict[str, np.ndarray]) -> dict[str, Any]: ...


class Logger(Protocol):
    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def flush(self) -> bool: ...


class NullLogger:
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def flush(self) -> bool:
        return True


@dataclass
class TargetStream:
    """Unlabelled target-domain clips (batches of ``(clips, -1)``): ``train`` is cycled beside the labelled
    loader, one batch per step; ``eval`` is predicted after every epoch for the label-free scores
    (``target_im``, ``target_snd``)."""

    train: DataLoader
    eval: Iterable[Any]


def _reseed(loader: DataLoader, seed: int) -> None:
    """Reseed a loader's sampler: resuming at an epoch boundary replays the same batches."""
    if isinstance(loader.generator, torch.Generator):
        loader.generator.manual_seed(seed)


def _forever(loader: DataLoader, seed: int) -> Iterator[Any]:
    """The loader's batches again and again (fresh random clips each pass; ``itertools.cycle`` would
    replay the first pass's), each pass reseeded from ``seed``."""
    for n in itertools.count():
        _reseed(loader, seed + n)
        yield from loader


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    history: list[dict[str, float]]
    stopped_early: bool
    best_path: Path
    last_path: Path
    val_scores: dict[str, Any] = field(default_factory=dict)
    # True: best_epoch is the best validated one; False: a fixed schedule (too few validation videos to pick
    # an epoch), so best_epoch is simply the last
    selected: bool = True


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def predict(
    model: nn.Module,
    task: Task,
    loader: Iterable[Any],
    device: torch.device,
    dtype: torch.dtype | None = None,
    desc: str = "eval",
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Run ``task.predict`` over a loader; concatenate the outputs."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    ctx = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    for batch in tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True):
        with ctx:
            out = task.predict(model, batch, device)
        for k, v in out.items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


# --------------------------------------------------------------------------- training


@dataclass
class Trainer:
    model: nn.Module
    task: Task
    cfg: LoopConfig
    out_dir: Path
    meta: dict[str, Any]  # what makes checkpoints self-describing (backbone, classes, config, ...)
    seed: int = 0
    logger: Logger = field(default_factory=NullLogger)
    progress: bool = True
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None  # e.g. a test's crash
    objective: nn.Module | None = None  # a FeatureObjective: domain alignment, BSS (its parameters train too)
    # False for runs that are scored once and never resumed (CV folds, report runs): last.pt then holds the
    # weights only. With AdamW the resume state is twice the weights' size, and a ResNet-18 report kept
    # 135 MB of it per run
    resume_state: bool = True

    def __post_init__(self) -> None:
        self.device = resolve_device(self.cfg.device)
        self.dtype = amp_dtype(self.cfg, self.device)
        self.eval_dtype = eval_dtype(self.dtype, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = not self.cfg.deterministic
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.model = to_device(self.model, self.device)
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.net = dist.wrap_ddp(self.model, self.device)
        if self.objective is not None:
            self.objective.to(self.device)
        # taken before any step (and before a resume loads later weights): the weights fine-tuning starts from
        self.l2sp = StartingPoint(self.model, encoder_prefixes(self.model), self.cfg.l2sp) if self.cfg.l2sp else None
        self.optimizer = build_optimizer(self.model, self.cfg, self.objective)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.ema = WeightAverage(self.model, self.cfg.ema_decay) if self.cfg.ema_decay else None
        self.last_path = self.out_dir / "last.pt"
        self.best_path = self.out_dir / "best.pt"

    def _checkpoint(
        self, epoch: int, best: float, best_epoch: int, history: list[dict[str, float]], stale: int
    ) -> dict[str, Any]:
        return {
            **self.meta,
            "precision": dtype_name(self.dtype),  # amp: auto depends on the machine (runtime.amp_dtype)
            "model": self.model.state_dict(),
            "epoch": epoch,
            "best_score": best,
            "best_epoch": best_epoch,
            "stale_epochs": stale,
            "history": history,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rng_state(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            **({"objective": self.objective.state_dict()} if self.objective is not None else {}),
        }

    def fit(
        self,
        train_loader: DataLoader,
        val_loader: Iterable[Any],
        resume: bool = False,
        target: TargetStream | None = None,
    ) -> FitResult:
        cfg = self.cfg
        needs_target = bool(getattr(self.objective, "needs_target", False))
        if needs_target and target is None:
            raise ValueError("the objective aligns domains but fit() got no target stream of unlabelled clips")
        steps = len(train_loader)
        total = cfg.epochs * steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(total, round(cfg.warmup_epochs * steps))
        )
        start, best, best_epoch, stale, history = 0, -math.inf, -1, 0, []
        if resume and not self.resume_state:
            raise ValueError(
                f"{self.out_dir}: this run keeps no resume state (resume_state=False), so it cannot resume"
            )
        if resume and self.last_path.is_file():
            ck = load_checkpoint(self.last_path)
            self.model.load_state_dict(ck["model"])
            self.optimizer.load_state_dict(ck["optimizer"])
            self.scheduler.load_state_dict(ck["scheduler"])
            self.scaler.load_state_dict(ck["scaler"])
            set_rng_state(ck["rng"])
            if self.ema is not None:
                if "ema" not in ck:
                    raise ValueError(f"{self.last_path} was trained without ema_decay: resume it with ema_decay 0")
                self.ema.load_state_dict(ck["ema"])
            if self.objective is not None:
                if "objective" not in ck:
                    raise ValueError(
                        f"{self.last_path} was trained without adapt or bss: resume it with the same settings"
                    )
                self.objective.load_state_dict(ck["objective"])
            start, best, best_epoch, stale = ck["epoch"] + 1, ck["best_score"], ck["best_epoch"], ck["stale_epochs"]
            history = list(ck["history"])
            log.info(
                "resumed from %s after epoch %d (best %s %.4f at epoch %d)",
                self.last_path,
                ck["epoch"],
                self.task.monitor,
                best,
                best_epoch,
            )
        elif resume:
            log.info("no checkpoint at %s: starting from scratch", self.last_path)

        stopped_early = False
        recalibrate = cfg.precise_bn if not cfg.freeze_bn else 0
        # AdaBN: the statistics of the data the model will be scored on: the labelled training data, or with a
        # target stream the target domain's (label-free)
        calibration, labelled = (target.train, False) if target is not None else (train_loader, True)
        if recalibrate and start == 0 and norm_held(self.model, cfg.head_epochs):
            # before the first step, for BatchNorm layers that training will not update (a frozen encoder's, or
            # any during LP-FT's head epochs): their running statistics shape what the head learns. Layers that
            # train use each batch's statistics, and are re-estimated before every validation anyway.
            recalibrate_bn(self.model, self.task, calibration, self.device, recalibrate, self.eval_dtype, labelled)
        if cfg.head_epochs:
            log.info(
                "LP-FT: epoch%s 1-%d train the head only (encoder as loaded), then everything trains%s",
                "s" if cfg.head_epochs > 1 else "",
                min(cfg.head_epochs, cfg.epochs),
                "" if cfg.head_epochs < cfg.epochs else f": never, with {cfg.epochs} epochs (a linear probe)",
            )
        # The rule, from the size of the validation split (all ranks'): one too small to measure cannot pick an epoch.
        # Videos, not items: a detector's validation frames (or a classifier's views) of one video are not
        # independent, so 288 frames of 72 videos measure no better than 72 videos.
        val_videos = getattr(val_loader.dataset, "num_videos", None)
        val_videos = len(val_loader.dataset) if val_videos is None else int(val_videos)
        if dist.is_distributed():
            val_videos = int(dist.all_reduce_sum(torch.tensor(float(val_videos), device=self.device)).item())
        select_best = val_videos >= cfg.min_val_videos
        log.info(
            "model selection: %s",
            f"best epoch by val_{self.task.monitor}, early stopping after {cfg.early_stopping_patience} stale "
            f"epochs ({val_videos} validation videos)"
            if select_best
            else f"fixed schedule of {cfg.epochs} epochs, the last epoch is kept: {val_videos} validation videos "
            f"< min_val_videos {cfg.min_val_videos} cannot tell epochs apart",
        )
        for epoch in range(start, cfg.epochs):
            row = self._train_epoch(train_loader, epoch, steps, target.train if target is not None else None)
            # A fixed schedule's validations only inform the log: every val_interval-th epoch and the last (what is
            # saved). Selection needs every epoch's score.
            validate = select_best or (epoch + 1) % cfg.val_interval == 0 or epoch == cfg.epochs - 1
            improved = False
            # with ema_decay, the averaged weights are what is scored and saved (the training weights come back after)
            with self.ema.applied() if self.ema is not None else nullcontext():
                if validate:
                    if recalibrate:
                        recalibrate_bn(
                            self.model, self.task, calibration, self.device, recalibrate, self.eval_dtype, labelled
                        )
                    outputs = dist.gather_outputs(
                        predict(self.net, self.task, val_loader, self.device, self.eval_dtype, "val", self.progress)
                    )
                    scores = self.task.score(outputs)
                    row.update({f"val_{k}": float(v) for k, v in scores.items() if isinstance(v, (int, float))})
                    row["val_count"] = float(len(next(iter(outputs.values()))))  # all ranks' videos, gathered
                    if target is not None:
                        unlabelled = predict(self.net, self.task, target.eval, self.device, self.eval_dtype, "target")
                        row.update({f"target_{k}": v for k, v in label_free_scores(unlabelled["probs"]).items()})
                    score = row[f"val_{self.task.monitor}"]
                    # A validation split too small to measure cannot pick an epoch: keep the latest.
                    improved = score > best if select_best else True
                    if improved:
                        best, best_epoch, stale = score, epoch, 0
                    else:
                        stale += 1
                history.append(row)
                if dist.is_main():
                    self.logger.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
                    ck = self._checkpoint(epoch, best, best_epoch, history, stale)
                    save_checkpoint(self.last_path, ck if self.resume_state else weights_only(ck))
                    if improved:
                        # best.pt is what gets scored, registered and served: the weights (with the BatchNorm
                        # statistics of a validation), not the resume state (AdamW's moments alone are twice the
                        # weights' size)
                        save_checkpoint(self.best_path, weights_only(ck))
                    # after the checkpoints: a tracking server that does not answer never delays them
                    self.logger.flush()
                dist.barrier()
            if validate:
                log.info(
                    "epoch %d/%d: train_loss %.4f val_loss %.4f val_%s %.4f%s",
                    epoch + 1,
                    cfg.epochs,
                    row["train_loss"],
                    row.get("val_loss", float("nan")),
                    self.task.monitor,
                    score,
                    (" (best)" if select_best else " (saved: fixed schedule)") if improved else "",
                )
            else:
                log.info(
                    "epoch %d/%d: train_loss %.4f (validation every %d epochs)",
                    epoch + 1,
                    cfg.epochs,
                    row["train_loss"],
                    cfg.val_interval,
                )
            if self.on_epoch_end is not None:
                self.on_epoch_end(epoch, row)
            if select_best and cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
                log.info("early stopping: val_%s has not improved for %d epochs", self.task.monitor, stale)
                stopped_early = True
                break
        dist.check_in_sync(self.model)
        return FitResult(best_epoch, best, history, stopped_early, self.best_path, self.last_path, selected=select_best)

    def _step_loss(self, batch: Any, target: Any, progress: float) -> tuple[torch.Tensor, int, dict[str, float]]:
        """The task's loss, or the objective's (task + alignment + BSS), plus L2-SP; and the parts to log."""
        if self.objective is None:
            loss, n = self.task.loss(self.net, batch, self.device)
            parts: dict[str, float] = {}
        else:
            loss, n, parts = self.objective(self.net, self.task, batch, target, self.device, progress)
        if self.l2sp is not None:
            penalty = self.l2sp.penalty()
            loss = loss + penalty
            parts["l2sp"] = float(penalty.detach())
        return loss, n, parts

    def _train_epoch(
        self, loader: DataLoader, epoch: int, steps: int, target_loader: DataLoader | None = None
    ) -> dict[str, float]:
        cfg = self.cfg
        # Reseed the sampler per epoch: resuming at an epoch boundary replays the same batches.
        _reseed(loader, self.seed * 100_003 + epoch)
        targets = _forever(target_loader, self.seed * 100_019 + epoch * 1_000) if target_loader is not None else None
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        self.net.train()
        freeze_norm_stats(self.model, cfg.freeze_bn)
        # LP-FT: while the head is new, its gradients would only distort the pretrained encoder
        held = hold_encoder(self.model) if epoch < cfg.head_epochs else []
        held_ids = {id(p) for p in held}
        trainable = [p for p in self.model.parameters() if p.requires_grad and id(p) not in held_ids]
        ctx = torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext()
        loss_sum, items, wait, norms = 0.0, 0, 0.0, []
        part_sums: dict[str, float] = {}
        t_epoch = time.perf_counter()
        t_ready = time.perf_counter()
        bar = tqdm(
            loader,
            total=steps,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not self.progress or not dist.is_main(),
            dynamic_ncols=True,
            leave=False,
        )
        for step, batch in enumerate(bar):
            wait += time.perf_counter() - t_ready
            global_step = epoch * steps + step
            self.optimizer.zero_grad(set_to_none=True)
            target = next(targets) if targets is not None else None
            with ctx:
                loss, n, parts = self._step_loss(batch, target, global_step / max(1, cfg.epochs * steps))
            if not torch.isfinite(loss):
                raise NonFiniteError(
                    f"loss became {loss.item()} at epoch {epoch + 1}, step {step + 1} (global step {global_step}): "
                    f"lower train.lr, keep train.grad_clip on, or set train.amp: off"
                )
            self.scaler.scale(loss).backward()
            for p in held:
                p.grad = None  # AdamW and SGD skip a parameter without a gradient (no decay, no momentum)
            self.scaler.unscale_(self.optimizer)
            norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.grad_clip or float("inf"))
            if not torch.isfinite(norm) and self.dtype != torch.float16:  # fp16: the scaler skips such steps
                raise NonFiniteError(
                    f"gradient norm became {norm.item()} at epoch {epoch + 1}, step {step + 1} "
                    f"(global step {global_step}): "
                    f"lower train.lr or set train.grad_clip"
                )
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
            loss_sum += loss.item() * n
            items += n
            norms.append(float(norm))
            for k, v in parts.items():
                part_sums[k] = part_sums.get(k, 0.0) + v
            if dist.is_main():
                # per-step series under step/ (their x axis is the global step, not the epoch)
                self.logger.log_metrics(
                    {
                        "step/grad_norm": float(norm),
                        "step/lr": self.scheduler.get_last_lr()[-1],
                        "step/loss": loss.item(),
                        **{f"step/{k}": v for k, v in parts.items()},
                    },
                    step=global_step,
                )
            elapsed = time.perf_counter() - t_epoch
            bar.set_postfix(
                loss=f"{loss_sum / max(1, items):.3f}", clips_s=f"{items * dist.world_size() / max(elapsed, 1e-9):.1f}"
            )
            t_ready = time.perf_counter()
        seconds = time.perf_counter() - t_epoch
        totals = dist.all_reduce_sum(torch.tensor([loss_sum, items, wait, seconds], dtype=torch.float64))
        world = dist.world_size()
        return {
            "epoch": float(epoch),
            "train_loss": float(totals[0] / max(1.0, totals[1])),
            "lr": float(self.scheduler.get_last_lr()[-1]),
            "grad_norm": float(np.mean(norms)) if norms else 0.0,
            "clips_per_s": float(totals[1] / max(1e-9, totals[3] / world)),
            "data_wait_fraction": float(totals[2] / max(1e-9, totals[3])),
            "epoch_seconds": float(totals[3] / world),
            # this rank's mean of each objective part per step (alignment, domain accuracy, penalties)
            **{f"train_{k}": v / max(1, len(norms)) for k, v in part_sums.items()},
        }

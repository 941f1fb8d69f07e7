"""The classification pipeline's steps, as the CLI, the DVC stages, the Prefect flows and the dashboard
call them: one function per step, taking the config.

(probe -> extract -> split: :mod:`vt_models.data.steps`) -> pretrain / train
(:mod:`vt_models.classify.runner`) -> evaluate (metrics, motion probes, cost; logged to the training
run) -> cv -> transfer report -> adaptation report -> promote (the registry gate, :mod:`vt_models.promotion`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vt_models.config import Config
from vt_models.io.mlflow import AliasMove


@dataclass(frozen=True)
class Evaluated:
    """One evaluation: the report (metrics, files) and the MLflow run it was logged to, if any."""

    backbone: str
    report: Any  # vt_models.classify.evaluate.EvalReport
    run_id: str | None


def train(
    cfg: Config, stage: str, backbone: str, resume: bool = False, progress: bool = True, out: Path | None = None
) -> Any:
    """Fine-tune (``train``) or pretrain (``pretrain``) one backbone into ``out`` (default: its run folder,
    ``models/<stage>/<backbone>``); tracked in MLflow."""
    from vt_models.classify.runner import train_backbone

    return train_backbone(cfg, stage, backbone, resume=resume, progress=progress, out_dir=out)


def evaluate(
    cfg: Config, backbone: str, stage: str = "train", checkpoint: Path | None = None, out: Path | None = None
) -> Evaluated:
    """Score a trained model on ``evaluate.split`` of its data set (the source data for ``pretrain``), with
    the motion probes; its own checkpoint's scores are logged to its training run. Cost is measured
    for fine-tuned models only (the source model is not what ships)."""
    from vt_models.classify.evaluate import evaluate_checkpoint
    from vt_models.io.mlflow import log_evaluation

    if stage not in ("train", "pretrain"):
        raise ValueError(f"stage must be train or pretrain, got {stage!r}")
    ec, tc = cfg.evaluate, getattr(cfg, stage)
    own = cfg.run_dir(stage, backbone) / "best.pt"
    ckpt = checkpoint or own
    report = evaluate_checkpoint(
        ckpt,
        cfg.frames_dir(tc.dataset),
        cfg.splits_path(tc.dataset),
        out or cfg.eval_dir(backbone, stage),
        ec.split,
        ec.views,
        tc.device,
        ec.measure_cost and stage == "train",
        ec.motion_probes,
        ec.reverse_pairs,
        cfg.seed,
    )
    # another checkpoint's scores do not belong to this backbone's training run
    run_id = (
        log_evaluation(own.parent / "run.json", report.metrics, report.out_dir)
        if Path(ckpt).resolve() == own.resolve()
        else None
    )
    return Evaluated(backbone, report, run_id)


def cv(cfg: Config, backbone: str, progress: bool = True) -> dict[str, Any]:
    """k-fold cross-validation on train+val with the split's grouped folds."""
    from vt_models.classify.cv import cross_validate

    return cross_validate(cfg, backbone, progress=progress)


def transfer(cfg: Config, progress: bool = True) -> list[dict[str, Any]]:
    """Scratch vs linear probe vs full fine-tuning from the source model, at several training-set sizes."""
    from vt_models.classify.transfer import transfer_report

    return transfer_report(cfg, progress=progress)


def adaptation(cfg: Config, progress: bool = True) -> dict[str, Any]:
    """Source-only vs each domain-adaptation method (target labels hidden) vs supervised fine-tuning."""
    from vt_models.classify.adaptation import adaptation_report

    return adaptation_report(cfg, progress=progress)


def promote(cfg: Config, backbone: str | None = None, run_dir: Path | None = None) -> Any:
    """The registry gate: ``challenger`` always, ``champion`` only on evidence
    (see :mod:`vt_models.classify.promote`); ``run_dir``: a folder ``vt train --out`` wrote."""
    from vt_models.classify.promote import promote as run_gate

    return run_gate(cfg, backbone, run_dir)


def rollback(cfg: Config, reason: str) -> AliasMove:
    """Move the classifier's ``champion`` back to the previous champion
    (:func:`vt_models.promotion.rollback_champion`)."""
    from vt_models.promotion import rollback_champion

    return rollback_champion(cfg.registry.model_name, reason)

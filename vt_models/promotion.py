"""The model registry's promotion gate: ``champion`` only ever moves to a better model.

The candidate is the trained backbone with the best *validation* score (choosing on test would
leak it). It is registered with alias ``challenger``, then both it and the current champion are
scored on the *same, current* test split (the champion is re-evaluated, not trusted from its old
record, since the data may have changed). The candidate takes ``champion`` only when it beats the
champion by more than the margin. The decision and its evidence are tags on the new version.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from collections.abc import Callable
from pathlib import Path

from vt_models.config import Config
from vt_models.fsutil import write_json

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


class PromotionError(RuntimeError):
    """Promotion cannot run (nothing trained or evaluated yet); says what to run first."""


@dataclass
class Decision:
    model_name: str
    promoted: bool
    reason: str
    metric: str
    margin: float
    candidate_backbone: str
    candidate_version: str
    candidate_score: float
    candidate_run_id: str
    champion_version: str | None
    champion_score: float | None
    champion_run_id: str | None
    data_version: str

    def tags(self) -> dict[str, str]:
        return {f"promotion.{k}": "" if v is None else str(v) for k, v in asdict(self).items()}


def pick_candidate(cfg: Config) -> str:
    """The trained backbone with the best validation score of the configured metric."""
    return best_on_validation(cfg, "train", cfg.train.backbones, f"val_{cfg.registry.metric}",
                              "no trained backbone found under models/train/: run `vt train` (or `dvc repro`) first")


def best_on_validation(cfg: Config, stage: str, names: list[str], key: str, missing: str) -> str:
    """The name whose ``models/<stage>/<name>/metrics.json`` has the highest ``key``; ties: the first listed.
    (Choosing on validation, never on test: the gate then scores on test.)"""
    scores = {}
    for name in names:
        path = cfg.run_dir(stage, name) / "metrics.json"
        if path.is_file():
            scores[name] = json.loads(path.read_text()).get(key, float("-inf"))
    if not scores:
        raise PromotionError(missing)
    return max(scores, key=lambda n: (scores[n], -names.index(n)))


def test_score(cfg: Config, checkpoint: Path) -> tuple[float, str]:
    """Score a checkpoint on the current test split with the evaluation's settings."""
    import tempfile

    from vt_models.eval.evaluate import evaluate_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        report = evaluate_checkpoint(checkpoint, cfg.frames_dir(cfg.train.dataset), cfg.splits_path(cfg.train.dataset),
                                     Path(tmp), cfg.evaluate.split, cfg.evaluate.views, cfg.train.device, measure_cost=False)
    return float(report.metrics[cfg.registry.metric]), str(report.metrics["data_version"])


def promote(cfg: Config, backbone: str | None = None) -> Decision:
    """Register the classification candidate as ``challenger``; ``champion`` moves only if it is better."""
    from vt_models.train.data import load_split_data

    name = backbone or pick_candidate(cfg)
    run_dir = cfg.run_dir("train", name)
    data = load_split_data(cfg.frames_dir(cfg.train.dataset), cfg.splits_path(cfg.train.dataset))
    example = cfg.datasets[cfg.train.dataset].raw / data.records[cfg.evaluate.split][0].path
    rc = cfg.registry
    return gate(rc.model_name, rc.metric, rc.margin, name, run_dir, lambda ckpt: test_score(cfg, ckpt), example,
                cfg.evaluate.split, Path("reports") / "promotion.json", hint=f"vt train -b {name}")


def gate(model_name: str, metric: str, margin: float, name: str, run_dir: Path, score: Callable[[Path], tuple[float, str]],
         example: Path, split: str, record: Path, hint: str) -> Decision:
    """The promotion gate for any task: ``score(checkpoint) -> (metric value, data version)`` on the same split."""
    import mlflow

    from vt_models import tracking
    from vt_models.models.weights import resolve_mlflow_checkpoint
    from vt_models.serving.package import log_video_model

    tracking.configure()
    client = mlflow.MlflowClient()
    ckpt_path = run_dir / "best.pt"
    run_file = run_dir / "run.json"
    if not ckpt_path.is_file() or not run_file.is_file():
        raise PromotionError(f"{ckpt_path} or {run_file} missing: run `{hint}` first")
    run_id = json.loads(run_file.read_text())["run_id"]
    cand_score, data_version = score(ckpt_path)

    with mlflow.start_run(run_id=run_id):
        info = log_video_model(ckpt_path, example, registered_model_name=model_name)
    version = str(info.registered_model_version)
    client.set_registered_model_alias(model_name, CHALLENGER, version)

    try:
        champ = client.get_model_version_by_alias(model_name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champ = None
    champ_score = None
    if champ is None:
        promoted, reason = True, "no champion yet: the first candidate becomes champion"
    else:
        champ_ckpt = resolve_mlflow_checkpoint(f"models:/{model_name}/{champ.version}")
        champ_score, _ = score(champ_ckpt)
        promoted = cand_score > champ_score + margin
        verb = "beats" if promoted else "does not beat"
        reason = (f"candidate {metric} {cand_score:.4f} {verb} champion v{champ.version} {champ_score:.4f} "
                  f"+ margin {margin:g} on the same {split} split")
    decision = Decision(
        model_name=model_name, promoted=promoted, reason=reason, metric=metric, margin=margin,
        candidate_backbone=name, candidate_version=version, candidate_score=cand_score, candidate_run_id=run_id,
        champion_version=champ.version if champ is not None else None, champion_score=champ_score,
        champion_run_id=champ.run_id if champ is not None else None, data_version=data_version,
    )
    for key, value in decision.tags().items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_model_version_tag(model_name, version, "backbone", name)
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)
    log.info("promotion of %s v%s: %s", model_name, version, reason)
    write_json(record, asdict(decision))
    return decision

"""The promotion gate without a labelled test split, against a real `mlflow server`: when the target's
test split lists no video, the classifier gate scores candidate and champion with a label-free score (IM)
of their predictions on the same target videos, ships only a model whose predictions are not collapsed
and that beats the champion by more than the margin, and marks the decision label-free in its tags, its
JSON record, the alias history and the summary. With a test split again, the gate is the labelled one.

The models are real checkpoints of known behaviour (tests/gate_models.py), scored for real."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from vt_models.classify.data import load_split_data
from vt_models.classify.promote import promote
from vt_models.config import load_config
from vt_models.data.split import TRAINED_ON, training_record
from vt_models.eval.unsupervised import information_maximisation, predicted_class_diversity
from vt_models.io import mlflow as tracking
from vt_models.io.files import write_json
from vt_models.models.checkpoint import load_checkpoint, save_checkpoint
from vt_models.promotion import (
    CHAMPION,
    LABEL_FREE,
    LABEL_FREE_DECISION,
    LABELLED,
    NOTHING_TO_SHIP,
    LabelFree,
    label_free_verdict,
)
from vt_models.reports import format_promotion

from .gate_models import always, fitted_on_test, untrained_classifier

# An own registered model: the session's MLflow server is shared with the other registry tests.
NAME = "vt-labelfree-test"


def test_predicted_class_diversity_is_zero_for_one_class_and_one_for_all_equally() -> None:
    eye = np.eye(3)
    assert predicted_class_diversity(eye[[0, 0, 0, 0]]) == 0.0
    assert predicted_class_diversity(eye[[0, 1, 2, 0, 1, 2]]) == pytest.approx(1.0)
    assert predicted_class_diversity(eye[[0, 0, 0, 1]]) == pytest.approx(
        -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)) / np.log(3)
    )
    # unsure everywhere, always the same class: IM's diversity term is high, yet the model is collapsed
    unsure = np.tile([0.34, 0.33, 0.33], (5, 1))
    assert predicted_class_diversity(unsure) == 0.0 and information_maximisation(unsure) == pytest.approx(0.0)


def test_label_free_verdict_needs_uncollapsed_predictions_and_the_margin() -> None:
    guard = LabelFree("im", 0.1, predict=lambda ckpt, videos: None)
    assert guard.check(0.0)[0] is False and guard.check(0.1)[0] is True
    assert guard.check(0.0)[1].startswith("is collapsed: predicted-class diversity 0.00 < registry.label_free_min")
    ok, bad = (True, "is not collapsed (...)"), (False, "is collapsed (...)")
    assert label_free_verdict("im", 0.05, (0.2, *ok), None) == (
        True,
        "first champion (the registry had none): the candidate is not collapsed (...)",
    )
    promoted, reason = label_free_verdict("im", 0.05, (0.9, *bad), None)
    assert not promoted and reason.startswith(f"{NOTHING_TO_SHIP}: the candidate is collapsed")
    promoted, reason = label_free_verdict("im", 0.05, (0.9, *bad), ("3", 0.1, "is not collapsed"))
    assert not promoted and reason.endswith("champion v3 stays"), "a higher score does not ship a collapsed model"
    assert label_free_verdict("im", 0.05, (0.9, *ok), ("3", 0.8, "is not collapsed"))[0] is True
    promoted, reason = label_free_verdict("im", 0.05, (0.84, *ok), ("3", 0.8, "is not collapsed"))
    assert not promoted and "does not beat champion v3" in reason, "within the margin"


def _soften(ckpt: dict, factor: float) -> dict:
    """The same predicted classes, less sure of each: the head's logits scaled down (a lower IM)."""
    state = {k: v.clone() for k, v in ckpt["model"].items()}
    state["head.1.weight"] *= factor
    state["head.1.bias"] *= factor
    return {**ckpt, "model": state}


@pytest.mark.slow
def test_label_free_gate_without_a_labelled_test_split(tiny_project: Path, use_mlflow: str) -> None:
    cfg = load_config("params.yaml", [f"registry.model_name={NAME}", "registry.margin=0.05"])
    frames, splits_file = cfg.frames_dir("target"), cfg.splits_path("target")
    data = load_split_data(frames, splits_file)
    run_dir = cfg.run_dir("train", "resnet18")
    torch.manual_seed(0)  # the same untrained backbone every run
    untrained_classifier(run_dir / "best.pt", data.classes)
    base = load_checkpoint(run_dir / "best.pt")
    sharp = fitted_on_test(base, cfg)  # confident and diverse on the (former) test videos
    soft = _soften(sharp, 0.02)  # the same classes, unsure of each
    sharp_on_train = fitted_on_test(base, cfg, "train")  # confident and diverse on the train videos
    collapsed = always(base, 0)
    # every candidate trained on the train and val videos; the test videos are new to all of them
    write_json(run_dir / TRAINED_ON, training_record(frames, splits_file))
    labelled_splits = splits_file.read_text()
    splits = json.loads(labelled_splits)
    new_videos = splits["splits"]["test"]
    # the target now has no labelled test split: its test videos arrived unlabelled (listed under train)
    splits["splits"]["train"] = sorted(splits["splits"]["train"] + new_videos)
    splits["splits"]["test"] = []
    splits_file.write_text(json.dumps(splits))
    client = mlflow.MlflowClient()
    experiment = tracking.ensure_experiment("vt-labelfree-test")

    def candidate(ckpt: dict, config=cfg):
        save_checkpoint(run_dir / "best.pt", {k: v for k, v in ckpt.items() if k != "format"})
        with mlflow.start_run(experiment_id=experiment) as run:
            pass
        (run_dir / "run.json").write_text(json.dumps({"run_id": run.info.run_id}))
        return promote(config, "resnet18")

    def tags(decision) -> dict[str, str]:
        return client.get_model_version(NAME, decision.candidate_version).tags

    # a collapsed model (one class for every video) is never shipped label-free: nothing to ship
    first = candidate(collapsed)
    assert first.basis == LABEL_FREE and first.metric == "im" and first.decided, first.reason
    assert not first.promoted and not first.candidate_qualifies and first.champion_after is None
    assert first.candidate_diversity == 0.0 and first.min_diversity == 0.1
    assert first.reason.startswith(f"{NOTHING_TO_SHIP}: the candidate is collapsed"), first.reason
    assert "no absolute floor without labels" in first.reason
    assert first.scored_on == "unseen" and first.test_videos == len(new_videos) and first.split_videos == 0
    assert f"{len(new_videos)} target videos unseen by the candidate" in first.reason
    assert tags(first)["promotion.basis"] == LABEL_FREE and tags(first)["promotion.candidate_qualifies"] == "False"
    summary = format_promotion(Path("reports/promotion.json"))
    assert f"{LABEL_FREE_DECISION}: {NOTHING_TO_SHIP}: the candidate is collapsed" in summary
    assert "ship: nothing" in summary and tracking.current_alias(NAME, CHAMPION) is None

    # diverse but unsure: no champion to beat, so it is shipped (no floor to clear without labels)
    weak = candidate(soft)
    assert weak.promoted and weak.basis == LABEL_FREE and weak.candidate_qualifies, weak.reason
    assert weak.reason.startswith("first champion (the registry had none): the candidate is not collapsed"), weak.reason
    assert weak.candidate_diversity >= 0.1 and np.isnan(weak.candidate_ci_low) and np.isnan(weak.baseline)
    assert tracking.current_alias(NAME, CHAMPION) == weak.candidate_version
    t = tags(weak)
    assert t["promotion.basis"] == LABEL_FREE and t["promotion.metric"] == "im" and t["promotion.scored_on"] == "unseen"
    assert float(t["promotion.candidate_score"]) == pytest.approx(weak.candidate_score)
    record = json.loads(Path("reports/promotion.json").read_text())
    assert record["basis"] == LABEL_FREE and record["candidate_score"] == pytest.approx(weak.candidate_score)
    assert tracking.alias_history(NAME, CHAMPION)[-1].reason.startswith(LABEL_FREE_DECISION)
    assert (
        format_promotion(Path("reports/promotion.json"))
        .splitlines()[1]
        .strip()
        .startswith(f"{LABEL_FREE_DECISION}: first champion")
    )

    # a collapsed candidate never replaces the champion, and the champion keeps its alias
    refused = candidate(collapsed)
    assert not refused.promoted and not refused.champion_removed and refused.champion_qualifies, refused.reason
    assert (
        "the candidate is collapsed" in refused.reason and f"champion v{weak.candidate_version} stays" in refused.reason
    )
    assert refused.champion_score == pytest.approx(weak.candidate_score), "the champion re-scored on the same videos"
    assert tracking.current_alias(NAME, CHAMPION) == weak.candidate_version

    # confident and diverse: it beats the champion's IM by more than the margin
    strong = candidate(sharp)
    assert strong.promoted and strong.candidate_score > strong.champion_score + 0.05, strong.reason
    assert f"candidate im {strong.candidate_score:.4f} beats champion v{weak.candidate_version}" in strong.reason
    assert tracking.current_alias(NAME, CHAMPION) == strong.candidate_version

    # no unseen target video left: the target's train split, seen in training (labels still not read)
    splits["splits"]["train"] = [p for p in splits["splits"]["train"] if p not in new_videos]
    splits_file.write_text(json.dumps(splits))
    seen = candidate(sharp_on_train)
    assert seen.basis == LABEL_FREE and seen.scored_on == "train" and seen.seen_excluded == 0, seen.reason
    assert seen.test_videos == len(splits["splits"]["train"]) and "seen in training" in seen.reason
    # the champion was fitted on other videos: less sure of these, it is replaced
    assert seen.promoted and seen.candidate_score > seen.champion_score + 0.05, seen.reason
    # too few videos even there: no decision, the aliases stay
    strict = load_config(
        "params.yaml", [f"registry.model_name={NAME}", "registry.margin=0.05", "registry.min_unseen_test_videos=1000"]
    )
    none = candidate(sharp, strict)
    assert not none.decided and not none.promoted and none.reason.startswith("no decision: only"), none.reason
    assert tracking.current_alias(NAME, CHAMPION) == seen.candidate_version

    # a labelled test split again: the labelled gate, whose evidence is never read from a label-free decision
    splits_file.write_text(labelled_splits)
    labelled = candidate(sharp)
    assert labelled.basis == LABELLED and labelled.metric == "macro_f1" and labelled.scored_on is None
    assert labelled.champion_qualifies is not None and 0 <= labelled.champion_score <= 1, labelled.reason
    assert not np.isnan(labelled.candidate_ci_low) and "label-free" not in labelled.reason
    assert tags(labelled)["promotion.basis"] == LABELLED
    assert not format_promotion(Path("reports/promotion.json")).count(LABEL_FREE_DECISION)

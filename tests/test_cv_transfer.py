"""Cross-validation (nested MLflow runs, mean/std, no leakage) and the transfer-learning report."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from vt_models.classify.cv import cross_validate
from vt_models.classify.data import load_split_data
from vt_models.classify.runner import train_backbone
from vt_models.classify.transfer import seed_summary, stratified_subset, transfer_report
from vt_models.config import load_config
from vt_models.models.checkpoint import RESUME_STATE, load_checkpoint


def test_cv_nested_runs_mean_and_std(tiny_project: Path, use_mlflow: str) -> None:
    cfg = load_config("params.yaml", ["train.weights=none"])
    out = cross_validate(cfg, "resnet18", progress=False)
    with open("reports/cv/resnet18/folds.csv") as fh:
        folds = list(csv.DictReader(fh))
    assert len(folds) == 2 == out["folds"]
    f1 = np.array([float(r["macro_f1"]) for r in folds])
    assert out["mean_macro_f1"] == pytest.approx(f1.mean()) and out["std_macro_f1"] == pytest.approx(f1.std())
    saved = json.loads(Path("reports/cv/resnet18/metrics.json").read_text())
    assert saved["mean_accuracy"] == pytest.approx(out["mean_accuracy"])

    client = mlflow.MlflowClient()
    parent = client.get_run(out["run_id"])
    assert parent.data.metrics["mean_macro_f1"] == pytest.approx(out["mean_macro_f1"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{out['run_id']}'")
    assert len(children) == 2
    data = load_split_data("data/frames/target", "data/splits/target.json")
    dev = len(data.records["train"]) + len(data.records["val"])
    for child in children:
        fold = int(child.data.params["fold"])
        # the fold is held out from its own training, and nothing else is
        assert int(child.data.params["val_videos"]) == len(data.folds[fold])
        assert int(child.data.params["train_videos"]) + int(child.data.params["val_videos"]) == dev
        assert "macro_f1" in child.data.metrics


def test_stratified_subsets_are_nested() -> None:
    from vt_models.classify.data import VideoRecord

    recs = [VideoRecord(f"v{i}", i % 3, Path("x"), 8) for i in range(30)]
    half, full, tiny = (
        stratified_subset(recs, 0.5, 1),
        stratified_subset(recs, 1.0, 1),
        stratified_subset(recs, 0.01, 1),
    )
    assert len(half) == 15 and len(full) == 30 and {r.label for r in tiny} == {0, 1, 2}
    assert {r.path for r in stratified_subset(recs, 0.2, 1)} <= {r.path for r in half}


@pytest.mark.slow
def test_transfer_report_compares_three_settings_per_modality(tiny_project: Path, use_mlflow: str) -> None:
    cfg = load_config("params.yaml", ["pretrain.epochs=1", "transfer.fractions=[0.5, 1.0]"])
    own = cfg.pretrain.modality
    other = "rgb_diff" if own != "rgb_diff" else "rgb"
    cfg = load_config(
        "params.yaml", ["pretrain.epochs=1", "transfer.fractions=[0.5, 1.0]", f"transfer.modalities=[{own}, {other}]"]
    )
    train_backbone(cfg, "pretrain", "resnet18", progress=False, track=False)
    started_ms = int(time.time() * 1000)  # the session's MLflow server also holds other tests' transfer runs
    rows = transfer_report(cfg, progress=False)
    assert [(r["modality"], r["setting"], r["fraction"]) for r in rows] == [
        (m, s, f) for m in (own, other) for f in (0.5, 1.0) for s in ("scratch", "linear_probe", "full_finetune")
    ]
    # the other modality started from a source model of its own, pretrained by the report
    other_source = load_checkpoint(Path("reports/transfer/source") / f"resnet18-{other}" / "best.pt")
    assert other_source["model_args"]["modality"] == other and other_source["stage"] == "pretrain"
    rows = [r for r in rows if r["modality"] == own]
    assert rows[0]["train_videos"] < rows[-1]["train_videos"]
    # scratch is a fair baseline: a random encoder trains at the full lr, a pretrained one at lr * backbone_lr_mult
    runs_dir = Path("reports/transfer/runs")
    assert load_checkpoint(runs_dir / f"{own}-scratch-1" / "last.pt")["config"]["backbone_lr_mult"] == 1.0
    finetuned = load_checkpoint(runs_dir / f"{own}-full_finetune-1" / "last.pt")
    assert finetuned["config"]["backbone_lr_mult"] == cfg.train.backbone_lr_mult < 1.0
    # a report's runs are scored once, never resumed: no optimizer state (twice the weights) on disk
    assert "model" in finetuned and not RESUME_STATE & set(finetuned)
    assert all(
        0.0 <= r["ci_low"] <= r["test_macro_f1"] <= r["ci_high"] <= 1.0 for r in rows
    )  # bootstrap CI around the score
    md = Path("reports/transfer/transfer.md").read_text()
    assert "| modality | setting | fraction |" in md and md.count("full_finetune") == 4
    runs = mlflow.search_runs(experiment_names=["vt-transfer"], filter_string=f"attributes.start_time >= {started_ms}")
    assert len(runs) == 1 and f"metrics.{own}_full_finetune_test_macro_f1" in runs.columns
    assert f"metrics.{other}_full_finetune_test_macro_f1" in runs.columns


def test_seed_summary_pairs_each_setting_with_scratch_seed_by_seed() -> None:
    f1 = {("scratch", 1): 0.3, ("scratch", 2): 0.5, ("full_finetune", 1): 0.6, ("full_finetune", 2): 0.6}
    rows = [
        {"modality": "flow", "fraction": 0.25, "seed": seed, "setting": setting, "train_videos": 6, "test_macro_f1": v}
        for (setting, seed), v in f1.items()
    ]
    by = {r["setting"]: r for r in seed_summary(rows)}
    ft, scratch = by["full_finetune"], by["scratch"]
    assert scratch["seeds"] == ft["seeds"] == 2 and scratch["gain_vs_scratch"] is None
    assert scratch["mean_macro_f1"] == pytest.approx(0.4) and scratch["std"] == pytest.approx(
        np.std([0.3, 0.5], ddof=1), abs=1e-4
    )
    # paired: +0.3 at seed 1, +0.1 at seed 2 (not the gap between the two best runs)
    assert ft["gain_vs_scratch"] == pytest.approx(0.2) and (ft["gain_min"], ft["gain_max"]) == pytest.approx((0.1, 0.3))
    assert (ft["min"], ft["max"], ft["std"]) == pytest.approx((0.6, 0.6, 0.0))


@pytest.mark.parametrize("report", ["transfer", "adaptation"])
def test_report_seeds_must_not_repeat(tiny_project: Path, report: str) -> None:
    with pytest.raises(ValueError, match=rf"{report}.seeds \[1, 1\] repeats a seed"):
        load_config("params.yaml", [f"{report}.seeds=[1, 1]"])


@pytest.mark.slow
def test_transfer_report_over_seeds_draws_a_subset_a_seed_and_summarises(tiny_project: Path, use_mlflow: str) -> None:
    # with L2-SP in the train config: neither the linear probe's frozen encoder nor scratch's random one uses it
    overrides = ["pretrain.epochs=1", "transfer.epochs=1", "transfer.fractions=[0.5]", "transfer.seeds=[1, 2]"]
    overrides.append("train.l2sp=0.01")
    cfg = load_config("params.yaml", overrides)
    train_backbone(cfg, "pretrain", "resnet18", progress=False, track=False)
    started_ms = int(time.time() * 1000)
    rows = transfer_report(cfg, progress=False)
    assert [(r["seed"], r["setting"]) for r in rows] == [
        (seed, s) for seed in (1, 2) for s in ("scratch", "linear_probe", "full_finetune")
    ]
    # each seed trained its own runs on its own subset
    data = load_split_data(cfg.frames_dir(cfg.train.dataset), cfg.splits_path(cfg.train.dataset))
    subsets = [{r.path for r in stratified_subset(data.records["train"], 0.5, seed)} for seed in (1, 2)]
    assert subsets[0] != subsets[1]
    own = cfg.train.modality
    for seed in (1, 2):
        ckpt = load_checkpoint(Path("reports/transfer/runs") / f"{own}-scratch-0.5-seed{seed}" / "last.pt")
        assert ckpt["seed"] == seed
        probe = load_checkpoint(Path("reports/transfer/runs") / f"{own}-linear_probe-0.5-seed{seed}" / "last.pt")
        finetuned = load_checkpoint(Path("reports/transfer/runs") / f"{own}-full_finetune-0.5-seed{seed}" / "last.pt")
        assert (ckpt["config"]["l2sp"], probe["config"]["l2sp"], finetuned["config"]["l2sp"]) == (0.0, 0.0, 0.01)
    with open("reports/transfer/summary.csv") as fh:
        summary = list(csv.DictReader(fh))
    assert [r["setting"] for r in summary] == ["scratch", "linear_probe", "full_finetune"]
    ft = [r for r in rows if r["setting"] == "full_finetune"]
    assert float(summary[2]["mean_macro_f1"]) == pytest.approx(np.mean([r["test_macro_f1"] for r in ft]), abs=1e-4)
    assert "## Over seeds 1, 2" in Path("reports/transfer/transfer.md").read_text()
    runs = mlflow.search_runs(experiment_names=["vt-transfer"], filter_string=f"attributes.start_time >= {started_ms}")
    assert len(runs) == 1 and f"metrics.{own}_full_finetune_test_macro_f1_std" in runs.columns
    assert runs["params.seeds"].iloc[0] == "1,2"

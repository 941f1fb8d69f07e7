"""Training runs end to end on tiny real data, tracked in a real `mlflow server`; DDP with torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch

from vt_models.classify.runner import train_backbone
from vt_models.config import load_config
from vt_models.models.builder import build_backbone
from vt_models.models.checkpoint import load_checkpoint
from vt_models.models.weights import WeightsError

from .conftest import BIN, free_port


def test_pretrain_then_finetune_tracked_and_registered(
    tiny_project: Path, use_mlflow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    cfg = load_config(
        "params.yaml", ["pretrain.epochs=3", "train.epochs=2", "train.strategy=partial", "train.backbone_lr_mult=0.5"]
    )
    with pytest.raises(WeightsError, match="run `vt pretrain --backbone resnet18`"):
        train_backbone(cfg, "train", "resnet18", progress=False)

    pre = train_backbone(cfg, "pretrain", "resnet18", progress=False)
    # a tiny run can end before the first system-metrics sample: keep each epoch over the sampling interval
    fine = train_backbone(cfg, "train", "resnet18", progress=False, on_epoch_end=lambda epoch, row: time.sleep(1.5))

    client = mlflow.MlflowClient()
    run = client.get_run(fine.run_id)
    p, tags = run.data.params, run.data.tags
    assert p["strategy"] == "partial" and p["backbone_lr_mult"] == "0.5" and p["lr"] == str(cfg.train.lr)
    assert tags["backbone"] == "resnet18" and tags["strategy"] == "partial" and tags["device"] == "cpu"
    assert tags["weights_source"].endswith("models/pretrain/resnet18/best.pt") and "git_commit" in tags
    history = client.get_metric_history(fine.run_id, "val_macro_f1")
    assert [m.step for m in history] == [0, 1]
    for key in ("train_loss", "val_loss", "val_accuracy", "lr", "clips_per_s", "data_wait_fraction"):
        assert len(client.get_metric_history(fine.run_id, key)) == 2, key
    assert len(client.get_metric_history(fine.run_id, "step/grad_norm")) >= 2  # every step
    assert any(k.startswith("system/") for k in run.data.metrics), "system metrics"
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.name.startswith("target@") and inputs[0].dataset.digest
    artifacts = {a.path for a in client.list_artifacts(fine.run_id)}
    assert {"metrics.json", "history.csv", "curves.png", "config.json"} <= artifacts

    # the source model is registered, and its URI is a weights source
    # (the session's MLflow server is shared: other tests may have registered earlier versions)
    versions = client.search_model_versions(f"run_id='{pre.run_id}'")
    assert [v.name for v in versions] == ["vt-pretrain-resnet18"]
    client.set_registered_model_alias("vt-pretrain-resnet18", "candidate", versions[0].version)
    model, _ = build_backbone(
        "resnet18", "models:/vt-pretrain-resnet18@candidate", num_classes=3, modality=cfg.pretrain.modality
    )
    source = load_checkpoint(pre.best_path)["model"]
    assert torch.equal(model.encoder.layer3[0].conv1.weight, source["encoder.layer3.0.conv1.weight"])
    assert model.load_report.dropped == ["head.1.bias", "head.1.weight"]

    metrics = json.loads(fine.metrics_path.read_text())
    assert metrics["epochs_run"] == 2 and 0.0 <= metrics["val_macro_f1"] <= 1.0
    ckpt = load_checkpoint(fine.best_path)
    assert ckpt["classes"] == ["left", "right", "zoom_in"] and ckpt["backbone"] == "resnet18"
    assert ckpt["config"]["strategy"] == "partial" and ckpt["data_version"].startswith(("dvc:", "md5:"))


def test_cli_resume_continues_after_the_last_epoch(tiny_project: Path) -> None:
    env = dict(
        os.environ, PATH=f"{BIN}:{os.environ['PATH']}", MLFLOW_TRACKING_URI=f"sqlite:///{tiny_project / 'mlflow.db'}"
    )
    vt = str(BIN / "vt")
    subprocess.run(
        [vt, "-S", "pretrain.epochs=1", "pretrain", "-b", "resnet18"],
        cwd=tiny_project,
        env=env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        [vt, "-S", "pretrain.epochs=2", "pretrain", "-b", "resnet18", "--resume"],
        cwd=tiny_project,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    assert "resumed from models/pretrain/resnet18/last.pt after epoch 0" in out.stderr
    assert len(load_checkpoint(tiny_project / "models/pretrain/resnet18/last.pt")["history"]) == 2


@pytest.mark.slow
def test_ddp_two_cpu_processes_with_gloo(tiny_project: Path) -> None:
    env = dict(
        os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        MLFLOW_TRACKING_URI=f"sqlite:///{tiny_project / 'mlflow.db'}",
        OMP_NUM_THREADS="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "-m",
        "vt_models",
        "-S",
        "pretrain.epochs=2",
        "pretrain",
        "-b",
        "resnet18",
    ]
    result = subprocess.run(cmd, cwd=tiny_project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("pretrain resnet18: val macro-F1") == 1, "only rank 0 reports"  # a fixed schedule
    ckpt = load_checkpoint(tiny_project / "models/pretrain/resnet18/last.pt")
    assert [r["val_count"] for r in ckpt["history"]] == [6.0, 6.0], "val metrics cover both ranks' shards"
    assert "6 validation videos < min_val_videos" in result.stderr  # the rule counts both ranks' shards too
    mlflow.set_tracking_uri(env["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["vt-pretrain"])
    assert len(runs) == 1 and runs.iloc[0]["params.world_size"] == "2"


@pytest.mark.slow
def test_detector_ddp_two_cpu_processes_with_gloo(tiny_project: Path) -> None:
    """Detection runs through the same loop under torchrun: sharded validation gathered on rank 0."""
    from vt_models.detect.data import FrameBoxDataset, load_detection_data

    name = "fcos_mini_resnet_fpn"
    env = dict(
        os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        MLFLOW_TRACKING_URI=f"sqlite:///{tiny_project / 'mlflow.db'}",
        OMP_NUM_THREADS="1",
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        "-m",
        "vt_models",
        "-S",
        "detect.epochs=1",
        "detect",
        "train",
        "-d",
        name,
    ]
    result = subprocess.run(cmd, cwd=tiny_project, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(f"detect train {name}: val mAP") == 1, "only rank 0 reports"  # a fixed schedule
    data = load_detection_data(tiny_project / "data/frames_det/target", tiny_project / "data/splits_det/target.json")
    val_frames = load_config(tiny_project / "params.yaml").detect.val_frames
    expected = len(FrameBoxDataset(data.records["val"], data.classes, False, eval_frames=val_frames))
    ckpt = load_checkpoint(tiny_project / f"models/detect/{name}/last.pt")
    assert [r["val_count"] for r in ckpt["history"]] == [float(expected)], "val images of both ranks' shards"
    assert ckpt["history"][0]["val_num_images"] == expected


def test_evaluate_matches_sklearn_and_attaches_to_the_run(tiny_project: Path, use_mlflow: str) -> None:
    import csv

    import numpy as np
    from sklearn import metrics as skm

    from vt_models.classify.evaluate import evaluate_checkpoint
    from vt_models.io.mlflow import log_evaluation

    cfg = load_config("params.yaml", ["train.weights=none", "train.epochs=1"])
    fine = train_backbone(cfg, "train", "resnet18", progress=False)
    report = evaluate_checkpoint(
        fine.best_path, cfg.frames_dir("target"), cfg.splits_path("target"), cfg.eval_dir("resnet18"), views=2
    )
    with open(report.out_dir / "predictions.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == report.metrics["videos"] == 6
    classes = report.classes
    y = [classes.index(r["true_label"]) for r in rows]
    p = [classes.index(r["pred_label"]) for r in rows]
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4) and (probs.argmax(1) == np.array(p)).all()
    m = report.metrics
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, p))
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, p, labels=range(3), average="macro", zero_division=0))
    assert m["macro_recall"] == pytest.approx(skm.recall_score(y, p, labels=range(3), average="macro", zero_division=0))
    assert m["weighted_precision"] == pytest.approx(
        skm.precision_score(y, p, labels=range(3), average="weighted", zero_division=0)
    )
    assert (report.out_dir / "confusion_matrix.png").stat().st_size > 1000
    assert m["params"] > 1e6 and m["gflops_per_clip"] > 0 and m["latency_ms"] > 0 and m["throughput_bs4"] > 0
    run_id = log_evaluation(Path("models/train/resnet18/run.json"), m, report.out_dir)
    run = mlflow.MlflowClient().get_run(run_id)
    assert run.data.metrics["test_macro_f1"] == pytest.approx(m["macro_f1"])
    # the motion probes ran by default; their figures are metrics of the run, their verdict a tag
    assert run.data.metrics["test_motion_static_accuracy"] == pytest.approx(m["motion_static_accuracy"])
    assert run.data.metrics["test_motion_reversed_changed"] == pytest.approx(m["motion_reversed_changed"])
    assert run.data.tags["test_motion_warning"] == m.get("motion_warning", "none")
    assert "evaluation" in {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}


def test_bench_train_reports_loader_model_and_wait(tiny_project: Path) -> None:
    from vt_models.bench import bench_train
    from vt_models.train.runtime import cpu_has_bf16_units

    lines: list[str] = []
    rows = bench_train(load_config("params.yaml"), ["resnet18"], batches=2, echo=lines.append)
    # fp32, then bf16 where the CPU has bf16 matrix units
    assert [r["amp"] for r in rows] == (["fp32", "bf16"] if cpu_has_bf16_units() else ["fp32"])
    assert rows[0]["loader_clips_s"] > 0 and rows[0]["model_clips_s"] > 0 and 0 <= rows[0]["data_wait_fraction"] <= 1
    assert "data wait" in lines[0]

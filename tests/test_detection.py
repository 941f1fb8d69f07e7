"""Detection through the whole workflow against a real `mlflow server`: train with the generic loop,
evaluate (mAP recomputed with pycocotools from the predictions file; MOT with and without tracking),
the mAP promotion gate and its floor, the registered model served by mlflow.pyfunc, and `vt predict` writing an
annotated MP4 and a JSON of tracks."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import subprocess
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from vt_models.config import load_config
from vt_models.data.frames import load_boxes
from vt_models.detect import steps
from vt_models.detect.data import map_label
from vt_models.detect.runner import train_detector
from vt_models.models.checkpoint import load_checkpoint, save_checkpoint
from vt_models.reports import format_detection_table
from vt_models.track.bench import bench_track
from vt_models.video.decode import open_video

from .conftest import BIN

NAME = "vt-detector-test"  # the session's MLflow server is shared: this test's own model name
DETECTOR = "fcos_mini_resnet_fpn"  # the CPU-sized default


def _coco_map(
    pred: dict, frames_dir: Path, videos: dict[str, str], classes: list[str], class_map: dict[str, str]
) -> list[float]:
    """pycocotools' COCOeval on the predictions file and the ground truth in the frames store (its labels
    mapped to the detector's classes by ``detect.class_map``)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns = [], []
    for i, img in enumerate(pred["images"]):
        images.append({"id": i + 1})
        xyxy, labels, _ = load_boxes(frames_dir / videos[img["video"]]).at(img["position"])
        for box, label in zip(xyxy, labels, strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                    "category_id": classes.index(map_label(str(label), class_map)) + 1,
                }
            )
    gt = COCO()
    gt.dataset = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)],
    }
    gt.createIndex()
    dets = [
        {
            "image_id": d["image"] + 1,
            "bbox": [
                d["box_xyxy"][0],
                d["box_xyxy"][1],
                d["box_xyxy"][2] - d["box_xyxy"][0],
                d["box_xyxy"][3] - d["box_xyxy"][1],
            ],
            "score": d["score"],
            "category_id": classes.index(d["label"]) + 1,
        }
        for d in pred["detections"]
    ]
    if not dets:
        return [0.0, 0.0]  # pycocotools cannot load an empty result; no detections = AP 0 for classes with GT
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(ev.stats[0]), float(ev.stats[1])]


def _silent(ckpt: dict) -> dict:
    """A deliberately useless FCOS: every class logit -20 everywhere (scores ~1e-5 under its 0.2 threshold: no
    detections, mAP 0)."""
    state = {k: v.clone() for k, v in ckpt["model"].items()}
    state["net.head.classification_head.cls_logits.weight"].zero_()
    state["net.head.classification_head.cls_logits.bias"].fill_(-20.0)
    return {**ckpt, "model": state}


@pytest.mark.slow
def test_detection_train_evaluate_promote_serve(
    tiny_project: Path, use_mlflow: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from vt_models.detect.runner import load_data

    overrides = [f"detect.model_name={NAME}", "detect.min_size=96", "detect.max_size=128"]
    cfg = load_config("params.yaml", overrides)
    # a floor one frame over what the training videos give: each gives one more an epoch, and the log says why
    floor = len(load_data(cfg).records["train"]) * cfg.detect.frames_per_video + 1
    cfg = load_config("params.yaml", [*overrides, f"detect.min_epoch_frames={floor}"])
    caplog.set_level(logging.INFO, logger="vt_models.detect.runner")
    summary = train_detector(cfg, DETECTOR, progress=False)
    more = cfg.detect.frames_per_video + 1
    assert f"{more} frames a training video an epoch (detect.frames_per_video {cfg.detect.frames_per_video})" in (
        caplog.text
    )
    ckpt = load_checkpoint(summary.best_path)
    assert ckpt["task"] == "detect" and ckpt["detector"] == DETECTOR and ckpt["classes"] == sorted(ckpt["classes"])
    assert ckpt["config"]["tracker"]["max_age"] == cfg.detect.tracker.max_age and ckpt["weights_source"] == "none"
    run = mlflow.get_run(summary.run_id)
    assert run.data.tags["task"] == "detect" and "val_map" in run.data.metrics and "step/loss" in run.data.metrics
    assert run.data.params["detector"] == DETECTOR and run.inputs.dataset_inputs  # lineage: the frames data version

    metrics = steps.evaluate(cfg, DETECTOR)
    out = Path(metrics["out_dir"])
    stored = json.loads((out / "metrics.json").read_text())
    pred = json.loads((out / "predictions.json").read_text())
    index = json.loads(Path("data/frames_det/target/index.json").read_text())
    videos = {v["path"]: v["file"] for v in index["videos"]}
    ref = _coco_map(pred, Path("data/frames_det/target"), videos, ckpt["classes"], ckpt["class_map"])
    assert [stored["map"], stored["map_50"]] == pytest.approx(ref, abs=1e-12)
    mot = json.loads((out / "mot.json").read_text())
    assert set(mot) == {"tracked", "untracked"} and mot["tracked"]["num_gt"] == stored["num_gt"] > 0
    assert stored["tracked_mota"] == mot["tracked"]["mota"] and stored["untracked_idf1"] == mot["untracked"]["idf1"]
    assert stored["tracked_hota"] == mot["tracked"]["hota"] and 0 <= stored["untracked_hota"] <= 1
    # `vt bench track` regroups the evaluate stage's stored detections: its clean scenario is mot.json again
    bench = bench_track(cfg, DETECTOR, sweep=False, echo=lambda _: None)
    assert "the evaluate stage's detections" in bench["detections"]
    for kind in ("tracked", "untracked"):
        assert bench["scenarios"]["clean"][kind] == pytest.approx(mot[kind], nan_ok=True)
    table = format_detection_table(cfg)  # `vt demo`'s detector table: MOTA, IDF1 and HOTA, tracked/untracked
    assert "HOTA trk/raw" in table and f"{stored['tracked_hota']:.2f}/{stored['untracked_hota']:.2f}" in table
    reader = open_video(out / "sample.tracks.mp4")
    sample = json.loads((out / "sample.tracks.json").read_text())
    assert reader.info.num_frames == sample["frames_processed"] > 0 and sample["classes"] == ckpt["classes"]
    assert {"test_map", "test_tracked_hota", "test_untracked_idf1"} <= set(mlflow.get_run(summary.run_id).data.metrics)
    # the clip is drawn from the raw test video: without it the error names the file and how to get it back
    splits = json.loads(cfg.detect_splits_path().read_text())
    first_video = cfg.dataset(cfg.detect.dataset).raw / splits["splits"][cfg.evaluate.split][0]
    aside = first_video.rename(first_video.with_name(first_video.name + ".aside"))
    try:
        with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(first_video))}.*`dvc checkout` or `dvc pull`"):
            steps.render_sample(cfg, summary.best_path, out)
        # `vt detect evaluate` checks it before the detector pass: no score is rewritten without its MLflow run
        written = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
        with pytest.raises(FileNotFoundError, match=re.escape(str(first_video))):
            steps.evaluate(cfg, DETECTOR)
        assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == written
    finally:
        aside.rename(first_video)

    # the same gate as classification, on test mAP, with its floor: one epoch from scratch finds next to nothing
    # (test mAP ~1e-5 here, under detect.min_map 0.05), so the detector is registered but is never champion
    client = mlflow.MlflowClient()
    caplog.set_level(logging.INFO, logger="vt_models.detect.steps")
    first = steps.promote(cfg, DETECTOR)
    assert first.metric == "map" and first.candidate_score == pytest.approx(stored["map"])
    # the evaluate stage's detections of this checkpoint, not a second detector pass; the same evidence as one
    assert f"detections come from {out}" in caplog.text
    fresh = steps.test_map(cfg, summary.best_path)
    assert (fresh.score, fresh.ci.low, fresh.ci.high) == (
        first.candidate_score,
        first.candidate_ci_low,
        first.candidate_ci_high,
    )
    caplog.clear()
    assert not first.promoted and not first.candidate_qualifies and first.champion_after is None, first.reason
    assert (
        first.reason.startswith("nothing to ship yet: the candidate fails the floor")
        and f"< minimum {cfg.detect.min_map:g}" in first.reason
    )
    assert first.baseline == 0.0 and first.baseline_rule == "a detector that finds nothing"
    assert (
        first.test_videos == stored["videos"]
        and first.small_test_set
        and first.min_test_videos == cfg.registry.min_test_videos
    )
    assert 0.0 <= first.candidate_ci_low <= first.candidate_ci_high
    save_checkpoint(summary.best_path, {k: v for k, v in _silent(ckpt).items() if k != "format"})
    worse = steps.promote(cfg, DETECTOR)
    assert "detections come from" not in caplog.text  # another checkpoint now: detected afresh
    assert (
        not worse.promoted
        and worse.candidate_score == 0.0
        and (worse.candidate_ci_low, worse.candidate_ci_high) == (0.0, 0.0)
    )
    assert "CI lower bound 0.0000 <= baseline 0.0000 (a detector that finds nothing)" in worse.reason
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(NAME, "champion")
    assert client.get_model_version_by_alias(NAME, "challenger").version == worse.candidate_version
    tags = client.get_model_version(NAME, worse.candidate_version).tags
    assert tags["promotion.metric"] == "map" and tags["promotion.candidate_qualifies"] == "False"
    assert tags["promotion.champion_after"] == "" and float(tags["promotion.candidate_ci_high"]) == 0.0
    record = json.loads(Path("reports/detect_promotion.json").read_text())
    assert record["candidate_version"] == worse.candidate_version and record["champion_after"] is None

    # a registered detector is a weights source for the next fine-tuning (models:/ URI, as for classification)
    from vt_models.models.detectors import build_detector

    trained = f"models:/{NAME}/{first.candidate_version}"  # registered, not champion: it did not clear the floor
    again = build_detector(DETECTOR, trained, ckpt["classes"][:2])
    assert again.load_report.loaded > 0 and all(
        k.startswith(again.spec.head_prefixes) for k in again.load_report.dropped
    )

    # one factory turns a model reference into its predictor, for `vt predict`, pyfunc and the dashboard
    from vt_models.detect.predict import DetectorPredictor
    from vt_models.serving.predictors import load_predictor

    assert isinstance(load_predictor(trained), DetectorPredictor)
    assert isinstance(load_predictor(summary.best_path), DetectorPredictor)

    # a registered version serves: pyfunc on real files (a bad file gets its own error), and `vt predict`
    video = sorted(Path("data/raw").rglob("*.mp4"))[0].resolve()
    broken = tiny_project / "broken.mp4"
    broken.write_bytes(b"not a video")
    monkeypatch.setenv("VT_SERVE_ROOT", str(tiny_project))  # the served model reads files under this folder only
    served = mlflow.pyfunc.load_model(trained).predict(pd.DataFrame({"path": [str(video), str(broken)]}))
    assert list(served["error"] == "") == [True, False]
    tracks = json.loads(served.loc[0, "tracks"])
    assert tracks["frames_processed"] > 0 and served.loc[0, "num_tracks"] == len(tracks["tracks"])

    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    res = subprocess.run(
        [str(BIN / "vt"), "predict", "-m", trained, "--out", "pred", "--json", str(video), str(broken)],
        cwd=tiny_project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1, res.stderr[-2000:]
    good, bad = (json.loads(line) for line in res.stdout.splitlines())
    assert Path(good["mp4"]).is_file() and json.loads(Path(good["json"]).read_text())["video"] == str(video)
    assert open_video(good["mp4"]).info.num_frames == tracks["frames_processed"]
    assert "error" in bad and "broken.mp4" in bad["video"]


def test_detection_cli_data_stages_and_errors(tiny_project: Path) -> None:
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    models = subprocess.run([str(BIN / "vt"), "detect", "models"], env=env, capture_output=True, text=True, check=True)
    assert "retinanet_resnet50_fpn_v2" in models.stdout and "COCO_V1" in models.stdout
    # the project's own detector has no COCO weights: it lists what it can start from
    own = next(line for line in models.stdout.splitlines() if line.startswith("fcos_mobilenet_v3_large_fpn "))
    assert "weights: none, source, file" in own and "coco" not in own.lower()
    # a box outside its frame: that video is quarantined, the rest proceed
    csv = sorted(Path("data/raw").rglob("*.boxes.csv"))[0]
    lines = csv.read_text().splitlines()
    lines[1] = ",".join([*lines[1].split(",")[:2], "500", "1", "5", "5", lines[1].split(",")[-1]])
    csv.write_text("\n".join(lines) + "\n")
    res = subprocess.run([str(BIN / "vt"), "detect", "probe"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    quarantine = Path("data/probe_det/target/quarantine.csv").read_text()
    assert (
        csv.with_name(csv.name.replace(".boxes.csv", ".mp4")).name in quarantine
        and "outside the 64x48 frame" in quarantine
    )
    res = subprocess.run(
        [str(BIN / "vt"), "detect", "train", "-d", DETECTOR],
        env=env,
        capture_output=True,
        text=True,
        cwd=tiny_project / "data",
    )  # no params.yaml here
    assert res.returncode != 0 and "params" in res.stderr
    res = subprocess.run(
        [str(BIN / "vt"), "detect", "evaluate", "-d", "fcos_resnet50_fpn"], env=env, capture_output=True, text=True
    )
    assert res.returncode != 0 and "vt detect train -d fcos_resnet50_fpn" in res.stderr


def test_weights_source_needs_the_pretrain_stage_and_says_so(tiny_project: Path) -> None:
    from vt_models.models.weights import WeightsError

    cfg = load_config("params.yaml", ["detect.weights=source"])
    with pytest.raises(WeightsError, match=f"run `vt detect pretrain --detector {DETECTOR}`"):
        train_detector(cfg, DETECTOR, progress=False, track=False)


def test_the_pretrain_stage_has_its_own_epochs_and_learning_rate() -> None:
    from vt_models.detect.runner import PRETRAIN, STAGE, stage_config

    root = Path(__file__).resolve().parents[1]
    overrides = ["detect.lr=0.0005", "detect.pretrain.lr=0.002", "detect.pretrain.epochs=5"]
    cfg = load_config(root / "params.yaml", overrides)
    dataset, weights, loop = stage_config(cfg, PRETRAIN)
    assert (dataset, weights, loop.lr, loop.epochs) == ("scenes", "none", 0.002, 5)
    dataset, weights, loop = stage_config(cfg, STAGE)
    assert (dataset, weights, loop.lr, loop.epochs) == ("target", "source", 0.0005, cfg.detect.epochs)
    # null: the detect section's rate for both stages
    unset = load_config(root / "params.yaml", ["detect.lr=0.001", "detect.pretrain.lr=null"])
    assert stage_config(unset, PRETRAIN)[2].lr == stage_config(unset, STAGE)[2].lr == 0.001
    # L2-SP holds a start that was trained: not random weights (pretraining, or fine-tuning from scratch)
    l2sp = load_config(root / "params.yaml", ["detect.l2sp=0.1"])
    assert (stage_config(l2sp, PRETRAIN)[2].l2sp, stage_config(l2sp, STAGE)[2].l2sp) == (0.0, 0.1)
    scratch = load_config(root / "params.yaml", ["detect.l2sp=0.1", "detect.weights=none"])
    assert stage_config(scratch, STAGE)[2].l2sp == 0.0
    classifier = load_config(root / "params.yaml", ["detect.l2sp=0.1", "detect.backbone_weights=cls.pt"])
    assert stage_config(classifier, PRETRAIN)[2].l2sp == 0.1  # its backbone starts from a trained classifier
    # multi-scale training: the pretrain stage's own sizes, else the detect section's
    sizes = load_config(root / "params.yaml", ["detect.pretrain.train_sizes=[96,128]", "detect.train_sizes=null"])
    assert (stage_config(sizes, PRETRAIN)[2].train_sizes, stage_config(sizes, STAGE)[2].train_sizes) == (
        [96, 128],
        None,
    )
    both = load_config(root / "params.yaml", ["detect.pretrain.train_sizes=null", "detect.train_sizes=[160]"])
    assert stage_config(both, PRETRAIN)[2].train_sizes == stage_config(both, STAGE)[2].train_sizes == [160]


def test_an_ssd_cannot_train_at_several_sizes_and_says_so() -> None:
    name = "ssdlite320_mobilenet_v3_large"
    cfg = load_config(
        Path(__file__).resolve().parents[1] / "params.yaml", ["detect.weights=none", "detect.train_sizes=[96,128]"]
    )
    with pytest.raises(ValueError, match=r"resizes every frame to 320 px \(SSD\).*detect.train_sizes"):
        train_detector(cfg, name, progress=False, track=False)

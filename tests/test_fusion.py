"""Two-stream late fusion from `vt evaluate` score files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vt_models.classify.fusion import fuse, fusion_report, read_scores
from vt_models.cli import app
from vt_models.io.files import write_csv

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["left", "right", "zoom_in"]


def _scores(folder: Path, probs: np.ndarray, labels: list[int], videos: list[str] | None = None) -> Path:
    videos = videos or [f"{CLASSES[y]}/v{i:02d}.mp4" for i, y in enumerate(labels)]
    rows = [
        {
            "video": v,
            "true_label": CLASSES[y],
            "pred_label": CLASSES[int(p.argmax())],
            **{f"prob_{c}": f"{x:.6f}" for c, x in zip(CLASSES, p, strict=True)},
        }
        for v, y, p in zip(videos, labels, probs, strict=True)
    ]
    folder.mkdir(parents=True)
    write_csv(folder / "predictions.csv", rows, ["video", "true_label", "pred_label", *(f"prob_{c}" for c in CLASSES)])
    return folder


def _complementary(tmp_path: Path) -> tuple[Path, Path, list[int]]:
    """Stream A is confidently right on the first half of the videos and unsure elsewhere, B the other way round."""
    labels = [i % 3 for i in range(30)]
    a, b = np.full((30, 3), 0.3), np.full((30, 3), 0.3)
    for i, y in enumerate(labels):
        wrong = (y + 1) % 3
        (a if i < 15 else b)[i, y] = 0.9  # confident and right
        (b if i < 15 else a)[i, wrong] = 0.4  # unsure and wrong
    return _scores(tmp_path / "rgb", a, labels), _scores(tmp_path / "flow", b, labels), labels


def test_fusion_of_complementary_streams_beats_each(tmp_path: Path) -> None:
    rgb, flow, labels = _complementary(tmp_path)
    m = fusion_report([rgb, flow], tmp_path / "fused", resamples=200)
    acc = {r["model"]: r["accuracy"] for r in m["streams"]}
    assert acc["rgb"] == pytest.approx(0.5) and acc["flow"] == pytest.approx(0.5)
    assert acc["late_fusion"] == pytest.approx(1.0) and m["accuracy"] == pytest.approx(1.0)
    assert all(r["ci_low"] <= r["macro_f1"] <= r["ci_high"] for r in m["streams"])
    fused = read_scores(tmp_path / "fused")
    assert fused.probs.argmax(1).tolist() == labels
    # a weight of zero leaves one stream alone
    only_rgb = fuse([read_scores(rgb), read_scores(flow)], [1.0, 0.0])
    assert np.allclose(only_rgb, read_scores(rgb).probs)


def test_fusion_refuses_streams_of_other_videos_or_bad_weights(tmp_path: Path) -> None:
    rgb, _, labels = _complementary(tmp_path)
    other = _scores(tmp_path / "other", np.full((30, 3), 1 / 3), labels, [f"x/{i}.mp4" for i in range(30)])
    with pytest.raises(ValueError, match="scored different videos"):
        fusion_report([rgb, other], tmp_path / "out")
    with pytest.raises(ValueError, match="one non-negative weight per stream"):
        fuse([read_scores(rgb), read_scores(other)], [1.0])
    with pytest.raises(FileNotFoundError, match="run `vt evaluate`"):
        read_scores(tmp_path / "missing")


def test_cli_report_fusion_prints_each_stream_and_the_fusion(tmp_path: Path) -> None:
    rgb, flow, _ = _complementary(tmp_path)
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "--params",
            str(ROOT / "params.yaml"),
            "report",
            "fusion",
            str(rgb),
            str(flow),
            "--weights",
            "1,1.5",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "late_fusion" in result.output and "rgb" in result.output and "flow" in result.output
    assert json.loads((out / "metrics.json").read_text())["weights"] == [1.0, 1.5]
    bad = CliRunner().invoke(
        app, ["--params", str(ROOT / "params.yaml"), "report", "fusion", str(rgb), str(tmp_path / "nope")]
    )
    assert bad.exit_code != 0 and "run `vt evaluate`" in bad.output


def test_two_stream_fusion_of_a_real_rgb_and_flow_model(tiny_project: Path) -> None:
    """rgb and flow models of one backbone trained on real extracted videos, each evaluated to its own folder by
    `vt evaluate --checkpoint --out`, fused by `vt report fusion`: the fusion is the average of their probabilities."""
    import subprocess

    from vt_models.classify.runner import train_backbone
    from vt_models.config import load_config

    from .conftest import BIN

    streams = {}
    for modality in ("rgb", "flow"):
        cfg = load_config("params.yaml", ["train.weights=none", "train.epochs=1", f"train.modality={modality}"])
        fit = train_backbone(cfg, "train", "resnet18", progress=False, track=False, out_dir=Path("runs") / modality)
        out = Path("reports") / f"eval-{modality}"
        # no modality override: evaluation reads it from the checkpoint
        subprocess.run(
            [str(BIN / "vt"), "evaluate", "-b", "resnet18", "--checkpoint", str(fit.best_path), "--out", str(out)],
            check=True,
            capture_output=True,
        )
        streams[modality] = read_scores(out)
    result = subprocess.run(
        [str(BIN / "vt"), "report", "fusion", "reports/eval-rgb", "reports/eval-flow", "--out", "reports/fusion"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "late_fusion" in result.stdout
    fused = read_scores("reports/fusion")
    assert fused.videos == streams["rgb"].videos and len(fused.videos) == 6
    assert np.allclose(fused.probs, (streams["rgb"].probs + streams["flow"].probs) / 2, atol=1e-5)

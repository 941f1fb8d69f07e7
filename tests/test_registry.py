"""Registry and promotion gate against a real `mlflow server`: promote better, refuse worse or equal,
load the champion with mlflow.pyfunc and `vt predict` on real video files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from vt_models.config import load_config
from vt_models.models.checkpoint import load_checkpoint, save_checkpoint
from vt_models.models.weights import model_from_checkpoint
from vt_models.promotion import promote
from vt_models.train.data import ClipDataset, load_split_data
from vt_models.train.runner import train_backbone

from .conftest import BIN

NAME = "vt-video-classifier"


def _always(ckpt: dict, cls: int) -> dict:
    """A deliberately bad model: the head always answers ``cls``."""
    state = {k: v.clone() for k, v in ckpt["model"].items()}
    state["head.1.weight"].zero_()
    state["head.1.bias"].fill_(-10.0)
    state["head.1.bias"][cls] = 10.0
    return {**ckpt, "model": state}


def _fitted_on_test(ckpt: dict, cfg) -> dict:
    """A deliberately better model: the head refitted on the test split's features."""
    from sklearn.linear_model import LogisticRegression

    model, transforms = model_from_checkpoint(ckpt)
    model.eval()
    data = load_split_data(cfg.frames_dir("target"), cfg.splits_path("target"))
    ds = ClipDataset(data.records["test"], transforms.eval, ckpt["clip_len"], train=False, views=cfg.evaluate.views)
    with torch.no_grad():
        feats = torch.stack([model.features(ds[i][0][None])[0] for i in range(len(ds))]).numpy()
    labels = np.array([ds[i][1] for i in range(len(ds))])
    clf = LogisticRegression(C=1e4, max_iter=5000).fit(feats, labels)
    state = {k: v.clone() for k, v in ckpt["model"].items()}
    state["head.1.weight"] = torch.tensor(clf.coef_, dtype=torch.float32)
    state["head.1.bias"] = torch.tensor(clf.intercept_, dtype=torch.float32)
    return {**ckpt, "model": state}


def test_promotion_gate_and_champion_serving(tiny_project: Path, use_mlflow: str) -> None:
    cfg = load_config("params.yaml", ["train.weights=none", "train.epochs=1"])
    train_backbone(cfg, "train", "resnet18", progress=False)
    best = Path("models/train/resnet18/best.pt")
    trained = load_checkpoint(best)
    client = mlflow.MlflowClient()

    def candidate(ckpt: dict):
        save_checkpoint(best, {k: v for k, v in ckpt.items() if k != "format"})
        return promote(cfg, "resnet18")

    bad = _always(trained, 0)
    first = candidate(bad)
    assert first.promoted and "no champion yet" in first.reason
    assert client.get_model_version_by_alias(NAME, "champion").version == first.candidate_version

    equal = candidate(bad)
    assert not equal.promoted and "does not beat" in equal.reason
    assert equal.champion_score == pytest.approx(equal.candidate_score)
    assert client.get_model_version_by_alias(NAME, "champion").version == first.candidate_version
    assert client.get_model_version_by_alias(NAME, "challenger").version == equal.candidate_version

    good = candidate(_fitted_on_test(trained, cfg))
    assert good.promoted and good.candidate_score > good.champion_score, good.reason
    assert client.get_model_version_by_alias(NAME, "champion").version == good.candidate_version

    worse = candidate(_always(trained, 1))
    assert not worse.promoted and worse.candidate_score < worse.champion_score
    champion = client.get_model_version_by_alias(NAME, "champion")
    assert champion.version == good.candidate_version, "a worse candidate never becomes champion"

    tags = client.get_model_version(NAME, worse.candidate_version).tags
    assert tags["promotion.promoted"] == "False" and tags["promotion.metric"] == "macro_f1"
    assert float(tags["promotion.champion_score"]) == pytest.approx(good.candidate_score)
    assert tags["promotion.champion_version"] == good.candidate_version and tags["promotion.data_version"]
    assert tags["promotion.candidate_run_id"] == json.loads(Path("models/train/resnet18/run.json").read_text())["run_id"]
    assert json.loads(Path("reports/promotion.json").read_text())["candidate_version"] == worse.candidate_version

    # the champion serves: mlflow.pyfunc on real video files, a bad file gets its own error
    videos = sorted(Path("data/raw").rglob("*.mp4"))[:2]
    broken = tiny_project / "broken.mp4"
    broken.write_bytes(b"not a video")
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = loaded.predict(pd.DataFrame({"path": [str(videos[0]), str(broken), str(videos[1])]}))
    assert list(out["error"] == "") == [True, False, True]
    assert set(out["label"][out["error"] == ""]) <= {"left", "right", "zoom_in"}
    probs = out.loc[0, ["p_left", "p_right", "p_zoom_in"]].to_numpy(dtype=float)
    assert probs.sum() == pytest.approx(1.0, abs=1e-4) and out.loc[0, "probability"] == pytest.approx(probs.max())
    assert "not a readable video" in out.loc[1, "error"] or "Error" in out.loc[1, "error"]

    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    res = subprocess.run([str(BIN / "vt"), "predict", "--model", f"models:/{NAME}@champion", "--json", "-k", "2",
                          str(videos[0]), str(broken)], cwd=tiny_project, env=env, capture_output=True, text=True)
    assert res.returncode == 1, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines[0]["top_k"]) == 2 and lines[0]["top_k"][0]["label"] == out.loc[0, "label"]
    assert "error" in lines[1] and "broken.mp4" in lines[1]["video"]
    table = subprocess.run([str(BIN / "vt"), "predict", "--model", str(best), str(videos[1])], cwd=tiny_project, env=env,
                           capture_output=True, text=True, check=True)
    assert table.stdout.startswith(str(videos[1]) + ": ")


@pytest.mark.slow
def test_mlflow_models_predict_cli(tiny_project: Path, use_mlflow: str, tmp_path: Path) -> None:
    cfg = load_config("params.yaml", ["train.weights=none", "train.epochs=1"])
    train_backbone(cfg, "train", "resnet18", progress=False)
    decision = promote(cfg, "resnet18")
    video = sorted(Path("data/raw").rglob("*.mp4"))[0].resolve()
    (tmp_path / "input.json").write_text(json.dumps({"dataframe_split": {"columns": ["path"], "data": [[str(video)]]}}))
    res = subprocess.run([str(BIN / "mlflow"), "models", "predict", "-m", f"models:/{NAME}/{decision.candidate_version}",
                          "-i", str(tmp_path / "input.json"), "-t", "json", "--env-manager", "local", "-o", str(tmp_path / "out.json")],
                         env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}"), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    preds = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert preds[0]["label"] in {"left", "right", "zoom_in"} and preds[0]["error"] == ""

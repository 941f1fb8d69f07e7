"""Classifiers of known quality for the promotion gate's tests (a trained checkpoint with its head replaced)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vt_models.classify.data import ClipDataset, load_split_data
from vt_models.eval.bootstrap import Interval
from vt_models.models.builder import model_from_checkpoint
from vt_models.promotion import Decision, Evidence


def always(ckpt: dict, cls: int) -> dict:
    """A deliberately useless model: the head always answers ``cls``."""
    state = {k: v.clone() for k, v in ckpt["model"].items()}
    state["head.1.weight"].zero_()
    state["head.1.bias"].fill_(-10.0)
    state["head.1.bias"][cls] = 10.0
    return {**ckpt, "model": state}


def fitted_on_test(ckpt: dict, cfg: Any, split: str = "test") -> dict:
    """A deliberately good model: the head refitted on the features of the test split (it clears the floor),
    or of another ``split``."""
    from sklearn.linear_model import LogisticRegression

    model, transforms = model_from_checkpoint(ckpt)
    model.eval()
    data = load_split_data(cfg.frames_dir("target"), cfg.splits_path("target"))
    ds = ClipDataset(data.records[split], transforms.eval, ckpt["clip_len"], train=False, views=cfg.evaluate.views)
    with torch.no_grad():
        feats = torch.stack([model.features(ds[i][0][None])[0] for i in range(len(ds))]).numpy()
    labels = np.array([ds[i][1] for i in range(len(ds))])
    clf = LogisticRegression(C=1e4, max_iter=5000).fit(feats, labels)
    state = {k: v.clone() for k, v in ckpt["model"].items()}
    state["head.1.weight"] = torch.tensor(clf.coef_, dtype=torch.float32)
    state["head.1.bias"] = torch.tensor(clf.intercept_, dtype=torch.float32)
    return {**ckpt, "model": state}


def untrained_classifier(path: Path, classes: list[str], backbone: str = "resnet18") -> dict:
    """A small untrained vt classifier checkpoint at ``path`` (crop 32, 4-frame clips): registers and
    serves in seconds, for tests about the registry and serving rather than about quality."""
    from vt_models.models.builder import build_backbone
    from vt_models.models.checkpoint import save_checkpoint
    from vt_models.models.registry import get_spec

    model, _ = build_backbone(backbone, "none", num_classes=len(classes), dropout=0.0, crop_size=32)
    ckpt = {
        "backbone": backbone,
        "arch": get_spec(backbone).arch,
        "family": get_spec(backbone).family,
        "classes": classes,
        "num_classes": len(classes),
        "model": model.state_dict(),
        "model_args": {"dropout": 0.0, "rnn_hidden": 256, "crop_size": 32},
        "weights_source": "none",
        "clip_len": 4,
        "extract": {},
    }
    save_checkpoint(path, ckpt)
    return ckpt


def scripted(scores: list[float]) -> Callable[[Path, Path], Evidence]:
    """Evidence for each candidate in turn: a CI of +/- 0.05 around the score, baseline 0.2."""
    queue = list(scores)

    def score(ckpt: Path, splits: Path) -> Evidence:
        s = queue.pop(0)
        return Evidence(s, "md5:fixed", Interval(s - 0.05, s + 0.05, 0.95, 1000, 3), 0.2, "always 'a'")

    return score


def gate_project(root: Path, backbone: str = "resnet18") -> dict:
    """What the gate reads from a project, under ``root``: a trained run folder (an untrained ``backbone``), a
    frames index and a splits file."""
    import json

    from .videos import good_mp4

    run_dir = root / "models" / "train" / "resnet18"
    run_dir.mkdir(parents=True)
    untrained_classifier(run_dir / "best.pt", ["a", "b", "c"], backbone)
    (run_dir / "trained_on.json").write_text(json.dumps({"train": ["h-train"], "val": ["h-val"]}))
    frames = root / "frames"
    frames.mkdir()
    videos = ["a/1.mp4", "b/2.mp4", "c/3.mp4"]
    (frames / "index.json").write_text(
        json.dumps({"videos": [{"path": p, "md5": f"h{i}"} for i, p in enumerate(videos)]})
    )
    splits = root / "splits.json"
    splits.write_text(json.dumps({"classes": ["a", "b", "c"], "splits": {"test": videos}}))
    return {"run_dir": run_dir, "frames_dir": frames, "splits_path": splits, "example": good_mp4(root / "ex.mp4")}


def run_gate(inputs: dict, score: float | Callable[[Path, Path], Evidence], name: str) -> Decision:
    """One real gate decision (real model logging, registry and alias moves) on a freshly registered version of
    ``name`` whose test score is ``score`` (or what the scoring function ``score`` returns); only the score is
    scripted."""
    import json

    import mlflow

    from vt_models.io import mlflow as tracking
    from vt_models.promotion import Floor, gate

    experiment = tracking.ensure_experiment(name)
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    (inputs["run_dir"] / "run.json").write_text(json.dumps({"run_id": run.info.run_id}))
    return gate(
        name,
        "macro_f1",
        0.0,
        "resnet18",
        inputs["run_dir"],
        score if callable(score) else scripted([score]),
        inputs["example"],
        "test",
        inputs["run_dir"] / "promotion.json",
        hint="vt train -b resnet18",
        floor=Floor(0.3, 2, 2),
        frames_dir=inputs["frames_dir"],
        splits_path=inputs["splits_path"],
    )

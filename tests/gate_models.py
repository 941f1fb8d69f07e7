"""Classifiers of known quality for the promotion gate's tests (a trained checkpoint with its head replaced)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from vt_models.classify.data import ClipDataset, load_split_data
from vt_models.models.builder import model_from_checkpoint


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

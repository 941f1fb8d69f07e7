"""A throwaway copy of the project in a temporary git + DVC repository, with tiny params."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

TINY_PARAMS: dict[str, Any] = {
    "sample": {
        "classes": ["left", "right", "zoom_in"],
        "domains": {
            "source": {"clips_per_class": 6, "clips_per_recording": 2, "style": "flat"},
            "target": {"clips_per_class": 6, "clips_per_recording": 2, "style": "textured"},
            "slow": {"clips_per_class": 6, "clips_per_recording": 2, "style": "textured", "motion_scale": 0.3},
            # the detector's source: a scene a clip (9 scenes), all of them train or validate (no test split)
            "scenes": {"clips_per_class": 3, "clips_per_recording": 1, "style": "textured", "shared_scenes": False},
        },
        "sizes": [[64, 48]],
        "fps": [8],
        "duration_s": [1.0, 1.5],
        "workers": 2,
    },
    "extract": {"num_frames": 8, "short_side": 40},
    "split": {"k_folds": 2},
    "pretrain": {
        "backbones": ["resnet18"],
        "epochs": 2,
        "batch_size": 4,
        "crop_size": 32,
        "clip_len": 4,
        "num_workers": 0,
        "val_interval": 1,  # both epochs validated: the drills read epoch 0's scores
    },
    "train": {
        "backbones": ["resnet18"],
        "epochs": 2,
        "batch_size": 4,
        "crop_size": 32,
        "clip_len": 4,
        "num_workers": 0,
        "val_interval": 1,
    },
    "evaluate": {"views": 2},
    "cv": {"epochs": 1, "views": 1},
    "registry": {"min_unseen_test_videos": 2},  # the tiny test split has 6 videos (one recording per class)
    "transfer": {"backbone": "resnet18", "fractions": [1.0], "epochs": 1},
    "adaptation": {"backbone": "resnet18", "methods": ["dann"], "epochs": 1},
    "detect": {
        "extract": {"mode": "fps", "fps": 8.0, "max_frames": 8, "short_side": 48},
        "min_size": 64,
        "max_size": 96,
        "epochs": 1,
        "batch_size": 2,
        "frames_per_video": 1,
        "num_workers": 0,
        "weights": "none",
        "pretrain": {"epochs": 1, "train_sizes": [48, 64]},  # multi-scale, at the tiny frames' sizes
    },
}


def deep_update(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def env() -> dict[str, str]:
    """The test interpreter's bin first on PATH, so DVC stage commands find `vt`; MLflow goes to the
    temporary repo's own embedded store, never to a server another test started."""
    out = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", VT_PROGRESS="0")
    out.pop("MLFLOW_TRACKING_URI", None)
    return out


def run(cwd: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def write_params(dest: Path, params: dict[str, Any] | None = None) -> Path:
    """The project's params.yaml with tiny sizes (and ``params`` on top)."""
    data = deep_update(
        yaml.safe_load((ROOT / "params.yaml").read_text()),
        deep_update(yaml.safe_load(yaml.safe_dump(TINY_PARAMS)), params or {}),
    )
    path = dest / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def make_project(dest: Path, params: dict[str, Any] | None = None) -> Path:
    """Copy the pipeline definition and library into ``dest``; git init, dvc init, local remote."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "vt_models", dest / "vt_models", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(ROOT / name, dest / name)
    write_params(dest, params)
    run(dest, "git", "init", "-q")
    run(dest, str(BIN / "dvc"), "init", "-q")
    run(dest, str(BIN / "dvc"), "config", "core.analytics", "false")
    run(dest, str(BIN / "dvc"), "remote", "add", "-d", "local", str(dest.parent / "remote"))
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-q", "-m", "init")
    return dest

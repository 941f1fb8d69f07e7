"""Record data versions with DVC from code (the Prefect retrain flow uses this)."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)


class VersioningError(RuntimeError):
    """A DVC command failed; the message carries DVC's own output."""


def _dvc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    dvc = shutil.which("dvc", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if dvc is None:
        raise VersioningError("dvc is not installed in this environment")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    result = subprocess.run([dvc, *args], capture_output=True, text=True, env=env)
    if check and result.returncode != 0:
        raise VersioningError(f"`dvc {' '.join(args)}` failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def is_dvc_repo() -> bool:
    return Path(".dvc").is_dir()


def version_path(path: Path | str) -> str:
    """Record the current content of ``path``: ``dvc add`` it, or ``dvc commit`` the stage that outputs it.

    Returns how it was recorded. Nothing is deleted or rewritten in ``path`` itself.
    """
    path = Path(path)
    added = _dvc("add", str(path), check=False)
    if added.returncode == 0:
        return f"dvc add {path}"
    text = added.stderr + added.stdout
    if "already specified in stage" not in text and "is already tracked" not in text and "output of" not in text:
        raise VersioningError(f"`dvc add {path}` failed: {text.strip()[-2000:]}")
    stage = _owning_stage(path)
    _dvc("commit", "-f", stage)
    return f"dvc commit {stage}"


def commit_stages(stages: list[str]) -> None:
    """Record outputs that a flow produced outside `dvc repro`, so `dvc status` stays clean."""
    if stages:
        _dvc("commit", "-f", *stages)


def _owning_stage(path: Path) -> str:
    import yaml

    lock = yaml.safe_load(Path("dvc.lock").read_text()) if Path("dvc.lock").is_file() else {}
    for name, stage in (lock.get("stages") or {}).items():
        for out in stage.get("outs", []):
            if Path(out["path"]) == path:
                return name
    raise VersioningError(f"{path} is produced by a DVC stage that has not run yet: run `dvc repro` first")


def push() -> None:
    _dvc("push")


def data_hash(path: Path | str) -> str | None:
    """The DVC hash of ``path`` as recorded in dvc.lock or ``<path>.dvc``."""
    import yaml

    path = Path(path)
    sources = [Path("dvc.lock"), path.with_name(path.name + ".dvc")]
    for src in sources:
        if not src.is_file():
            continue
        data = yaml.safe_load(src.read_text()) or {}
        outs = data.get("outs", []) + [o for s in (data.get("stages") or {}).values() for o in s.get("outs", [])]
        for out in outs:
            if Path(out.get("path", "")) in (path, Path(path.name)):
                return out.get("md5")
    return None

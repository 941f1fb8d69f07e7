#!/usr/bin/env python3
"""Set up and run vt-models with nothing but Python 3.11+ and pip.

    python3 tasks.py demo    # create .venv, install, run the whole pipeline on the sample data
    python3 tasks.py test    # create .venv, install with test extras (and Debian's chromium for the
                             # dashboard's browser test and postgresql for the team stores' tests,
                             # when root), check format and lint (ruff), run the whole test suite
                             # (pytest-xdist: one worker per core, at most 4)

Both install Debian's libgl1 when it is missing and they run as root: opencv-python's cv2 needs libGL.

Both are idempotent: the install step is skipped when pyproject.toml has not changed.
Extra arguments after `test` go to pytest, after `demo` to `vt demo`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")


def _run(cmd: list[str], **kwargs) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=ROOT, **kwargs)


def ensure_env(extras: str) -> None:
    """Create .venv and install the project (editable) unless already done for this pyproject."""
    if sys.version_info < (3, 11):
        sys.exit(f"vt-models needs Python >= 3.11, this is {sys.version.split()[0]}: run it with python3.11")
    if not PY.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    stamp = VENV / ".vt-install-stamp"
    pyproject = (ROOT / "pyproject.toml").read_bytes()

    def key(extras: str) -> str:
        return hashlib.sha256(pyproject + extras.encode()).hexdigest()

    want = key(extras)
    done = stamp.read_text().split() if stamp.exists() else []
    if want in done:
        return
    _run([str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--upgrade", "pip"])
    # The project moved from opencv-python-headless to opencv-python (trackeval requires it). Both write
    # the same cv2 files, so a venv from before gets neither, then a clean opencv-python from the install.
    headless = subprocess.run([str(PY), "-m", "pip", "show", "-q", "opencv-python-headless"], capture_output=True)
    if headless.returncode == 0:
        _run([str(PY), "-m", "pip", "uninstall", "-y", "-q", "opencv-python-headless", "opencv-python"])
    check_disk()
    target = f".[{extras}]" if extras else "."
    # --no-compile: pip would byte-compile every module of every package (torch alone has thousands), about
    # 50 s of a 2-core install; Python compiles the ones a run imports, once, on first import (see run_env)
    _run([str(PY), "-m", "pip", "install", "--disable-pip-version-check", "--no-compile", "-e", target])
    # an install with extras also satisfies one without (`test` then `demo` installs once)
    stamp.write_text(" ".join(dict.fromkeys([*done, want, key("")])))


# A first install: torch's CUDA build with its NVIDIA libraries, then MLflow, Prefect, DVC, Streamlit and the rest
# took 6.8 GB in .venv on x86_64; pip also needs room to unpack each wheel before it moves it in.
INSTALL_GB = 7.0


def check_disk(need_gb: float = INSTALL_GB) -> None:
    """Stop before pip when .venv's disk cannot hold a first install: pip would fail part-way with 'No space left
    on device' and leave a broken venv. A venv that already has torch needs little more, so it is not checked."""
    import shutil

    if any(VENV.glob("lib/python3*/site-packages/torch")) or (VENV / "Lib" / "site-packages" / "torch").exists():
        return
    free_gb = shutil.disk_usage(VENV).free / 1e9
    if free_gb < need_gb:
        sys.exit(
            f"{VENV} needs about {need_gb:.0f} GB free for a first install (torch's CUDA build alone is over 5 GB); "
            f"its disk has {free_gb:.1f} GB free. Free space on that disk (`df -h {VENV}`; old clones' .venv "
            "folders are the usual culprits), then run this again."
        )


def postgres_bin() -> Path | None:
    """The folder with PostgreSQL's initdb and postgres: Debian's /usr/lib/postgresql/<version>/bin (the
    newest), else the one on PATH; None when it is not installed."""
    import shutil

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def ensure_system_packages(test: bool) -> None:
    """Debian packages, installed when we can (root + apt): libgl1 for opencv-python's cv2 (the flow
    modality); for the tests (``test``) chromium (the dashboard's browser test) and postgresql (the team
    stores' tests)."""
    import ctypes.util
    import shutil

    missing = [] if sys.platform != "linux" or ctypes.util.find_library("GL") else ["libgl1"]
    if test and not (shutil.which("chromium") or Path("/usr/bin/chromium").exists()):
        missing.append("chromium")
    if test and postgres_bin() is None:
        missing.append("postgresql")
    if not missing:
        return
    if os.name == "posix" and shutil.which("apt-get") and os.geteuid() == 0:
        _run(["apt-get", "update", "-qq"])
        _run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
    else:
        print(
            f"note: missing {' and '.join(missing)} (Debian/Ubuntu: sudo apt-get install {' '.join(missing)}): "
            "without libgl1 cv2 (the flow modality) does not import; without chromium (at /usr/bin/chromium) "
            "the dashboard browser test fails; without postgresql the team stores' tests are skipped",
            flush=True,
        )


def pytest_workers() -> list[str]:
    """pytest-xdist options: one worker per usable core, at most 4 (each runs its own servers), none on one core.

    Much of the suite waits on subprocesses and servers (dvc, mlflow, prefect, vt commands) whose start-up is
    single-threaded, so two workers on 2 cores about halve its time; tests/conftest.py gives each worker its
    share of torch's threads. Later options win: `python3 tasks.py test -n 0` runs it in one process.
    """
    # vt_models.parallel.default_workers counts the same way; this file runs before the project is installed
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = min(cores, 4)
    # whole modules to a free worker, in the order tests/conftest.py sets (the heaviest first): long modules start
    # early, short ones fill the end, and each module's fixtures are built once
    return ["-n", str(workers), "--dist", "loadscope", "--no-loadscope-reorder"] if workers > 1 else []


def run_env() -> dict[str, str]:
    """The environment the demo and the tests run in: .venv's bin first on PATH, and Python's bytecode cached in
    .venv/pycache.

    With PYTHONDONTWRITEBYTECODE set (as some CI images and containers do), Python compiled torch, torchvision,
    MLflow and the rest from source again in every process: about 14 s of a 24 s `vt evaluate` on 2 cores, in each of
    the dozens of `vt`, `dvc`, Prefect and MLflow processes the demo and the suite start. The cache lives in .venv, so
    nothing is written beside the sources (the spirit of that setting) and it goes with the venv.
    """
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(VENV))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(VENV / "pycache")
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    task, rest = argv[0], argv[1:]
    env = run_env()
    if task == "demo":
        ensure_env("")
        ensure_system_packages(test=False)
        return subprocess.run([str(BIN / "vt"), "demo", *rest], cwd=ROOT, env=env).returncode
    ensure_env("test")
    ensure_system_packages(test=True)
    # Style first (fast); the suite still runs when it fails, so one run shows everything.
    lint = 0
    for check in (["format", "--check", "."], ["check", "."]):
        print("+ ruff", " ".join(check), flush=True)
        lint |= subprocess.run([str(BIN / "ruff"), *check], cwd=ROOT, env=env).returncode
    tests = subprocess.run([str(PY), "-m", "pytest", *pytest_workers(), *rest], cwd=ROOT, env=env).returncode
    return tests or lint


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

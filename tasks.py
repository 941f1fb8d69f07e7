#!/usr/bin/env python3
"""Set up and run vt-models with nothing but Python 3.11+ and pip.

    python3 tasks.py demo    # create .venv, install, run the whole pipeline on the sample data
    python3 tasks.py test    # create .venv, install with test extras (and Debian's chromium for the
                             # dashboard's browser test, when root), check format and lint (ruff),
                             # run the whole test suite

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
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + extras.encode()).hexdigest()
    # An install with more extras also satisfies one with fewer.
    done = stamp.read_text().split() if stamp.exists() else []
    if want in done:
        return
    _run([str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-q", "--upgrade", "pip"])
    target = f".[{extras}]" if extras else "."
    _run([str(PY), "-m", "pip", "install", "--disable-pip-version-check", "-e", target])
    stamp.write_text(" ".join([*done, want]))


def ensure_browser() -> None:
    """The dashboard's browser test drives Debian's chromium; install it when we can (root + apt)."""
    import shutil

    if shutil.which("chromium") or Path("/usr/bin/chromium").exists():
        return
    if os.name == "posix" and shutil.which("apt-get") and os.geteuid() == 0:
        _run(["apt-get", "update", "-qq"])
        _run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
            env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"),
        )
    else:
        print(
            "note: the dashboard browser test needs chromium at /usr/bin/chromium "
            "(Debian/Ubuntu: sudo apt-get install chromium); without it that test fails",
            flush=True,
        )


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    task, rest = argv[0], argv[1:]
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", VIRTUAL_ENV=str(VENV))
    if task == "demo":
        ensure_env("")
        return subprocess.run([str(BIN / "vt"), "demo", *rest], cwd=ROOT, env=env).returncode
    ensure_env("test")
    ensure_browser()
    # Style first (fast); the suite still runs when it fails, so one run shows everything.
    lint = 0
    for check in (["format", "--check", "."], ["check", "."]):
        print("+ ruff", " ".join(check), flush=True)
        lint |= subprocess.run([str(BIN / "ruff"), *check], cwd=ROOT, env=env).returncode
    tests = subprocess.run([str(PY), "-m", "pytest", *rest], cwd=ROOT, env=env).returncode
    return tests or lint


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

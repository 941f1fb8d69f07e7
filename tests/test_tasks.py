"""The set-up script's own checks (tasks.py runs before the project is installed)."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest

import tasks

Usage = namedtuple("Usage", "total used free")


def test_a_first_install_stops_with_the_fix_when_the_disk_is_short(tmp_path: Path, monkeypatch) -> None:
    venv = tmp_path / ".venv"
    venv.mkdir()
    monkeypatch.setattr(tasks, "VENV", venv)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100e9, 97e9, 3e9))
    with pytest.raises(SystemExit) as stop:
        tasks.check_disk()
    message = str(stop.value)
    assert str(venv) in message and "3.0 GB free" in message and "df -h" in message
    # enough room: no stop
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100e9, 80e9, 20e9))
    tasks.check_disk()


def test_a_venv_that_has_torch_is_not_checked(tmp_path: Path, monkeypatch) -> None:
    venv = tmp_path / ".venv"
    (venv / "lib" / "python3.11" / "site-packages" / "torch").mkdir(parents=True)
    monkeypatch.setattr(tasks, "VENV", venv)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(100e9, 99.9e9, 0.1e9))
    tasks.check_disk()


def test_runs_cache_bytecode_in_the_venv_even_when_the_environment_forbids_it(tmp_path: Path, monkeypatch) -> None:
    import subprocess
    import sys

    venv = tmp_path / ".venv"
    monkeypatch.setattr(tasks, "VENV", venv)
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = tasks.run_env()
    assert "PYTHONDONTWRITEBYTECODE" not in env and env["PYTHONPYCACHEPREFIX"] == str(venv / "pycache")
    # a process started with it compiles an imported module once, into the venv, and nothing beside the source
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "mod.py").write_text("X = 1\n")
    subprocess.run([sys.executable, "-c", "import mod"], cwd=tmp_path / "src", env=env, check=True)
    assert list((venv / "pycache").rglob("mod.*.pyc")) and not list((tmp_path / "src").rglob("*.pyc"))


def test_an_install_with_test_extras_serves_the_demo_too(tmp_path: Path, monkeypatch) -> None:
    venv = tmp_path / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").touch()
    monkeypatch.setattr(tasks, "VENV", venv)
    monkeypatch.setattr(tasks, "PY", venv / "bin" / "python")
    monkeypatch.setattr(tasks, "check_disk", lambda: None)
    ran: list[list[str]] = []
    monkeypatch.setattr(tasks, "_run", lambda cmd, **kw: ran.append(cmd))
    monkeypatch.setattr(tasks.subprocess, "run", lambda *a, **kw: type("R", (), {"returncode": 1})())
    tasks.ensure_env("test")
    assert any(".[test]" in cmd for cmd in ran)
    ran.clear()
    tasks.ensure_env("")  # `python3 tasks.py demo` after `test`: nothing to install
    tasks.ensure_env("test")
    assert ran == []

"""Record data versions with DVC (and optionally git) from code: the Prefect retrain flow's side effects.

The flow runs the same steps as `dvc repro` outside of it, so it records what it produced itself:
``dvc commit -f`` of exactly the stages it re-ran (their outputs and deps go into ``dvc.lock`` and
the cache), one ``dvc push`` at the end, and, when asked, a git commit of ``dvc.lock``, the
``.gitignore`` files DVC edits, ``*.dvc`` files and the raw-state file (``vt_models.data.changes``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def repro_in_process(
    targets: list[str], run_vt: Callable[[list[str]], int], wait_for_lock: bool = False, single_item: bool = False
) -> list[str]:
    """``dvc repro targets`` through DVC's own command line in this process; each stage command that is a
    plain ``vt ...`` call runs here too, as ``run_vt(args) -> exit status``, instead of in a new interpreter.

    DVC still decides what runs and in which order, removes stale outputs, restores from its run cache and
    writes dvc.lock, exactly as ``dvc repro``; its output goes to this process's terminal. A new interpreter
    per stage costs ~10 s on 2 cores (the torch, torchvision and mlflow imports, MLflow's store), about two
    minutes over the demo's dozen model stages. Any other command (a pipe, a variable, another program,
    another folder) runs in a shell as usual. Returns the stages whose command ran.

    ``wait_for_lock``: wait for DVC's repo lock when another ``dvc repro`` here holds it (``dvc --wait-for-lock``).
    DVC takes it to plan and record, not while a stage's command runs, so two repros of disjoint stages run
    side by side. ``single_item``: only ``targets``, in the order given, and none of the stages upstream of them
    (``dvc repro --single-item``): checking an upstream stage write-locks its outputs, which fails while the other
    repro runs a stage that reads them.
    """
    import shlex

    import dvc.stage.run as stage_run
    from dvc.cli import main as dvc_main
    from dvc.env import DVC_STAGE
    from dvc.stage.exceptions import StageCmdFailedError

    shell_run, ran = stage_run._run, []

    def run(executable: str | None, cmd: str, **kwargs: Any) -> None:
        ran.append(kwargs["env"][DVC_STAGE])
        here = Path(kwargs.get("cwd") or ".").resolve() == Path.cwd().resolve()
        argv = shlex.split(cmd) if here and not set(cmd) & set("|&;<>$`*?~\n") else []
        if argv[:1] != ["vt"]:
            return shell_run(executable, cmd, **kwargs)
        code = run_vt(argv[1:])
        if code:
            raise StageCmdFailedError(cmd, code)
        return None

    dvc_log = logging.getLogger("dvc")
    propagate, dvc_log.propagate = dvc_log.propagate, False  # DVC prints its own lines; not twice via ours
    _dvc_console_here()
    stage_run._run = run  # DVC's one call that starts a stage's command (dvc 3.x)
    try:
        lock = ["--wait-for-lock"] if wait_for_lock else []
        code = dvc_main([*lock, "repro", *(["--single-item"] if single_item else []), *targets])
    finally:
        stage_run._run = shell_run
        dvc_log.propagate = propagate
    if code:
        raise VersioningError(f"`dvc repro {' '.join(targets)}` failed with status {code} (see its output above)")
    return list(dict.fromkeys(ran))


def _dvc_console_here() -> None:
    """Point DVC's console handlers at this moment's standard streams.

    ``import dvc`` binds them to the streams of that moment. A process that runs ``dvc repro`` more than
    once (a served flow, a test's captured output) may have replaced or closed those since.
    """
    for name in ("dvc", "dvc_objects", "dvc_data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler):
                # plain assignment: setStream() would flush the old stream first, which may be closed
                handler.stream = sys.stderr if handler.level >= logging.WARNING else sys.stdout


def stage_graph() -> dict[str, set[str]]:
    """Every stage (``foreach`` entries expanded) with the stages whose outputs it reads: DVC's own graph."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo() as repo:
            graph = repo.index.graph  # an edge runs from a stage to a stage it depends on
            return {stage.addressing: {dep.addressing for dep in graph.successors(stage)} for stage in graph}
    except DvcException as exc:
        raise VersioningError(f"DVC could not read the pipeline (dvc.yaml, params.yaml): {exc}") from exc


def stage_names() -> set[str]:
    """Every stage name in dvc.yaml, ``foreach`` entries expanded (``train@resnet18``)."""
    out = _dvc("stage", "list", "--all", "--name-only").stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def _load_yaml(path: Path) -> dict[str, Any]:
    """A DVC YAML file as a dict (empty when the file is). LibYAML's safe loader where PyYAML has it: the
    pure-Python one takes 0.35 s for the tests' 70 kB dvc.lock, and every training and evaluation reads it."""
    import yaml

    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def read_lock() -> dict[str, Any]:
    """``dvc.lock`` of the current directory as a dict; empty when there is none yet."""
    lock = Path("dvc.lock")
    return _load_yaml(lock) if lock.is_file() else {}


def _owning_stage(path: Path) -> str:
    for name, stage in (read_lock().get("stages") or {}).items():
        for out in stage.get("outs", []):
            if Path(out["path"]) == path:
                return name
    raise VersioningError(f"{path} is produced by a DVC stage that has not run yet: run `dvc repro` first")


def push() -> str:
    """``dvc push`` everything recorded in dvc.lock and *.dvc files; returns DVC's last line."""
    out = _dvc("push").stdout.strip().splitlines()
    return out[-1] if out else ""


# --------------------------------------------------------------------------- git


def _git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["git", *args], capture_output=True, text=True)
    if check and result.returncode != 0:
        raise VersioningError(f"`git {' '.join(args)}` failed: {(result.stderr or result.stdout).strip()[-2000:]}")
    return result


def is_git_repo() -> bool:
    return shutil.which("git") is not None and _git("rev-parse", "--is-inside-work-tree", check=False).returncode == 0


RECORD_PATHSPECS = ("dvc.lock", "*.gitignore", "*.dvc")


def record_paths(extra: list[Path | str] = ()) -> list[str]:
    """Changed or new files that record a data version: dvc.lock, .gitignore files, *.dvc files, ``extra``."""
    specs = [*RECORD_PATHSPECS, *(str(p) for p in extra)]
    out = _git("ls-files", "--modified", "--others", "--exclude-standard", "-z", "--", *specs).stdout
    return sorted({p for p in out.split("\0") if p})


def stage_outputs(stages: list[str]) -> list[str]:
    """The outputs (metrics and plots included) of ``stages`` as recorded in dvc.lock."""
    recorded = read_lock().get("stages") or {}
    return sorted({out["path"] for name in stages for out in (recorded.get(name) or {}).get("outs", [])})


def git_commit(message: str, extra: list[Path | str] = ()) -> str:
    """Commit only the record files (:func:`record_paths`), nothing else that is staged or changed.

    ``extra`` paths that git ignores are left out: pass a stage's outputs and only those DVC does not
    cache (``cache: false``: metrics, plots, predictions, the gate's decision) are committed, as DVC
    expects of them; cached outputs are git-ignored and live in the DVC cache and remote.

    Returns the new commit's short hash, or a sentence saying why nothing was committed.
    """
    if not is_git_repo():
        return "not a git repository: nothing committed"
    paths = record_paths(extra)
    if not paths:
        return "nothing to commit: the record was already in git"
    _git("add", "--", *paths)
    _git("commit", "-q", "-m", message, "--", *paths)
    return _git("rev-parse", "--short", "HEAD").stdout.strip()


def data_hash(path: Path | str) -> str | None:
    """The DVC hash of ``path`` as recorded in dvc.lock or ``<path>.dvc``."""
    path = Path(path)
    sidecar = path.with_name(path.name + ".dvc")
    for data in (read_lock(), _load_yaml(sidecar) if sidecar.is_file() else {}):
        outs = data.get("outs", []) + [o for s in (data.get("stages") or {}).values() for o in s.get("outs", [])]
        for out in outs:
            if Path(out.get("path", "")) in (path, Path(path.name)):
                return out.get("md5")
    return None


def data_version(frames_dir: Path, splits_path: Path) -> str:
    """The DVC hash of the frames folder when ``dvc.lock`` knows it, else a content digest of index+splits."""
    import hashlib

    import yaml

    try:
        md5 = data_hash(frames_dir)
    except (yaml.YAMLError, AttributeError):  # a broken lock file: fall back to the content
        md5 = None
    if md5:
        return f"dvc:{md5}"
    digest = hashlib.md5((Path(frames_dir) / "index.json").read_bytes() + Path(splits_path).read_bytes()).hexdigest()
    return f"md5:{digest}"

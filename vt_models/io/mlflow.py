"""MLflow tracking: where runs go, and a buffered metric logger for the training loop.

Embedded default: a sqlite store ``mlflow.db`` and artifacts under ``mlartifacts/`` in the project
folder. ``MLFLOW_TRACKING_URI`` points anywhere else, e.g. a team server
(``mlflow server --backend-store-uri postgresql://... --artifacts-destination s3://...``).

Credentials are MLflow's own business: the client reads ``MLFLOW_TRACKING_USERNAME`` /
``MLFLOW_TRACKING_PASSWORD`` from the environment and this project never handles them. A password
written into the URI itself (``http://user:pw@host``) works too, so whatever shows or stores a
tracking URI uses :func:`redacted`.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vt_models.io.files import exclusive_lock

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"


def embedded_uri() -> str:
    return f"sqlite:///{Path(DEFAULT_DB).resolve()}"


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the project's own sqlite store."""
    return os.environ.get("MLFLOW_TRACKING_URI") or embedded_uri()


def redacted(uri: str) -> str:
    """``uri`` with the password of its user part replaced by ``***`` (``http://user:***@host``): safe to
    print, log or write to a file."""
    scheme, sep, rest = uri.partition("://")
    userinfo, at, _ = rest.partition("/")[0].rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return uri
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{rest[len(userinfo) + 1 :]}"


def configure() -> str:
    import mlflow

    # MLflow draws one progress bar per artifact it downloads: a gate resolving a registered model printed 111
    # of them. Set MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=true to have them back.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_store() -> None:
    """Create the tracking store now. A new embedded store (sqlite) migrates its schema on first use, and two
    processes that first use it at once race on the migrations (``duplicate column name``): processes that
    track runs side by side call this first. For the embedded store it holds a file lock next to the
    database meanwhile, so the first caller creates the store and the others find it made."""
    import mlflow

    configure()
    if tracking_uri() != embedded_uri():  # a server creates its own store
        mlflow.MlflowClient().search_experiments(max_results=1)
        return
    with exclusive_lock(f"{DEFAULT_DB}.lock", holder="another process creating the tracking store"):
        mlflow.MlflowClient().search_experiments(max_results=1)


def ensure_experiment(name: str) -> str:
    """Experiment id; created with a project-local artifact folder when using the embedded store."""
    import mlflow

    configure()
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    # (mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, so compare with our default.)
    if tracking_uri() == embedded_uri():
        location = (Path(DEFAULT_ARTIFACTS).resolve() / name).as_uri()
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another process
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def git_info() -> dict[str, str]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no")) if commit else False
    return {"git_commit": commit or "unknown", "git_dirty": str(dirty).lower()}


def flatten(prefix: str, data: Any, out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Nested dict -> ``a.b.c`` keys (MLflow params are flat)."""
    out = {} if out is None else out
    if isinstance(data, dict):
        for k, v in data.items():
            flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = data
    return out


def log_params(params: dict[str, Any]) -> None:
    """Log a (nested) dict as the active run's params, flattened to ``a.b.c`` keys."""
    import mlflow

    mlflow.log_params(flatten("", params))


class TrackingUnavailable(RuntimeError):
    """The tracking server stopped answering; what it did not get is kept on disk, for ``--resume`` to log."""


# MLflow's own HTTP retries (7, with exponential backoff: about 4 minutes a call, 120 s timeout) would stall
# training for minutes per call once the server is gone. While a run trains, a call gives up after a few
# seconds and the logger keeps what it could not send; the user's own MLFLOW_HTTP_REQUEST_* settings win.
TRAINING_HTTP = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


class BoundedHttp:
    """Within its block, MLflow's HTTP calls retry at most :data:`TRAINING_HTTP` (process-wide: the system
    metrics thread gives up as soon, too); :meth:`lifted` restores MLflow's defaults for a part that may
    rightly take long (uploading a model)."""

    def __init__(self) -> None:
        self._set: dict[str, str] = {}

    def __enter__(self) -> BoundedHttp:
        self._set = {k: v for k, v in TRAINING_HTTP.items() if k not in os.environ}
        os.environ.update(self._set)
        return self

    def __exit__(self, *exc: object) -> None:
        for key in self._set:
            os.environ.pop(key, None)

    @contextmanager
    def lifted(self) -> Iterator[None]:
        self.__exit__()
        try:
            yield
        finally:
            self.__enter__()


def _scrubbed(exc: BaseException) -> str:
    """An MLflow client error in a few words (the OS error under MLflow's and urllib3's wrapping, e.g.
    ``[Errno 111] Connection refused``), without a password written into the tracking URI."""
    import re

    uri = tracking_uri()
    text = " ".join(str(exc).split()).replace(uri.rstrip("/"), redacted(uri).rstrip("/"))
    cause = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    return cause.group(0) if cause else f"{type(exc).__name__}: {text[:200]}"


class MlflowLogger:
    """Buffers step metrics and sends them in batches (one HTTP/sqlite round trip per flush; the training
    loop flushes after each epoch).

    A tracking server that stops answering does not stop training: a flush that fails (after MLflow's own
    retries, bounded by :class:`BoundedHttp` during training) keeps the metrics for the next flush and warns
    once; the checkpoints hold every epoch's metrics, which ``--resume`` logs into the same run."""

    def __init__(self, run_id: str, flush_every: int = 200, max_buffered: int = 100_000) -> None:
        import mlflow

        self.client = mlflow.MlflowClient()
        self.run_id = run_id
        self.flush_every = flush_every
        self.max_buffered = max_buffered  # beyond it the oldest step metrics go (the epochs are in last.pt)
        self._buffer: list[Any] = []
        self.unreachable: str | None = None  # the last error while the server does not answer

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        # while the server does not answer, only the epoch's flush tries again (each try costs seconds)
        if len(self._buffer) >= self.flush_every and self.unreachable is None:
            self.flush()

    def flush(self) -> bool:
        """Send what is buffered; False when the server did not answer (the metrics stay buffered)."""
        try:
            while self._buffer:
                self.client.log_batch(self.run_id, metrics=self._buffer[:1000])
                del self._buffer[:1000]
        except Exception as exc:  # MlflowException, or a transport error MLflow let through
            if self.unreachable is None:
                log.warning(
                    "MLflow at %s does not answer (%s): training goes on and keeps its checkpoints; metrics "
                    "are kept to send later, and every epoch is in last.pt: if the server is still gone at the "
                    "end, rerun the training with --resume (`vt pretrain --resume`, `vt train --resume`) once it "
                    "is back, to log the missing epochs into the same MLflow run %s",
                    redacted(tracking_uri()),
                    _scrubbed(exc),
                    self.run_id,
                )
            self.unreachable = _scrubbed(exc)
            del self._buffer[: max(0, len(self._buffer) - self.max_buffered)]
            return False
        if self.unreachable is not None:
            log.info("MLflow at %s answers again: the kept metrics were sent", redacted(tracking_uri()))
            self.unreachable = None
        return True


def log_missing_epochs(run_id: str, history: list[dict[str, float]], key: str = "train_loss") -> int:
    """Log the epoch rows of ``history`` that the run lacks (by the steps of ``key``): a resumed run gets the
    epochs whose metrics the interrupted process never sent. Returns how many epochs were logged."""
    import time

    import mlflow
    from mlflow.entities import Metric

    client = mlflow.MlflowClient()
    logged = {m.step for m in client.get_metric_history(run_id, key)}
    now = int(time.time() * 1000)
    rows = [r for r in history if int(r["epoch"]) not in logged]
    metrics = [Metric(k, float(v), now, int(r["epoch"])) for r in rows for k, v in r.items() if k != "epoch"]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    return len(rows)


@contextmanager
def start_run(
    experiment: str,
    run_name: str,
    tags: dict[str, str],
    system_metrics: bool = True,
    nested: bool = False,
    run_id: str | None = None,
) -> Iterator[Any]:
    """An MLflow run with git tags and (optionally) system metrics (CPU, memory, GPU); ``run_id``: continue
    that run instead (a resumed training), its name and tags as they are."""
    import mlflow

    exp_id = ensure_experiment(experiment)
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "5")
    run = mlflow.start_run(
        run_id=run_id,
        experiment_id=exp_id,
        run_name=run_name,
        tags={**git_info(), **tags},
        log_system_metrics=system_metrics,
        nested=nested,
    )
    try:
        yield run
    except BaseException:
        try:
            mlflow.end_run("FAILED")
        except mlflow.exceptions.MlflowException as exc:
            # the server is gone: keep the error that stopped the run, not this one
            log.warning(
                "MLflow run %s could not be marked FAILED (%s): it shows RUNNING until resumed",
                run.info.run_id,
                _scrubbed(exc),
            )
        raise
    mlflow.end_run()


def run_exists(run_id: str) -> bool:
    import mlflow

    try:
        mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


def log_params_again(run_id: str, params: dict[str, Any]) -> None:
    """Params of a resumed run: new keys are logged; a changed value (MLflow params cannot change) is kept as
    tag ``resumed_with.<key>``, with a warning."""
    import mlflow

    existing = mlflow.MlflowClient().get_run(run_id).data.params
    flat = {k: str(v) for k, v in flatten("", params).items()}
    mlflow.log_params({k: v for k, v in flat.items() if k not in existing})
    changed = {k: v for k, v in flat.items() if k in existing and existing[k] != v}
    if changed:
        mlflow.set_tags({f"resumed_with.{k}": v for k, v in changed.items()})
        log.warning("resumed run %s with changed params (kept as resumed_with.* tags): %s", run_id, ", ".join(changed))


@contextmanager
def report_run(experiment: str, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> Iterator[Any]:
    """The MLflow run of a report (the transfer and adaptation reports): no system metrics, its params logged."""
    with start_run(experiment, run_name, tags, system_metrics=False) as run:
        log_params(params)
        yield run


def log_evaluation(run_file: Path, metrics: dict[str, Any], out_dir: Path, prefix: str = "test_") -> str | None:
    """Attach evaluation metrics and files to the training run recorded in ``run_file``."""
    import json
    import time

    import mlflow
    from mlflow.entities import Metric

    if not run_file.is_file():
        log.warning("%s not found: evaluation not logged to MLflow (train with tracking first)", run_file)
        return None
    run_id = json.loads(run_file.read_text())["run_id"]
    configure()
    client = mlflow.MlflowClient()
    scalars = {
        f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    scalars.update({f"{prefix}f1_{c}": float(v) for c, v in metrics.get("per_class_f1", {}).items()})
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in scalars.items()])
    if "motion_static_accuracy" in metrics:  # the motion probes ran: record their verdict (replacing an older one)
        client.set_tag(run_id, f"{prefix}motion_warning", metrics.get("motion_warning") or "none")
    for f in sorted(out_dir.iterdir()):
        if f.is_file():
            client.log_artifact(run_id, str(f), artifact_path="evaluation")
    return run_id


# --------------------------------------------------------------------------- alias history

ALIAS_MOVE_PREFIX = "alias_move."


@dataclass(frozen=True)
class AliasMove:
    """One move of a registry alias, kept as a model-version tag (``alias_move.<ms>.<alias>``) on the versions
    it involves, so the registry itself holds the history (no side file to lose)."""

    time_ms: int
    alias: str
    from_version: str | None  # None: the alias was not set
    to_version: str | None  # None: the alias was removed
    reason: str
    by: str  # what moved it: "gate" or "rollback"
    user: str

    @property
    def key(self) -> str:
        # 13 digits until the year 2286: keys sort by time as text too
        return f"{ALIAS_MOVE_PREFIX}{self.time_ms:013d}.{self.alias}"

    @property
    def time(self) -> str:
        """UTC, ISO 8601 to the second."""
        from datetime import UTC, datetime

        return datetime.fromtimestamp(self.time_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _client(client: Any | None) -> Any:
    import mlflow

    return client if client is not None else mlflow.MlflowClient()


def current_alias(name: str, alias: str, client: Any | None = None) -> str | None:
    """The version ``alias`` points at, or None when it is not set (or the model is not registered)."""
    import mlflow

    try:
        return str(_client(client).get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def alias_history(name: str, alias: str, client: Any | None = None) -> list[AliasMove]:
    """Every recorded move of ``alias`` on registered model ``name``, oldest first."""
    import json

    found: dict[str, str] = {}
    for v in _client(client).search_model_versions(f"name='{name}'"):
        found.update({k: val for k, val in v.tags.items() if k.startswith(ALIAS_MOVE_PREFIX)})
    moves = []
    for key in sorted(found):
        try:
            move = AliasMove(**json.loads(found[key]))
        except (ValueError, TypeError):  # a hand-written tag: skip it rather than hide the rest
            log.warning("%s: tag %s is not an alias move; ignored", name, key)
            continue
        if move.alias == alias:
            moves.append(move)
    return moves


class AliasConflict(RuntimeError):
    """The alias no longer points where the caller's decision assumed (another process moved it)."""

    def __init__(self, message: str, current: str | None) -> None:
        super().__init__(message)
        self.current = current


ANY_VERSION = "*"  # move_alias without a compare-and-set: whatever the alias points at
LOCK_SUFFIX = ".alias-lock"


@contextmanager
def alias_lock(name: str, timeout_s: float = 120.0, stale_s: float = 600.0) -> Iterator[None]:
    """Hold the lock on registered model ``name``'s aliases while reading and moving them.

    MLflow has no compare-and-set for aliases, so the lock is a registered model ``<name>.alias-lock``: the
    tracking store creates a name at most once, so only one process at a time can hold it, whatever its
    machine. A lock older than ``stale_s`` (its holder died) is taken over with a warning."""
    import socket
    import time

    import mlflow
    from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode

    client = _client(None)
    lock = f"{name}{LOCK_SUFFIX}"
    holder = f"{socket.gethostname()}:{os.getpid()}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.create_registered_model(
                lock, tags={"holder": holder, "since_ms": str(int(time.time() * 1000))}, description=_LOCK_NOTE
            )
            break
        except mlflow.exceptions.MlflowException as exc:
            if exc.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST) and time.monotonic() < deadline:
                # The name was taken, and the holder released it before the server read the existing
                # model back to word its error (MLflow's SQL store does so on the name clash): nothing
                # was created, the lock is free now; try again.
                time.sleep(0.05)
                continue
            if exc.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        try:
            tags = client.get_registered_model(lock).tags
        except mlflow.exceptions.MlflowException:  # released in between: try again at once
            continue
        age_s = time.time() - int(tags.get("since_ms", "0")) / 1000
        if age_s > stale_s:
            log.warning(
                "%s: taking over the lock of %s held for %.0f s (its holder died?)", lock, tags.get("holder"), age_s
            )
            _release(client, lock)
            continue
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{lock} is held by {tags.get('holder')} for {age_s:.0f} s: another `vt promote` is moving "
                f"{name}'s aliases; try again, or delete registered model {lock} if no promotion is running"
            )
        time.sleep(0.2)
    try:
        yield
    finally:
        _release(client, lock)


_LOCK_NOTE = "held while `vt promote` moves aliases; delete it only if no promotion is running"


def _release(client: Any, lock: str) -> None:
    import mlflow

    try:
        client.delete_registered_model(lock)
    except mlflow.exceptions.MlflowException:  # already gone (taken over as stale)
        pass


def move_alias(
    name: str, alias: str, to_version: str | None, reason: str, by: str, expected: str | None = ANY_VERSION
) -> AliasMove:
    """Point ``alias`` at ``to_version`` (None: remove it) and record the move on the versions involved.

    ``expected``: the version the caller's decision assumed the alias points at (None: not set); under
    :func:`alias_lock`, a different one raises :class:`AliasConflict` and nothing moves (compare-and-set)."""
    import getpass
    import json
    import time
    from dataclasses import asdict

    client = _client(None)
    if expected not in (ANY_VERSION, None):
        expected = str(expected)  # current_alias gives a string; a local store's ModelVersion.version is an int
    with alias_lock(name):
        before = current_alias(name, alias, client)
        if expected != ANY_VERSION and before != expected:
            raise AliasConflict(
                f"{alias} moved from {_v(expected)} to {_v(before)} while this decision was made "
                f"(a concurrent promotion or rollback)",
                before,
            )
        if to_version is None:
            client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, to_version)
        try:
            user = getpass.getuser()
        except (OSError, KeyError):  # a container user without a passwd entry
            user = "unknown"
        history = alias_history(name, alias, client)
        # strictly later than the last move: two moves within a millisecond keep their order and both tags
        now = max(int(time.time() * 1000), history[-1].time_ms + 1 if history else 0)
        move = AliasMove(now, alias, before, None if to_version is None else str(to_version), reason, by, user)
        for version in {v for v in (move.from_version, move.to_version) if v is not None}:
            client.set_model_version_tag(name, version, move.key, json.dumps(asdict(move)))
    return move


def _v(version: str | None) -> str:
    return "none" if version is None else f"v{version}"

"""The team's shared stores, started on 127.0.0.1 for tests with real server software: PostgreSQL (Debian's
packages, run as a non-root user), an S3-compatible server (moto's standalone ``moto_server``) and a Prefect
server (on its default sqlite or on PostgreSQL). Each stops and removes its files when its block ends,
also on failure; one that cannot start raises with its log's tail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tasks import postgres_bin

from .conftest import BIN, free_port, stop, wait_for, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
PG_USER = "vt"


def why_no_postgres() -> str | None:
    """Why PostgreSQL cannot run here (None: it can)."""
    import pwd

    if postgres_bin() is None:
        return (
            "PostgreSQL is not installed (Debian: apt-get install postgresql; `python3 tasks.py test` does it as root)"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no `postgres` user to run the server as (PostgreSQL refuses root)"
    return None


@dataclass(frozen=True)
class Postgres:
    """A running server; the password is not here: clients read it from ``PGPASSWORD`` (libpq and asyncpg do)."""

    port: int
    bin: Path

    def uri(self, db: str, scheme: str = "postgresql") -> str:
        return f"{scheme}://{PG_USER}@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> None:
        subprocess.run(
            [str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", PG_USER, name],
            check=True,
            capture_output=True,
        )


@contextmanager
def postgres() -> Iterator[Postgres]:
    """PostgreSQL with its data in a fresh temporary folder, user ``vt`` with the password in ``PGPASSWORD``
    (scram-sha-256 on 127.0.0.1). As root the server runs as the ``postgres`` user, which PostgreSQL requires."""
    import pwd

    bin_dir = postgres_bin()
    assert bin_dir is not None, why_no_postgres()
    # not under pytest's tmp folder: that is private to the user running the tests (mode 0700)
    root = Path(tempfile.mkdtemp(prefix="vt-postgres-"))
    as_user: dict = {}
    if os.geteuid() == 0:
        account = pwd.getpwnam("postgres")
        os.chown(root, account.pw_uid, account.pw_gid)
        as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    proc = None
    try:
        pwfile = root / "pw"
        pwfile.write_text(os.environ["PGPASSWORD"])
        pwfile.chmod(0o600)
        if as_user:
            os.chown(pwfile, as_user["user"], as_user["group"])
        init = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(root / "data"),
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--no-locale",
                "-E",
                "UTF8",
            ],
            capture_output=True,
            text=True,
            cwd=root,
            **as_user,
        )
        pwfile.unlink()
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {(init.stdout + init.stderr)[-3000:]}")
        port = free_port()
        log = root / "server.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(
                # a throwaway cluster: durability settings off, it is faster on a busy disk
                [str(bin_dir / "postgres"), "-D", str(root / "data"), "-p", str(port), "-h", "127.0.0.1"]
                + ["-k", str(root), "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=root,
                **as_user,
            )
        ready = [str(bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)]
        wait_for(proc, lambda: subprocess.run(ready).returncode == 0, log, 60)
        yield Postgres(port, bin_dir)
    finally:
        if proc is not None:
            proc.send_signal(2)  # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for clients to leave)
            stop(proc)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def s3_server(root: Path) -> Iterator[str]:
    """moto's standalone S3-compatible server (in memory) on 127.0.0.1; yields its endpoint URL. Clients sign
    with any ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` from their environment."""
    port = free_port()
    with open(root / "moto.log", "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(proc, f"{url}/moto-api/", root / "moto.log", 60)
        yield url
    finally:
        stop(proc)


@contextmanager
def prefect_server(root: Path, env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`prefect server start` on 127.0.0.1 with its own PREFECT_HOME under ``root`` (its database: ``env``'s
    PREFECT_API_DATABASE_CONNECTION_URL, else sqlite there); yields the environment for its clients."""
    port = free_port()
    env = dict(
        env,
        PREFECT_HOME=str(root / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
        PATH=f"{BIN}:{env['PATH']}",
        PYTHONPATH=str(ROOT),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
    )
    with open(root / "server.log", "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_up(proc, f"http://127.0.0.1:{port}/api/health", root / "server.log", 180)
        yield env
    finally:
        stop(proc)


# The deployments' started runs (any state but Scheduled), as (how it started, state) pairs. Not only
# the latest completed ones: with a run every 5 s, ten later scheduled runs can finish before the
# slower run-now one does, and a "latest ten completed" query then never shows it.
_DEPLOYMENT_RUNS = (
    "from prefect.client.orchestration import get_client\n"
    "from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterState\n"
    "from prefect.client.schemas.filters import FlowRunFilterStateType\n"
    "from prefect.client.schemas.objects import StateType\n"
    "started = FlowRunFilter(deployment_id=FlowRunFilterDeploymentId(is_null_=False),\n"
    "    state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED])))\n"
    "with get_client(sync_client=True) as c:\n"
    "    runs = c.read_flow_runs(flow_run_filter=started, limit=200)\n"
    "    print(sorted({('scheduled' if r.auto_scheduled else 'run-now', r.state.name) for r in runs}))\n"
    # flows.overlap is skip: the server cancels a run that falls due while another goes (never two at once).
    # Only runs that ran count: the server gives a run it cancels before it runs start = end = the cancel time,
    # a moment inside the run that held the slot.
    "    ran = [r for r in runs if r.run_count > 0 and r.start_time and r.end_time]\n"
    "    spans = sorted((r.start_time, r.end_time, r.name, r.state.name) for r in ran)\n"
    "    overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]\n"
    "    print('overlapping runs:', len(overlaps), *overlaps)\n"
)


def _wait_until_idle(served: subprocess.Popen, timeout_s: float = 60) -> None:
    """Wait for a moment when serve.py runs no flow run (no child process, twice 0.5 s apart). Stopping it
    cancels every run it still holds, in Prefect's graceful shutdown, even one that has just completed: seen
    once, the only scheduled run that completed ended Cancelled, stopped while its process was still ending."""
    import psutil

    deadline, idle = time.monotonic() + timeout_s, 0
    while idle < 2 and time.monotonic() < deadline:
        idle = 0 if psutil.Process(served.pid).children(recursive=True) else idle + 1
        time.sleep(0.5)


def serve_until_scheduled_run(project: Path, env: dict[str, str], log: Path, timeout_s: float = 300) -> str:
    """Serve the preprocess flow every 5 s (flows/serve.py) from ``project`` against the Prefect server of ``env``
    until a scheduled run has completed and the run --every starts at once has ended (completed, or cancelled
    because a scheduled run held the deployment's one slot: flows.overlap is skip); returns serve.py's log.
    Raises with what the server had and the log's tail when that does not happen in time."""
    with open(log, "w") as out:
        served = subprocess.Popen(
            [sys.executable, str(ROOT / "flows" / "serve.py"), "--every", "5", "--flows", "preprocess"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    # each entry: one of its states (the run-now is Cancelled when a scheduled run held the slot)
    want = [["('scheduled', 'Completed')"], ["('run-now', 'Completed')", "('run-now', 'Cancelled')"]]
    seen = ""
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            probe = subprocess.run([sys.executable, "-c", _DEPLOYMENT_RUNS], env=env, capture_output=True, text=True)
            seen = probe.stdout + probe.stderr[-500:]
            if all(any(w in seen for w in ways) for ways in want):
                assert "overlapping runs: 0" in seen, seen
                _wait_until_idle(served)
                return log.read_text()
            time.sleep(3)
        raise AssertionError(f"want {want} among the runs (how started, state): {seen}\n{log.read_text()[-3000:]}")
    finally:
        stop(served)

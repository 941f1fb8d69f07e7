from __future__ import annotations

import os

# Progress bars off and quiet logs in tests; the CLI still prints its summaries.
os.environ.setdefault("VT_PROGRESS", "0")
os.environ.setdefault("GIT_AUTHOR_NAME", "vt-tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "vt-tests@localhost")
os.environ.setdefault("GIT_COMMITTER_NAME", "vt-tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "vt-tests@localhost")


import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from vt_models.allocator import keep_large_allocations
from vt_models.parallel import default_workers

BIN = Path(sys.executable).parent

# pytest-xdist workers share the machine's cores: each worker (and the `vt` processes it starts, which inherit
# this) gets its share of threads, set before any test imports torch. Oversubscribed spinning OpenMP threads
# slow small CPU trainings down more than they gain.
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, default_workers(None) // _workers)))

keep_large_allocations()  # the in-process trainings here run the way `vt` runs them


# The modules that take longest, longest first: one worker's seconds in `python3 tasks.py test -v` on 2 cores
# (flows 482, dvc 330, drills 323, registry 172, dashboard 147, team_stores 112, training_run 101,
# adapt_training 82, multinode 76; every other module under 60).
HEAVY_MODULES = (
    "test_flows",
    "test_dvc",
    "test_drills",
    "test_registry",
    "test_dashboard",
    "test_team_stores",
    "test_training_run",
    "test_adapt_training",
    "test_multinode",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The heavy modules first (HEAVY_MODULES), then the others in file order; each module's tests keep theirs.

    tasks.py runs pytest-xdist with module scheduling in this order (`--dist loadscope --no-loadscope-reorder`):
    a free worker takes the next whole module, so the multi-minute modules start early and the short ones fill
    the end, and a module's fixtures (the dashboard's trained store, the team stores' servers) are built once.
    In file order a heavy module could start last and leave the other worker idle for minutes.
    """

    def key(item: pytest.Item) -> int:
        module = item.path.stem
        return HEAVY_MODULES.index(module) if module in HEAVY_MODULES else len(HEAVY_MODULES)

    items.sort(key=key)  # stable: equal keys keep their file order


@pytest.fixture(scope="session", autouse=True)
def vt_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Models fetched from MLflow go to the session's temporary folder, not the user's ~/.cache."""
    path = tmp_path_factory.mktemp("vt-cache")
    old = os.environ.get("VT_CACHE_DIR")
    os.environ["VT_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("VT_CACHE_DIR", None)
    else:
        os.environ["VT_CACHE_DIR"] = old


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow(
    root: Path, backend_uri: str, artifacts: str, extra: list[str] | None = None, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen, str]:
    """A real `mlflow server` on 127.0.0.1 with its log in ``root/server.log``; returns it once /health answers."""
    port = free_port()
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "mlflow"),
                "server",
                "--backend-store-uri",
                backend_uri,
                "--artifacts-destination",
                artifacts,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "-w",
                "1",
                *(extra or []),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=root,
            # MLflow 3's job runner (8 huey processes, for GenAI jobs the product never submits) costs about
            # 25 s of CPU at start and holds memory for as long as the server runs
            env={**(os.environ if env is None else env), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(proc, f"{url}/health", root / "server.log", 120)
    return proc, url


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on 127.0.0.1 (sqlite backend, local artifact store), for the session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    proc, url = start_mlflow(root, f"sqlite:///{root / 'mlflow.db'}", str(root / "artifacts"))
    yield url
    stop(proc)


def wait_for(proc: subprocess.Popen, ready: Callable[[], bool], log_path: Path, timeout_s: float) -> None:
    """Wait until ``ready()``; if the server process dies or time runs out, kill it and raise with its log's tail."""
    deadline = time.monotonic() + timeout_s
    while not ready():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{proc.args[:3]} did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def wait_until_up(proc: subprocess.Popen, health_url: str, log_path: Path, timeout_s: float) -> None:
    """Wait for a server process to answer 200 at ``health_url``; if it dies or times out, raise with its log."""

    def answers() -> bool:
        try:
            with urllib.request.urlopen(health_url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    wait_for(proc, answers, log_path, timeout_s)


def stop(proc: subprocess.Popen) -> None:
    """Terminate a server process started by a fixture (kill it if it does not stop in 15 s)."""
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def use_mlflow(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point MLflow (in this process and its children) at the session's server."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    mlflow.set_tracking_uri(mlflow_server)
    return mlflow_server


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny project folder with sample data probed, extracted and split (built once per session)."""
    from tests.project import write_params

    root = tmp_path_factory.mktemp("tiny-data")
    write_params(root)
    env = dict(__import__("os").environ, PATH=f"{BIN}:{__import__('os').environ['PATH']}")
    for args in (
        ["data", "sample"],
        ["probe", "-d", "target"],
        ["probe", "-d", "source"],
        ["extract", "-d", "target"],
        ["extract", "-d", "source"],
        ["split", "-d", "target"],
        ["split", "-d", "source"],
        ["probe", "-d", "slow"],  # the adaptation report's target
        ["extract", "-d", "slow"],
        ["split", "-d", "slow"],
        ["probe", "-d", "scenes"],  # the detector's source: its detection probe reuses these rows
        ["detect", "probe"],
        ["detect", "extract"],
        ["detect", "split"],
    ):
        subprocess.run([str(BIN / "vt"), *args], cwd=root, env=env, check=True, capture_output=True)
    return root


@pytest.fixture
def tiny_project(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the tiny data project as the working directory."""
    dest = tmp_path / "proj"
    shutil.copytree(tiny_data, dest)
    monkeypatch.chdir(dest)
    return dest


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """A temporary Prefect API (its own database and result storage) for the session's flow tests."""
    # Prefect configures logging when its main module is first imported, and replaces the root logger's
    # handlers then: done here, before any test's caplog installs its handler, not inside a test body
    import prefect.main  # noqa: F401
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    storage = tmp_path_factory.mktemp("prefect-results")
    with (
        temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: storage}),
        prefect_test_harness(server_startup_timeout=180),
    ):
        yield


@pytest.fixture
def prefect_harness(prefect_api, tmp_path: Path):
    """The session's Prefect API with this test's own result storage: the task cache (by content) holds
    only what this test ran, whatever ran before it in this process (pytest-xdist orders tests freely)."""
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "prefect-results"}):
        yield

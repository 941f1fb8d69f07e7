"""Several machines on one: torchrun with two "nodes" (c10d rendezvous, gloo), and the preprocess flow
fanned out over a real Dask cluster (a scheduler and two workers, each its own process)."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vt_models.models.checkpoint import load_checkpoint

from .conftest import BIN, free_port, stop

ROOT = Path(__file__).resolve().parents[1]
PREPROCESSED = ("data/probe/target", "data/frames/target", "data/splits/target.json")


def process_env(project: Path, **extra: str) -> dict[str, str]:
    """The environment of a product process started by a drill: this venv's tools first, the project's
    own sqlite MLflow store unless ``extra`` says otherwise, one BLAS thread (the CI machine has two cores)."""
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
        "OMP_NUM_THREADS": "1",
        **extra,
    }


def pretrain_args(epochs: int, *extra: str) -> list[str]:
    """``-m vt_models ... pretrain`` of the tiny project's resnet18, after the interpreter or a launcher."""
    return ["-m", "vt_models", "-S", f"pretrain.epochs={epochs}", "pretrain", "-b", "resnet18", *extra]


@pytest.mark.slow
def test_torchrun_two_nodes_end_with_identical_weights(tiny_project: Path) -> None:
    """Two torchrun launchers (one per "node", one process each) meet at a c10d rendezvous on 127.0.0.1 and
    train together; every rank reports the digest of its final weights, and they match the saved ones."""
    from vt_models.config import load_config
    from vt_models.models.builder import build_backbone
    from vt_models.train.distributed import weights_digest

    port = free_port()
    launchers = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc_per_node=1",
                f"--node_rank={node}",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=127.0.0.1:{port}",
                "--rdzv_id=vt-drill",
                *pretrain_args(2),
            ],
            cwd=tiny_project,
            env=process_env(tiny_project),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in (0, 1)
    ]
    outputs = []
    try:
        for proc in launchers:
            out, err = proc.communicate(timeout=600)
            outputs.append((proc.returncode, out, err))
    finally:
        for proc in launchers:
            if proc.poll() is None:
                proc.kill()
    for code, _, err in outputs:
        assert code == 0, err[-3000:]
    reported = {}
    for _, _, err in outputs:
        for rank, world, digest in re.findall(r"rank (\d) of (\d): weights sha256 ([0-9a-f]{64})", err):
            assert world == "2"
            reported[int(rank)] = digest
    assert sorted(reported) == [0, 1], "each node's rank reported its weights"
    assert reported[0] == reported[1]
    assert sum(out.count("pretrain resnet18: val macro-F1") for _, out, _ in outputs) == 1, "only rank 0"
    ckpt = load_checkpoint(tiny_project / "models/pretrain/resnet18/last.pt")
    model, _ = build_backbone(
        "resnet18", "none", num_classes=3, modality=load_config(tiny_project / "params.yaml").pretrain.modality
    )
    model.load_state_dict(ckpt["model"])
    assert weights_digest(dict(model.named_parameters())) == reported[0], "the saved weights are the ranks' weights"
    assert [r["val_count"] for r in ckpt["history"]] == [6.0, 6.0], "val covers both nodes' shards"


@pytest.fixture(scope="module")
def dask_cluster(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Path]]]:
    """`dask scheduler` and two `dask worker` processes on 127.0.0.1; yields the address and the workers' logs.

    The workers report task runs to the test's Prefect API, import this checkout, and run their tasks in
    non-daemonic processes (each video is decoded in a child process of its own, which a daemonic
    Dask worker may not start)."""
    from prefect.settings import PREFECT_API_URL

    logs = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "PREFECT_TASKS_REFRESH_CACHE": "true",  # really probe on the workers, not from the local run's cache
        "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
        "OMP_NUM_THREADS": "1",
    }
    port = address.rsplit(":", 1)[1]
    procs = []
    try:
        procs.append(
            _start([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", port], logs / "s.log", env)
        )
        workers = [logs / f"worker{i}.log" for i in (0, 1)]
        for log in workers:
            procs.append(_start([str(BIN / "dask"), "worker", address, "--nthreads", "1"], log, env))
        _wait_for_workers(address, 2, logs)
        yield address, workers
    finally:
        for proc in reversed(procs):
            stop(proc)


def _start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "w") as fh:
        return subprocess.Popen([*cmd, "--no-dashboard"], stdout=fh, stderr=subprocess.STDOUT, env=env)


def _wait_for_workers(address: str, n: int, logs: Path, timeout_s: float = 90) -> None:
    from distributed import Client

    with Client(address, timeout=timeout_s) as client:
        deadline = time.monotonic() + timeout_s
        while len(client.scheduler_info()["workers"]) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{n} Dask workers did not join: " + "".join(p.read_text()[-1500:] for p in logs.iterdir())
                )
            time.sleep(0.5)


def _outputs_digest(project: Path) -> dict[str, str]:
    """{file: digest} of the preprocessed outputs (see :func:`file_digest`)."""
    out = {}
    for rel in PREPROCESSED:
        base = project / rel
        for f in sorted(base.rglob("*")) if base.is_dir() else [base]:
            if f.is_file():
                out[f.relative_to(project).as_posix()] = file_digest(f)
    return out


def file_digest(f: Path) -> str:
    """MD5 of a file; of a frames file, of its arrays (the .npz zip records the time it was written)."""
    digest = hashlib.md5()
    if f.suffix == ".npz":
        with np.load(f) as arrays:
            for key in sorted(arrays.files):
                digest.update(key.encode() + arrays[key].tobytes())
    else:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def frames_digest(folder: Path) -> dict[str, str]:
    """{frames file name: digest of its arrays} of a frames folder (every file is loaded)."""
    return {f.name: file_digest(f) for f in sorted(folder.glob("*.npz"))}


def _clear_outputs(project: Path) -> None:
    for rel in PREPROCESSED:
        path = project / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.slow
def test_preprocess_on_a_dask_cluster_equals_the_local_run(
    tiny_project: Path, dask_cluster: tuple[str, list[Path]]
) -> None:
    from flows.pipeline import preprocess, preprocess_on
    from vt_models.config import load_config

    address, worker_logs = dask_cluster
    _clear_outputs(tiny_project)
    local = preprocess("target")
    expected = _outputs_digest(tiny_project)
    assert sum(f.endswith(".npz") for f in expected) == 18 and local["extracted"] == 18

    _clear_outputs(tiny_project)
    overrides = [f"flows.dask_address={address}"]
    on_dask = preprocess_on(load_config("params.yaml", overrides))("target", "params.yaml", overrides)
    assert on_dask == local
    assert _outputs_digest(tiny_project) == expected
    for log in worker_logs:  # both workers ran videos (Prefect logs each task run on the worker's console)
        assert "extract-video" in log.read_text() and "probe-video" in log.read_text(), log.read_text()[-2000:]


def test_a_daemonic_process_cannot_fan_out_and_says_what_to_change() -> None:
    """A Dask worker under its nanny is daemonic: isolation per video needs a child process, refused there."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_isolate_in_daemon, args=(queue,), daemon=True)
    proc.start()
    message = queue.get(timeout=60)
    proc.join(10)
    assert "DASK_DISTRIBUTED__WORKER__DAEMON=False" in message and "--no-nanny" in message, message


def _isolate_in_daemon(queue: object) -> None:
    from vt_models.parallel import run_one_isolated

    try:
        run_one_isolated(abs, -1, timeout_s=10)
        queue.put("no error")
    except RuntimeError as exc:
        queue.put(str(exc))

"""Fault drills with real processes and servers: a training process killed with SIGKILL, the MLflow server
gone mid-training, a Prefect flow run killed, two promotions at once, and a full disk during extraction."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from vt_models.io import mlflow as tracking
from vt_models.promotion import CHAMPION

from .conftest import start_mlflow, stop
from .servers import prefect_server
from .test_multinode import frames_digest, pretrain_args, process_env

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- two promotions at once


def concurrent_gate(root: str, name: str, score: float, ready: str, peers: int) -> None:
    """One real gate in this process (run by the drill as a subprocess): it scores, waits until every peer
    has scored too (so all of them compare against the same champion), then decides and moves the alias.
    Prints the decision as JSON."""
    from dataclasses import asdict

    from .gate_models import gate_project, run_gate, scripted

    def score_then_wait(ckpt: Path, splits: Path):  # noqa: ANN202 - Evidence
        evidence = scripted([score])(ckpt, splits)
        Path(ready, str(os.getpid())).touch()
        while len(list(Path(ready).iterdir())) < peers:
            time.sleep(0.05)
        return evidence

    print(json.dumps(asdict(run_gate(gate_project(Path(root)), score_then_wait, name))))


@pytest.mark.slow
def test_two_promotions_at_once_leave_one_champion_and_say_so(use_mlflow: str, tmp_path: Path) -> None:
    name = "vt-concurrent-promotion-test"
    ready = tmp_path / "ready"
    ready.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": use_mlflow, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from tests.test_drills import concurrent_gate; "
                "concurrent_gate(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4], 2)",
                str(tmp_path / f"gate{i}"),
                name,
                str(score),
                str(ready),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, score in enumerate((0.7, 0.8))
    ]
    decisions = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err[-3000:]
            decisions.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    # both compared against "no champion" and both qualified; only one move was applied
    assert [d["champion_version"] for d in decisions] == [None, None]
    winners = [d for d in decisions if d["promoted"]]
    losers = [d for d in decisions if not d["promoted"]]
    assert len(winners) == 1 and len(losers) == 1, [d["reason"] for d in decisions]
    winner, loser = winners[0]["candidate_version"], losers[0]
    assert tracking.current_alias(name, CHAMPION) == winner
    assert "not applied: champion moved from none to v" + winner in loser["reason"], loser["reason"]
    assert "run `vt promote` again" in loser["reason"] and loser["champion_after"] == winner
    history = tracking.alias_history(name, CHAMPION)
    assert [(m.from_version, m.to_version) for m in history] == [(None, winner)]
    client = mlflow.MlflowClient()
    # the loser's own record says it was not applied; no lock is left behind
    tags = client.get_model_version(name, loser["candidate_version"]).tags
    assert tags["promotion.promoted"] == "False" and "not applied" in tags["promotion.reason"]
    assert not client.search_registered_models(f"name = '{name}{tracking.LOCK_SUFFIX}'")


def test_the_alias_lock_retries_a_create_that_lost_the_race_to_a_release(monkeypatch: pytest.MonkeyPatch) -> None:
    """The race the drill above can hit: our create clashes with the holder's lock, the holder releases it, and
    MLflow's SQL store, reading the clashing model back to word its error, answers RESOURCE_DOES_NOT_EXIST.
    Nothing was created: the lock is taken on the next try and released after. (A client stands in for the
    server here: the interleaving cannot be forced on a real one.)"""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

    calls: list[str] = []

    class Client:
        def create_registered_model(self, name: str, **_: object) -> None:
            calls.append(f"create {name}")
            if len(calls) == 1:
                raise MlflowException(f"Registered Model with name={name} not found", RESOURCE_DOES_NOT_EXIST)

        def delete_registered_model(self, name: str) -> None:
            calls.append(f"delete {name}")

    monkeypatch.setattr(tracking, "_client", lambda client: Client())
    with tracking.alias_lock("m"):
        calls.append("held")
    lock = f"m{tracking.LOCK_SUFFIX}"
    assert calls == [f"create {lock}", f"create {lock}", "held", f"delete {lock}"]


# --------------------------------------------------------------------------- a full disk during extraction


def _mount_tmpfs(path: Path, size_kb: int) -> bool:
    """Mount a tmpfs of ``size_kb`` at ``path`` (needs root); False where mounting is not allowed."""
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(path)], capture_output=True)
    return res.returncode == 0


def _file_size_limit(limit: int):  # noqa: ANN202 - a preexec_fn
    """The next best mechanism without root: RLIMIT_FSIZE, a write past ``limit`` bytes fails with EFBIG."""
    import resource

    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.slow
def test_a_full_disk_during_extraction_names_the_file_and_a_rerun_completes(tiny_project: Path) -> None:

    frames = tiny_project / "data/frames/target"
    complete = frames_digest(frames)
    sizes = sorted(f.stat().st_size for f in frames.glob("*.npz"))
    shutil.rmtree(frames)
    frames.mkdir()
    cmd = [sys.executable, "-m", "vt_models", "-S", "extract.workers=1", "extract", "-d", "target"]
    env = process_env(tiny_project)
    mounted = False
    try:
        # room for about half the frames files (tmpfs counts whole 4 KiB pages)
        mounted = _mount_tmpfs(frames, sum(-(-s // 4096) * 4 for s in sizes) // 2)
        limit = None if mounted else _file_size_limit(sizes[len(sizes) // 2])
        res = subprocess.run(cmd, cwd=tiny_project, env=env, capture_output=True, text=True, preexec_fn=limit)
        assert res.returncode != 0, res.stdout
        message = res.stderr
        assert "no space to write /" in message and ".npz" in message, message[-2000:]
        assert "free space on the file system of data/frames/target" in message and "run `vt extract` again" in message
        assert "Traceback" not in message
        # what is there is complete: every frames file loads, no temporary file is left, and the index (if
        # it could be written) lists only files that exist
        left = list(frames.iterdir())
        assert not [f for f in left if f.name.endswith(".tmp")], left
        partial = frames_digest(frames)  # loads every .npz
        assert 0 < len(partial) < len(complete) and set(partial.items()) <= set(complete.items())
        indexed = []
        if (frames / "index.json").is_file():
            indexed = json.loads((frames / "index.json").read_text())["videos"]
            assert all((frames / v["file"]).is_file() for v in indexed)

        # room again: the rerun extracts what the index does not list, and equals a clean extraction
        if mounted:
            subprocess.run(["mount", "-o", "remount,size=64m", str(frames)], check=True)
        res = subprocess.run(cmd, cwd=tiny_project, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr[-2000:]
        done = len({v["file"] for v in indexed})
        assert f"extract: {len(complete) - done} extracted, {done} unchanged, 0 removed, 0 failed" in res.stdout
        assert frames_digest(frames) == complete
        print(f"tmpfs: {mounted}; first run: {message.strip().splitlines()[-1]}")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(frames)], check=False)


# --------------------------------------------------------------------------- kill -9 mid-training


def _train_cmd(*extra: str) -> list[str]:
    return [sys.executable, *pretrain_args(3, *extra)]


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_equals_an_uninterrupted_run(tiny_project: Path, tmp_path: Path) -> None:
    import torch

    from vt_models.models.checkpoint import load_checkpoint

    last = Path("models/pretrain/resnet18/last.pt")
    reference = tmp_path / "uninterrupted"
    shutil.copytree(tiny_project, reference)
    done = subprocess.run(_train_cmd(), cwd=reference, env=process_env(reference), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    proc = subprocess.Popen(
        _train_cmd(), cwd=tiny_project, env=process_env(tiny_project), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 300
        while not last.is_file() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)  # the first epoch's checkpoint is there: the second epoch is running
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read()[-2000:]
    killed_at = load_checkpoint(last)["epoch"]
    assert killed_at < 2, "killed before the last epoch"

    res = subprocess.run(
        _train_cmd("--resume"), cwd=tiny_project, env=process_env(tiny_project), capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resumed from {last} after epoch {killed_at}" in res.stderr
    mine, theirs = load_checkpoint(last), load_checkpoint(reference / last)
    assert [r["epoch"] for r in mine["history"]] == [0.0, 1.0, 2.0]
    for key, value in theirs["model"].items():
        assert torch.equal(mine["model"][key], value), key
    # one MLflow run, continued by the resume, with every epoch's metrics
    mlflow.set_tracking_uri(process_env(tiny_project)["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(experiment_names=["vt-pretrain"])
    assert len(runs) == 1 and runs.iloc[0]["status"] == "FINISHED"
    assert (
        runs.iloc[0]["run_id"] == mine["mlflow_run_id"] == json.loads((last.parent / "run.json").read_text())["run_id"]
    )
    client = mlflow.MlflowClient()
    assert sorted(m.step for m in client.get_metric_history(mine["mlflow_run_id"], "train_loss")) == [0, 1, 2]
    # validated epochs only (the sample params validate a fixed schedule's first, every 5th and last epoch)
    validated = [int(r["epoch"]) for r in mine["history"] if "val_count" in r]
    assert validated[0] == 0 and validated[-1] == 2
    assert sorted(m.step for m in client.get_metric_history(mine["mlflow_run_id"], "val_macro_f1")) == validated


# --------------------------------------------------------------------------- the MLflow server gone mid-training


def _stop_server_tree(proc: subprocess.Popen, url: str) -> None:
    """Stop `mlflow server` and the uvicorn process it started, and check that nothing answers any more."""
    import urllib.request

    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    stop(proc)
    for child in children:  # uvicorn outlives its parent's SIGTERM
        if child.is_running():
            child.terminate()
    psutil.wait_procs(children, timeout=15)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)


def _first_epoch_logged(url: str, deadline: float, proc: subprocess.Popen) -> str:
    """Poll the server until the training run has epoch 0's val_macro_f1; returns the run id."""
    client = mlflow.MlflowClient(url)
    while time.monotonic() < deadline and proc.poll() is None:
        exp = client.get_experiment_by_name("vt-pretrain")
        for run in client.search_runs([exp.experiment_id]) if exp else []:
            if client.get_metric_history(run.info.run_id, "val_macro_f1"):
                return run.info.run_id
        time.sleep(0.1)
    raise AssertionError(f"no epoch metrics reached the server (training exit code {proc.poll()})")


@pytest.mark.slow
def test_mlflow_server_gone_mid_training_then_resume_logs_into_the_same_run(tiny_project: Path, tmp_path: Path) -> None:
    from vt_models.models.checkpoint import load_checkpoint

    last = Path("models/pretrain/resnet18/last.pt")
    backend, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "artifacts")
    server, url = start_mlflow(tmp_path, backend, artifacts)
    out, err = tmp_path / "train.out", tmp_path / "train.err"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, *pretrain_args(2)],
            cwd=tiny_project,
            env=process_env(tiny_project, MLFLOW_TRACKING_URI=url),
            stdout=stdout,
            stderr=stderr,
        )
    try:
        run_id = _first_epoch_logged(url, time.monotonic() + 300, proc)
        _stop_server_tree(server, url)
        proc.wait(300)
    finally:
        if proc.poll() is None:
            proc.kill()
        stop(server)
    message = err.read_text()
    # training went on to the end and kept its checkpoints; the logger warned once, naming the server
    assert proc.returncode == 2, message[-3000:]
    warning = f"MLflow at {url} does not answer ([Errno 111] Connection refused): training goes on and keeps its"
    assert message.count(warning) == 1, message[-3000:]
    assert "error: pretrain resnet18: trained to the end" in message and "Traceback" not in message
    assert f"`vt pretrain -b resnet18 --resume` logs them into the same MLflow run {run_id}" in message
    ckpt = load_checkpoint(last)
    assert ckpt["epoch"] == 1 and ckpt["mlflow_run_id"] == run_id
    assert [r["epoch"] for r in ckpt["history"]] == [0.0, 1.0] and last.with_name("best.pt").is_file()

    # the server back on the same store (a new port): --resume logs the missing epoch into the same run
    server, url = start_mlflow(tmp_path, backend, artifacts)
    try:
        env = process_env(tiny_project, MLFLOW_TRACKING_URI=url)
        res = subprocess.run(
            [sys.executable, *pretrain_args(2, "--resume")], cwd=tiny_project, env=env, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert f"logged 1 epoch(s) that MLflow run {run_id} was missing" in res.stderr, res.stderr[-3000:]
        client = mlflow.MlflowClient(url)
        runs = client.search_runs([client.get_experiment_by_name("vt-pretrain").experiment_id])
        assert [(r.info.run_id, r.info.status) for r in runs] == [(run_id, "FINISHED")]
        for key in ("val_macro_f1", "train_loss"):
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [0, 1], key
        assert {"metrics.json", "history.csv"} <= {f.path for f in client.list_artifacts(run_id)}
        versions = client.search_model_versions("name='vt-pretrain-resnet18'")
        assert [v.run_id for v in versions] == [run_id]
    finally:
        stop(server)


# --------------------------------------------------------------------------- a Prefect flow run killed mid-training

_SERVE_TRAIN = (
    "from flows.pipeline import train\n"
    "train.serve(name='vt-train-drill', parameters={'stage': 'pretrain', 'backbones': ['resnet18'], "
    "'overrides': ['pretrain.epochs=2']})\n"
)


def _flow_run_state(
    api: str, run_id: object, wanted: set[str], proc: subprocess.Popen | None, log: Path, timeout_s: float = 300
) -> str:
    """Poll the Prefect API until flow run ``run_id`` is in one of the ``wanted`` state types; returns its
    state name. Raises with the serving process's log when it dies (``proc``; None: it is meant to be dead) or
    ``timeout_s`` pass first."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + timeout_s
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        while time.monotonic() < deadline and (proc is None or proc.poll() is None):
            state = client.read_flow_run(run_id).state
            if state is not None and state.type.value in wanted:
                return f"{state.name}: {state.message}"
            time.sleep(0.5)
    raise AssertionError(f"flow run {run_id} never reached {wanted}: {log.read_text()[-3000:]}")


def _start_deployment_run(api: str, name: str) -> object:
    """A run of deployment ``name`` (waiting until the serving process has registered it); returns its id."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import PREFECT_API_URL, temporary_settings

    deadline = time.monotonic() + 120
    with temporary_settings({PREFECT_API_URL: api}), get_client(sync_client=True) as client:
        while True:
            try:
                return client.create_flow_run_from_deployment(client.read_deployment_by_name(name).id).id
            except ObjectNotFound:
                assert time.monotonic() < deadline, f"deployment {name} never appeared"
                time.sleep(0.5)


@pytest.mark.slow
def test_flow_run_killed_mid_training_is_crashed_and_the_next_run_resumes(tiny_project: Path, tmp_path: Path) -> None:
    """`flow.serve` runs each flow run in a child process; SIGKILL that process while its training task runs.
    The serving runner (still alive) sees it die and marks the run Crashed; the next run of the deployment
    resumes the training from last.pt, in the same MLflow run, and registers the model once."""
    import psutil

    from vt_models.models.checkpoint import load_checkpoint

    last = Path("models/pretrain/resnet18/last.pt")
    log = tmp_path / "serve.log"
    with prefect_server(tmp_path, process_env(tiny_project)) as env:
        api = env["PREFECT_API_URL"]
        with open(log, "w") as out:
            served = subprocess.Popen(
                [sys.executable, "-c", _SERVE_TRAIN], cwd=tiny_project, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            first = _start_deployment_run(api, "train/vt-train-drill")
            deadline = time.monotonic() + 300
            while not last.is_file() and served.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            runs = psutil.Process(served.pid).children(recursive=True)
            assert runs, f"no flow run process: {log.read_text()[-3000:]}"
            for proc in runs:  # the flow run's process, mid-way through the second epoch
                proc.send_signal(signal.SIGKILL)
            assert load_checkpoint(last)["epoch"] == 0, "killed before the last epoch"
            crashed = _flow_run_state(api, first, {"CRASHED", "COMPLETED", "FAILED"}, served, log)
            # the runner's verdict on its child (Prefect's own message): killed by signal 9
            assert crashed.startswith("Crashed: Process exited with status code: -9"), crashed

            second = _start_deployment_run(api, "train/vt-train-drill")
            done = _flow_run_state(api, second, {"COMPLETED", "FAILED", "CRASHED"}, served, log)
            assert done.startswith("Completed"), f"{done}\n{log.read_text()[-3000:]}"
        finally:
            stop(served)
    text = " ".join(log.read_text().split())  # the console handler may wrap long lines
    assert "pretrain resnet18: an earlier run stopped after epoch 0 (last.pt, same settings and data): resuming" in text
    ckpt = load_checkpoint(last)
    assert [r["epoch"] for r in ckpt["history"]] == [0.0, 1.0]
    # one MLflow run across both flow runs, and one registered version: the resumed training's
    mlflow.set_tracking_uri(process_env(tiny_project)["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    assert sorted(m.step for m in client.get_metric_history(ckpt["mlflow_run_id"], "val_macro_f1")) == [0, 1]
    versions = client.search_model_versions("name='vt-pretrain-resnet18'")
    assert [v.run_id for v in versions] == [ckpt["mlflow_run_id"]]


# The serving process of the zombie drill: heartbeats every 30 s (Prefect's minimum), Crashed after 40 s without.
_SERVE_TRAIN_WITH_HEARTBEATS = (
    "from flows.heartbeats import crash_silent_runs\nprint(crash_silent_runs(30, 40), flush=True)\n" + _SERVE_TRAIN
)


@pytest.mark.slow
def test_a_worker_killed_with_its_flow_run_is_crashed_by_missed_heartbeats_and_the_next_run_resumes(
    tiny_project: Path, tmp_path: Path
) -> None:
    """The whole serving process group (the runner and the flow run it started) SIGKILLed mid-training, as when
    a worker's machine or container goes: nobody is left to report the death, so only the heartbeat automation
    that flows/heartbeats.py installs marks the run Crashed. A new worker's next run resumes from last.pt."""
    from vt_models.models.checkpoint import load_checkpoint

    last = Path("models/pretrain/resnet18/last.pt")
    log = tmp_path / "serve.log"
    with prefect_server(tmp_path, process_env(tiny_project)) as env:
        api = env["PREFECT_API_URL"]

        def worker() -> subprocess.Popen:
            with open(log, "a") as out:
                return subprocess.Popen(
                    [sys.executable, "-c", _SERVE_TRAIN_WITH_HEARTBEATS],
                    cwd=tiny_project,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: killed as a whole, like a lost machine
                )

        served = worker()
        try:
            first = _start_deployment_run(api, "train/vt-train-drill")
            deadline = time.monotonic() + 300
            while not last.is_file() and served.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            os.killpg(served.pid, signal.SIGKILL)  # the runner and its flow run, together
            served.wait()
            assert load_checkpoint(last)["epoch"] == 0, "killed before the last epoch"
            crashed = _flow_run_state(api, first, {"CRASHED", "COMPLETED", "FAILED"}, None, log, timeout_s=150)
            assert crashed.startswith("Crashed: no heartbeat for 40 s"), crashed

            served = worker()  # a new worker
            second = _start_deployment_run(api, "train/vt-train-drill")
            done = _flow_run_state(api, second, {"COMPLETED", "FAILED", "CRASHED"}, served, log)
            assert done.startswith("Completed"), f"{done}\n{log.read_text()[-3000:]}"
        finally:
            if served.poll() is None:
                os.killpg(served.pid, signal.SIGTERM)
                served.wait(30)
    text = " ".join(log.read_text().split())
    assert "created automation 'vt: crash flow runs whose heartbeats stopped'" in text
    assert "updated automation 'vt: crash flow runs whose heartbeats stopped'" in text  # the second worker's
    assert "pretrain resnet18: an earlier run stopped after epoch 0 (last.pt, same settings and data): resuming" in text
    ckpt = load_checkpoint(last)
    assert [r["epoch"] for r in ckpt["history"]] == [0.0, 1.0]
    mlflow.set_tracking_uri(process_env(tiny_project)["MLFLOW_TRACKING_URI"])
    versions = mlflow.MlflowClient().search_model_versions("name='vt-pretrain-resnet18'")
    assert [v.run_id for v in versions] == [ckpt["mlflow_run_id"]]

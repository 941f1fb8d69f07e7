"""Prefect flows: caching by content, retries that resume, retrain with DVC + gate, a real schedule."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import BIN, free_port
from .project import make_project, run
from .videos import good_mp4

ROOT = Path(__file__).resolve().parents[1]


def _task_states(flow_run_id, expect: int) -> dict[str, list[str]]:
    """Final task states of a flow run; the API receives state updates asynchronously, so poll."""
    deadline = time.monotonic() + 60
    while True:
        states = _read_task_states(flow_run_id)
        names = [n for v in states.values() for n in v]
        final = all(n in ("Completed", "Cached", "Failed") for n in names)
        if (final and len(names) >= expect) or time.monotonic() > deadline:
            return states
        time.sleep(1)


def _read_task_states(flow_run_id) -> dict[str, list[str]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200,
                                     sort=TaskRunSort.EXPECTED_START_TIME_ASC)
    out: dict[str, list[str]] = {}
    for r in runs:
        out.setdefault(r.name.rsplit("-", 1)[0], []).append(r.state.name)
    return out


def test_preprocess_caches_unchanged_videos_and_quarantines_bad_ones(tiny_project: Path, prefect_harness) -> None:
    from flows.pipeline import preprocess

    shutil.rmtree("data/probe/target")
    first = preprocess("target", return_state=True)
    result = first.result()
    assert result["usable"] == 18 and result["quarantined"] == 0
    states = _task_states(first.state_details.flow_run_id, 18)
    assert len(states["probe-video"]) == 18 and "Cached" not in states["probe-video"]

    (Path("data/raw/left") / "corrupt_c01.mp4").write_bytes(b"\x00" * 100)
    good_mp4(Path("data/raw/left") / "new_r099_c00.mp4", n_frames=12, seed=7)
    second = preprocess("target", return_state=True)
    out = second.result()
    assert out["usable"] == 19 and out["quarantined"] == 1 and out["extracted"] == 1
    states = _task_states(second.state_details.flow_run_id, 20)
    assert states["probe-video"].count("Cached") == 18, sorted(states["probe-video"])
    quarantine = Path("data/probe/target/quarantine.csv").read_text()
    assert "left/corrupt_c01.mp4" in quarantine


def test_train_task_retry_resumes_from_checkpoint(tiny_project: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    import vt_models.train.runner as runner
    from flows.pipeline import train

    real = runner.train_backbone
    calls: list[bool] = []

    def flaky(cfg, stage, backbone, **kw):
        calls.append(kw.get("resume", False))
        if len(calls) == 1:
            def crash(epoch: int, row: dict) -> None:
                raise RuntimeError("simulated crash after epoch 1 (e.g. a preempted GPU)")
            return real(cfg, stage, backbone, **kw, on_epoch_end=crash, track=False)
        return real(cfg, stage, backbone, **kw, track=False)

    monkeypatch.setattr(runner, "train_backbone", flaky)
    out = train("pretrain", ["resnet18"], "params.yaml", ["pretrain.epochs=3"])
    assert calls == [False, True], "the retry resumed"
    assert out[0]["attempt"] == 2 and out[0]["epochs"] == 3


def test_failed_task_fails_the_flow(tiny_project: Path, prefect_harness) -> None:
    from flows.pipeline import evaluate

    state = evaluate(["resnet18"], return_state=True)  # nothing trained yet: the task must fail the flow
    assert state.is_failed()


@pytest.mark.slow
def test_retrain_versions_new_data_and_gates(tmp_path: Path, use_mlflow: str, prefect_harness, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.pipeline import retrain

    repo = make_project(tmp_path / "repo", {"cv": {"epochs": 1}})
    monkeypatch.chdir(repo)
    run(repo, str(BIN / "dvc"), "repro", "sample")
    own = "registry.model_name=vt-retrain-test"  # the session's MLflow server is shared with other tests
    first = retrain("params.yaml", ["train.epochs=1", "pretrain.epochs=1", own])
    assert first["retrained"] and first["added"] == 36 - 18  # target videos only
    # one epoch on 12 videos learns nothing the gate's floor accepts: registered, not champion, nothing to ship
    assert first["promoted"] is False and first["decision"]["candidate_qualifies"] is False
    assert first["decision"]["reason"].startswith("nothing to ship yet") and first["decision"]["small_test_set"]
    assert first["versioned"].startswith("dvc commit sample") and "dvc push" in first["versioned"]

    same = retrain("params.yaml", ["train.epochs=1", own])
    assert same["retrained"] is False

    good_mp4(repo / "data/raw/right/right_r050_c00.mp4", n_frames=14, seed=3)
    (repo / "data/raw/zoom_in/broken_c00.mp4").write_bytes(b"garbage")
    second = retrain("params.yaml", ["train.epochs=1", "registry.margin=1.0", own])
    assert second["added"] == 2 and second["quarantined"] == 1 and second["promoted"] is False
    assert second["decision"]["reason"].startswith("nothing to ship yet") and second["decision"]["champion_after"] is None
    import mlflow

    client = mlflow.MlflowClient()
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias("vt-retrain-test", "champion")
    assert client.get_model_version_by_alias("vt-retrain-test", "challenger").version == second["decision"]["candidate_version"]
    status = run(repo, str(BIN / "dvc"), "status", "sample", "probe@target", "extract@target", "split@target").stdout
    assert "up to date" in status.lower(), status
    remote = list((tmp_path / "remote").rglob("*"))
    assert remote, "dvc push wrote to the remote"


@pytest.mark.slow
def test_schedule_on_a_real_prefect_server_runs_a_flow(tiny_project: Path, tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "prefect-home"
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
               PATH=f"{BIN}:{os.environ['PATH']}", PYTHONPATH=str(ROOT), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    server = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT)
    served = None
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError((tmp_path / "server.log").read_text()[-3000:])
                time.sleep(1)
        served = subprocess.Popen([sys.executable, str(ROOT / "flows" / "serve.py"), "--every", "5", "--flows", "preprocess"],
                                  cwd=tiny_project, env=env, stdout=open(tmp_path / "serve.log", "w"), stderr=subprocess.STDOUT)
        script = (
            "from prefect.client.orchestration import get_client\n"
            "from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType\n"
            "from prefect.client.schemas.objects import StateType\n"
            "from prefect.client.schemas.sorting import FlowRunSort\n"
            "done = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED])))\n"
            "with get_client(sync_client=True) as c:\n"
            "    runs = c.read_flow_runs(flow_run_filter=done, limit=10, sort=FlowRunSort.EXPECTED_START_TIME_DESC)\n"
            "    print(sorted({r.state.name for r in runs if r.deployment_id}))\n"
        )
        deadline = time.monotonic() + 300
        seen = ""
        while time.monotonic() < deadline:
            probe = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
            seen = probe.stdout + probe.stderr[-500:]
            if "Completed" in seen:
                break
            time.sleep(3)
        assert "Completed" in seen, f"no scheduled run completed: {seen}\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
        assert json.loads(Path("data/splits/target.json").read_text())["classes"]
    finally:
        for proc in (served, server):
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


@pytest.mark.slow
def test_detect_flow_trains_evaluates_and_gates(tiny_project: Path, use_mlflow: str, prefect_harness) -> None:
    import mlflow

    from flows.pipeline import detect

    shutil.rmtree("data/probe_det/target")
    state = detect(overrides=["detect.model_name=vt-detect-flow-test"], return_state=True)
    out = state.result()
    assert out["usable"] == 18 and out["quarantined"] == 0
    assert out["trained"][0]["detector"] == "fasterrcnn_mobilenet_v3_large_320_fpn" and out["trained"][0]["attempt"] == 1
    score = out["scores"][0]
    assert {"map", "map_50", "tracked_mota", "untracked_mota", "tracked_idf1"} <= set(score)
    # a detector trained for one epoch from scratch does not clear the floor (test mAP under detect.min_map)
    assert out["decision"]["metric"] == "map" and out["decision"]["promoted"] is False
    assert out["decision"]["reason"].startswith("nothing to ship yet") and out["decision"]["champion_after"] is None
    states = _task_states(state.state_details.flow_run_id, 18 + 18 + 3)
    assert {"train-detector", "evaluate-detector", "promote-detector"} <= set(states) and len(states["probe-video"]) == 18
    version = mlflow.MlflowClient().get_model_version_by_alias("vt-detect-flow-test", "challenger")
    assert version.version == out["decision"]["candidate_version"]

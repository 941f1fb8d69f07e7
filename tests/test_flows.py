"""Prefect flows: caching by content, retries that resume, retrain with DVC + gate, a real schedule."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from vt_models.models.checkpoint import load_checkpoint

from .conftest import BIN
from .project import make_project, run
from .servers import prefect_server, serve_until_scheduled_run
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
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            limit=200,
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
        )
    out: dict[str, list[str]] = {}
    for r in runs:
        # a task run the API has recorded before its first state arrived: not final yet, poll again
        out.setdefault(r.name.rsplit("-", 1)[0], []).append(r.state.name if r.state else "Pending")
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


def _run_logs(flow_run_id, wanted: list[str], timeout_s: float = 60) -> list[str]:
    """Log messages of a flow run (its task runs included) as the Prefect UI shows them; the API gets
    them asynchronously, so poll until every ``wanted`` substring shows up (or time runs out)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout_s
    while True:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
        messages = [log.message for log in logs]
        if all(any(w in m for m in messages) for w in wanted) or time.monotonic() > deadline:
            return messages


def _broken_files(folder: Path) -> dict[str, str]:
    """An empty file, text named .mp4 and a truncated video; {relative path: expected reason start}."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty_c00.mp4").write_bytes(b"")
    (folder / "text_c00.mp4").write_text("this is not a video\n")
    full = good_mp4(folder / "_full.tmp.mp4", n_frames=30, seed=11)
    (folder / "truncated_c00.mp4").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    full.unlink()
    cls = folder.name
    return {f"{cls}/empty_c00.mp4": "empty file (0 bytes)", f"{cls}/text_c00.mp4": "", f"{cls}/truncated_c00.mp4": ""}


def test_bad_files_are_quiet_completed_and_cached(
    tiny_project: Path, prefect_harness, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from flows.pipeline import preprocess

    caplog.set_level(logging.INFO)

    bad = _broken_files(Path("data/raw/left"))
    for attempt in ("first", "second"):
        state = preprocess("target", return_state=True)
        out = state.result()
        assert out["quarantined"] == 3 and out["usable"] == 18, (attempt, out)
        flow_run_id = state.state_details.flow_run_id
        states = _task_states(flow_run_id, 18 + 3)
        assert "Failed" not in [s for v in states.values() for s in v], (attempt, states)
        assert len(states["probe-video"]) == 21
        if attempt == "second":  # every verdict, the three quarantines included, served from the cache by content
            assert states["probe-video"].count("Cached") == 21, states["probe-video"]
        logs = _run_logs(flow_run_id, [f"quarantined {p}" for p in bad])
        for path, reason in bad.items():
            lines = [m for m in logs if m.startswith(f"quarantined {path}: {reason}")]
            assert len(lines) == 1, (attempt, path, logs)
            assert "\n" not in lines[0]
        assert not [m for m in logs if "Traceback" in m], logs
        # what the process logged (console): one record per bad file, no exception attached, nothing else about it
        records = caplog.records
        assert not [r for r in records if r.exc_info or "Traceback" in r.getMessage()], [
            r.getMessage() for r in records if r.exc_info
        ]
        for path in bad:
            assert sum(f"quarantined {path}:" in r.getMessage() for r in records) == 1, (
                path,
                [r.getMessage() for r in records],
            )
        caplog.clear()
    quarantine = Path("data/probe/target/quarantine.csv").read_text()
    assert all(p in quarantine for p in bad) and "empty file (0 bytes)" in quarantine


def test_an_error_in_our_code_still_fails_the_flow(
    tiny_project: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flows.pipeline as pipeline

    def broken(fn, job, timeout_s):
        raise RuntimeError("a bug in the pipeline, not a bad video")

    monkeypatch.setattr(pipeline, "run_one_isolated", broken)
    good_mp4(Path("data/raw/left/uncached_r077_c00.mp4"), n_frames=12, seed=77)  # new content: not in the probe cache
    state = pipeline.preprocess("target", return_state=True)
    assert state.is_failed()
    states = _task_states(state.state_details.flow_run_id, 1)
    assert "Failed" in states["probe-video"]


def test_raw_changes_after_the_recorded_state(tiny_project: Path) -> None:
    """`vt demo` and the retrain flow share one definition of what changed (vt_models.data.changes)."""
    from vt_models.config import load_config
    from vt_models.data.changes import raw_changes, record_raw_state, state_path

    cfg = load_config("params.yaml")
    assert raw_changes(cfg, "target").counts() == {"added": 18, "changed": 0, "removed": 0}  # no record yet
    recorded = record_raw_state(cfg, "target")
    assert recorded.state_file == state_path(cfg, "target") == Path("data/probe/target.raw_state.json")
    assert raw_changes(cfg, "target").total == 0
    victim = sorted(Path("data/raw/left").glob("*.mp4"))[0]
    changed = sorted(Path("data/raw/right").glob("*.mp4"))[0]
    good_mp4(Path("data/raw/right/new_r090_c00.mp4"), seed=90)
    Path("data/raw/zoom_in/empty_c00.mp4").write_bytes(b"")
    Path("data/raw/left/notes.txt").write_text("not a video\n")
    victim.unlink()
    changed.write_bytes(changed.read_bytes() + b"\0")
    now = raw_changes(cfg, "target")
    assert now.changes == {
        "added": ["right/new_r090_c00.mp4", "zoom_in/empty_c00.mp4"],
        "changed": [changed.relative_to("data/raw").as_posix()],
        "removed": [victim.relative_to("data/raw").as_posix()],
    }


def test_train_task_retry_resumes_from_checkpoint(
    tiny_project: Path, prefect_harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vt_models.classify.runner as runner
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
    # named as MLflow names the metric, with the data set whose val videos scored it
    assert out[0]["val_dataset"] == "source" and 0 <= out[0]["best_val_macro_f1"] <= 1


def test_failed_task_fails_the_flow(tiny_project: Path, prefect_harness) -> None:
    from flows.pipeline import evaluate

    state = evaluate(["resnet18"], return_state=True)  # nothing trained yet: the task must fail the flow
    assert state.is_failed()


def _md5s(root: Path, paths: list[str]) -> dict[str, str]:
    import hashlib

    out = {}
    for rel in paths:
        p = root / rel
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name != ".gitignore") if p.is_dir() else [p]
        for f in files:
            out[f.relative_to(root).as_posix()] = hashlib.md5(f.read_bytes()).hexdigest()
    return out


@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_retrain_after_demo_records_pushes_and_commits_everything(
    tmp_path: Path, use_mlflow: str, prefect_harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    import vt_models.cli.demo as cli
    from flows.retrain import retrain

    model = "vt-retrain-test"  # the session's MLflow server is shared with other tests
    repo = make_project(
        tmp_path / "repo",
        # min_score 0.99: a floor no one-epoch model reaches, whatever the precision it trained in (a CPU with bf16
        # matrix units trains in bf16, where one epoch cleared the bootstrap baseline once): nothing to ship, for sure
        {
            "cv": {"epochs": 1},
            "train": {"epochs": 1},
            "pretrain": {"epochs": 1},
            "registry": {"model_name": model, "min_score": 0.99},
        },
    )
    monkeypatch.chdir(repo)
    dvc = str(BIN / "dvc")
    # `vt demo` as a user runs it, with its `dvc repro` cut down to the data (the rest takes minutes)
    real_repro = cli._repro
    monkeypatch.setattr(cli, "_repro", lambda *targets, **_: real_repro("sample"))
    monkeypatch.setattr(cli, "_repro_side_by_side", lambda *branches: real_repro("sample"))
    demo = CliRunner().invoke(cli.app, ["demo"])
    assert demo.exit_code == 0, demo.output
    assert "recorded 18 raw video(s) of target in data/probe/target.raw_state.json" in demo.output
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "demo")

    new = ["right/right_r050_c00.mp4", "left/left_r051_c00.mp4"]
    for i, rel in enumerate(new):
        good_mp4(repo / "data/raw" / rel, n_frames=14, seed=3 + i)
    bad = _broken_files(repo / "data/raw/zoom_in")
    state = retrain("params.yaml", git_commit=True, return_state=True)
    first = state.result()
    # exactly the dropped files, not the demo's 18
    assert first["changes"] == {"added": sorted(new + list(bad)), "changed": [], "removed": []}, first["changes"]
    assert first["retrained"] and first["quarantined"] == 3 and first["usable"] == 20
    assert first["versioned"] == "dvc commit sample"
    # under the floor: registered, not champion, nothing to ship
    assert first["promoted"] is False and first["decision"]["reason"].startswith("nothing to ship yet")
    stages = [
        "probe@target",
        "extract@target",
        "split@target",
        "probe@source",
        "extract@source",
        "split@source",
        "pretrain@resnet18",
        "train@resnet18",
        "evaluate@resnet18",
        "register",
    ]
    assert sorted(first["record"]["dvc_commit"]) == sorted(stages)
    # flows.repro_rest: `dvc repro` brought the stages the flow does not run itself up to date
    for stage in ("evaluate_source@resnet18", "cv@resnet18", "transfer", "detect_probe@fine_tune", "detect_register"):
        assert stage in first["record"]["dvc_repro"], first["record"]["dvc_repro"]
    assert "Data and pipelines are up to date" in run(repo, dvc, "status").stdout
    assert "Failed" not in [s for v in _task_states(state.state_details.flow_run_id, 6).values() for s in v]

    # the record: dvc.lock has every stage the flow re-ran, clean locally and on the remote
    assert "up to date" in run(repo, dvc, "status", "sample", *stages).stdout.lower()
    cloud = run(repo, dvc, "status", "-c", "--json")
    assert json.loads(cloud.stdout or "{}") == {}, cloud.stdout
    lock = (repo / "dvc.lock").read_text()
    assert all(f"{s}:" in lock for s in stages)
    # ... and in git, naming the flow run; nothing of the record is left uncommitted
    log = run(repo, "git", "log", "-1", "--format=%B").stdout
    assert first["record"]["git_commit"] == run(repo, "git", "rev-parse", "--short", "HEAD").stdout.strip()
    assert "Prefect flow run" in log and str(state.state_details.flow_run_id) in log, log
    dirty = run(
        repo, "git", "status", "--porcelain", "--", "dvc.lock", "*.gitignore", "data/probe/target.raw_state.json"
    ).stdout
    assert dirty == "", dirty

    # a fresh clone pulls exactly what the flow trained and preprocessed
    trained = [
        "models/train/resnet18/best.pt",
        "models/pretrain/resnet18/best.pt",
        "data/splits/target.json",
        "data/probe/target",
        "data/frames/target",
        "reports/evaluate/resnet18/confusion_matrix.png",
    ]
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    run(clone, dvc, "pull")
    assert _md5s(clone, trained) == _md5s(repo, trained)
    assert "Data and pipelines are up to date" in run(clone, dvc, "status").stdout

    same = retrain("params.yaml")
    assert same["retrained"] is False

    good_mp4(repo / "data/raw/right/right_r052_c00.mp4", n_frames=14, seed=9)
    second = retrain("params.yaml", ["registry.margin=1.0", "flows.repro_rest=false"])
    assert second["changes"]["added"] == ["right/right_r052_c00.mp4"] and second["quarantined"] == 3
    assert second["record"]["git_commit"] is None  # a plain call does not commit
    assert second["record"]["dvc_repro"] == []  # repro_rest off: cv, transfer and detection stay stale
    assert "cv@resnet18" in run(repo, dvc, "status").stdout
    # there was no champion, so the floor alone decides; the record and the registry agree either way
    decided = second["decision"]
    assert decided["champion_after"] == (decided["candidate_version"] if decided["promoted"] else None)
    import mlflow

    client = mlflow.MlflowClient()
    if decided["promoted"]:
        assert client.get_model_version_by_alias(model, "champion").version == decided["candidate_version"]
    else:
        with pytest.raises(mlflow.exceptions.MlflowException):
            client.get_model_version_by_alias(model, "champion")
    assert client.get_model_version_by_alias(model, "challenger").version == second["decision"]["candidate_version"]
    cloud = run(repo, dvc, "status", "-c", "--json")
    assert json.loads(cloud.stdout or "{}") == {}, cloud.stdout


def test_served_deployments_run_one_at_a_time_unless_allowed() -> None:
    import yaml
    from prefect.client.schemas.objects import ConcurrencyLimitStrategy

    from flows.serve import deployments
    from vt_models.config import load_config

    flows_cfg = load_config(ROOT / "params.yaml").flows
    assert flows_cfg.overlap == "skip"
    strategies = {"skip": ConcurrencyLimitStrategy.CANCEL_NEW, "wait": ConcurrencyLimitStrategy.ENQUEUE}
    for overlap, strategy in strategies.items():
        cfg = flows_cfg.model_copy(update={"overlap": overlap})
        for d in deployments("params.yaml", cfg, None, ["retrain", "evaluate-champion", "detect"]):
            assert (d.concurrency_limit, d.concurrency_options.collision_strategy) == (1, strategy), d.name
    (free,) = deployments("params.yaml", flows_cfg.model_copy(update={"overlap": "allow"}), 60, ["retrain"])
    assert free.concurrency_limit is None
    # prefect.yaml's deployments (`prefect deploy --all`) skip as the default does, each through the one definition
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    limits = [d.get("concurrency_limit") for d in spec["deployments"]]
    assert limits == [{"limit": 1, "collision_strategy": "CANCEL_NEW"}] * 3, limits


@pytest.mark.slow
def test_schedule_on_a_real_prefect_server_runs_a_flow(tiny_project: Path, tmp_path: Path) -> None:
    with prefect_server(tmp_path, dict(os.environ)) as env:
        log = serve_until_scheduled_run(tiny_project, env, tmp_path / "serve.log")
    assert "started a first run of preprocess/vt-preprocess now" in log
    assert json.loads(Path("data/splits/target.json").read_text())["classes"]


@pytest.mark.slow
def test_detect_flow_trains_evaluates_and_gates(tiny_project: Path, use_mlflow: str, prefect_harness) -> None:
    import mlflow

    from flows.detect import detect

    shutil.rmtree("data/probe_det/target")
    # the target's classifier probe goes too: the flow's tasks decode its 18 videos again; the detector's source's
    # (scenes) 9 are unchanged since `vt probe` decoded them, so the detection probe reuses those rows (no task)
    Path("data/probe/target/manifest.csv").unlink()
    # weights: source: the flow first prepares the source boxes and pretrains the detector on them
    state = detect(overrides=["detect.model_name=vt-detect-flow-test", "detect.weights=source"], return_state=True)
    out = state.result()
    assert out["usable"] == 18 and out["quarantined"] == 0
    assert [(t["stage"], t["attempt"]) for t in out["pretrained"]] == [("detect_pretrain", 1)]
    assert Path("data/splits_det/scenes.json").is_file()
    assert out["trained"][0]["detector"] == "fcos_mini_resnet_fpn" and out["trained"][0]["attempt"] == 1
    tuned = load_checkpoint(Path("models/detect/fcos_mini_resnet_fpn/best.pt"))
    assert tuned["weights_source"].endswith("models/detect_pretrain/fcos_mini_resnet_fpn/best.pt")
    score = out["scores"][0]
    assert {"map", "map_50", "tracked_mota", "untracked_mota", "tracked_idf1", "tracked_hota"} <= set(score)
    # a detector trained for one epoch from scratch does not clear the floor (test mAP under detect.min_map)
    assert out["decision"]["metric"] == "map" and out["decision"]["promoted"] is False
    assert out["decision"]["reason"].startswith("nothing to ship yet") and out["decision"]["champion_after"] is None
    states = _task_states(state.state_details.flow_run_id, 18 + 2 * 18 + 4)
    assert {"train-detector", "evaluate-detector", "promote-detector"} <= set(states)
    assert len(states["probe-video"]) == 18 and len(states["train-detector"]) == 2  # source and target
    version = mlflow.MlflowClient().get_model_version_by_alias("vt-detect-flow-test", "challenger")
    assert version.version == out["decision"]["candidate_version"]

"""Real DVC in a temporary git repo: repro, no-op repro, push, drop the cache, pull."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from vt_models.models.checkpoint import load_checkpoint

from .project import BIN, make_project, run


def _digests(root: Path) -> dict[str, str]:
    """Every data file's digest: not .gitignore files, nor the empty lock file beside each frames folder."""
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".gitignore" not in p.name and not (p.name.startswith(".") and p.name.endswith(".lock"))
    }


def test_repro_noop_push_pull_round_trip(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "repo")
    dvc = str(BIN / "dvc")

    data_stages = ("split@target", "split@source")
    first = run(repo, dvc, "repro", *data_stages)
    for stage in ("sample", "probe@target", "probe@source", "extract@target", "split@target", "split@source"):
        assert f"Running stage '{stage}'" in first.stdout, stage
    splits = json.loads((repo / "data/splits/target.json").read_text())
    assert sorted(splits["classes"]) == ["left", "right", "zoom_in"]
    assert len(splits["folds"]) == 2
    assert (repo / "data/probe/source/manifest.csv").is_file()

    second = run(repo, dvc, "repro", *data_stages)
    assert "Running stage" not in second.stdout, second.stdout
    assert "up to date" in (second.stdout + second.stderr).lower()
    assert "up to date" in run(repo, dvc, "status", *data_stages).stdout.lower()
    # bytecode Python writes beside a stage's code folder (`sample` lists vt_models/data/synth) changes no stage
    cache = repo / "vt_models/data/synth/__pycache__"
    cache.mkdir(exist_ok=True)
    (cache / "render.cpython-311.pyc").write_bytes(b"\x00" * 16)
    assert "up to date" in run(repo, dvc, "status", "sample").stdout.lower()
    # nor does the temporary file of a save that was killed before its rename (io/files.atomic_write)
    (repo / "data/frames/target/.index.json.k1ll3d.tmp").write_bytes(b"half a file")
    assert "up to date" in run(repo, dvc, "status", "extract@target").stdout.lower()
    (repo / "data/frames/target/.index.json.k1ll3d.tmp").unlink()

    before = _digests(repo / "data")
    run(repo, dvc, "push", "--with-deps", *data_stages)
    shutil.rmtree(repo / ".dvc" / "cache")
    shutil.rmtree(repo / "data")
    run(repo, dvc, "pull", "--with-deps", *data_stages)
    assert _digests(repo / "data") == before
    assert "up to date" in run(repo, dvc, "status", *data_stages).stdout.lower()


def test_changed_param_reruns_only_downstream_stages(tmp_path: Path) -> None:
    repo = make_project(tmp_path / "repo")
    dvc = str(BIN / "dvc")
    run(repo, dvc, "repro", "split@target")
    import re

    # split.test_fraction (not split.datasets.scenes's own, written inline)
    params, n = re.subn(r"(?m)^  test_fraction: [0-9.]+", "  test_fraction: 0.25", (repo / "params.yaml").read_text())
    assert n == 1
    (repo / "params.yaml").write_text(params)
    again = run(repo, dvc, "repro", "split@target")
    assert "Running stage 'split@target'" in again.stdout
    assert "Running stage 'extract@target'" not in again.stdout
    assert "Running stage 'sample'" not in again.stdout

    # a new data version (a new recording of two clips): `dvc repro` re-splits, and with the splits
    # file persisted every old video keeps its split (stable splits; nothing moves into test)
    def where() -> dict[str, str]:
        splits = json.loads((repo / "data/splits/target.json").read_text())["splits"]
        return {p: s for s, ps in splits.items() for p in ps}

    before = where()
    clip = sorted((repo / "data/raw/left").glob("*.mp4"))[0]
    for k in range(2):
        shutil.copy(clip, repo / f"data/raw/left/left_r900_c{k:02d}.mp4")
    # (-s: the sample stage would restore data/raw to the rendered sample; a user adds videos to it)
    new = run(repo, dvc, "repro", "-s", "probe@target", "extract@target", "split@target")
    assert "Running stage 'split@target'" in new.stdout
    after = where()
    assert {p: after[p] for p in before} == before
    assert after["left/left_r900_c00.mp4"] == after["left/left_r900_c01.mp4"]

    # an experiment: `dvc exp run -S` overrides one param key and re-runs only the stages that read it
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "baseline")
    exp = run(repo, dvc, "exp", "run", "-s", "-S", "split.val_fraction=0.35", "-n", "val35", "split@target")
    assert "Running stage 'split@target'" in exp.stdout
    assert "Running stage 'extract@target'" not in exp.stdout and "Running stage 'sample'" not in exp.stdout
    shown = json.dumps(json.loads(run(repo, dvc, "exp", "show", "--json").stdout))
    assert "val35" in shown and '"val_fraction": 0.35' in shown


def plumbing() -> set[str]:
    """The vt_models files every `vt` command loads before it starts: the entry point and the config
    with its name checks. No stage lists them (each lists the exact param keys it reads instead)."""
    code = (
        "import json, sys, pathlib, vt_models, vt_models.cli; root = pathlib.Path(vt_models.__file__).parents[1]; "
        "print(json.dumps(sorted(pathlib.Path(m.__file__).relative_to(root).as_posix() "
        "for n, m in list(sys.modules.items()) if n.split('.')[0] == 'vt_models')))"
    )
    return set(json.loads(run(Path.cwd(), str(BIN / "python"), "-c", code).stdout))


def unlisted_code(lock: dict, traces: list[dict], exempt: set[str]) -> dict[str, list[str]]:
    """Per stage of ``dvc.lock``: the vt_models files its command ran (``VT_TRACE_IMPORTS``) that none
    of its deps covers (the file itself or a folder above it)."""
    missing: dict[str, list[str]] = {}
    for stage, entry in lock["stages"].items():
        ran = {f for t in traces if " ".join(["vt", *t["argv"]]) == entry["cmd"] for f in t["files"]}
        assert ran, f"no trace of stage {stage} ({entry['cmd']})"
        deps = [d["path"].rstrip("/") for d in entry.get("deps", [])]
        unlisted = sorted(
            f
            for f in ran - exempt
            if not f.endswith("__init__.py") and not any(f == d or f.startswith(d + "/") for d in deps)
        )
        if unlisted:
            missing[stage] = unlisted
    return missing


def test_unlisted_code_finds_a_missing_dep() -> None:
    lock = {"stages": {"s": {"cmd": "vt x", "deps": [{"path": "vt_models/train"}, {"path": "vt_models/a.py"}]}}}
    traces = [
        {"argv": ["x"], "files": ["vt_models/cli.py", "vt_models/a.py", "vt_models/train/b.py", "vt_models/c.py"]}
    ]
    assert unlisted_code(lock, traces, {"vt_models/cli.py"}) == {"s": ["vt_models/c.py"]}
    exempt = plumbing()
    assert {"vt_models/cli/app.py", "vt_models/config/__init__.py"} <= exempt
    assert "vt_models/train/engine.py" not in exempt


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_full_pipeline_metrics_plots_and_exp_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the detector fine-tunes from the detect_pretrain stage's source-domain detector
    repo = make_project(tmp_path / "repo", {"detect": {"weights": "source"}})
    dvc = str(BIN / "dvc")
    monkeypatch.setenv("VT_TRACE_IMPORTS", str(tmp_path / "trace.jsonl"))
    full = run(repo, dvc, "repro")
    monkeypatch.delenv("VT_TRACE_IMPORTS")
    # honest deps: a change to any file a stage runs makes `dvc status` re-run it
    traces = [json.loads(line) for line in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert unlisted_code(yaml.safe_load((repo / "dvc.lock").read_text()), traces, plumbing()) == {}
    for stage in (
        "pretrain@resnet18",
        "train@resnet18",
        "evaluate@resnet18",
        "cv@resnet18",
        "transfer",
        "adaptation",
        "register",
    ):
        assert f"Running stage '{stage}'" in full.stdout, stage
    det = "fcos_mini_resnet_fpn"
    for stage in (
        "detect_probe@fine_tune",
        "detect_extract@fine_tune",
        "detect_split@fine_tune",
        "detect_probe@pretrain",
        "detect_extract@pretrain",
        "detect_split@pretrain",
        f"detect_pretrain@{det}",
        f"detect_train@{det}",
        f"detect_evaluate@{det}",
        "detect_register",
    ):
        assert f"Running stage '{stage}'" in full.stdout, stage
    # the gate ran with its floor; whether the tiny models clear it, the record must agree with itself
    for record in ("promotion.json", "detect_promotion.json"):
        d = json.loads((repo / "reports" / record).read_text())
        assert d["promoted"] is d["candidate_qualifies"], d["reason"]  # a fresh registry: no champion to beat
        assert (d["champion_after"] is None) is d["reason"].startswith("nothing to ship yet"), d["reason"]
        assert d["small_test_set"] is True and f"small test set ({d['test_videos']} videos)" in d["reason"]
    assert json.loads((repo / "reports/detect_promotion.json").read_text())["metric"] == "map"
    assert (repo / f"reports/detect/{det}/sample.tracks.mp4").stat().st_size > 0
    tuned = load_checkpoint(repo / f"models/detect/{det}/best.pt")
    assert tuned["weights_source"] == f"models/detect_pretrain/{det}/best.pt" and tuned["dataset"] == "target"
    source = load_checkpoint(repo / f"models/detect_pretrain/{det}/best.pt")
    assert source["dataset"] == "scenes"
    # multi-scale pretraining (tests/project.py), fine-tuning at min_size: each checkpoint records its own
    assert (source["config"]["train_sizes"], tuned["config"]["train_sizes"]) == ([48, 64], None)
    # split.datasets.scenes.test_fraction 0: the detector's source keeps no test split; all of it trains or validates
    scenes = json.loads((repo / "data/splits_det/scenes.json").read_text())
    assert scenes["splits"]["test"] == [] and len(scenes["splits"]["train"]) + len(scenes["splits"]["val"]) == 9
    metrics = run(repo, dvc, "metrics", "show", "--json").stdout
    for path in (
        "models/train/resnet18/metrics.json",
        "reports/evaluate/resnet18/metrics.json",
        "reports/cv/resnet18/metrics.json",
        "reports/adaptation/metrics.json",
        f"reports/detect/{det}/metrics.json",
        f"reports/detect/{det}/mot.json",
    ):
        assert path in metrics, path
    plots = run(repo, dvc, "plots", "show", "-o", str(tmp_path / "plots"))
    assert (tmp_path / "plots" / "index.html").is_file(), plots.stdout
    assert "Running stage" not in run(repo, dvc, "repro").stdout
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-q", "-m", "baseline")
    # DVC experiments see the stages' params and metrics (`dvc exp run -S` itself: the data-only test above)
    shown = json.dumps(json.loads(run(repo, dvc, "exp", "show", "--json").stdout))
    assert "val_macro_f1" in shown and '"lr": 0.003' in shown


STAMP = """import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"{time.time()}\\n")
    f.flush()
    time.sleep(float(sys.argv[2]))
    if len(sys.argv) > 3:  # end only once that file exists: the other branch's stage has started
        deadline = time.time() + 120
        while not os.path.exists(sys.argv[3]):
            if time.time() > deadline:
                sys.exit(f"{sys.argv[3]} never appeared: the branches ran one after the other")
            time.sleep(0.1)
    f.write(f"{time.time()}\\n")
print("stamped", sys.argv[1])
"""


def test_the_demo_runs_its_detector_stages_beside_the_rest_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """`vt demo`: one branch of stages here, another in a `vt repro` child, at the same time (DVC holds its repo
    lock to plan and record, not while a stage runs); one dvc.lock records both; the child's lines are relayed
    and logged; a failed child fails the demo after the branch here is done."""
    import os

    import typer

    import vt_models.cli.demo as cli

    repo = make_project(tmp_path / "repo")
    (repo / "stamp.py").write_text(STAMP)
    # both branches read `first`'s output: DVC must not check `first` again beside a stage that reads it
    stages = {"first": {"cmd": "python stamp.py first.txt 0", "deps": ["stamp.py"], "outs": ["first.txt"]}}
    for name in ("here", "beside"):
        other = "beside" if name == "here" else "here"  # each waits for the other to start: at once, or never
        stages[name] = {
            "cmd": f"python stamp.py {name}.txt 1 {other}.txt",
            "deps": ["first.txt"],
            "outs": [f"{name}.txt"],
        }
    stages["broken"] = {"cmd": "python stamp.py broken.txt 0 && exit 3", "deps": ["stamp.py"], "outs": ["never.txt"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    cli._repro_side_by_side(["first"], ["here"], ["beside"], "side")
    (here_start, here_end), (beside_start, beside_end) = (
        [float(t) for t in (repo / f"{name}.txt").read_text().split()] for name in ("here", "beside")
    )
    assert here_start < beside_end and beside_start < here_end, "the branches ran one after the other"
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == {"first", "here", "beside"}
    assert "up to date" in run(repo, str(BIN / "dvc"), "status", "here", "beside").stdout.lower()
    out = capfd.readouterr().out
    assert "side | stamped beside.txt" in out and "stamped here.txt" in out
    assert "stamped beside.txt" in (repo / cli.BESIDE_LOG).read_text()
    assert (repo / "mlflow.db").is_file()  # made before the two processes could race on its schema

    # a failed first stage: the child, loaded and waiting, never starts its stages
    stamped = (repo / "beside.txt").read_text()
    (repo / "stamp.py").write_text(STAMP + "# changed\n")
    with pytest.raises(typer.Exit):
        cli._repro_side_by_side(["broken"], ["here"], ["beside"], "side")
    assert (repo / "beside.txt").read_text() == stamped
    with pytest.raises(typer.Exit) as failed:
        cli._repro_side_by_side(["first"], ["here"], ["broken"], "side")
    assert failed.value.exit_code == 1
    assert str(cli.BESIDE_LOG) in capfd.readouterr().err
    assert "up to date" in run(repo, str(BIN / "dvc"), "status", "here").stdout.lower()  # its work is kept


def test_processes_that_first_use_a_new_embedded_store_at_once_do_not_race(tmp_path: Path) -> None:
    """Unlocked, the second to migrate a new mlflow.db failed (`duplicate column name: step`)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    code = "from vt_models.io.mlflow import ensure_store; ensure_store()"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert (tmp_path / "mlflow.db").is_file()


def test_the_demo_plans_its_branches_from_dvcs_graph() -> None:
    """The detector's branch beside the classifiers': its source pretraining and what only that reads, then what
    reads the pretrained detector and no classifier stage, with the target's detection frames only those read;
    what both branches read first; a stage that reads both last; each in pipeline order. A branch that reads a
    stage it would not run (each runs with --single-item) sends everything into one plain repro."""
    from vt_models.cli.demo import _plan

    graph = {
        "sample": set(),
        "probe@a": {"sample"},
        "probe@b": {"sample"},
        "extract@a": {"probe@a", "sample"},
        "train": {"extract@a"},
        "report": {"train", "extract@a"},
        "detect_probe": {"probe@b"},
        "detect_pretrain@x": {"detect_probe"},
        "detect_probe@fine": {"probe@a"},
        "detect_train@x": {"detect_pretrain@x", "detect_probe@fine"},
        "detect_register": {"detect_train@x"},
        "adaptation": {"train"},
    }
    first, here, beside, last = _plan(graph, skip={"adaptation"})
    assert first == ["sample", "probe@a"]  # what both branches read: the target's probe feeds its boxes too
    assert here == ["extract@a", "train", "report"]
    assert set(beside) == {"probe@b", "detect_probe", "detect_pretrain@x", "detect_probe@fine", "detect_train@x",
                           "detect_register"}  # fmt: skip
    assert beside[:3] == ["probe@b", "detect_probe", "detect_pretrain@x"]  # the long pretraining starts first
    assert beside.index("detect_probe@fine") < beside.index("detect_train@x") < beside.index("detect_register")
    assert last == []
    # a stage asked to run alone (the demo's adaptation report) waits for both branches, to have every core
    first, here, beside, last = _plan(graph, skip=set(), alone=frozenset({"adaptation"}))
    assert here == ["extract@a", "train", "report"] and last == ["adaptation"] and "detect_register" in beside
    assert _plan(graph, skip={"adaptation"}, alone=frozenset({"adaptation"}))[3] == []  # skipped: not run at all
    # a detector stage that reads the classifier's model: that model is trained first, before both branches
    first, here, beside, _ = _plan({**graph, "detect_pretrain@x": {"detect_probe", "train"}}, {"adaptation"})
    assert first == ["sample", "probe@a", "extract@a", "train"] and here == ["report"]
    assert "detect_train@x" in beside and "detect_probe@fine" in beside
    # a classifier stage that reads the detector's output waits for both branches, and so does what reads it
    mixed = {**graph, "report": {"train", "detect_register"}, "summary": {"report"}}
    first, here, beside, last = _plan(mixed, {"adaptation"})
    assert here == ["extract@a", "train"] and "detect_register" in beside
    assert last == ["report", "summary"]
    # a detector stage that reads a classifier's model after the pretraining: that model is trained first too
    first, here, beside, last = _plan({**graph, "detect_train@x": {"detect_pretrain@x", "train"}}, {"adaptation"})
    assert first == ["sample", "probe@a", "extract@a", "train"] and here == ["report"] and last == []
    # no source pretraining: nothing to run beside, one plain repro
    no_pretrain = {k: v - {"detect_pretrain@x"} for k, v in graph.items() if k != "detect_pretrain@x"}
    assert _plan(no_pretrain, {"adaptation"})[2] == []
    # a stage the demo skips but a kept one reads: one plain repro, which runs it too
    first, here, beside, last = _plan({**graph, "report": {"adaptation"}}, skip={"adaptation"})
    assert first == beside == last == [] and len(here) == len(graph) - 1


def test_repro_in_process_runs_vt_commands_here_and_others_in_a_shell(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vt demo`'s repro: DVC plans and records as `dvc repro` does; a stage's `vt ...` runs in this process."""
    import os

    from vt_models.cli.app import run_in_process
    from vt_models.io.dvc import VersioningError, repro_in_process

    repo = make_project(tmp_path / "repo")
    stages = {
        "here": {"cmd": "vt data sample", "params": ["sample"], "outs": ["data/raw", "data/source"]},
        "shell": {"cmd": "vt config show > config.txt", "deps": ["data/raw"], "outs": ["config.txt"]},
        "broken": {"cmd": "vt no-such-command", "deps": ["config.txt"], "outs": ["never.txt"]},
    }
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    monkeypatch.chdir(repo)
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")  # the shell stage's `vt`
    calls: list[list[str]] = []

    def run_vt(args: list[str]) -> int:
        calls.append(args)
        return run_in_process(args)

    assert repro_in_process(["shell"], run_vt) == ["here", "shell"]
    assert calls == [["data", "sample"]]  # the redirect sent the other stage to a shell
    assert any((repo / "data/raw").rglob("*.mp4"))
    assert "sample:" in (repo / "config.txt").read_text()
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"here", "shell"}
    assert "up to date" in run(repo, str(BIN / "dvc"), "status", "shell").stdout.lower()

    # DVC's console handlers hold the streams of the moment `import dvc` ran; a later repro in the same
    # process (a served flow's next run, output captured and closed since) prints to today's streams
    import io
    import logging

    gone = io.StringIO()
    gone.close()
    for handler in logging.getLogger("dvc").handlers:
        handler.stream = gone
    capsys.readouterr()
    assert repro_in_process(["shell"], run_vt) == []  # nothing changed: nothing runs
    assert "Stage 'shell' didn't change, skipping" in capsys.readouterr().out
    with pytest.raises(VersioningError, match="dvc repro broken"):
        repro_in_process(["broken"], run_vt)
    assert calls[-1] == ["no-such-command"] and len(calls) == 2

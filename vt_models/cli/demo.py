"""Benchmarks that print figures, and `vt demo`: the whole pipeline on the sample data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vt_models.cli.app import (
    app,
    bench_app,
    config,
    fail,
    run,
    run_in_process,
)
from vt_models.reports import (
    format_detection_table,
    format_motion_table,
    format_promotion,
    format_source_table,
    format_training_table,
)

# --------------------------------------------------------------------------- benchmarks


@bench_app.command("extract")
def bench_extract(
    videos: Annotated[int, typer.Option(help="number of sample videos to benchmark on")] = 100,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: all cores)")] = None,
    workdir: Annotated[Path | None, typer.Option(help="scratch folder (default: a temp dir)")] = None,
) -> None:
    """Extraction frames/s against a full-decode PyAV baseline, and the cost of an incremental re-run."""
    from vt_models.bench import bench_extract as run_bench

    run_bench(videos=videos, workers=workers, workdir=workdir, echo=typer.echo)


@bench_app.command("train")
def bench_train_cmd(
    backbones: Annotated[
        list[str] | None, typer.Option("--backbone", "-b", help="backbones (default: resnet18 and r2plus1d_18)")
    ] = None,
    batches: Annotated[int, typer.Option(help="batches to time per measurement")] = 10,
) -> None:
    """Clips/s of the loader alone, the model step alone and both, with the data-wait fraction."""
    from vt_models.bench import bench_train

    run(bench_train, config(), backbones or ["resnet18", "r2plus1d_18"], batches, typer.echo)


@bench_app.command("track")
def bench_track_cmd(
    detector: Annotated[
        str | None, typer.Option("--detector", "-d", help="trained detector (default: the first of detect.detectors)")
    ] = None,
    from_gt: Annotated[
        bool, typer.Option("--from-gt", help="simulate the detector: ground-truth boxes with 2 px jitter")
    ] = False,
    occlusion: Annotated[int, typer.Option(min=1, help="frames each track's detections are dropped for")] = 3,
    noise: Annotated[float, typer.Option(min=0.0, help="low-score false boxes per frame (Poisson mean)")] = 1.0,
    sweep: Annotated[bool, typer.Option(help="also sweep match_iou x max_age x min_hits")] = True,
    out: Annotated[Path | None, typer.Option(help="also write the figures to this JSON file")] = None,
    reference: Annotated[
        bool, typer.Option(help="also score the `trackers` package's ByteTrack (a test extra) with the same settings")
    ] = True,
) -> None:
    """MOTA / IDF1 / HOTA tracked vs per-frame detections on the test split, under occlusion and noise."""
    from vt_models.detect.data import DetectionDataError
    from vt_models.track.bench import bench_track

    try:
        run(bench_track, config(), detector, from_gt, occlusion, noise, sweep, out, reference, typer.echo)
    except (FileNotFoundError, DetectionDataError, ImportError) as exc:
        raise fail(str(exc)) from None


# --------------------------------------------------------------------------- demo


def _tool_env() -> dict[str, str]:
    """Environment in which DVC's stage commands find this interpreter's ``vt``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


ADAPTATION = "adaptation"  # the domain-adaptation report's DVC stage


def _classifier_datasets(cfg: Any) -> set[str]:
    """The data sets whose frames the classifier stages read: pretraining, fine-tuning, its adaptation source."""
    used = {cfg.train.dataset, cfg.pretrain.dataset}
    if cfg.train.adapt != "none":
        used.add(cfg.train.adapt_source)
    return used


def _adaptation_only(cfg: Any) -> set[str]:
    """The stages only the adaptation report needs: the report itself, and the data stages of its data set
    when no other stage reads that data set."""
    used = _classifier_datasets(cfg) | {cfg.detect.dataset, cfg.detect.pretrain.dataset}
    name = cfg.adaptation.dataset
    return {ADAPTATION} | (set() if name in used else {f"{stage}@{name}" for stage in ("probe", "extract", "split")})


def _detection_only(cfg: Any) -> set[str]:
    """The classifiers' frame stages (extract, split) of a data set that only the detectors read (the sample's
    detector source, ``scenes``): the detection stages probe the videos (reusing the probe stage's rows) and
    extract frames of their own, so these would only cost the demo time."""
    classify = _classifier_datasets(cfg) | {cfg.adaptation.dataset}
    detect_only = {cfg.detect.dataset, cfg.detect.pretrain.dataset} - classify
    return {f"{stage}@{name}" for name in detect_only for stage in ("extract", "split")}


def _dvc(*args: str) -> None:
    dvc = shutil.which("dvc", path=_tool_env()["PATH"])
    if dvc is None:
        raise fail("dvc is not installed in this environment: pip install -e . from the project root")
    typer.secho(f"$ dvc {' '.join(args)}", bold=True)
    if subprocess.run([dvc, *args], env=_tool_env(), check=False).returncode != 0:
        raise fail(f"`dvc {' '.join(args)}` failed (see its output above)", code=1)


def _repro(*targets: str, side_by_side: bool = False) -> None:
    """``dvc repro targets`` with the stages' ``vt`` commands in this process (``io.dvc.repro_in_process``).

    ``side_by_side``: beside another repro in this folder, so ``--wait-for-lock --single-item`` (``targets`` in
    pipeline order, their upstream stages already run)."""
    from vt_models.io.dvc import VersioningError, repro_in_process

    flags = "--wait-for-lock repro --single-item" if side_by_side else "repro"
    typer.secho(f"$ dvc {flags} {' '.join(targets)}", bold=True)
    try:
        repro_in_process(list(targets), run_in_process, wait_for_lock=side_by_side, single_item=side_by_side)
    except VersioningError as exc:
        raise fail(str(exc), code=1) from None


def _upstream(graph: dict[str, set[str]], names: list[str]) -> set[str]:
    """Every stage that ``names`` read outputs of, directly or not (with ``graph`` reversed: every stage that
    reads theirs)."""
    seen: set[str] = set()
    todo = [dep for name in names for dep in graph.get(name, ())]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(graph.get(name, ()))
    return seen


def _plan(
    graph: dict[str, set[str]], skip: set[str], alone: frozenset[str] = frozenset()
) -> tuple[list[str], list[str], list[str], list[str]]:
    """The demo's stages as (first, here, beside, last), each in pipeline order.

    ``beside``: the detector's branch, in a child process: its source pretraining and what that reads, and the
    other ``detect_*`` stages (the target's detection frames, fine-tuning, evaluation, gate); ``here``: the
    classifiers, at the same time; ``first``: what both branches read (the videos, the target's probe), run
    before them; ``last``: a stage that reads the other branch's output, or one of ``alone``, and what reads it,
    once both are done (on every core).
    (The detector's fine-tuning, evaluation and gate ran last, on both cores, until the classifiers' branch
    became the longer one: the detector's core then sat idle for the classifiers' last ~90 s.)
    Everything is ``here`` (one stage after the other) when a branch reads a stage that it and those before it
    do not run.
    """
    from graphlib import TopologicalSorter

    order = [name for name in TopologicalSorter(graph).static_order() if name not in skip]
    pretrain = [name for name in order if name.startswith("detect_pretrain")]
    if not pretrain:
        return [], order, [], []
    long = _upstream(graph, pretrain) | set(pretrain)
    detector = long | {name for name in order if name.startswith("detect_")}
    classifiers = set(order) - detector
    readers = {name: {other for other in order if name in graph.get(other, ())} for name in order}
    # a classifier stage that reads the pretrained detector waits for both branches, and so does what reads it
    late = {name for name in classifiers if _upstream(graph, [name]) & set(pretrain)} | (alone & set(order))
    late |= _upstream(readers, list(late))  # with ``readers`` (each stage's readers): downstream
    live_d, live_c = detector - late, classifiers - late
    shared = (live_d & _upstream(graph, list(live_c))) | (live_c & _upstream(graph, list(live_d)))
    first = [name for name in order if name in shared]
    here = [name for name in order if name in live_c - shared]
    beside = [name for name in order if name in live_d - shared]
    # the source pretraining, the branch's longest stage, starts as soon as what it reads is done (stable sort)
    beside.sort(key=lambda name: name not in long)
    last = [name for name in order if name in late]
    done = set(first)
    for branch, before in ((here, done), (beside, done), (last, done | {*here, *beside})):
        if not _upstream(graph, branch) <= before | set(branch):
            return [], order, [], []
    return first, here, beside, last


GO = "go"  # what `vt repro --when-told` waits for on its standard input


@app.command("repro")
def repro_cmd(
    targets: Annotated[list[str], typer.Argument(help="stages to bring up to date, as `dvc repro` takes them")],
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: one per core)")] = None,
    when_told: Annotated[
        bool, typer.Option(help=f"load the libraries and the tracking store, then wait for a line {GO!r} on stdin")
    ] = False,
) -> None:
    """`dvc repro --single-item TARGETS` (in the order given, nothing upstream) with each stage's `vt` command
    in this one process, waiting for the repo lock of another repro in this folder (DVC holds it to plan and
    record, not while a stage runs): `vt demo` runs the detector's stages so, beside the classifier's."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if when_told:
        # what every stage needs, loaded while the stages before ours run (about 8 s on 2 cores)
        import dvc.cli  # noqa: F401
        import torchvision  # noqa: F401

        from vt_models.io import mlflow as tracking

        tracking.ensure_store()
        if sys.stdin.readline().strip() != GO:
            raise fail(f"not started: {' '.join(targets)} (the stages before them did not finish)", code=1)
    _repro(*targets, side_by_side=True)


BESIDE_LOG = Path("logs") / "demo_beside.log"  # the side branch's output, also relayed line by line


def _relay(stream: Any, log: Path, prefix: str) -> None:
    with log.open("w") as out:
        for line in stream:
            out.write(line)
            out.flush()
            typer.echo(f"{prefix}{line.rstrip()}")


def _start_beside(targets: list[str]) -> subprocess.Popen[str]:
    """``vt repro --threads 1 --when-told targets`` in a child process, its output on a pipe: it loads its
    libraries and waits for ``GO`` on its standard input."""
    vt = shutil.which("vt", path=_tool_env()["PATH"])
    if vt is None:
        raise fail("the `vt` command is not installed in this environment: pip install -e . from the project root")
    env = dict(_tool_env(), VT_PROGRESS="0", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [vt, "repro", "--threads", "1", "--when-told", *targets],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _repro_side_by_side(first: list[str], here: list[str], beside: list[str], label: str) -> None:
    """``dvc repro first``, then ``dvc repro here`` in this process while ``vt repro beside`` runs in a child,
    one torch thread each. The child starts with ``first``, loads its libraries and the tracking store
    meanwhile, and begins once ``first`` is done.

    On 2 cores two 1-thread trainings make ~30 % more steps a second than one 2-thread training
    (fcos_mini_resnet_fpn: 209 ms a step each side by side, 137 ms alone on 2 threads). Each branch keeps its
    one thread to the end, even alone: CPU results depend on the thread count (a different float summation
    order), so a count that changed with timing would make the demo's figures differ from run to run.
    ``here`` and ``beside`` must not read each other's stages. A failed ``first`` or ``here`` stops the child;
    a failed child fails this once ``here`` is done (its work is kept: DVC recorded each stage that ended).
    """
    import threading

    from vt_models.parallel import default_workers

    if not beside or not here or default_workers(None) < 2:
        if first or here or beside:
            _repro(*first, *here, *beside)  # in pipeline order, so one plain repro of them does the same work
        return
    BESIDE_LOG.parent.mkdir(parents=True, exist_ok=True)
    typer.secho(f"$ vt repro --threads 1 {' '.join(beside)}  (beside; its lines start `{label} |`, log {BESIDE_LOG})")
    child = _start_beside(beside)
    assert child.stdin is not None
    relay = threading.Thread(target=_relay, args=(child.stdout, BESIDE_LOG, f"{label} | "), daemon=True)
    relay.start()
    try:
        if first:
            _repro(*first)
        child.stdin.write(f"{GO}\n")
        child.stdin.close()
        import torch

        from vt_models.io import mlflow as tracking

        tracking.ensure_store()  # made by the child meanwhile, unless this process came first
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _repro(*here, side_by_side=True)
        finally:
            torch.set_num_threads(before)
    except BaseException:
        child.terminate()
        child.wait()
        raise
    if child.poll() is None:
        typer.secho(f"waiting for the stages beside: {' '.join(beside)}", bold=True)
    code = child.wait()
    relay.join()
    if code:
        raise fail(f"`vt repro {' '.join(beside)}` failed ({code}): its output is above and in {BESIDE_LOG}", 1)


@app.command()
def demo(
    push: Annotated[bool, typer.Option(help="push data to the DVC remote at the end")] = True,
    adaptation: Annotated[
        bool, typer.Option(help=f"also run the stage {ADAPTATION} and its data set's data stages (the slow domain)")
    ] = False,
) -> None:
    """The main job on the embedded defaults: `dvc repro` the pipeline, push the data, summarise.

    The stages' `vt` commands run in this process, which saves a new interpreter's imports per stage."""
    cfg = config()
    if not Path(".dvc").is_dir():
        raise fail("no .dvc folder here: run from the project root (a git clone of vt-models)")
    # the demo's time budget (15 min on 2 CPU cores): every stage but the adaptation report's (unless asked
    # for) and the classifiers' frames of a data set only the detectors read
    unread = _detection_only(cfg)
    skip = unread | (set() if adaptation else _adaptation_only(cfg))
    from vt_models.io.dvc import VersioningError, stage_graph

    try:
        # the adaptation report (--adaptation), the longest classifier stage (470 s on one thread), runs after both
        # branches, on every core: sooner, and with the figures of `dvc repro adaptation`, which the README quotes
        # (CPU results depend on the thread count; the branches keep theirs to one for the same reason)
        first, here, beside, last = _plan(stage_graph(), skip, alone=frozenset({ADAPTATION}))
    except VersioningError as exc:
        raise fail(str(exc), code=1) from None
    _repro_side_by_side(first, here, beside, "detect")
    if last:
        _repro(*last, side_by_side=True)  # their upstream stages are done: only these, in order
    if push:
        _dvc("push")
    from vt_models.data.changes import record_raw_state

    # the retrain flow reports changes against this record: its first run must see only new files
    state = record_raw_state(cfg, cfg.train.dataset)
    typer.echo(
        f"recorded {len(state.snapshot)} raw video(s) of {cfg.train.dataset} in {state.state_file} "
        "(git-tracked: commit it with dvc.lock)"
    )
    from vt_models.data.split import format_counts

    for name in cfg.datasets:
        path = cfg.splits_path(name)
        if path.is_file():
            typer.secho(f"\n== {name}: {path}", bold=True)
            typer.echo(format_counts(json.loads(path.read_text())))
        quarantine = cfg.probe_dir(name) / "quarantine.csv"
        if quarantine.is_file():
            n = max(0, len(quarantine.read_text().splitlines()) - 1)
            typer.echo(f"quarantined files: {n} ({quarantine})")
    source = format_source_table(cfg)
    if source:
        typer.secho(
            f"\n== source models on the {cfg.pretrain.dataset} data set ({cfg.evaluate.split} split)", bold=True
        )
        typer.echo(source)
    typer.secho(
        f"\n== backbones on the {cfg.train.dataset} data set "
        f"(test split: {cfg.evaluate.split}, {cfg.evaluate.views} clips per video)",
        bold=True,
    )
    typer.echo(format_training_table(cfg))
    motion = format_motion_table(cfg)
    if motion:
        typer.secho("\n== does it look at motion? (test videos static / reversed / shuffled, 1 clip each)", bold=True)
        typer.echo(motion)
    adapt_md = Path("reports") / "adaptation" / "adaptation.md"
    if adaptation and adapt_md.is_file():
        typer.secho("\n== domain adaptation (target labels hidden)", bold=True)
        typer.echo(adapt_md.read_text().split("\n", 2)[-1].strip())
    transfer_md = Path("reports") / "transfer" / "transfer.md"
    if transfer_md.is_file():
        typer.secho("\n== transfer learning", bold=True)
        typer.echo(transfer_md.read_text().split("\n", 2)[-1].strip())
    typer.secho("\n== registry", bold=True)
    typer.echo(format_promotion())
    typer.secho(
        f"\n== detectors on the {cfg.detect.dataset} data set (test split, boxes from the annotation sidecars)",
        bold=True,
    )
    typer.echo(format_detection_table(cfg))
    typer.echo(format_promotion(Path("reports") / "detect_promotion.json"))
    from vt_models.io import mlflow as tracking

    uri = tracking.redacted(tracking.tracking_uri())
    why = ([] if adaptation else [f"`dvc repro {ADAPTATION}`, or `vt demo --adaptation`"]) + (
        [f"{', '.join(sorted(unread))}: frames no classifier reads"] if unread else []
    )
    typer.echo(
        f"\nMLflow runs: {uri}\n"
        f"  open the UI with: mlflow ui --backend-store-uri {uri} (serves http://127.0.0.1:5000)\n"
        "demo: done. `dvc status` is clean"
        + (f" but for {', '.join(sorted(skip))} ({'; '.join(why)})" if skip else "")
        + "; `dvc dag` shows the pipeline, `dvc metrics show` the scores."
    )

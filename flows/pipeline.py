"""Prefect 3 flows: the same `vt_models` steps as the CLI and DVC stages, orchestrated.

- ``preprocess``: probe and extract, mapped over videos in parallel (threads, or a Dask cluster
  from params ``flows.dask_address``); probe results are cached across runs by *file content*,
  so unchanged videos are not decoded again; extraction is incremental by content hash.
- ``train``: one task per backbone with retries; a retry resumes from the last checkpoint.
- ``evaluate``, ``cross_validate``, ``evaluate_champion`` (weekly re-check of the champion).
- ``retrain``: detect new/changed raw videos (``vt_models.data.changes``, the same definition
  ``vt demo`` records), version them with DVC, preprocess, train, evaluate, promote through the
  gate, record every stage it re-ran in dvc.lock (``dvc commit -f``), push once, optionally commit
  the record to git, and publish a summary (Prefect markdown artifact and an MLflow run).
A bad video is data, not a failure: its probe/extract task completes with the quarantine reason.
Failures are never swallowed: every task result is awaited, so a failed task fails its flow.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from vt_models.config import Config, load_config
from vt_models.io.files import file_md5
from vt_models.parallel import Failure, run_one_isolated

PROBE_CACHE_VERSION = "probe-v1"


def _config(params: str, overrides: list[str] | None) -> Config:
    return load_config(params, overrides or [])


def task_runner(cfg: Config) -> Any:
    """Dask when a cluster address is configured, else a local thread pool (each task is its own process)."""
    if cfg.flows.dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=cfg.flows.dask_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=cfg.flows.max_workers)


# --------------------------------------------------------------------------- per-video tasks


def _probe_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    # by content: a renamed or copied file is not decoded again; its verdict (usable or the
    # quarantine reason) does not depend on its name. The time limit is in the key so that raising
    # probe.timeout_s re-probes files that timed out.
    path, min_frames = parameters["job"]
    return f"{PROBE_CACHE_VERSION}-{file_md5(path)}-{min_frames}-{parameters['timeout_s']:g}"


FAILURE_KEY = "quarantine_reason"


def verdict(result: Any) -> Any:
    """A per-video result as JSON-serialisable task data: a Failure becomes ``{FAILURE_KEY: reason}``."""
    return {FAILURE_KEY: result.reason} if isinstance(result, Failure) else result


def from_verdict(result: Any) -> Any:
    """The inverse of :func:`verdict` (what probe/extract expect from a mapper)."""
    if isinstance(result, dict) and set(result) == {FAILURE_KEY}:
        return Failure(result[FAILURE_KEY])
    return result


@task(
    name="probe-video",
    retries=1,
    retry_delay_seconds=1,
    cache_key_fn=_probe_cache_key,
    cache_expiration=timedelta(days=90),
    persist_result=True,
    result_serializer="json",
)
def probe_video(fn: Any, job: tuple[Path, int], timeout_s: float) -> dict[str, Any]:
    """Probe one file in its own time-bounded process.

    An unusable file is data, not an error: the task completes and returns ``{FAILURE_KEY: reason}``,
    cached by content like a usable file's measurements, so a bad file is decoded once and its task
    run is never Failed. Errors in this code itself (the file vanished, a bug) still raise.
    """
    return verdict(run_one_isolated(fn, job, timeout_s))


@task(name="extract-video", retries=1, retry_delay_seconds=1, cache_policy=None)
def extract_video(fn: Any, job: Any, timeout_s: float) -> dict[str, Any]:
    """Extract one video in its own time-bounded process; a video that fails is returned as a verdict."""
    return verdict(run_one_isolated(fn, job, timeout_s))


def prefect_mapper(video_task: Any, timeout_s: float) -> Any:
    """A `mapper` for probe/extract: submit one task per video, yield (job, result or Failure).

    Bad videos come back as Failure verdicts (probe/extract quarantine them and log one warning line
    each); a task that *fails* is a real error and raises here, which fails the flow.
    """

    def mapper(fn: Any, jobs: list[Any]) -> Any:
        futures = [video_task.submit(fn, job, timeout_s) for job in jobs]
        for job, future in zip(jobs, futures, strict=True):
            yield job, from_verdict(future.result())

    return mapper


@contextmanager
def library_logs_to_run() -> Any:
    """Send ``vt_models`` log records (e.g. ``quarantined <file>: <reason>``) to this run's logger only.

    One line each, in the console and in the run's logs in the Prefect UI, with no duplicate through
    the root logger.
    """
    run_logger = get_run_logger()

    class ToRun(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            run_logger.log(record.levelno, record.getMessage())

    lib = logging.getLogger("vt_models")
    handler, propagate, level = ToRun(logging.INFO), lib.propagate, lib.level
    lib.addHandler(handler)
    lib.propagate = False
    if lib.level == logging.NOTSET or lib.level > logging.INFO:
        lib.setLevel(logging.INFO)
    try:
        yield
    finally:
        lib.removeHandler(handler)
        lib.propagate, lib.level = propagate, level


# --------------------------------------------------------------------------- flows


@flow(name="preprocess")
def preprocess(
    dataset: str = "target", params: str = "params.yaml", overrides: list[str] | None = None
) -> dict[str, Any]:
    """Probe -> extract -> split one data set; returns the counts."""
    from vt_models.data import steps

    cfg = _config(params, overrides)
    logger = get_run_logger()
    with library_logs_to_run():
        probe = steps.probe(cfg, dataset, progress=False, mapper=prefect_mapper(probe_video, cfg.probe.timeout_s))
        logger.info(str(probe))
        extract = steps.extract(
            cfg, dataset, progress=False, mapper=prefect_mapper(extract_video, cfg.extract.timeout_s)
        )
        logger.info(str(extract))
        split = steps.split(cfg, dataset)
    return {
        "dataset": dataset,
        "usable": probe.usable,
        "quarantined": probe.quarantined,
        "extracted": extract.extracted,
        "unchanged": extract.unchanged,
        "removed": extract.removed,
        "counts": split["counts"],
    }


def preprocess_on(cfg: Config) -> Any:
    """The preprocess flow on the configured task runner (Dask cluster or local threads)."""
    return preprocess.with_options(task_runner=task_runner(cfg))


@task(name="train-backbone", retries=1, retry_delay_seconds=2, cache_policy=None)
def train_task(params: str, overrides: list[str] | None, stage: str, backbone: str) -> dict[str, Any]:
    """Train one backbone; on a retry (run_count > 1) resume from the last checkpoint."""
    from vt_models.classify import steps

    attempt = get_run_context().task_run.run_count
    summary = steps.train(_config(params, overrides), stage, backbone, resume=attempt > 1, progress=False)
    return {
        "backbone": backbone,
        "stage": stage,
        "best_val_macro_f1": summary.best_score,
        "run_id": summary.run_id,
        "attempt": attempt,
        "epochs": len(summary.result.history),
    }


@flow(name="train")
def train(
    stage: str = "train",
    backbones: list[str] | None = None,
    params: str = "params.yaml",
    overrides: list[str] | None = None,
) -> list[dict[str, Any]]:
    """One task per backbone, one after the other (they share the GPU)."""
    cfg = _config(params, overrides)
    return [train_task(params, overrides, stage, b) for b in backbones or getattr(cfg, stage).backbones]


@task(name="evaluate-backbone", retries=1, cache_policy=None)
def evaluate_task(params: str, overrides: list[str] | None, backbone: str) -> dict[str, Any]:
    from vt_models.classify import steps

    report = steps.evaluate(_config(params, overrides), backbone).report
    if report.metrics.get("motion_warning"):
        get_run_logger().warning("%s: %s", backbone, report.metrics["motion_warning"])
    return {
        "backbone": backbone,
        **{k: report.metrics[k] for k in ("accuracy", "macro_f1", "macro_recall")},
        **{k: v for k, v in report.metrics.items() if k.startswith("motion_")},
    }


@flow(name="evaluate")
def evaluate(
    backbones: list[str] | None = None, params: str = "params.yaml", overrides: list[str] | None = None
) -> list[dict[str, Any]]:
    cfg = _config(params, overrides)
    return [evaluate_task(params, overrides, b) for b in backbones or cfg.train.backbones]


@task(name="cv-backbone", cache_policy=None)
def cv_task(params: str, overrides: list[str] | None, backbone: str) -> dict[str, Any]:
    from vt_models.classify import steps

    return steps.cv(_config(params, overrides), backbone, progress=False)


@flow(name="cross-validate")
def cross_validate(
    backbones: list[str] | None = None, params: str = "params.yaml", overrides: list[str] | None = None
) -> list[dict[str, Any]]:
    cfg = _config(params, overrides)
    return [cv_task(params, overrides, b) for b in backbones or cfg.cv.backbones or cfg.train.backbones]


@task(name="promote", cache_policy=None)
def promote_task(params: str, overrides: list[str] | None) -> dict[str, Any]:
    from dataclasses import asdict

    from vt_models.classify import steps

    return asdict(steps.promote(_config(params, overrides)))


@flow(name="evaluate-champion")
def evaluate_champion(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Weekly: re-score the registered champion on the current test split and publish it."""
    import mlflow

    from vt_models.classify.promote import champion_test_score
    from vt_models.io import mlflow as tracking
    from vt_models.promotion import NOTHING_TO_SHIP

    cfg = _config(params, overrides)
    tracking.configure()
    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(cfg.registry.model_name, "champion")
    except mlflow.exceptions.MlflowException:  # the gate keeps no champion while nothing clears its floor
        reason = (
            f"{NOTHING_TO_SHIP}: {cfg.registry.model_name} has no champion to re-evaluate "
            "(see the last `vt promote` decision)"
        )
        create_markdown_artifact(
            key="champion-evaluation", markdown=reason, description="weekly re-evaluation of the champion"
        )
        return {"version": None, "reason": reason}
    # only the test videos it did not train on (its training record), as the promotion gate scores it
    score, data_version, videos, left_out = champion_test_score(cfg, version)
    with tracking.start_run(
        "vt-champion-eval",
        f"champion-v{version.version}",
        {"model_version": version.version, "data_version": data_version},
        system_metrics=False,
    ):
        mlflow.log_metrics(
            {f"test_{cfg.registry.metric}": score, "test_videos": float(videos), "test_videos_seen": float(left_out)}
        )
    create_markdown_artifact(
        key="champion-evaluation",
        markdown=f"| model | version | {cfg.registry.metric} | test videos (seen in training, left out) | data |\n"
        "|---|---|---|---|---|\n"
        f"| {cfg.registry.model_name} | {version.version} | {score:.4f} | {videos} ({left_out}) | {data_version} |\n",
        description="weekly re-evaluation of the champion",
    )
    return {
        "version": version.version,
        "score": score,
        "data_version": data_version,
        "test_videos": videos,
        "test_videos_seen": left_out,
    }


# --------------------------------------------------------------------------- retrain


@task(name="version-data", retries=2, retry_delay_seconds=5, cache_policy=None)
def version_data(raw: str) -> str:
    """Record the raw folder's new content in DVC first (pushed with everything else at the end)."""
    from vt_models.io import dvc as versioning

    if not versioning.is_dvc_repo():
        return "not a DVC repository: data not versioned"
    return versioning.version_path(raw)


@task(name="record-dvc", cache_policy=None)
def record_dvc(stages: list[str]) -> list[str]:
    """``dvc commit -f`` the stages this run re-ran, so dvc.lock and the cache hold what it produced."""
    from vt_models.io import dvc as versioning

    known = versioning.stage_names()
    missing = [s for s in stages if s not in known]
    if missing:
        get_run_logger().warning("not stages in dvc.yaml (their outputs stay out of dvc.lock): %s", ", ".join(missing))
    recorded = [s for s in stages if s in known]
    versioning.commit_stages(recorded)
    return recorded


@task(name="push-dvc", retries=2, retry_delay_seconds=5, cache_policy=None)
def push_dvc() -> str:
    from vt_models.io import dvc as versioning

    return versioning.push()


@task(name="repro-rest", cache_policy=None)
def repro_rest() -> list[str]:
    """``dvc repro`` the stages the flow does not run itself (cv, transfer report, detection) whose inputs changed."""
    from vt_models.io import dvc as versioning

    ran = versioning.repro()
    get_run_logger().info("dvc repro brought %s up to date", ", ".join(ran) if ran else "nothing (all stages were)")
    return ran


@task(name="git-commit", cache_policy=None)
def git_commit_record(message: str, extra: list[str]) -> str:
    from vt_models.io import dvc as versioning

    return versioning.git_commit(message, [Path(p) for p in extra])


def _git_commit_wanted(requested: bool | None, cfg: Config) -> bool:
    """Explicit True/False wins; None: params ``flows.git_commit`` for deployment runs, off for a plain call."""
    if requested is not None:
        return requested
    from prefect.runtime import deployment

    return bool(deployment.id) and cfg.flows.git_commit


@flow(name="retrain")
def retrain(
    params: str = "params.yaml", overrides: list[str] | None = None, force: bool = False, git_commit: bool | None = None
) -> dict[str, Any]:
    """New data in -> versioned, preprocessed, trained, evaluated, gated, recorded; a summary out.

    Records every DVC output it produced (``dvc commit -f`` of the stages it re-ran: probe, extract and
    split of the data sets it preprocessed, pretrain/train/evaluate of each backbone, register), then
    (``flows.repro_rest``) runs ``dvc repro`` for the stages it does not run itself whose inputs changed
    (cv, transfer report, detection), and pushes once at the end, so ``dvc status`` and ``dvc status -c``
    are clean.
    ``git_commit``: also commit dvc.lock, the .gitignore changes, the raw-state file and the stages'
    uncached outputs (metrics, reports) to git with a message naming the flow run; ``None`` (default)
    means params ``flows.git_commit`` when the run comes
    from a deployment (a schedule) and no commit for a plain call.
    """
    import mlflow

    from vt_models.data.changes import raw_changes
    from vt_models.io import dvc as versioning
    from vt_models.io import mlflow as tracking

    cfg = _config(params, overrides)
    logger = get_run_logger()
    ds_name = cfg.train.dataset
    current = raw_changes(cfg, ds_name)
    raw, changes = current.raw, current.changes
    summary: dict[str, Any] = {"dataset": ds_name, **current.counts()}
    if not current.total and not force:
        logger.info("no new, changed or removed videos in %s: nothing to do", raw)
        create_markdown_artifact(key="retrain-summary", markdown=f"No changes in `{raw}`: nothing retrained.")
        return {**summary, "retrained": False}
    logger.info("%s: %d added, %d changed, %d removed since %s", raw, *current.counts().values(), current.state_file)
    dvc_repo = versioning.is_dvc_repo()
    if overrides and dvc_repo:
        logger.warning(
            "overrides %s are not in %s: dvc.lock records the params file's values for the stages this run re-ran",
            overrides,
            params,
        )

    summary["versioned"] = version_data(str(raw))
    pre = preprocess_on(cfg)(ds_name, params, overrides)
    rerun = [f"probe@{ds_name}", f"extract@{ds_name}", f"split@{ds_name}"]
    summary.update(usable=pre["usable"], quarantined=pre["quarantined"], extracted=pre["extracted"])
    for backbone in cfg.train.backbones:
        if cfg.train.weights == "source" and not (cfg.run_dir("pretrain", backbone) / "best.pt").is_file():
            if f"split@{cfg.pretrain.dataset}" not in rerun:
                preprocess_on(cfg)(cfg.pretrain.dataset, params, overrides)
                rerun += [
                    f"probe@{cfg.pretrain.dataset}",
                    f"extract@{cfg.pretrain.dataset}",
                    f"split@{cfg.pretrain.dataset}",
                ]
            train("pretrain", [backbone], params, overrides)
            rerun.append(f"pretrain@{backbone}")
    trained = train("train", None, params, overrides)
    scores = evaluate(None, params, overrides)
    decision = promote_task(params, overrides)
    rerun += [f"train@{b}" for b in cfg.train.backbones] + [f"evaluate@{b}" for b in cfg.train.backbones] + ["register"]

    record: dict[str, Any] = {"dvc_commit": [], "dvc_repro": [], "dvc_push": None, "git_commit": None}
    if dvc_repo:
        record["dvc_commit"] = record_dvc(rerun)
        if cfg.flows.repro_rest:  # the rest of the pipeline on the new data version: `dvc status` is clean after
            record["dvc_repro"] = repro_rest()
        if cfg.flows.push:
            record["dvc_push"] = push_dvc()
    # only once the data version is recorded and pushed: a run that failed before is retried next time
    current.record()
    if _git_commit_wanted(git_commit, cfg):
        run = get_run_context().flow_run
        message = (
            f"retrain {ds_name}: {len(changes['added'])} added, {len(changes['changed'])} changed, "
            f"{len(changes['removed'])} removed; {decision['model_name']} v{decision['candidate_version']} "
            f"{'promoted' if decision['promoted'] else 'not promoted'}\n\n"
            f"Prefect flow run {run.name} ({run.id}). Recorded stages: {', '.join(record['dvc_commit']) or '-'}\n"
        )
        # dvc.lock, .gitignore changes, the raw state and the outputs DVC leaves to git (cache: false)
        raw_stage = [summary["versioned"].split()[-1]] if summary["versioned"].startswith("dvc commit ") else []
        extra = [
            current.state_file.as_posix(),
            *versioning.stage_outputs(raw_stage + record["dvc_commit"] + record["dvc_repro"]),
        ]
        record["git_commit"] = git_commit_record(message, extra)
    summary["record"] = record

    static = lambda s: f"{s['motion_static_accuracy']:.3f}" if "motion_static_accuracy" in s else "-"  # noqa: E731
    rows = "\n".join(
        f"| {s['backbone']} | {s['accuracy']:.3f} | {s['macro_f1']:.3f} | {s['macro_recall']:.3f} | {static(s)} |"
        for s in scores
    )
    warnings = "".join(
        f"**Warning** ({s['backbone']}): {s['motion_warning']}\n\n" for s in scores if s.get("motion_warning")
    )
    md = (
        f"# Retrain on `{ds_name}`\n\n"
        f"Changes: {len(changes['added'])} added, {len(changes['changed'])} changed, "
        f"{len(changes['removed'])} removed; "
        f"{pre['quarantined']} quarantined; data: {summary['versioned']}\n\n"
        f"| backbone | test accuracy | test macro-F1 | test macro recall | accuracy on static clips |\n"
        f"|---|---|---|---|---|\n{rows}\n\n{warnings}"
        f"**Decision**: {decision['model_name']} v{decision['candidate_version']} ({decision['candidate_backbone']}) "
        f"{'promoted to champion' if decision['promoted'] else 'not promoted'}: {decision['reason']}\n\n"
        f"**Record**: dvc commit {', '.join(record['dvc_commit']) or '(not a DVC repository)'}; "
        f"dvc repro: {', '.join(record['dvc_repro']) or '-'}; "
        f"dvc push: {record['dvc_push'] or 'off'}; git: {record['git_commit'] or 'no commit'}\n"
    )
    create_markdown_artifact(key="retrain-summary", markdown=md, description="what changed, scores, decision, record")
    with tracking.start_run(
        "vt-retrain", f"retrain-{ds_name}", {"promoted": str(decision["promoted"])}, system_metrics=False
    ):
        mlflow.log_metrics({f"changes_{k}": float(len(v)) for k, v in changes.items()})
        mlflow.log_metrics({f"test_macro_f1_{s['backbone']}": s["macro_f1"] for s in scores})
        mlflow.log_text(md, "summary.md")
        mlflow.log_dict(
            {"changes": changes, "decision": decision, "trained": trained, "record": record}, "summary.json"
        )
    return {**summary, "retrained": True, "promoted": decision["promoted"], "decision": decision, "changes": changes}


# --------------------------------------------------------------------------- detection


@task(name="train-detector", retries=1, retry_delay_seconds=2, cache_policy=None)
def detect_train_task(params: str, overrides: list[str] | None, detector: str) -> dict[str, Any]:
    """Train one detector; on a retry (run_count > 1) resume from the last checkpoint."""
    from vt_models.detect.runner import train_detector

    attempt = get_run_context().task_run.run_count
    summary = train_detector(_config(params, overrides), detector, resume=attempt > 1, progress=False)
    return {
        "detector": detector,
        "best_val_map": summary.best_score,
        "run_id": summary.run_id,
        "attempt": attempt,
        "epochs": len(summary.result.history),
    }


@task(name="evaluate-detector", retries=1, cache_policy=None)
def detect_evaluate_task(params: str, overrides: list[str] | None, detector: str) -> dict[str, Any]:
    from vt_models.detect import steps

    return steps.evaluate(_config(params, overrides), detector)


@task(name="promote-detector", cache_policy=None)
def detect_promote_task(params: str, overrides: list[str] | None) -> dict[str, Any]:
    from dataclasses import asdict

    from vt_models.detect import steps

    return asdict(steps.promote(_config(params, overrides)))


@flow(name="detect")
def detect(
    params: str = "params.yaml",
    overrides: list[str] | None = None,
    detectors: list[str] | None = None,
    promote: bool = True,
) -> dict[str, Any]:
    """Annotated videos -> frames with aligned boxes -> split -> train -> evaluate (mAP, MOT) -> mAP gate."""
    from vt_models.detect import steps

    cfg = _config(params, overrides)
    logger = get_run_logger()
    with library_logs_to_run():
        probe = steps.probe(cfg, progress=False, mapper=prefect_mapper(probe_video, cfg.probe.timeout_s))
        logger.info(str(probe))
        extract = steps.extract(cfg, progress=False, mapper=prefect_mapper(extract_video, cfg.detect.extract.timeout_s))
        logger.info(str(extract))
        steps.split(cfg)
    names = detectors or cfg.detect.detectors
    trained = [detect_train_task(params, overrides, d) for d in names]
    scores = [detect_evaluate_task(params, overrides, d) for d in names]
    decision = detect_promote_task(params, overrides) if promote else None
    rows = "\n".join(
        f"| {s['detector']} | {s['map']:.3f} | {s['map_50']:.3f} | "
        f"{s['tracked_mota']:.3f} / {s['untracked_mota']:.3f} | "
        f"{s['tracked_idf1']:.3f} / {s['untracked_idf1']:.3f} | {s['ms_per_frame']:.0f} |"
        for s in scores
    )
    md = (
        f"# Detection on `{cfg.detect.dataset}`\n\n"
        f"{probe.usable} annotated videos usable, {probe.quarantined} quarantined.\n\n"
        f"| detector | test mAP | mAP@.5 | MOTA tracked / untracked | IDF1 tracked / untracked | ms/frame |\n"
        f"|---|---|---|---|---|---|\n{rows}\n"
        + (
            f"\n**Decision**: {decision['model_name']} v{decision['candidate_version']} "
            f"({decision['candidate_backbone']}) "
            f"{'promoted to champion' if decision['promoted'] else 'not promoted'}: {decision['reason']}\n"
            if decision
            else ""
        )
    )
    create_markdown_artifact(
        key="detection-summary", markdown=md, description="detectors, mAP, tracking benefit, decision"
    )
    return {
        "usable": probe.usable,
        "quarantined": probe.quarantined,
        "trained": trained,
        "scores": scores,
        "decision": decision,
    }

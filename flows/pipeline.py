"""Prefect 3 flows: the same `vt_models` steps as the CLI and DVC stages, orchestrated.

- ``preprocess``: probe and extract, mapped over videos in parallel (threads, or a Dask cluster
  from params ``flows.dask_address``); probe results are cached across runs by *file content*,
  so unchanged videos are not decoded again; extraction is incremental by content hash.
- ``train``: one task per backbone with retries; a retry resumes from the last checkpoint, and so does
  the next flow run after a killed one (an unfinished ``last.pt`` of the same settings and data).
- ``evaluate``, ``cross_validate``, ``evaluate_champion`` (weekly re-check of the champion);
- ``adaptation``: the domain-adaptation report (source-only vs DANN / MMD / CORAL vs supervised).
- ``retrain`` (:mod:`flows.retrain`) and ``detect`` (:mod:`flows.detect`) build on these tasks.
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


def flow_config(params: str, overrides: list[str] | None) -> Config:
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

    cfg = flow_config(params, overrides)
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
    """Train one backbone; resume from the last checkpoint on a retry (run_count > 1), and in a new flow run
    when an earlier one stopped this same training short (its process was killed: that run shows Crashed)."""
    from vt_models.classify import steps
    from vt_models.classify.runner import interrupted_at

    cfg = flow_config(params, overrides)
    attempt = get_run_context().task_run.run_count
    killed_after = interrupted_at(cfg, stage, backbone) if attempt == 1 else None
    if killed_after is not None:
        get_run_logger().warning(
            "%s %s: an earlier run stopped after epoch %d (last.pt, same settings and data): resuming it",
            stage,
            backbone,
            killed_after,
        )
    summary = steps.train(cfg, stage, backbone, resume=attempt > 1 or killed_after is not None, progress=False)
    tc = getattr(cfg, stage)
    return {
        "backbone": backbone,
        "stage": stage,
        # named as MLflow names it (an autoencoder's is its reconstruction R^2), and with whose val videos scored
        # it: an adaptation run's are its labelled source's, not the target's
        f"best_val_{tc.monitor}": summary.best_score,
        "val_dataset": tc.val_dataset,
        "run_id": summary.run_id,
        "attempt": attempt,
        "epochs": len(summary.result.history),
        "resumed_after_epoch": killed_after,
    }


@flow(name="train")
def train(
    stage: str = "train",
    backbones: list[str] | None = None,
    params: str = "params.yaml",
    overrides: list[str] | None = None,
) -> list[dict[str, Any]]:
    """One task per backbone, one after the other (they share the GPU)."""
    cfg = flow_config(params, overrides)
    return [train_task(params, overrides, stage, b) for b in backbones or getattr(cfg, stage).backbones]


@task(name="evaluate-backbone", retries=1, cache_policy=None)
def evaluate_task(params: str, overrides: list[str] | None, backbone: str) -> dict[str, Any]:
    from vt_models.classify import steps

    report = steps.evaluate(flow_config(params, overrides), backbone).report
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
    cfg = flow_config(params, overrides)
    return [evaluate_task(params, overrides, b) for b in backbones or cfg.train.backbones]


@task(name="cv-backbone", cache_policy=None)
def cv_task(params: str, overrides: list[str] | None, backbone: str) -> dict[str, Any]:
    from vt_models.classify import steps

    return steps.cv(flow_config(params, overrides), backbone, progress=False)


@flow(name="cross-validate")
def cross_validate(
    backbones: list[str] | None = None, params: str = "params.yaml", overrides: list[str] | None = None
) -> list[dict[str, Any]]:
    cfg = flow_config(params, overrides)
    return [cv_task(params, overrides, b) for b in backbones or cfg.cv.backbones or cfg.train.backbones]


@task(name="adaptation-report", cache_policy=None)
def adaptation_task(params: str, overrides: list[str] | None) -> dict[str, Any]:
    """Source-only vs each domain-adaptation method vs supervised fine-tuning; returns the summary."""
    from vt_models.classify import steps

    return steps.adaptation(flow_config(params, overrides), progress=False)["summary"]


@flow(name="adaptation")
def adaptation(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """The domain-adaptation report as a flow (``dvc repro adaptation`` runs the same step)."""
    return adaptation_task(params, overrides)


@task(name="promote", cache_policy=None)
def promote_task(params: str, overrides: list[str] | None) -> dict[str, Any]:
    from dataclasses import asdict

    from vt_models.classify import steps

    return asdict(steps.promote(flow_config(params, overrides)))


@flow(name="evaluate-champion")
def evaluate_champion(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Weekly: re-score the registered champion on the current test split and publish it."""
    import mlflow

    from vt_models.classify.promote import champion_test_score
    from vt_models.io import mlflow as tracking
    from vt_models.promotion import NOTHING_TO_SHIP

    cfg = flow_config(params, overrides)
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

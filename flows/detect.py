"""Prefect 3 flow ``detect``: annotated videos -> frames with aligned boxes -> split -> train ->
evaluate (mAP, MOT) -> the mAP gate, through the steps of :mod:`vt_models.detect.steps`."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from flows.pipeline import extract_video, flow_config, library_logs_to_run, prefect_mapper, probe_video
from vt_models import reports


@task(name="train-detector", retries=1, retry_delay_seconds=2, cache_policy=None)
def detect_train_task(params: str, overrides: list[str] | None, detector: str, stage: str = "detect") -> dict[str, Any]:
    """Train (or pretrain, ``stage`` detect_pretrain) one detector; on a retry (run_count > 1) resume from
    the last checkpoint."""
    from vt_models.detect.runner import train_detector

    attempt = get_run_context().task_run.run_count
    cfg = flow_config(params, overrides)
    summary = train_detector(cfg, detector, stage=stage, resume=attempt > 1, progress=False)
    return {
        "detector": detector,
        "stage": stage,
        "best_val_map": summary.best_score,
        "run_id": summary.run_id,
        "attempt": attempt,
        "epochs": len(summary.result.history),
    }


@task(name="evaluate-detector", retries=1, cache_policy=None)
def detect_evaluate_task(params: str, overrides: list[str] | None, detector: str) -> dict[str, Any]:
    from vt_models.detect import steps

    return steps.evaluate(flow_config(params, overrides), detector)


@task(name="promote-detector", cache_policy=None)
def detect_promote_task(params: str, overrides: list[str] | None) -> dict[str, Any]:
    from dataclasses import asdict

    from vt_models.detect import steps

    return asdict(steps.promote(flow_config(params, overrides)))


@flow(name="detect")
def detect(
    params: str = "params.yaml",
    overrides: list[str] | None = None,
    detectors: list[str] | None = None,
    promote: bool = True,
) -> dict[str, Any]:
    """Annotated videos -> frames with aligned boxes -> split -> train -> evaluate (mAP, MOT) -> mAP gate."""
    from vt_models.detect import steps

    cfg = flow_config(params, overrides)
    logger = get_run_logger()
    # `detect.weights: source` fine-tunes from detectors pretrained on detect.pretrain.dataset's boxes
    pretrain = cfg.detect.weights == "source"
    datasets = ([cfg.detect.pretrain.dataset] if pretrain else []) + [cfg.detect.dataset]
    with library_logs_to_run():
        for dataset in datasets:  # the fine-tuning dataset last: `probe` below is its summary
            probe = steps.probe(
                cfg, progress=False, mapper=prefect_mapper(probe_video, cfg.probe.timeout_s), dataset=dataset
            )
            logger.info(str(probe))
            mapper = prefect_mapper(extract_video, cfg.detect.extract.timeout_s)
            logger.info(str(steps.extract(cfg, progress=False, mapper=mapper, dataset=dataset)))
            steps.split(cfg, dataset=dataset)
    names = detectors or cfg.detect.detectors
    pretrained = [detect_train_task(params, overrides, d, "detect_pretrain") for d in names if pretrain]
    trained = [detect_train_task(params, overrides, d) for d in names]
    scores = [detect_evaluate_task(params, overrides, d) for d in names]
    decision = detect_promote_task(params, overrides) if promote else None
    md = (
        f"# Detection on `{cfg.detect.dataset}`\n\n"
        f"{probe.usable} annotated videos usable, {probe.quarantined} quarantined.\n\n"
        f"{reports.format_detection_table(cfg, markdown=True)}\n"
        + (f"\n**Decision**: {reports.format_decision(decision)}\n" if decision else "")
    )
    create_markdown_artifact(
        key="detection-summary", markdown=md, description="detectors, mAP, tracking benefit, decision"
    )
    return {
        "usable": probe.usable,
        "quarantined": probe.quarantined,
        "pretrained": pretrained,
        "trained": trained,
        "scores": scores,
        "decision": decision,
    }

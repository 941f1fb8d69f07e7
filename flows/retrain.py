"""Prefect 3 flow ``retrain``: new or changed raw videos -> a recorded, gated model.

It detects new/changed raw videos (``vt_models.data.changes``, the same definition ``vt demo``
records), versions them with DVC, preprocesses, trains, evaluates and promotes through the gate
(the tasks of :mod:`flows.pipeline`), records every stage it re-ran in dvc.lock (``dvc commit -f``),
pushes once, optionally commits the record to git, and publishes a summary (a Prefect markdown
artifact and an MLflow run).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.context import get_run_context

from flows.pipeline import evaluate, flow_config, preprocess_on, promote_task, train
from vt_models import reports
from vt_models.config import Config


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
    """``dvc repro`` the stages the flow does not run itself (cv, transfer report, detection) whose inputs changed.

    Their ``vt`` commands run in this process, as in ``vt demo``: a new interpreter per stage costs ~10 s of
    imports on 2 cores, and the rest of the pipeline is a dozen stages. DVC still plans, runs and records.
    """
    from vt_models.cli.app import run_in_process
    from vt_models.io import dvc as versioning

    ran = versioning.repro_in_process([], run_in_process)
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

    cfg = flow_config(params, overrides)
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

    md = (
        f"# Retrain on `{ds_name}`\n\n"
        f"Changes: {len(changes['added'])} added, {len(changes['changed'])} changed, "
        f"{len(changes['removed'])} removed; "
        f"{pre['quarantined']} quarantined; data: {summary['versioned']}\n\n"
        f"{reports.format_training_table(cfg, markdown=True)}\n\n"
        f"Does it look at motion? (test videos static / reversed / shuffled)\n\n"
        f"{reports.format_motion_table(cfg, markdown=True)}\n\n"
        f"**Decision**: {reports.format_decision(decision)}\n\n"
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

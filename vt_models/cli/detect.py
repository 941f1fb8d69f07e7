"""Detection commands (`vt detect ...`): the same steps for box-annotated videos."""

from __future__ import annotations

from typing import Annotated

import typer

from vt_models.cli.app import (
    REASON_HELP,
    ROLLBACK_HELP,
    config,
    detect_app,
    fail,
    fit_line,
    promote_or_rollback,
    run,
    state,
)

# --------------------------------------------------------------------------- detection


def _detectors(name: str | None) -> list[str]:
    return [name] if name else config().detect.detectors


@detect_app.command("models")
def detect_models() -> None:
    """Registered detectors: family, parameters, weight sources."""
    from torchvision.models import get_model_weights

    from vt_models.models.builder import count_parameters
    from vt_models.models.detectors import build_detector
    from vt_models.models.registry import list_detectors

    for spec in list_detectors():
        if spec.has_torchvision_weights:
            enum = get_model_weights(spec.name)
            params = enum.DEFAULT.meta.get("num_params", 0)
            published = ["default/coco", *(m for m in enum.__members__ if m != "DEFAULT")]
        else:  # the project's own builder, no COCO weights: count the network; its weights come from pretraining
            params, published = count_parameters(build_detector(spec.name, classes=["object"])), ["source"]
        sources = ", ".join(["none", *published, "file", "models:/"])
        typer.echo(f"{spec.name:<40} {spec.family:<12} {params / 1e6:5.1f}M  weights: {sources}")


DatasetOption = Annotated[
    str | None,
    typer.Option(
        "--dataset", "-d", help="datasets.<name> (default: detect.dataset; detect.pretrain.dataset for pretraining)"
    ),
]


@detect_app.command("probe")
def detect_probe(dataset: DatasetOption = None) -> None:
    """Probe a dataset's videos and validate their box annotations; broken ones are quarantined."""
    from vt_models.detect import steps

    cfg = config()
    # broken annotations are quarantined, not raised
    summary = run(steps.probe, cfg, progress=state.progress, dataset=dataset)
    typer.echo(str(summary))
    if summary.quarantined:
        typer.echo(
            f"detect probe: see {summary.quarantine} for the reasons; fix the videos or their annotations and re-run"
        )
    if not summary.usable:
        raise fail(f"no usable annotated video in {cfg.dataset(dataset or cfg.detect.dataset).raw}", code=1)


@detect_app.command("extract")
def detect_extract(dataset: DatasetOption = None) -> None:
    """Frames with their boxes (aligned with the sampled, resized frames), incrementally."""
    from vt_models.detect import steps

    typer.echo(str(run(steps.extract, config(), progress=state.progress, dataset=dataset)))


@detect_app.command("split")
def detect_split(dataset: DatasetOption = None) -> None:
    """Grouped, stratified splits of the annotated videos."""
    from vt_models.data.split import format_counts
    from vt_models.detect import steps

    cfg = config()
    typer.echo(format_counts(run(steps.split, cfg, dataset=dataset)))
    typer.echo(f"detect split: wrote {cfg.detect_splits_path(dataset)}")


@detect_app.command("train")
def detect_train(
    detector: Annotated[
        str | None, typer.Option("--detector", "-d", help="one detector (default: all of detect.detectors)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint after a crash")] = False,
) -> None:
    """Fine-tune detectors on the annotated frames (same loop, checkpoints and MLflow tracking as classification)."""
    _train(detector, resume, "detect")


@detect_app.command("pretrain")
def detect_pretrain(
    detector: Annotated[
        str | None, typer.Option("--detector", "-d", help="one detector (default: all of detect.detectors)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint after a crash")] = False,
) -> None:
    """Pretrain detectors on detect.pretrain.dataset's boxes (the source domain); `detect.weights: source`
    fine-tunes from them."""
    _train(detector, resume, "detect_pretrain")


def _train(detector: str | None, resume: bool, stage: str) -> None:
    from vt_models.detect.data import DetectionDataError
    from vt_models.detect.runner import train_detector
    from vt_models.io.mlflow import TrackingUnavailable
    from vt_models.models.weights import WeightsError
    from vt_models.train import distributed as dist
    from vt_models.train.engine import NonFiniteError
    from vt_models.train.loaders import TrainingError

    cfg = config()
    verb = "detect pretrain" if stage == "detect_pretrain" else "detect train"
    for name in _detectors(detector):
        try:
            summary = train_detector(cfg, name, stage=stage, resume=resume, progress=state.progress)
        except (
            TrainingError,
            WeightsError,
            NonFiniteError,
            DetectionDataError,
            TrackingUnavailable,
            FileNotFoundError,
            ValueError,
        ) as exc:
            raise fail(f"{verb} {name}: {exc}") from None
        if dist.is_main():
            typer.echo(
                fit_line(f"{verb} {name}", "mAP", summary)
                + (f" (MLflow run {summary.run_id})" if summary.run_id else "")
            )
    dist.shutdown()


@detect_app.command("evaluate")
def detect_evaluate(
    detector: Annotated[
        str | None, typer.Option("--detector", "-d", help="one detector (default: all of detect.detectors)")
    ] = None,
) -> None:
    """Test-split mAP, per-class AP, precision/recall, MOT metrics with and without tracking, an annotated clip."""
    from vt_models.detect import steps
    from vt_models.models.checkpoint import CheckpointError
    from vt_models.video.decode import DecodeError

    cfg = config()
    for name in _detectors(detector):
        try:
            m = steps.evaluate(cfg, name)
        except (CheckpointError, FileNotFoundError, ValueError, DecodeError) as exc:
            trained = (cfg.run_dir("detect", name) / "best.pt").is_file()
            hint = "" if trained else f"; run `vt detect train -d {name}` first?"
            raise fail(f"detect evaluate {name}: {exc}{hint}") from None
        typer.echo(
            f"detect evaluate {name}: mAP {m['map']:.3f}, mAP@.5 {m['map_50']:.3f}, precision {m['precision']:.3f}, "
            f"recall {m['recall']:.3f}; MOTA {m['tracked_mota']:.3f} tracked vs {m['untracked_mota']:.3f} untracked, "
            f"IDF1 {m['tracked_idf1']:.3f} vs {m['untracked_idf1']:.3f}, "
            f"HOTA {m['tracked_hota']:.3f} vs {m['untracked_hota']:.3f} -> {m['out_dir']}"
        )


@detect_app.command("promote")
def detect_promote(
    detector: Annotated[
        str | None, typer.Option("--detector", "-d", help="candidate (default: best validation mAP)")
    ] = None,
    rollback: Annotated[bool, typer.Option("--rollback", help=ROLLBACK_HELP)] = False,
    reason: Annotated[str | None, typer.Option("--reason", help=REASON_HELP)] = None,
) -> None:
    """Register the candidate detector as `challenger`; `champion` only goes to a detector that clears the floor
    (bootstrap CI of test mAP over videos above 0, detect.min_map) and has a better test mAP. With --rollback,
    `champion` goes back to the previous champion instead."""
    from vt_models.detect import steps

    promote_or_rollback("detect promote", steps, detector, rollback, reason)

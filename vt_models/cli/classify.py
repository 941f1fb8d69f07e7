"""Classification commands: the backbone list, pretrain, train, evaluate, cv, promote, and the reports."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vt_models.cli.app import (
    REASON_HELP,
    ROLLBACK_HELP,
    app,
    config,
    fail,
    fit_line,
    models_app,
    promote_or_rollback,
    report_app,
    state,
)
from vt_models.reports import motion_summary, text_table

# --------------------------------------------------------------------------- models and training

OUT_HELP = (
    "folder for this run's checkpoints and metrics (default: models/{stage}/<backbone>, the one {readers} read; "
    "a model elsewhere is started from with -S train.weights=<folder>/best.pt and scored with vt evaluate --checkpoint)"
)


@models_app.command("list")
def models_list() -> None:
    """Registered backbones: family, parameters, input size, weight sources."""
    from torchvision.models import get_model_weights

    from vt_models.models.builder import count_parameters, torchvision_net
    from vt_models.models.registry import list_backbones

    rows = []
    for spec in list_backbones():
        if spec.has_torchvision_weights:
            enum = get_model_weights(spec.arch)
            params = enum.DEFAULT.meta.get("num_params", 0)
            published = [m for m in enum.__members__ if m != "DEFAULT"]
        else:  # no weights enum: count the network itself; its weights come from `vt pretrain`
            params, published = count_parameters(torchvision_net(spec)), ["source"]
        frames = f"{spec.fixed_frames}" if spec.fixed_frames else f">={spec.min_frames}"
        size = f"{spec.fixed_crop}" if spec.fixed_crop else f"{spec.crop_size} (any >={spec.min_crop})"
        sources = ", ".join(["none", *published, "file", "models:/"])
        rows.append(
            (
                spec.name,
                spec.family + (f"+{spec.rnn}" if spec.rnn else ""),
                f"{params / 1e6:.1f}M",
                frames,
                size,
                sources,
            )
        )
    typer.echo(text_table(("name", "family", "params*", "frames", "input size", "weights"), rows))
    typer.echo("* parameters of the torchvision network with its pretraining head (the new head is smaller)")


def _train(stage: str, backbone: str | None, resume: bool, out: Path | None) -> None:
    from vt_models.classify import steps
    from vt_models.io.mlflow import TrackingUnavailable
    from vt_models.models.weights import WeightsError
    from vt_models.train import distributed as dist
    from vt_models.train.engine import NonFiniteError
    from vt_models.train.loaders import TrainingError

    cfg = config()
    tc = getattr(cfg, stage)
    names = [backbone] if backbone else tc.backbones
    if out is not None and len(names) > 1:
        raise fail(f"--out is one run's folder, and {stage}.backbones lists {len(names)}: name one with --backbone")
    monitor = {"recon_r2": "reconstruction R^2", "macro_f1": "macro-F1"}[tc.monitor]
    # an adaptation run validates on its labelled source: say so, or the score reads as the target's
    scored_on = (
        f" on {tc.val_dataset}'s val videos (the labelled adaptation source, not {tc.dataset})"
        if tc.val_dataset != tc.dataset
        else ""
    )
    for name in names:
        try:
            summary = steps.train(cfg, stage, name, resume=resume, progress=state.progress, out=out)
        except (TrainingError, WeightsError, NonFiniteError, TrackingUnavailable, FileNotFoundError, ValueError) as exc:
            raise fail(f"{stage} {name}: {exc}") from None
        if not dist.is_main():
            continue
        typer.echo(
            fit_line(f"{stage} {name}", monitor, summary, scored_on)
            + f" (metrics {summary.metrics_path}"
            + (f", MLflow run {summary.run_id})" if summary.run_id else ")")
        )
    dist.shutdown()


@app.command()
def evaluate(
    backbone: Annotated[
        str | None, typer.Option("--backbone", "-b", help="one backbone (default: all of train.backbones)")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option(help="checkpoint to score (default: models/<stage>/<backbone>/best.pt)")
    ] = None,
    stage: Annotated[
        str,
        typer.Option(
            help="train: the fine-tuned model on the target data; pretrain: the source model "
            "on the source data (reports/evaluate_source/)"
        ),
    ] = "train",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="output folder (default: reports/evaluate/<backbone>); e.g. one per stream for `vt report fusion`",
        ),
    ] = None,
) -> None:
    """Score trained models on the test split: metrics, predictions, confusion matrix, cost; logged to MLflow."""
    from vt_models.classify import steps
    from vt_models.models.checkpoint import CheckpointError

    cfg = config()
    if stage not in ("train", "pretrain"):
        raise fail(f"--stage must be train or pretrain, got {stage!r}")
    ec = cfg.evaluate
    names = [backbone] if backbone else getattr(cfg, stage).backbones
    for name in names:
        try:
            done = steps.evaluate(cfg, name, stage, checkpoint, out)
        except (CheckpointError, FileNotFoundError, ValueError) as exc:
            raise fail(f"evaluate {name}: {exc}; run `vt {stage} -b {name}` first?") from None
        report, run_id = done.report, done.run_id
        m = report.metrics
        typer.echo(
            f"evaluate {name}: {ec.split} accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}, "
            f"macro recall {m['macro_recall']:.3f} over {m['videos']} videos x {ec.views} clips -> {report.out_dir}"
            + (f" (MLflow run {run_id})" if run_id else "")
        )
        if "motion_static_accuracy" in m:
            typer.echo(f"  {motion_summary(m)}")
        if m.get("motion_warning"):
            typer.secho(f"  WARNING {name}: {m['motion_warning']}", fg=typer.colors.YELLOW, err=True)


@app.command()
def cv(
    backbone: Annotated[
        str | None, typer.Option("--backbone", "-b", help="one backbone (default: cv.backbones or train.backbones)")
    ] = None,
) -> None:
    """k-fold cross-validation on train+val (grouped, stratified folds); mean and std of every metric."""
    from vt_models.classify import steps

    cfg = config()
    for name in [backbone] if backbone else (cfg.cv.backbones or cfg.train.backbones):
        try:
            out = steps.cv(cfg, name, progress=state.progress)
        except (FileNotFoundError, ValueError) as exc:
            raise fail(f"cv {name}: {exc}") from None
        typer.echo(
            f"cv {name}: macro-F1 {out['mean_macro_f1']:.3f} +/- {out['std_macro_f1']:.3f}, "
            f"accuracy {out['mean_accuracy']:.3f} +/- {out['std_accuracy']:.3f} over {int(out['folds'])} folds"
        )


@app.command()
def promote(
    backbone: Annotated[
        str | None, typer.Option("--backbone", "-b", help="candidate (default: best validation score)")
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(
            "--run",
            help="candidate: the run folder a `vt train --out` wrote (default: models/train/<backbone>)",
            file_okay=False,
        ),
    ] = None,
    rollback: Annotated[bool, typer.Option("--rollback", help=ROLLBACK_HELP)] = False,
    reason: Annotated[str | None, typer.Option("--reason", help=REASON_HELP)] = None,
) -> None:
    """Register the candidate as `challenger`; `champion` only goes to a model that clears the floor (bootstrap CI over
    test videos above the majority-class baseline, registry.min_score) and beats the champion on the test split.
    With --rollback, `champion` goes back to the previous champion instead."""
    from vt_models.classify import steps

    promote_or_rollback("promote", steps, backbone, rollback, reason, run)


@report_app.command("transfer")
def report_transfer() -> None:
    """Scratch vs linear probe vs full fine-tuning from the source model, at several training-set sizes."""
    from vt_models.classify import steps
    from vt_models.classify.data import UnlabelledError
    from vt_models.classify.transfer import REPORT_DIR, seed_summary, to_markdown
    from vt_models.train.loaders import TrainingError

    try:
        rows = steps.transfer(config(), progress=state.progress)
    except (TrainingError, FileNotFoundError, UnlabelledError) as exc:
        raise fail(f"transfer: {exc}") from None
    typer.echo(to_markdown(rows, list(rows[0])))
    if len({r["seed"] for r in rows}) > 1:
        summary = seed_summary(rows)
        typer.echo(to_markdown(summary, list(summary[0])))
    typer.echo(f"report: {REPORT_DIR / 'transfer.md'}")


# `vt report adapt`: a short name for the same report, hidden from --help
@report_app.command("adaptation")
@report_app.command("adapt", hidden=True)
def report_adaptation() -> None:
    """Source-only vs each domain-adaptation method (target labels hidden) vs supervised fine-tuning."""
    from vt_models.classify import steps
    from vt_models.classify.adaptation import REPORT_DIR
    from vt_models.classify.data import UnlabelledError
    from vt_models.classify.transfer import to_markdown
    from vt_models.train.loaders import TrainingError

    try:
        done = steps.adaptation(config(), progress=state.progress)
    except (TrainingError, FileNotFoundError, UnlabelledError) as exc:
        raise fail(f"adaptation: {exc}") from None
    typer.echo(to_markdown(done["rows"], list(done["rows"][0])))
    typer.echo(to_markdown([done["summary"]], list(done["summary"])))
    typer.echo(f"report: {REPORT_DIR / 'adaptation.md'}")


@report_app.command("fusion")
def report_fusion(
    eval_dirs: Annotated[
        list[Path],
        typer.Argument(
            help="`vt evaluate` output folders (reports/evaluate/<backbone>) of the streams, "
            "e.g. an rgb and a flow model"
        ),
    ],
    weights: Annotated[
        str | None, typer.Option(help="comma-separated weight per stream, e.g. 1,1.5 (default: equal)")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="where metrics.json and predictions.csv go")] = Path(
        "reports"
    )
    / "fusion",
) -> None:
    """Two-stream late fusion: average the evaluated models' per-video probabilities; score each stream
    and the fusion."""
    from vt_models.classify.fusion import fusion_report

    cfg = config()
    try:
        w = [float(x) for x in weights.split(",")] if weights else None
        m = fusion_report(
            eval_dirs,
            out,
            w,
            metric=cfg.registry.metric,
            resamples=cfg.registry.bootstrap_resamples,
            confidence=cfg.registry.confidence,
            seed=cfg.seed,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise fail(f"report fusion: {exc}") from None
    metric = cfg.registry.metric
    typer.echo(
        text_table(
            ("model", "accuracy", metric, f"{cfg.registry.confidence:.0%} CI"),
            [
                (r["model"], f"{r['accuracy']:.3f}", f"{r[metric]:.3f}", f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
                for r in m["streams"]
            ],
        )
    )
    typer.echo(f"report: {out / 'metrics.json'} ({m['videos']} videos)")


@app.command()
def pretrain(
    backbone: Annotated[
        str | None, typer.Option("--backbone", "-b", help="one backbone (default: all of pretrain.backbones)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint after a crash")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help=OUT_HELP.format(stage="pretrain", readers="`weights: source` and the DVC stages")
        ),
    ] = None,
) -> None:
    """Train on the source domain (params `pretrain`) and register the model: the start of transfer."""
    _train("pretrain", backbone, resume, out)


@app.command()
def train(
    backbone: Annotated[
        str | None, typer.Option("--backbone", "-b", help="one backbone (default: all of train.backbones)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint after a crash")] = False,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help=OUT_HELP.format(stage="train", readers="vt evaluate, vt promote and the DVC stages")
        ),
    ] = None,
) -> None:
    """Fine-tune on the target data set (params `train`); every run is tracked in MLflow."""
    _train("train", backbone, resume, out)

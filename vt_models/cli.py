"""The ``vt`` command line: thin wrappers over library functions (DVC stages call these too)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError

from vt_models.config import (
    DEFAULT_PARAMS,
    Config,
    ConfigError,
    apply_overrides,
    format_validation_error,
    load_config,
    to_yaml,
)

app = typer.Typer(help="Transfer learning on video: data, training, evaluation, registry.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the resolved configuration.", no_args_is_help=True)
data_app = typer.Typer(help="Sample data and data sets.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
models_app = typer.Typer(help="The backbone registry.", no_args_is_help=True)
report_app = typer.Typer(help="Reports.", no_args_is_help=True)
detect_app = typer.Typer(
    help="Video object detection: annotated data, detectors, mAP, tracking, registry.", no_args_is_help=True
)
app.add_typer(detect_app, name="detect")
app.add_typer(report_app, name="report")
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
app.add_typer(bench_app, name="bench")

log = logging.getLogger("vt")
M = TypeVar("M", bound=BaseModel)


class _State:
    params: Path = DEFAULT_PARAMS
    params_given: bool = False
    overrides: list[str] = []
    progress: bool = True


state = _State()


@app.callback()
def _main(
    params: Annotated[Path | None, typer.Option("--params", "-p", help="params file (default: ./params.yaml)")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", "-S", help="override a param: key.path=value")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="hide progress bars")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    state.params = params or DEFAULT_PARAMS
    state.params_given = params is not None
    state.overrides = list(overrides or [])
    state.progress = not no_progress and sys.stderr.isatty() or os.environ.get("VT_PROGRESS") == "1"


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def config() -> Config:
    try:
        return load_config(state.params, state.overrides)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def section(name: str, model: type[M]) -> M:
    """One config section; without a params file (and none asked for), its defaults plus ``-S``."""
    if state.params.is_file() or state.params_given:
        return getattr(config(), name)
    data = apply_overrides({name: {}}, state.overrides).get(name, {})
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _fail(format_validation_error(exc, f"-S {name}.*", model).replace(f"'{name}.", "'")) from None


def _run(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a library function, turning its documented errors into a clean CLI error."""
    from vt_models.data.extract import ExtractError
    from vt_models.data.probe import ProbeError
    from vt_models.data.split import SplitError

    try:
        return fn(*args, **kwargs)
    except (ConfigError, ProbeError, ExtractError, SplitError) as exc:
        raise _fail(str(exc)) from None


# --------------------------------------------------------------------------- config


@config_app.command("show")
def config_show() -> None:
    """Print the resolved configuration (params file plus -S overrides, defaults filled in)."""
    typer.echo(to_yaml(config()), nl=False)


# --------------------------------------------------------------------------- data


@data_app.command("sample")
def data_sample() -> None:
    """Generate the embedded sample data set (real H.264 MP4s, deterministic from the seed)."""
    from vt_models.data.synth import generate_sample

    cfg = config()
    counts = generate_sample(cfg, progress=state.progress)
    for domain, per_class in counts.items():
        total = sum(per_class.values())
        typer.echo(f"sample: {domain}: {total} clips in {cfg.datasets[domain].raw} ({len(per_class)} classes)")


@app.command()
def probe(
    raw_dir: Annotated[Path | None, typer.Argument(help="folder of videos (folder-per-class unless --labels)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="where manifest.csv and quarantine.csv go")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="CSV manifest path,label[,group]")] = None,
    dataset: Annotated[str | None, typer.Option("--dataset", "-d", help="take paths from params datasets.NAME")] = None,
) -> None:
    """Check every video: usable ones go to manifest.csv, the rest to quarantine.csv with a reason."""
    from vt_models.config import ProbeConfig
    from vt_models.data import steps
    from vt_models.data.probe import probe_dataset

    if dataset and raw_dir is None and out is None and labels is None:
        cfg = config()
        _run(cfg.dataset, dataset)
        summary = _run(steps.probe, cfg, dataset, progress=state.progress)
        raw_dir = cfg.dataset(dataset).raw
    else:  # a folder outside params (or a data set's folder with other outputs)
        if dataset:
            cfg = config()
            ds = _run(cfg.dataset, dataset)
            raw_dir, labels, out = raw_dir or ds.raw, labels or ds.labels_csv, out or cfg.probe_dir(dataset)
        if raw_dir is None or out is None:
            raise _fail("give RAW_DIR and --out OUT_DIR, or --dataset NAME")
        summary = _run(probe_dataset, raw_dir, out, section("probe", ProbeConfig), labels, progress=state.progress)
    typer.echo(str(summary))
    if summary.quarantined:
        typer.echo(f"probe: see {summary.quarantine} for the reasons; fix or remove those files and re-run")
    if not summary.usable:
        raise _fail(f"no usable video in {raw_dir}", code=1)


@app.command()
def extract(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="data set name under params datasets")] = "target",
    manifest: Annotated[Path | None, typer.Option(help="manifest.csv (default: from the data set)")] = None,
    raw_dir: Annotated[Path | None, typer.Option("--raw", help="raw video folder (default: from the data set)")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="frames folder (default: from the data set)")] = None,
) -> None:
    """Sample and resize frames into one compact file per video; only new or changed videos are decoded."""
    from vt_models.config import ExtractConfig
    from vt_models.data import steps
    from vt_models.data.extract import extract_dataset

    if manifest is None and raw_dir is None and out is None:
        cfg = config()
        _run(cfg.dataset, dataset)
        out = cfg.frames_dir(dataset)
        summary = _run(steps.extract, cfg, dataset, progress=state.progress)
    else:
        if manifest is None or raw_dir is None or out is None:
            cfg = config()
            ds = _run(cfg.dataset, dataset)
            manifest = manifest or cfg.probe_dir(dataset) / "manifest.csv"
            raw_dir, out = raw_dir or ds.raw, out or cfg.frames_dir(dataset)
        summary = _run(
            extract_dataset, manifest, raw_dir, out, section("extract", ExtractConfig), progress=state.progress
        )
    typer.echo(str(summary))
    if summary.failed:
        typer.echo(f"extract: see {out / 'failed.csv'} for the videos that could not be extracted")


@app.command()
def split(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="data set name under params datasets")] = "target",
    frames: Annotated[Path | None, typer.Option(help="frames folder with index.json")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="splits JSON to write")] = None,
    redraw: Annotated[
        bool,
        typer.Option(
            "--redraw",
            help="draw every recording group anew (default: groups of the "
            "existing splits file keep their split; only new groups are placed)",
        ),
    ] = False,
) -> None:
    """Grouped, stratified train/val/test splits and k folds; prints class counts per split.

    Stable across data versions: a recording group keeps the split (and fold) the existing splits
    file gave it, so test scores of two data versions stay comparable. `--redraw` starts over."""
    from vt_models.config import SplitConfig
    from vt_models.data import steps
    from vt_models.data.extract import load_index
    from vt_models.data.split import format_counts, split_dataset

    if frames is None and out is None:
        cfg = config()
        _run(cfg.dataset, dataset)
        out = cfg.splits_path(dataset)
        result = _run(steps.split, cfg, dataset, redraw)
    else:
        seed = 0
        if frames is None or out is None:
            cfg = config()
            _run(cfg.dataset, dataset)
            frames, out, seed = frames or cfg.frames_dir(dataset), out or cfg.splits_path(dataset), cfg.seed
        index = _run(load_index, frames)
        result = _run(split_dataset, index, out, section("split", SplitConfig), seed, redraw)
    typer.echo(format_counts(result))
    typer.echo(
        f"split: wrote {out} ({result['kept_groups']} recording group(s) kept their split, "
        f"{result['new_groups']} newly placed)"
    )


# --------------------------------------------------------------------------- models and training


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


def _train(stage: str, backbone: str | None, resume: bool) -> None:
    from vt_models.classify import steps
    from vt_models.models.weights import WeightsError
    from vt_models.train import distributed as dist
    from vt_models.train.engine import NonFiniteError
    from vt_models.train.runner import TrainingError

    cfg = config()
    tc = getattr(cfg, stage)
    names = [backbone] if backbone else tc.backbones
    for name in names:
        try:
            summary = steps.train(cfg, stage, name, resume=resume, progress=state.progress)
        except (TrainingError, WeightsError, NonFiniteError, FileNotFoundError, ValueError) as exc:
            raise _fail(f"{stage} {name}: {exc}") from None
        if not dist.is_main():
            continue
        typer.echo(
            f"{stage} {name}: best val macro-F1 {summary.best_score:.4f} at epoch {summary.result.best_epoch + 1} "
            f"-> {summary.best_path} (metrics {summary.metrics_path}"
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
        raise _fail(f"--stage must be train or pretrain, got {stage!r}")
    ec = cfg.evaluate
    names = [backbone] if backbone else getattr(cfg, stage).backbones
    for name in names:
        try:
            done = steps.evaluate(cfg, name, stage, checkpoint, out)
        except (CheckpointError, FileNotFoundError, ValueError) as exc:
            raise _fail(f"evaluate {name}: {exc}; run `vt {stage} -b {name}` first?") from None
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
            raise _fail(f"cv {name}: {exc}") from None
        typer.echo(
            f"cv {name}: macro-F1 {out['mean_macro_f1']:.3f} +/- {out['std_macro_f1']:.3f}, "
            f"accuracy {out['mean_accuracy']:.3f} +/- {out['std_accuracy']:.3f} over {int(out['folds'])} folds"
        )


@app.command()
def promote(
    backbone: Annotated[
        str | None, typer.Option("--backbone", "-b", help="candidate (default: best validation score)")
    ] = None,
) -> None:
    """Register the candidate as `challenger`; `champion` only goes to a model that clears the floor (bootstrap CI over
    test videos above the majority-class baseline, registry.min_score) and beats the champion on the test split."""
    from vt_models.classify import steps
    from vt_models.promotion import PromotionError

    try:
        d = steps.promote(config(), backbone)
    except PromotionError as exc:
        raise _fail(str(exc)) from None
    verdict = "PROMOTED to champion" if d.promoted else "kept as challenger"
    typer.echo(f"promote: {d.model_name} v{d.candidate_version} ({d.candidate_backbone}) {verdict}: {d.reason}")


@app.command()
def predict(
    videos: Annotated[list[Path], typer.Argument(help="video files")],
    model: Annotated[
        str, typer.Option("--model", "-m", help="models:/NAME@ALIAS, models:/NAME/VERSION or a checkpoint file")
    ] = "models:/vt-video-classifier@champion",
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1)] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines instead of a table")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda | auto")] = "cpu",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", "-o", help="detectors: folder for <video>.tracks.mp4 and .tracks.json (default: predictions/)"
        ),
    ] = None,
) -> None:
    """Top-k labels with probabilities per video; a bad file gets its own error, the others are still predicted.

    With a detector (e.g. -m models:/vt-video-detector@champion) each video gets an annotated MP4 and a JSON
    of its tracks.
    """
    from vt_models import tracking
    from vt_models.models.weights import resolve_mlflow_checkpoint, weights_kind
    from vt_models.predict import VideoPredictor
    from vt_models.train.engine import resolve_device

    try:
        if weights_kind(model) == "mlflow":
            tracking.configure()
            path = resolve_mlflow_checkpoint(model)
        else:
            path = Path(model)
        from vt_models.detect.predict import DetectorPredictor
        from vt_models.models.checkpoint import load_checkpoint

        ckpt = load_checkpoint(path)
        builder = DetectorPredictor if ckpt.get("task") == "detect" else VideoPredictor
        predictor = builder(ckpt, device=str(resolve_device(device)))
    except Exception as exc:  # noqa: BLE001 - any load failure is a usage error here
        raise _fail(f"cannot load model {model}: {exc}") from None
    if isinstance(predictor, DetectorPredictor):
        return _predict_detection(predictor, videos, out or Path("predictions"), as_json)
    failed = 0
    for video in videos:
        try:
            if not video.is_file():
                raise FileNotFoundError("no such file")
            top = predictor.top_k(predictor.predict_video(video), top_k)
            record = {"video": str(video), "top_k": [{"label": lab, "probability": round(p, 4)} for lab, p in top]}
        except Exception as exc:  # noqa: BLE001 - one bad file must not stop the others
            failed += 1
            record = {
                "video": str(video),
                "error": f"{exc} (check that it is a readable video; `vt probe` explains why not)",
            }
        if as_json:
            typer.echo(json.dumps(record))
        elif "error" in record:
            typer.secho(f"{video}: ERROR {record['error']}", fg=typer.colors.RED)
        else:
            typer.echo(f"{video}: " + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in record["top_k"]))
    if failed:
        raise typer.Exit(1)


def _predict_detection(predictor: Any, videos: list[Path], out: Path, as_json: bool) -> None:
    from vt_models.detect.predict import predict_detection

    results = predict_detection(predictor, videos, out)
    for r in results:
        if as_json:
            typer.echo(json.dumps(r))
        elif "error" in r:
            typer.secho(
                f"{r['video']}: ERROR {r['error']} (check that it is a readable video; `vt probe` explains why not)",
                fg=typer.colors.RED,
            )
        else:
            typer.echo(f"{r['video']}: {r['tracks']} track(s) -> {r['mp4']}, {r['json']}")
    if any("error" in r for r in results):
        raise typer.Exit(1)


# --------------------------------------------------------------------------- detection


def _detectors(name: str | None) -> list[str]:
    return [name] if name else config().detect.detectors


@detect_app.command("models")
def detect_models() -> None:
    """Registered detectors: family, parameters, weight sources."""
    from torchvision.models import get_model_weights

    from vt_models.models.registry import list_detectors

    for spec in list_detectors():
        enum = get_model_weights(spec.name)
        params = enum.DEFAULT.meta.get("num_params", 0)
        sources = ", ".join(
            ["none", "default/coco", *(m for m in enum.__members__ if m != "DEFAULT"), "file", "models:/"]
        )
        typer.echo(f"{spec.name:<40} {spec.family:<12} {params / 1e6:5.1f}M  weights: {sources}")


@detect_app.command("probe")
def detect_probe() -> None:
    """Probe detect.dataset's videos and validate their box annotations; broken ones are quarantined."""
    from vt_models.detect import steps

    cfg = config()
    summary = _run(steps.probe, cfg, progress=state.progress)  # broken annotations are quarantined, not raised
    typer.echo(str(summary))
    if summary.quarantined:
        typer.echo(
            f"detect probe: see {summary.quarantine} for the reasons; fix the videos or their annotations and re-run"
        )
    if not summary.usable:
        raise _fail(f"no usable annotated video in {cfg.dataset(cfg.detect.dataset).raw}", code=1)


@detect_app.command("extract")
def detect_extract() -> None:
    """Frames with their boxes (aligned with the sampled, resized frames), incrementally."""
    from vt_models.detect import steps

    typer.echo(str(_run(steps.extract, config(), progress=state.progress)))


@detect_app.command("split")
def detect_split() -> None:
    """Grouped, stratified splits of the annotated videos."""
    from vt_models.data.split import format_counts
    from vt_models.detect import steps

    cfg = config()
    typer.echo(format_counts(_run(steps.split, cfg)))
    typer.echo(f"detect split: wrote {cfg.detect_splits_path()}")


@detect_app.command("train")
def detect_train(
    detector: Annotated[
        str | None, typer.Option("--detector", "-d", help="one detector (default: all of detect.detectors)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint after a crash")] = False,
) -> None:
    """Fine-tune detectors on the annotated frames (same loop, checkpoints and MLflow tracking as classification)."""
    from vt_models.detect.data import DetectionDataError
    from vt_models.detect.runner import train_detector
    from vt_models.models.weights import WeightsError
    from vt_models.train import distributed as dist
    from vt_models.train.engine import NonFiniteError
    from vt_models.train.runner import TrainingError

    cfg = config()
    for name in _detectors(detector):
        try:
            summary = train_detector(cfg, name, resume=resume, progress=state.progress)
        except (TrainingError, WeightsError, NonFiniteError, DetectionDataError, FileNotFoundError, ValueError) as exc:
            raise _fail(f"detect train {name}: {exc}") from None
        if dist.is_main():
            typer.echo(
                f"detect train {name}: best val mAP {summary.best_score:.4f} at epoch {summary.result.best_epoch + 1} "
                f"-> {summary.best_path}" + (f" (MLflow run {summary.run_id})" if summary.run_id else "")
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

    cfg = config()
    for name in _detectors(detector):
        try:
            m = steps.evaluate(cfg, name)
        except (CheckpointError, FileNotFoundError, ValueError) as exc:
            raise _fail(f"detect evaluate {name}: {exc}; run `vt detect train -d {name}` first?") from None
        typer.echo(
            f"detect evaluate {name}: mAP {m['map']:.3f}, mAP@.5 {m['map_50']:.3f}, precision {m['precision']:.3f}, "
            f"recall {m['recall']:.3f}; MOTA {m['tracked_mota']:.3f} tracked vs {m['untracked_mota']:.3f} untracked, "
            f"IDF1 {m['tracked_idf1']:.3f} vs {m['untracked_idf1']:.3f} -> {m['out_dir']}"
        )


@detect_app.command("promote")
def detect_promote(
    detector: Annotated[
        str | None, typer.Option("--detector", "-d", help="candidate (default: best validation mAP)")
    ] = None,
) -> None:
    """Register the candidate detector as `challenger`; `champion` only goes to a detector that clears the floor
    (bootstrap CI of test mAP over videos above 0, detect.min_map) and has a better test mAP."""
    from vt_models.detect import steps
    from vt_models.promotion import PromotionError

    try:
        d = steps.promote(config(), detector)
    except PromotionError as exc:
        raise _fail(str(exc)) from None
    verdict = "PROMOTED to champion" if d.promoted else "kept as challenger"
    typer.echo(f"detect promote: {d.model_name} v{d.candidate_version} ({d.candidate_backbone}) {verdict}: {d.reason}")


@report_app.command("transfer")
def report_transfer() -> None:
    """Scratch vs linear probe vs full fine-tuning from the source model, at several training-set sizes."""
    from vt_models.classify import steps
    from vt_models.eval.transfer import REPORT_DIR, to_markdown

    rows = steps.transfer(config(), progress=state.progress)
    typer.echo(to_markdown(rows, list(rows[0])))
    typer.echo(f"report: {REPORT_DIR / 'transfer.md'}")


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
    from vt_models.eval.fusion import fusion_report

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
        raise _fail(f"report fusion: {exc}") from None
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
) -> None:
    """Train on the source domain (params `pretrain`) and register the model: the start of transfer."""
    _train("pretrain", backbone, resume)


@app.command()
def train(
    backbone: Annotated[
        str | None, typer.Option("--backbone", "-b", help="one backbone (default: all of train.backbones)")
    ] = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue from the last checkpoint after a crash")] = False,
) -> None:
    """Fine-tune on the target data set (params `train`); every run is tracked in MLflow."""
    _train("train", backbone, resume)


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

    _run(bench_train, config(), backbones or ["resnet18", "r2plus1d_18"], batches, typer.echo)


# --------------------------------------------------------------------------- demo


def _tool_env() -> dict[str, str]:
    """Environment in which DVC's stage commands find this interpreter's ``vt``."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _dvc(*args: str) -> None:
    dvc = shutil.which("dvc", path=_tool_env()["PATH"])
    if dvc is None:
        raise _fail("dvc is not installed in this environment: pip install -e . from the project root")
    typer.secho(f"$ dvc {' '.join(args)}", bold=True)
    if subprocess.run([dvc, *args], env=_tool_env(), check=False).returncode != 0:
        raise _fail(f"`dvc {' '.join(args)}` failed (see its output above)", code=1)


@app.command()
def demo(
    push: Annotated[bool, typer.Option(help="push data to the DVC remote at the end")] = True,
) -> None:
    """The main job on the embedded defaults: `dvc repro` the pipeline, push the data, summarise."""
    cfg = config()
    if not Path(".dvc").is_dir():
        raise _fail("no .dvc folder here: run from the project root (a git clone of vt-models)")
    _dvc("repro")
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
    from vt_models import tracking

    typer.echo(
        f"\nMLflow runs: {tracking.tracking_uri()}\n"
        f"  open the UI with: mlflow ui --backend-store-uri {tracking.tracking_uri()} (serves http://127.0.0.1:5000)\n"
        "demo: done. `dvc status` is clean; `dvc dag` shows the pipeline, `dvc metrics show` the scores."
    )


def format_training_table(cfg: Config) -> str:
    """One row per backbone from the DVC metrics files: validation, test, CV, cost."""
    from vt_models.eval.cv import cv_dir

    load = _json_or_empty
    f = _num
    headers = (
        "backbone",
        "val F1",
        "test acc",
        "test recall",
        "test F1",
        "CV F1 (mean+/-std)",
        "params",
        "GFLOPs",
        "latency ms",
        "train s",
    )
    rows = []
    for name in cfg.train.backbones:
        tr, ev, cvm = (
            load(cfg.run_dir("train", name) / "metrics.json"),
            load(cfg.eval_dir(name) / "metrics.json"),
            load(cv_dir(name) / "metrics.json"),
        )
        cv_txt = f"{cvm['mean_macro_f1']:.3f} +/- {cvm['std_macro_f1']:.3f}" if "mean_macro_f1" in cvm else "-"
        rows.append(
            (
                name,
                f(tr, "val_macro_f1"),
                f(ev, "accuracy"),
                f(ev, "macro_recall"),
                f(ev, "macro_f1"),
                cv_txt,
                f"{tr['params_total'] / 1e6:.1f}M" if "params_total" in tr else "-",
                f(ev, "gflops_per_clip", "{:.2f}"),
                f(ev, "latency_ms", "{:.1f}"),
                f(tr, "train_seconds", "{:.0f}"),
            )
        )
    return text_table(headers, rows)


def format_source_table(cfg: Config) -> str:
    """The source (pretraining) models on the source test split, with the static-clip probe; '' when not evaluated."""
    headers = ("backbone", "modality", "test videos", "test acc", "test F1", "static acc", "chance")
    rows = []
    for name in cfg.pretrain.backbones:
        ev = _json_or_empty(cfg.eval_dir(name, "pretrain") / "metrics.json")
        if ev:
            rows.append(
                (
                    name,
                    cfg.pretrain.modality,
                    ev.get("videos", "-"),
                    _num(ev, "accuracy"),
                    _num(ev, "macro_f1"),
                    _num(ev, "motion_static_accuracy"),
                    _num(ev, "motion_chance"),
                )
            )
    return text_table(headers, rows) if rows else ""


MOTION_KEYS = ("static_accuracy", "reversed_accuracy", "reversed_changed", "shuffled_accuracy", "chance", "majority")


def motion_summary(m: dict[str, Any]) -> str:
    """One line of motion-probe figures from an evaluation's metrics."""
    f = lambda key: _num(m, f"motion_{key}")  # noqa: E731
    return (
        f"does it look at motion? accuracy on static clips {f('static_accuracy')}, on reversed clips against swapped "
        f"labels {f('reversed_accuracy')} (prediction changed for {f('reversed_changed')} of videos), on shuffled "
        f"clips {f('shuffled_accuracy')}; chance {f('chance')}, majority class {f('majority')}"
    )


def format_motion_table(cfg: Config) -> str:
    """One row per evaluated backbone with motion probes: test accuracy next to the probes' scores; '' when none."""
    headers = (
        "backbone",
        "test acc",
        "static acc",
        "reversed acc",
        "reversed changed",
        "shuffled acc",
        "chance",
        "majority",
        "warning",
    )
    rows, warnings = [], []
    for name in cfg.train.backbones:
        ev = _json_or_empty(cfg.eval_dir(name) / "metrics.json")
        if "motion_static_accuracy" in ev:
            rows.append(
                (
                    name,
                    _num(ev, "accuracy"),
                    *(_num(ev, f"motion_{k}") for k in MOTION_KEYS),
                    "reads scenery?" if ev.get("motion_warning") else "-",
                )
            )
        if ev.get("motion_warning"):
            warnings.append(f"WARNING {name}: {ev['motion_warning']}")
    return "\n".join([text_table(headers, rows), *warnings]) if rows else ""


def _json_or_empty(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _num(d: dict[str, Any], key: str, fmt: str = "{:.3f}") -> str:
    """A metric formatted for a table, ``-`` when that file or key is missing."""
    return fmt.format(d[key]) if key in d else "-"


def text_table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """Left-aligned columns, two spaces apart, for the terminal."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]
    )


def format_detection_table(cfg: Config) -> str:
    """One row per detector: test mAP, precision/recall, MOT with vs without tracking, speed, size."""
    headers = (
        "detector",
        "val mAP",
        "test mAP",
        "mAP@.5",
        "precision",
        "recall",
        "MOTA trk/raw",
        "IDF1 trk/raw",
        "ms/frame",
        "params",
    )
    rows = []
    for name in cfg.detect.detectors:
        tr, ev = (
            _json_or_empty(cfg.run_dir("detect", name) / "metrics.json"),
            _json_or_empty(cfg.detect_eval_dir(name) / "metrics.json"),
        )
        f = _num
        rows.append(
            (
                name,
                f(tr, "val_map"),
                f(ev, "map"),
                f(ev, "map_50"),
                f(ev, "precision"),
                f(ev, "recall"),
                f"{f(ev, 'tracked_mota', '{:.2f}')}/{f(ev, 'untracked_mota', '{:.2f}')}",
                f"{f(ev, 'tracked_idf1', '{:.2f}')}/{f(ev, 'untracked_idf1', '{:.2f}')}",
                f(ev, "ms_per_frame", "{:.0f}"),
                f"{ev['params'] / 1e6:.1f}M" if "params" in ev else "-",
            )
        )
    return text_table(headers, rows)


def format_promotion(path: Path = Path("reports") / "promotion.json") -> str:
    """The last gate decision for the summary: what to ship, or "nothing to ship yet" and why."""
    from vt_models.promotion import NOTHING_TO_SHIP

    if not path.is_file():
        return f"no promotion decision yet ({path} missing)"
    d = json.loads(path.read_text())
    if "champion_after" in d:
        champ = d["champion_after"]
    else:  # a record from before the floor existed
        champ = d["candidate_version"] if d["promoted"] else d["champion_version"]
    if d["promoted"]:
        state_txt = "promoted to champion"
    else:
        state_txt = "NOT promoted (" + ("no champion" if champ is None else "champion unchanged") + ")"
    head = f"candidate {d['model_name']} v{d['candidate_version']} ({d['candidate_backbone']}): {state_txt}"
    if champ is None:
        reason = d["reason"] if d["reason"].startswith(NOTHING_TO_SHIP) else f"{NOTHING_TO_SHIP}: {d['reason']}"
        return f"{head}\n  {reason}\n  ship: nothing (no `champion` alias in the registry)"
    return f"{head}\n  {d['reason']}\n  ship: models:/{d['model_name']}@champion (version {champ})"


def _trace_imports(dest: Path) -> None:
    """Append this command and the vt_models source files it ran to ``dest`` (one JSON line)."""
    root = Path(__file__).resolve().parent.parent
    files = sorted(
        Path(m.__file__).resolve().relative_to(root).as_posix()
        for name, m in list(sys.modules.items())
        if name.split(".")[0] == "vt_models" and getattr(m, "__file__", None)
    )
    with dest.open("a") as f:
        f.write(json.dumps({"argv": sys.argv[1:], "files": files}) + "\n")


def main() -> None:
    # VT_TRACE_IMPORTS=file: record the code each command runs, so dvc.yaml's deps can be checked
    # against it (tests/test_dvc.py): a stage must list every file that can change its outputs.
    if trace := os.environ.get("VT_TRACE_IMPORTS"):
        import atexit

        atexit.register(_trace_imports, Path(trace))
    app()


if __name__ == "__main__":
    main()

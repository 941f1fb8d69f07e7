"""Data commands: the configuration, the sample data, probe -> extract -> split of a data set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vt_models.cli.app import (
    app,
    config,
    config_app,
    data_app,
    fail,
    run,
    section,
    state,
)
from vt_models.config import to_yaml

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
        run(cfg.dataset, dataset)
        summary = run(steps.probe, cfg, dataset, progress=state.progress)
        raw_dir = cfg.dataset(dataset).raw
    else:  # a folder outside params (or a data set's folder with other outputs)
        labelled = True
        if dataset:
            cfg = config()
            ds = run(cfg.dataset, dataset)
            raw_dir, labels, out = raw_dir or ds.raw, labels or ds.labels_csv, out or cfg.probe_dir(dataset)
            labelled = ds.labelled
        if raw_dir is None or out is None:
            raise fail("give RAW_DIR and --out OUT_DIR, or --dataset NAME")
        summary = run(
            probe_dataset,
            raw_dir,
            out,
            section("probe", ProbeConfig),
            labels,
            progress=state.progress,
            labelled=labelled,
        )
    typer.echo(str(summary))
    if summary.quarantined:
        typer.echo(f"probe: see {summary.quarantine} for the reasons; fix or remove those files and re-run")
    if not summary.usable:
        raise fail(f"no usable video in {raw_dir}", code=1)


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
        run(cfg.dataset, dataset)
        out = cfg.frames_dir(dataset)
        summary = run(steps.extract, cfg, dataset, progress=state.progress)
    else:
        if manifest is None or raw_dir is None or out is None:
            cfg = config()
            ds = run(cfg.dataset, dataset)
            manifest = manifest or cfg.probe_dir(dataset) / "manifest.csv"
            raw_dir, out = raw_dir or ds.raw, out or cfg.frames_dir(dataset)
        summary = run(
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
        run(cfg.dataset, dataset)
        out = cfg.splits_path(dataset)
        result = run(steps.split, cfg, dataset, redraw)
    else:
        seed = 0
        if frames is None or out is None:
            cfg = config()
            run(cfg.dataset, dataset)
            frames, out, seed = frames or cfg.frames_dir(dataset), out or cfg.splits_path(dataset), cfg.seed
        index = run(load_index, frames)
        result = run(split_dataset, index, out, section("split", SplitConfig).of(dataset), seed, redraw)
    typer.echo(format_counts(result))
    typer.echo(
        f"split: wrote {out} ({result['kept_groups']} recording group(s) kept their split, "
        f"{result['new_groups']} newly placed)"
    )

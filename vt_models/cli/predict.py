"""`vt predict`: top-k labels (classifiers) or annotated tracks (detectors) for video files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from vt_models.cli.app import (
    app,
    fail,
)


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
    from vt_models.detect.predict import DetectorPredictor
    from vt_models.io import mlflow as tracking
    from vt_models.models.weights import weights_kind
    from vt_models.serving.predictors import load_predictor
    from vt_models.train.runtime import resolve_device

    try:
        if weights_kind(model) == "mlflow":
            tracking.configure()
        predictor = load_predictor(model, device=str(resolve_device(device)))
    except Exception as exc:  # noqa: BLE001 - any load failure is a usage error here
        raise fail(f"cannot load model {model}: {exc}") from None
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

"""Log a checkpoint to MLflow as a pyfunc model with signature and input example."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import vt_models
from vt_models.models.checkpoint import load_checkpoint

PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


def signature_for(classes: list[str], task: str = "classify") -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    # per row one of them: the video's bytes (base64), or a path under the served folder (VT_SERVE_ROOT)
    inputs = Schema([ColSpec("string", "path", required=False), ColSpec("string", "video_b64", required=False)])
    if task == "detect":
        outputs = [
            ColSpec("string", "path"),
            ColSpec("long", "num_tracks"),
            ColSpec("string", "tracks"),
            ColSpec("string", "error"),
        ]
        return ModelSignature(inputs=inputs, outputs=Schema(outputs))
    outputs = [ColSpec("string", "path"), ColSpec("string", "label"), ColSpec("double", "probability")]
    outputs += [ColSpec("double", f"p_{c}") for c in classes]
    outputs.append(ColSpec("string", "error"))
    return ModelSignature(inputs=inputs, outputs=Schema(outputs))


def log_video_model(
    checkpoint: Path | str,
    example_video: Path | str | None = None,
    registered_model_name: str | None = None,
    name: str = "model",
) -> Any:
    """Log inside the active run; returns MLflow's ModelInfo (``.model_uri``, ``.registered_model_version``)."""
    import shutil
    import tempfile

    import mlflow
    import pandas as pd
    import torch

    ckpt = load_checkpoint(checkpoint)
    # the artifact keeps its file name: always call it checkpoint.pt so loaders can find it
    staging = Path(tempfile.mkdtemp(prefix="vt-model-"))
    checkpoint = shutil.copy(checkpoint, staging / "checkpoint.pt")
    example = pd.DataFrame({"path": [str(Path(example_video).resolve())]}) if example_video else None
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=str(PYFUNC_CODE),
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(Path(vt_models.__file__).parent)],
        signature=signature_for(list(ckpt["classes"]), ckpt.get("task", "classify")),
        input_example=example,
        # explicit requirements: inferring them would load the model in a subprocess
        pip_requirements=[
            f"torch=={torch.__version__.split('+')[0]}",
            "torchvision",
            "av",
            "numpy",
            "pandas",
            "pillow",
            "pydantic",
            "pyyaml",
            "mlflow",
        ],
        registered_model_name=registered_model_name,
    )
    shutil.rmtree(staging, ignore_errors=True)
    return info

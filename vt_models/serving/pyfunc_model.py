"""The MLflow pyfunc model, logged as code (``mlflow.models.set_model``), so loading it never
unpickles anything: the weights are a ``torch.load(weights_only=True)`` checkpoint artifact.

Input: a DataFrame with a ``path`` column of video files. Output: one row per video with
``label``, ``probability``, one ``p_<class>`` column per class, and ``error`` (empty when fine):
a bad file gets its error while the other files are still predicted. A detector's checkpoint
(``task: detect``) gives ``num_tracks`` and ``tracks`` (the JSON of :class:`~vt_models.detect.predict.VideoTracks`).
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd


class VideoClassifierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from vt_models.models.checkpoint import load_checkpoint
        from vt_models.serving.predictors import is_detector, predictor_for

        ckpt = load_checkpoint(context.artifacts["checkpoint"])
        self.task = "detect" if is_detector(ckpt) else "classify"
        self.predictor = predictor_for(ckpt)

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            paths = model_input["path"].tolist() if "path" in model_input else model_input.iloc[:, 0].tolist()
        else:
            paths = list(model_input)
        if self.task == "detect":
            return self._detect(paths)
        rows = []
        classes = self.predictor.classes
        for path in paths:
            row: dict[str, Any] = {"path": str(path), "label": "", "probability": float("nan"), "error": ""}
            try:
                probs = self.predictor.predict_video(path)
                best = int(probs.argmax())
                row.update(label=classes[best], probability=float(probs[best]))
                row.update({f"p_{c}": float(p) for c, p in zip(classes, probs, strict=True)})
            except Exception as exc:  # noqa: BLE001 - one bad file must not fail the batch
                row["error"] = f"{type(exc).__name__}: {exc}"
                row.update({f"p_{c}": float("nan") for c in classes})
            rows.append(row)
        return pd.DataFrame(rows, columns=["path", "label", "probability", *[f"p_{c}" for c in classes], "error"])

    def _detect(self, paths: list[Any]) -> pd.DataFrame:
        import json

        rows = []
        for path in paths:
            row: dict[str, Any] = {"path": str(path), "num_tracks": 0, "tracks": "", "error": ""}
            try:
                tracks = self.predictor.track_video(path)[0].to_json()
                row.update(num_tracks=len(tracks["tracks"]), tracks=json.dumps(tracks))
            except Exception as exc:  # noqa: BLE001 - one bad file must not fail the batch
                row["error"] = f"{type(exc).__name__}: {exc}"
            rows.append(row)
        return pd.DataFrame(rows, columns=["path", "num_tracks", "tracks", "error"])


mlflow.models.set_model(VideoClassifierModel())

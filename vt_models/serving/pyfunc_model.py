"""The MLflow pyfunc model, logged as code (``mlflow.models.set_model``), so loading it never
unpickles anything: the weights are a ``torch.load(weights_only=True)`` checkpoint artifact.

Input: a DataFrame with, per row, either ``video_b64`` (the video file's bytes, base64) or ``path`` (a
file under the folder ``VT_SERVE_ROOT`` names; with none set, no path is read). See
:mod:`vt_models.serving.inputs` for the checks. Output: one row per input with ``label``,
``probability``, one ``p_<class>`` column per class, and ``error`` (empty when fine): a bad row gets its
error while the other rows are still predicted. A detector's checkpoint (``task: detect``) gives
``num_tracks`` and ``tracks`` (the JSON of :class:`~vt_models.detect.predict.VideoTracks`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd


class VideoClassifierModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
        from vt_models.models.checkpoint import load_checkpoint
        from vt_models.serving.inputs import ServePolicy
        from vt_models.serving.predictors import is_detector, predictor_for

        ckpt = load_checkpoint(context.artifacts["checkpoint"])
        self.task = "detect" if is_detector(ckpt) else "classify"
        self.predictor = predictor_for(ckpt)
        # the server's own settings (env, or the loader's model_config), read once: requests cannot change them
        self.policy = ServePolicy.from_config(getattr(context, "model_config", None))

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            frame = model_input
            if "path" not in frame and "video_b64" not in frame:  # an unnamed single column: paths
                frame = pd.DataFrame({"path": frame.iloc[:, 0]})
        else:
            frame = pd.DataFrame({"path": list(model_input)})
        rows = [
            (r.get("path"), r.get("video_b64")) for r in frame.reindex(columns=["path", "video_b64"]).to_dict("records")
        ]
        if self.task == "detect":
            return self._detect(rows)
        classes = self.predictor.classes
        empty = {"label": "", "probability": float("nan"), **{f"p_{c}": float("nan") for c in classes}}

        def classify(video: Path, name: str) -> dict[str, Any]:
            probs = self.predictor.predict_video(video)
            best = int(probs.argmax())
            return {
                "label": classes[best],
                "probability": float(probs[best]),
                **{f"p_{c}": float(p) for c, p in zip(classes, probs, strict=True)},
            }

        out = self._each(rows, classify, empty)
        return pd.DataFrame(out, columns=["path", "label", "probability", *[f"p_{c}" for c in classes], "error"])

    def _detect(self, rows: list[tuple[Any, Any]]) -> pd.DataFrame:
        import json

        def detect(video: Path, name: str) -> dict[str, Any]:
            # named as the client sent it: a posted video's temporary file is the server's business
            tracks = {**self.predictor.track_video(video)[0].to_json(), "video": name}
            return {"num_tracks": len(tracks["tracks"]), "tracks": json.dumps(tracks)}

        out = self._each(rows, detect, {"num_tracks": 0, "tracks": ""})
        return pd.DataFrame(out, columns=["path", "num_tracks", "tracks", "error"])

    def _each(
        self, rows: list[tuple[Any, Any]], fn: Callable[[Path, str], dict[str, Any]], empty: dict[str, Any]
    ) -> list[dict[str, Any]]:
        """``fn(video file, its name in the request)`` on each row; a bad row gets its error, the others are
        still predicted."""
        from vt_models.serving.inputs import request_video

        out = []
        for path, b64 in rows:
            row = {"path": path if isinstance(path, str) else "", **empty, "error": ""}
            try:
                with request_video(self.policy, path, b64) as video:
                    row.update(fn(video, row["path"] or "video_b64"))
            except Exception as exc:  # noqa: BLE001 - one bad row must not fail the batch
                row["error"] = f"{type(exc).__name__}: {exc}"
            out.append(row)
        return out


mlflow.models.set_model(VideoClassifierModel())

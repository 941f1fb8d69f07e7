"""Predict: the champion's top-k labels for an uploaded video or one from the test split; with a
registered detector, its tracks drawn on the video."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import data as D
from dashboard import ui

UPLOAD, TEST = "Upload a video", "Pick one from the test split"
CLASSIFIER, DETECTOR = "Classifier", "Detector"
UPLOAD_DIR = Path(tempfile.gettempdir()) / "vt-dashboard-uploads"

ctx = ui.context()
st.title("Predict")

registry = ctx.model_name
detector_registry = D.detector_model_name(ctx.cfg)
if not D.load_versions(ctx.uri, detector_registry).empty:
    if st.radio("Task", [CLASSIFIER, DETECTOR], horizontal=True, key="pred_task") == DETECTOR:
        registry = detector_registry
versions = D.load_versions(ctx.uri, registry)
if versions.empty:
    st.warning(f"No registered `{registry}` model in `{D.shown_uri(ctx.uri)}` to predict with.")
    ui.hint(
        f"Run `{D.CMD_PROMOTE}` (after `{D.CMD_TRAIN}` and `{D.CMD_EVALUATE}`, or `{D.CMD_DEMO}`) "
        "to register a champion."
    )
    st.stop()

# Resolve the alias to a version now, so the cached model follows the alias when it moves.
choices: dict[str, int] = {}
for alias in ("champion", "challenger"):
    row = D.alias_row(versions, alias)
    if row is not None:
        choices[f"@{alias} (v{row['version']}, {row['backbone']})"] = int(row["version"])
choices.update({f"v{v} ({b})": int(v) for v, b in zip(versions["version"], versions["backbone"], strict=True)})
if D.alias_row(versions, "champion") is None:
    ui.hint(f"No champion yet (`{D.CMD_PROMOTE}` sets it); predicting with a plain version instead.")
model_col, k_col = st.columns([3, 1])
model_label = model_col.selectbox("Model", list(choices), key="pred_model")
model_uri = f"models:/{registry}/{choices[model_label]}"

try:
    with st.spinner(f"Loading {model_uri}..."):
        predictor = D.load_predictor(ctx.uri, model_uri)
except Exception as exc:  # noqa: BLE001 - any load failure is shown, the page stays usable
    st.error(f"Cannot load {model_uri}: {exc}")
    st.stop()

is_detector = D.is_detector(predictor)
if not is_detector:
    top_k = k_col.number_input("Top k", 1, len(predictor.classes), min(3, len(predictor.classes)), key="pred_topk")
source = st.radio("Video", [UPLOAD, TEST], horizontal=True, key="pred_source")


@st.cache_data(show_spinner=False, max_entries=32)
def predict(model: str, content_key: str, _path: str, _predictor: Any) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, frames the model saw); cached by model and file content, not by temp path."""
    frames = _predictor.frames_from_video(_path)
    return _predictor.predict_frames(frames), frames


@st.cache_data(show_spinner=False, max_entries=16)
def track(model: str, content_key: str, _path: str, _predictor: Any) -> tuple[bytes, dict[str, Any]]:
    """(annotated MP4, tracks JSON) of a detector on one video; cached by model and file content."""
    out = UPLOAD_DIR / "tracks" / hashlib.sha1(f"{model}:{content_key}".encode()).hexdigest()
    out.parent.mkdir(parents=True, exist_ok=True)
    result = _predictor.annotate(_path, out.with_suffix(".mp4"), out.with_suffix(".json"))
    return out.with_suffix(".mp4").read_bytes(), result.to_json()


@st.cache_data(show_spinner=False, max_entries=64)
def probe(content_key: str, _path: str) -> str | None:
    return D.probe_video(Path(_path))


def video_from_upload() -> tuple[Path, str, str | None] | None:
    """(file on disk, cache key, true label); None after showing why there is nothing to predict."""
    from vt_models.config import VIDEO_EXTENSIONS

    # No `type=` filter on the widget: Streamlit would answer a wrong type with an exception; our own
    # check below answers with a sentence that names the accepted types.
    up = st.file_uploader(
        f"Video file (up to {D.MAX_UPLOAD_MB} MB)",
        max_upload_size=D.MAX_UPLOAD_MB,
        key="pred_upload",
        help="Accepted: " + " ".join(VIDEO_EXTENSIONS),
    )
    if up is None:
        st.caption("Drop a video here, or pick one from the test split.")
        return None
    check = D.check_upload(up.name, up.size)
    if not check.ok:
        st.error(check.message, icon=":material/error:")
        return None
    content = up.getvalue()
    digest = hashlib.sha1(content).hexdigest()
    # One file per content (reruns reuse it); keep the suffix: decoders pick the container by it.
    tmp = UPLOAD_DIR / f"{digest}{Path(up.name).suffix.lower()}"
    if not tmp.is_file():
        UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(content)
    problem = probe(tmp.name, str(tmp))
    if problem is not None:
        st.error(
            f"{up.name} is not a usable video: {problem}. Check that it plays, re-encode it (e.g. H.264 MP4) "
            "and upload it again.",
            icon=":material/error:",
        )
        return None
    return tmp, digest, None


def video_from_test_split() -> tuple[Path, str, str | None] | None:
    cfg = ctx.cfg
    if cfg is None:
        st.error(f"Cannot read the project's params: {ctx.cfg_error}")
        return None
    ds = cfg.train.dataset
    splits = D.read_json(cfg.splits_path(ds))
    if splits is None or not splits.get("splits", {}).get(cfg.evaluate.split):
        ui.hint(
            f"No `{cfg.splits_path(ds)}` with a {cfg.evaluate.split} split: run `{D.CMD_DEMO}` (or `vt split -d {ds}`)."
        )
        return None
    paths = splits["splits"][cfg.evaluate.split]
    rel = st.selectbox(f"{cfg.evaluate.split} video", paths, key="pred_test_video")
    path = cfg.datasets[ds].raw / rel
    if not path.is_file():
        st.error(f"{path} is not here: `dvc pull` fetches the raw videos.")
        return None
    stat = path.stat()
    return path, f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}", Path(rel).parent.name or None


picked = video_from_upload() if source == UPLOAD else video_from_test_split()
if picked is None:
    st.stop()
path, key, truth = picked
if is_detector:
    try:
        with st.spinner("Detecting and tracking..."):
            clip, tracks = track(model_uri, key, str(path), predictor)
    except Exception as exc:  # noqa: BLE001 - a file that probes but fails to decode still gets a message
        st.error(f"Could not run the detector on {path.name}: {exc}")
        st.stop()
    video_col, tracks_col = st.columns([1, 1])
    with video_col:
        st.video(clip, format="video/mp4", loop=True, muted=True)
    with tracks_col:
        st.metric("Tracks", len(tracks["tracks"]), f"{tracks['frames_processed']} frames", delta_color="off")
        st.dataframe(D.track_table(tracks), hide_index=True, key="pred_tracks")
    st.caption(
        f"model `{model_uri}` ({predictor.ckpt.get('detector')}) · frames sampled as for training, then tracked · "
        f"classes: {', '.join(predictor.classes)}"
    )
    st.stop()
try:
    with st.spinner("Predicting..."):
        probs, frames = predict(model_uri, key, str(path), predictor)
except Exception as exc:  # noqa: BLE001 - a file that probes but fails to sample still gets a message
    st.error(f"Could not predict {path.name}: {exc}")
    st.stop()

top = predictor.top_k(probs, top_k)
best_label, best_p = top[0]
left, right = st.columns([1, 2])
with left:
    st.metric(
        "Predicted label", best_label, f"{best_p:.1%} probability", delta_color="off", delta_arrow="off", border=True
    )
    if truth in predictor.classes:
        (st.success if truth == best_label else st.warning)(f"true label: {truth}")
with right:
    st.dataframe(
        pd.DataFrame(top, columns=["label", "probability"]),
        hide_index=True,
        key="pred_topk_table",
        column_config={
            "probability": st.column_config.ProgressColumn("probability", min_value=0.0, max_value=1.0, format="%.3f")
        },
    )
st.markdown(f"**The {len(frames)} frames the model saw** (sampled and resized exactly as for training)")
st.image(list(frames), width=96, caption=[f"{i + 1}" for i in range(len(frames))])
st.caption(
    f"model `{model_uri}` ({predictor.meta.get('backbone')}) · {predictor.views} clips of {predictor.clip_len} "
    f"frames averaged · classes: {', '.join(predictor.classes)}"
)

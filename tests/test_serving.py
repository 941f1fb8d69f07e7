"""The registered model behind a real `mlflow models serve` (local env manager, 127.0.0.1) reads only
what it should: posted video bytes (size- and type-checked), or files under ``VT_SERVE_ROOT``. A path
outside the root gets one message whether the file exists, does not exist, or is a FIFO that would
block whoever opened it; a symlink out of the root is refused the same way."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest

from vt_models.classify.predict import VideoPredictor
from vt_models.serving.inputs import NO_ROOT, OUTSIDE_ROOT, ServePolicy, container_suffix
from vt_models.serving.package import log_video_model

from .conftest import BIN, free_port, stop, wait_until_up
from .gate_models import untrained_classifier
from .videos import good_mp4

NAME = "vt-serving-test"  # an own registered model: the session's MLflow server is shared
MAX_MB = 0.05  # 52 KB: the tiny test video (about 18 KB) fits, the oversized payload does not


@pytest.fixture(scope="module")
def served(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A tiny classifier registered on the session's server and served by `mlflow models serve`."""
    tmp = tmp_path_factory.mktemp("serving")
    root = tmp / "videos"
    root.mkdir()
    untrained_classifier(tmp / "checkpoint.pt", ["a", "b", "c"])
    video = good_mp4(root / "clip.mp4")
    mlflow.set_tracking_uri(mlflow_server)
    with mlflow.start_run():
        info = log_video_model(tmp / "checkpoint.pt", video, registered_model_name=NAME)
    port = free_port()
    env = dict(
        os.environ,
        PATH=f"{BIN}:{os.environ['PATH']}",
        MLFLOW_TRACKING_URI=mlflow_server,
        VT_SERVE_ROOT=str(root),
        VT_SERVE_MAX_MB=str(MAX_MB),
        TMPDIR=str(tmp / "server-tmp"),  # where posted videos go for their prediction
    )
    (tmp / "server-tmp").mkdir()
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            f"models:/{NAME}/{info.registered_model_version}",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        env=env,
        cwd=tmp,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_up(proc, f"{url}/ping", tmp / "serve.log", 240)
    yield {"url": url, "root": root, "video": video, "tmp": tmp}
    stop(proc)
    log.close()


def invoke(url: str, records: list[dict]) -> list[dict]:
    body = json.dumps({"dataframe_records": records}).encode()
    req = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())["predictions"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_served_model_reads_posted_videos_and_files_under_its_root_only(served: dict) -> None:
    tmp, root, video = served["tmp"], served["root"], served["video"]
    secret = tmp / "secret.mp4"  # a real video outside the root: refused all the same
    good_mp4(secret, seed=1)
    fifo = tmp / "fifo.mp4"
    os.mkfifo(fifo)  # opening it would block the server: a timely answer shows it was never opened
    (root / "escape.mp4").symlink_to(secret)
    (root / "notes.mp4").write_bytes(b"just text")  # inside the root: the operator's own files may say why
    outside = ["/etc/passwd", str(tmp / "no-such-file.mp4"), str(secret), str(fifo), "../secret.mp4", "escape.mp4"]
    started = time.monotonic()
    preds = invoke(
        served["url"],
        [{"path": p} for p in outside]
        + [
            {"path": "clip.mp4"},
            {"path": str(video)},
            {"video_b64": b64(video.read_bytes())},
            {"video_b64": b64(os.urandom(int(MAX_MB * 1024 * 1024) + 1000))},
            {"video_b64": b64(b"root:x:0:0:root:/root:/bin/bash\n")},
            {"video_b64": b64(b"\x00\x00\x00\x18ftypisom" + b"\x00" * 64)},  # an MP4 header, no video inside
            {"path": "notes.mp4"},
            {"path": "clip.mp4", "video_b64": b64(video.read_bytes())},
        ],
    )
    assert time.monotonic() - started < 100, "the FIFO outside the root was opened"
    errors = [p["error"] for p in preds]
    # every path outside the root: the same message, existing or not, file, FIFO or symlink
    assert errors[: len(outside)] == [f"InputRefused: {OUTSIDE_ROOT}"] * len(outside)
    assert "passwd" not in json.dumps(preds[0]["error"]) and preds[0]["label"] == ""
    inside, absolute, posted = preds[len(outside) : len(outside) + 3]
    assert inside["error"] == absolute["error"] == posted["error"] == ""
    # the served prediction is the library's on the same file, for a path and for the posted bytes
    expected = VideoPredictor.from_path(tmp / "checkpoint.pt").predict_video(video)
    for p in (inside, absolute, posted):
        assert [p["p_a"], p["p_b"], p["p_c"]] == pytest.approx(expected.tolist(), abs=1e-5)
        assert p["label"] == ["a", "b", "c"][int(np.argmax(expected))]
    oversized, text, empty_mp4, notes, both = preds[len(outside) + 3 :]
    assert "over the limit of 0.05 MB (VT_SERVE_MAX_MB)" in oversized["error"]
    assert "not a video we read: send MP4/MOV, Matroska/WebM or AVI bytes" in text["error"]
    assert "video_b64 is not a readable video" in empty_mp4["error"] and "vt-serve-" not in empty_mp4["error"]
    assert notes["error"] and "path refused" not in notes["error"], "inside the root, the file's own problem"
    assert "either path or video_b64" in both["error"]
    # no posted video is left behind in the server's temporary folder
    assert not list((tmp / "server-tmp").glob("vt-serve-*"))


def test_policy_defaults_refuse_every_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VT_SERVE_ROOT", raising=False)
    monkeypatch.delenv("VT_SERVE_MAX_MB", raising=False)
    video = good_mp4(tmp_path / "v.mp4")
    policy = ServePolicy.from_config()
    assert policy.root is None and policy.max_bytes == 20 * 1024 * 1024
    with pytest.raises(ValueError, match="path input is off") as refused:
        policy.path(str(video))
    assert str(refused.value) == NO_ROOT
    # the loader's model_config sets the server's root and limit; a bad limit names the variable
    assert ServePolicy.from_config({"serve_root": str(tmp_path), "max_mb": 1}).path("v.mp4") == video.resolve()
    monkeypatch.setenv("VT_SERVE_MAX_MB", "lots")
    with pytest.raises(ValueError, match="VT_SERVE_MAX_MB='lots' is not a number"):
        ServePolicy.from_config()
    assert container_suffix(b"RIFF\x00\x00\x00\x00AVI LIST") == ".avi" and container_suffix(b"RIFF....WAVE") is None


def test_the_predictors_meta_is_the_checkpoints_without_weights_or_resume_state(tmp_path: Path) -> None:
    """A predictor built from a run's last.pt (which keeps the optimizer, EMA and RNG for resuming) describes the
    model with the checkpoint's meta only: the same keys as its best.pt would give."""
    from vt_models.models.checkpoint import RESUME_STATE, load_checkpoint, save_checkpoint

    ckpt = untrained_classifier(tmp_path / "best.pt", ["a", "b"], backbone="mini_resnet")
    resumable = {**ckpt, "optimizer": {"state": {}}, "ema": {}, "rng": {}, "stale_epochs": 2, "objective": "x"}
    save_checkpoint(tmp_path / "last.pt", resumable)
    meta = VideoPredictor.from_path(tmp_path / "last.pt").meta
    assert set(meta) == set(load_checkpoint(tmp_path / "best.pt")) - {"model"}
    assert not (RESUME_STATE | {"model"}) & set(meta)
    assert meta["classes"] == ["a", "b"] and meta["backbone"] == "mini_resnet"

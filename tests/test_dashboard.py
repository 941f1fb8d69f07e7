"""The review dashboard against a store filled by a tiny real run: every page with Streamlit's AppTest,
the empty states, and one end-to-end test in a real headless browser (Debian's chromium via Playwright).

The store is built once per module: two backbones trained, evaluated and logged, one cross-validated,
two promotion decisions (the validation-best backbone gets a head fitted on the test split, so it clears
the gate's floor and becomes champion; the other does not), and one broken video quarantined by a real
`vt probe`. A second registered model whose only candidate fails the floor shows "nothing to ship yet".
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest

from tests.project import write_params

from .conftest import BIN, free_port

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "dashboard" / "app.py"
BACKBONES = ["resnet18", "resnet18_gru"]
# An own registered model: the session's MLflow server is shared with the registry tests.
MODEL = "vt-dashboard-test"
BROKEN = "left/left_r099_c00.mp4"
CHROMIUM = Path(os.environ.get("VT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Store:
    root: Path
    uri: str
    classes: list[str]
    decisions: list[Any]
    run_ids: dict[str, str]


@pytest.fixture(scope="module")
def store(tiny_data: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A project copy whose MLflow runs, registry and DVC files come from real (tiny) pipeline steps."""
    from vt_models.classify.cv import cross_validate
    from vt_models.classify.evaluate import evaluate_checkpoint
    from vt_models.classify.promote import pick_candidate, promote
    from vt_models.classify.runner import train_backbone
    from vt_models.config import load_config
    from vt_models.io.mlflow import log_evaluation
    from vt_models.models.checkpoint import load_checkpoint, save_checkpoint

    from .gate_models import fitted_on_test

    root = tmp_path_factory.mktemp("dashboard") / "proj"
    shutil.copytree(tiny_data, root)
    write_params(
        root,
        {
            "train": {"backbones": BACKBONES, "weights": "none", "epochs": 1},
            "pretrain": {"backbones": BACKBONES},
            "registry": {"model_name": MODEL},
            "detect": {"model_name": STORE_DETECTOR},
        },
    )
    (root / "data" / "raw" / BROKEN).write_bytes(b"this is not a video")
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", VT_PROGRESS="0")
    subprocess.run([str(BIN / "vt"), "probe", "-d", "target"], cwd=root, env=env, check=True, capture_output=True)

    from mlflow.tracking._tracking_service import utils

    uri_before = utils._tracking_uri
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        mlflow.set_tracking_uri(mlflow_server)
        # the session's server outlives this fixture: a second build (another test order) starts from no versions
        client = mlflow.MlflowClient()
        for name in (MODEL, STORE_DETECTOR):
            if client.search_registered_models(f"name = '{name}'"):
                client.delete_registered_model(name)
        cfg = load_config("params.yaml")
        run_ids = {}
        for name in BACKBONES:
            run_ids[name] = train_backbone(cfg, "train", name, progress=False).run_id
            report = evaluate_checkpoint(
                cfg.run_dir("train", name) / "best.pt",
                cfg.frames_dir("target"),
                cfg.splits_path("target"),
                cfg.eval_dir(name),
                cfg.evaluate.split,
                cfg.evaluate.views,
                "cpu",
                measure_cost=True,
            )
            log_evaluation(cfg.run_dir("train", name) / "run.json", report.metrics, report.out_dir)
        cross_validate(cfg, "resnet18", progress=False)
        best = cfg.run_dir("train", pick_candidate(cfg)) / "best.pt"
        good = fitted_on_test(load_checkpoint(best), cfg)
        save_checkpoint(best, {k: v for k, v in good.items() if k != "format"})
        first = promote(cfg)
        assert first.promoted and first.candidate_qualifies, first.reason
        other = next(b for b in BACKBONES if b != first.candidate_backbone)
        decisions = [first, promote(cfg, other)]
        classes = json.loads(cfg.splits_path("target").read_text())["classes"]
    mlflow.set_tracking_uri(uri_before)
    return Store(root, mlflow_server, classes, decisions, run_ids)


@pytest.fixture
def keep_mlflow_uri(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The dashboard sets MLflow's process-wide tracking URI; give the next test the one it had."""
    from mlflow.tracking._tracking_service import utils

    before = utils._tracking_uri
    yield
    mlflow.set_tracking_uri(before)


@pytest.fixture
def in_store(store: Store, monkeypatch: pytest.MonkeyPatch, keep_mlflow_uri: None) -> Store:
    monkeypatch.chdir(store.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    return store


def open_page(page: str | None = None) -> Any:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.run()
    if page:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: Any, kind: str) -> list[str]:
    return [str(e.value) for e in at.get(kind)]


def champion_version() -> Any:
    return mlflow.MlflowClient().get_model_version_by_alias(MODEL, "champion")


def newest_cv(backbone: str) -> dict[str, float] | None:
    """Metrics of the newest CV parent run of ``backbone`` (the session's server is shared)."""
    client = mlflow.MlflowClient()
    runs = client.search_runs(
        [client.get_experiment_by_name("vt-cv").experiment_id],
        f"tags.backbone = '{backbone}'",
        order_by=["attributes.start_time DESC"],
    )
    return next((r.data.metrics for r in runs if "mean_accuracy" in r.data.metrics), None)


# --------------------------------------------------------------------------- AppTest, page by page


def test_backbones_page_compares_both_and_marks_the_champion(in_store: Store) -> None:
    at = open_page()
    table = at.dataframe[0].value
    # one row per backbone; other tests may have trained more backbones on the shared server
    assert set(BACKBONES) <= set(table["backbone"]) and table["backbone"].is_unique
    table = table[table["backbone"].isin(BACKBONES)]
    champ = champion_version()
    assert table.loc[table["registry"] == "champion", "backbone"].tolist() == [champ.tags["backbone"]]
    assert table.loc[table["registry"] == "champion", "run_id"].tolist() == [champ.run_id]

    # every number is MLflow's own: the table cannot disagree with the store
    client = mlflow.MlflowClient()
    for _, row in table.iterrows():
        assert row["run_id"] == in_store.run_ids[row["backbone"]], "the run DVC tracks (run.json) is the one shown"
        metrics = client.get_run(row["run_id"]).data.metrics
        for m in ("accuracy", "macro_precision", "macro_recall", "macro_f1"):
            assert row[m] == pytest.approx(metrics[f"test_{m}"])
        assert row["latency_ms"] == pytest.approx(metrics["test_latency_ms"]) and row["latency_ms"] > 0
        assert row["gflops"] == pytest.approx(metrics["test_gflops_per_clip"])
        assert row["params_m"] == pytest.approx(metrics["test_params"] / 1e6)
        assert row["train_s"] == pytest.approx(metrics["best_train_seconds"])
        assert row["data_version"].startswith(("md5:", "dvc:"))
    cv = table.set_index("backbone")["cv"]
    assert re.fullmatch(r"\d\.\d{3} ± \d\.\d{3}", cv["resnet18"])
    for backbone in BACKBONES:
        m = newest_cv(backbone)
        assert cv[backbone] == ("-" if m is None else f"{m['mean_macro_f1']:.3f} ± {m['std_macro_f1']:.3f}")

    assert any(
        f"Ship `{champ.tags['backbone']}`" in t and champ.tags["promotion.reason"] in t for t in texts(at, "success")
    )
    if newest_cv("resnet18_gru") is None:
        assert any("resnet18_gru" in t and "`vt cv`" in t for t in texts(at, "info")), "a missing CV says what to run"
    assert len(at.get("vega_lite_chart")) == 3  # CV bars, Pareto scatter, per-class F1 heatmap

    at.selectbox(key="bb_metric").set_value("accuracy").run()
    m = newest_cv("resnet18")
    shown = at.dataframe[0].value.set_index("backbone").loc["resnet18", "cv"]
    assert shown == f"{m['mean_accuracy']:.3f} ± {m['std_accuracy']:.3f}"


def test_run_detail_page(in_store: Store) -> None:
    at = open_page("run_detail")
    champ = champion_version()
    assert at.selectbox(key="rd_run").value == champ.run_id, "opens on the champion's run"
    frames = {tuple(df.value.columns): df.value for df in at.dataframe}
    cm = frames[("true", *in_store.classes)]
    assert cm["true"].tolist() == in_store.classes
    total = len(json.loads((in_store.root / "data/splits/target.json").read_text())["splits"]["test"])
    assert cm[in_store.classes].to_numpy().sum() == total
    per_class = frames[("class", "precision", "recall", "f1", "support")]
    assert per_class["class"].tolist() == in_store.classes
    datasets = next(df for cols, df in frames.items() if "digest" in cols)
    assert datasets["name"].iloc[0].startswith("target@")
    config = json.loads(at.get("json")[0].value)
    assert config["epochs"] == 1 and config["weights"] == "none"
    assert len(at.get("graphviz_chart")) == 1
    assert any("Trained on the data this project's DVC workspace holds now" in t for t in texts(at, "success"))
    assert len(at.get("vega_lite_chart")) >= 3  # loss, validation, learning rate (+ confusion heatmap)
    # "Does it look at motion?": the evaluation's probe figures and verdict, as logged to the run
    logged = mlflow.MlflowClient().get_run(champ.run_id).data
    shown = {m.label: m.value for m in at.metric}
    for label, key in (
        ("static clips: accuracy", "static_accuracy"),
        ("reversed clips: accuracy", "reversed_accuracy"),
        ("changed under reversal", "reversed_changed"),
        ("shuffled clips: accuracy", "shuffled_accuracy"),
    ):
        assert shown[label] == f"{logged.metrics[f'test_motion_{key}']:.3f}", label
    scenery = [t for t in texts(at, "warning") if "Probably reading scenery" in t]
    assert len(scenery) == (logged.tags["test_motion_warning"] != "none")

    other = in_store.run_ids[next(b for b in BACKBONES if b != champ.tags["backbone"])]
    at.selectbox(key="rd_run").set_value(other).run()
    assert not at.exception
    assert any(f"`{next(b for b in BACKBONES if b != champ.tags['backbone'])}`" in t for t in texts(at, "subheader"))


def test_registry_page_lists_versions_and_decisions(in_store: Store) -> None:
    at = open_page("registry")
    versions = at.dataframe[0].value
    assert sorted(versions["version"].astype(str)) == sorted(d.candidate_version for d in in_store.decisions)
    assert "champion" in ", ".join(versions["aliases"])
    assert set(versions["backbone"]) == set(BACKBONES)
    markdown = "\n".join(texts(at, "markdown"))
    for d in in_store.decisions:
        assert d.reason in markdown
    assert any("matches the registry tags" in t for t in texts(at, "caption")), "reports/promotion.json agrees"


def test_data_page_counts_quarantine_and_samples(in_store: Store) -> None:
    at = open_page("data")
    splits = json.loads((in_store.root / "data/splits/target.json").read_text())
    counts, quarantine = at.dataframe[0].value, at.dataframe[1].value
    assert counts.index.tolist() == in_store.classes
    for split in ("train", "val", "test"):
        assert counts[split].tolist() == [splits["counts"][split][c] for c in in_store.classes]
    row = quarantine[quarantine["path"] == BROKEN]
    assert len(row) == 1 and "not a readable video" in row["reason"].iloc[0]
    assert len(at.get("image")) == len(in_store.classes), "one strip of stored frames per class"

    at.toggle(key="data_play").set_value(True).run()
    assert not at.exception and len(at.get("video")) == len(in_store.classes)


def test_predict_page_test_split_and_uploads(in_store: Store) -> None:
    from vt_models.classify.predict import VideoPredictor
    from vt_models.models.weights import resolve_mlflow_checkpoint

    at = open_page("predict")
    at.radio(key="pred_source").set_value("Pick one from the test split").run()
    assert not at.exception
    label = at.metric[0].value
    assert label in in_store.classes
    topk = at.dataframe[0].value
    assert len(topk) == 3 and topk["probability"].is_monotonic_decreasing and topk["probability"].sum() <= 1.0001
    assert len(at.get("image")) == 1

    # the same answer as the champion loaded outside the dashboard
    video = in_store.root / "data/raw" / at.selectbox(key="pred_test_video").value
    predictor = VideoPredictor.from_path(resolve_mlflow_checkpoint(f"models:/{MODEL}@champion"))
    assert predictor.top_k(predictor.predict_video(video), 1)[0][0] == label

    at.radio(key="pred_source").set_value("Upload a video").run()
    at.file_uploader(key="pred_upload").set_value((video.name, video.read_bytes(), "video/mp4")).run()
    assert not at.exception and not at.error
    assert at.metric[0].value == label

    uploads = [
        ("broken.mp4", b"not a video at all", "is not a usable video: not a readable video container"),
        ("notes.txt", b"hello", "'.txt' is not a video type we read"),
        ("empty.mov", b"", "is empty"),
    ]
    for name, content, message in uploads:
        at.file_uploader(key="pred_upload").set_value((name, content, "application/octet-stream")).run()
        assert not at.exception
        assert any(message in t for t in texts(at, "error")), (name, texts(at, "error"))
        assert not at.metric, "no prediction for a bad file"


STORE_DETECTOR = "vt-dashboard-detector"


def test_predict_page_runs_a_registered_detector(in_store: Store) -> None:
    """The one predictor factory brings detectors to the Predict page: tracks drawn on the video, a row per track."""
    from vt_models.config import load_config
    from vt_models.models.checkpoint import save_checkpoint
    from vt_models.models.detectors import build_detector
    from vt_models.serving.package import log_video_model

    cfg = load_config("params.yaml")
    model = build_detector(DET_A, "none", ["square"], min_size=96, max_size=128)
    ckpt = in_store.root / "untrained_detector.pt"
    meta = {"task": "detect", "detector": DET_A, "backbone": DET_A, "arch": DET_A, "family": "detector"}
    save_checkpoint(
        ckpt,
        {
            **meta,
            "classes": ["square"],
            "num_classes": 1,
            "weights_source": "none",
            "config": cfg.detect.model_dump(mode="json"),
            "extract": cfg.detect.extract.model_dump(mode="json"),
            "model_args": {"min_size": 96, "max_size": 128},
            "model": model.state_dict(),
        },
    )
    mlflow.set_tracking_uri(in_store.uri)
    with mlflow.start_run():
        log_video_model(ckpt, registered_model_name=STORE_DETECTOR)
    import streamlit as st

    st.cache_data.clear()  # the sidebar's Refresh: registry reads are cached for TTL_S

    at = open_page("predict")
    at.radio(key="pred_task").set_value("Detector").run()
    at.radio(key="pred_source").set_value("Pick one from the test split").run()
    assert not at.exception and not at.error, [e.value for e in at.exception] + texts(at, "error")
    assert len(at.get("video")) == 1 and at.metric[0].label == "Tracks"
    assert list(at.dataframe[0].value.columns)[:3] == ["track_id", "label", "frames"]
    at.radio(key="pred_task").set_value("Classifier").run()  # and back: the classifier's top-k
    assert not at.exception and at.metric[0].value in in_store.classes


NONE_MODEL = "vt-dashboard-nothing"  # a registered model whose only candidate fails the floor


def test_nothing_to_ship_when_no_model_clears_the_floor(
    in_store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import yaml

    from vt_models.classify.promote import promote
    from vt_models.config import load_config
    from vt_models.models.checkpoint import load_checkpoint, save_checkpoint

    from .gate_models import always

    root = tmp_path / "proj"
    shutil.copytree(in_store.root, root, ignore=shutil.ignore_patterns("reports"))
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["registry"]["model_name"] = NONE_MODEL
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(root)
    mlflow.set_tracking_uri(in_store.uri)
    cfg = load_config("params.yaml")
    best = cfg.run_dir("train", "resnet18") / "best.pt"
    save_checkpoint(best, {k: v for k, v in always(load_checkpoint(best), 0).items() if k != "format"})
    decision = promote(cfg, "resnet18")
    assert not decision.promoted and decision.champion_after is None and decision.small_test_set
    why = decision.reason.removeprefix("nothing to ship yet: ")
    assert why != decision.reason and "fails the floor" in why

    at = open_page()
    warnings = texts(at, "warning")
    assert any("Nothing to ship yet" in t and why in t for t in warnings), warnings
    assert not any("Ship `" in t for t in texts(at, "success")), "no model to ship"
    assert not any("vt promote" in t for t in texts(at, "info")), "promoting again is not what is missing"
    assert "champion" not in at.dataframe[0].value["registry"].tolist()

    at = open_page("registry")
    assert any("Nothing to ship yet" in t and why in t for t in texts(at, "warning"))
    assert at.metric[0].label == "champion" and at.metric[0].value == "none"
    assert any("not promoted: fails the floor" in e.label for e in at.expander)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["candidate 95% CI"] == f"[{decision.candidate_ci_low:.3f}, {decision.candidate_ci_high:.3f}]"
    assert metrics["baseline macro_f1"] == f"{decision.baseline:.4f}" and metrics["test videos"] == str(
        decision.test_videos
    )
    assert any(f"Small test set ({decision.test_videos} videos" in t for t in texts(at, "caption"))


# --------------------------------------------------------------------------- empty states


def test_empty_store_says_what_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_mlflow_uri: None) -> None:
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    mlflow.MlflowClient(tracking_uri=uri).search_experiments()  # an initialised store without runs
    monkeypatch.chdir(tmp_path)  # and no project files at all
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    at = open_page()
    warning = "\n".join(texts(at, "warning"))
    assert uri in warning and "python3 tasks.py demo" in warning
    for cmd in ("vt evaluate", "vt cv", "vt promote"):
        assert cmd in warning
    assert not at.dataframe

    assert "vt promote" in "\n".join(texts(open_page("registry"), "info"))
    assert "vt promote" in "\n".join(texts(open_page("predict"), "info"))
    assert "python3 tasks.py demo" in "\n".join(texts(open_page("run_detail"), "warning"))
    assert "start the dashboard from the project root" in "\n".join(texts(open_page("data"), "error"))


def test_embedded_store_by_default_and_not_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_mlflow_uri: None
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    at = open_page()
    assert f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}" in "\n".join(texts(at, "warning"))
    assert not (tmp_path / "mlflow.db").exists(), "reading must not create the store"


def test_pure_helpers() -> None:
    from dashboard import data as D

    assert D.pareto_mask([10, 20, 30, 15], [0.5, 0.7, 0.6, 0.4]) == [True, True, False, False]
    assert D.pareto_mask([1, math.nan], [0.5, 0.9]) == [True, False]
    assert D.check_upload("clip.MP4", 1000).ok
    assert "limit is 200 MB" in D.check_upload("big.mkv", 201 * 2**20).message
    assert "not a video type" in D.check_upload("x.gif", 10).message
    counts = D.class_counts({"classes": ["a", "b"], "counts": {"train": {"a": 2, "b": 1}, "test": {"a": 1}}})
    assert counts.to_dict("list") == {"train": [2, 1], "test": [1, 0], "total": [3, 1]}


def test_server_config_binds_locally_with_the_upload_limit() -> None:
    import tomllib

    from dashboard import data as D

    server = tomllib.loads((APP.parent / ".streamlit" / "config.toml").read_text())["server"]
    assert server["address"] == "127.0.0.1" and server["maxUploadSize"] == D.MAX_UPLOAD_MB


# --------------------------------------------------------------------------- a real browser


def _need_browser() -> Any:
    """Playwright and Debian's chromium, or a failure that says how to install them (never a skip)."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"no Chromium at {CHROMIUM}: the dashboard's browser test needs Debian's chromium package. "
            "Install it with `sudo apt-get update && sudo apt-get install -y chromium` "
            "(or set VT_CHROMIUM to a Chromium binary); `playwright install` is not used."
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Python playwright is missing: `pip install -e '.[test]'` (python3 tasks.py test installs it)")
    return sync_playwright


def _wait_http(url: str, proc: subprocess.Popen, log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"streamlit did not come up: {log.read_text()[-3000:]}")
        time.sleep(0.5)


@pytest.mark.slow
def test_browser_end_to_end(store: Store, tmp_path: Path) -> None:
    sync_playwright = _need_browser()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # as a user starts it: no PYTHONPATH (app.py puts the project on the import path for its pages)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
        "MLFLOW_TRACKING_URI": store.uri,
        "VT_PROGRESS": "0",
    }
    log_path = tmp_path / "streamlit.log"
    write_adaptation(store.root, ADAPT_ROWS, ADAPT_SUMMARY)  # the Adaptation page reads the report's files
    video = (
        store.root
        / "data/raw"
        / next(
            line.split(",")[0] for line in (store.root / "data/probe/target/manifest.csv").read_text().splitlines()[1:]
        )
    )
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "streamlit"),
                "run",
                str(APP),
                "--server.port",
                str(port),
                "--server.headless",
                "true",
                "--server.address",
                "127.0.0.1",
            ],
            cwd=store.root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_http(f"{url}/_stcore/health", proc, log_path)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 2200})
                page.set_default_timeout(120_000)

                # a page's own link as the server's first request (a link a teammate was sent): Streamlit's
                # navigation must know the page before anything has run (a `pages/` folder beside app.py had it
                # run the page alone, without app.py's import path: ModuleNotFoundError: dashboard)
                page.goto(f"{url}/adaptation")
                cells = page.locator('[data-testid="stDataFrame"]').first.locator('[role="gridcell"]')
                deadline = time.monotonic() + 60
                while "dann" not in cells.all_text_contents() and time.monotonic() < deadline:
                    time.sleep(0.5)
                assert page.locator('[data-testid="stException"]').count() == 0
                assert {"dann", "best hidden-label, IM's pick"} <= set(cells.all_text_contents())
                assert "closes 83% of the gap" in page.locator('[data-testid="stAlert"]').first.inner_text()
                page.screenshot(path=str(tmp_path / "dashboard-adaptation.png"))

                page.goto(url)
                table = page.locator('[data-testid="stDataFrame"]').first
                table.wait_for()
                cells = table.locator('[role="gridcell"]')
                deadline = time.monotonic() + 60
                while not set(BACKBONES) <= set(cells.all_text_contents()) and time.monotonic() < deadline:
                    time.sleep(0.5)
                shown = cells.all_text_contents()
                assert set(BACKBONES) <= set(shown) and "champion" in shown, shown
                page.wait_for_timeout(2000)  # let the charts draw before the picture
                page.screenshot(path=str(tmp_path / "dashboard-backbones.png"))

                page.goto(f"{url}/predict")
                page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(video))
                value = page.locator('[data-testid="stMetricValue"]').first
                value.wait_for()
                assert value.inner_text().strip() in store.classes
                assert page.locator('[data-testid="stException"]').count() == 0
                page.wait_for_timeout(1000)
                page.screenshot(path=str(tmp_path / "dashboard-predict.png"))
                browser.close()
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    # Where a person wants to look at it (e.g. VT_DASHBOARD_SCREENSHOT=/tmp/dashboard.png).
    if os.environ.get("VT_DASHBOARD_SCREENSHOT"):
        shutil.copy(tmp_path / "dashboard-backbones.png", os.environ["VT_DASHBOARD_SCREENSHOT"])


# --------------------------------------------------------------------------- detectors (DVC files only, no MLflow)

DET_A, DET_B = "fasterrcnn_mobilenet_v3_large_320_fpn", "ssdlite320_mobilenet_v3_large"
DET_MODEL = "vt-video-detector"


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def _mot(mota: float, idf1: float, hota: float, switches: int) -> dict[str, Any]:
    return {
        "mota": mota,
        "idf1": idf1,
        "hota": hota,
        "id_switches": switches,
        "false_positives": 3,
        "misses": 5,
        "precision": 0.8,
        "recall": 0.7,
        "num_gt": 40,
        "num_pred": 38,
        "videos": 2,
    }


def write_detector(
    root: Path,
    name: str,
    *,
    test_map: float,
    ms: float,
    val_map: float,
    tracked: dict[str, Any],
    untracked: dict[str, Any],
    tracks: list[dict[str, Any]],
    per_class: str,
) -> dict[str, Any]:
    """What `vt detect train` + `vt detect evaluate` write for one detector (a real H.264 clip included)."""
    import numpy as np

    from vt_models.video.encode import write_video

    train_dir, report = root / "models/detect" / name, root / "reports/detect" / name
    _write_json(
        train_dir / "metrics.json",
        {
            "best_epoch": 2,
            "epochs_run": 3,
            "stopped_early": False,
            "val_map": val_map,
            "val_map_50": val_map + 0.2,
            "val_precision": 0.6,
            "val_recall": 0.5,
            "params_total": 3_500_000,
            "params_trainable": 3_000_000,
            "train_seconds": 95.5,
        },
    )
    (train_dir / "history.csv").write_text(
        "epoch,train_loss,lr,val_loss,val_map,val_map_50\n"
        f"0,1.2,0.0005,1.1,{val_map / 3:.4f},0.2\n1,0.9,0.0004,0.9,{val_map / 2:.4f},0.3\n"
        f"2,0.7,0.0002,0.8,{val_map:.4f},{val_map + 0.2:.4f}\n"
    )
    test = {
        "map": test_map,
        "map_50": test_map + 0.25,
        "map_75": test_map - 0.05,
        "mar_100": 0.6,
        "precision": 0.71,
        "recall": 0.64,
        "num_images": 24,
        "num_gt": 40,
        "num_det": 38,
        "detector": name,
        "split": "test",
        "data_version": "md5:abc123",
        "videos": 2,
        "params": 3_400_000 if name == DET_A else 2_100_000,
        "ms_per_frame": ms,
        "frames_per_s": 1000 / ms,
        "device": "cpu",
        **{f"{kind}_{k}": v for kind, mot in (("tracked", tracked), ("untracked", untracked)) for k, v in mot.items()},
    }
    _write_json(report / "metrics.json", test)
    _write_json(report / "mot.json", {"tracked": tracked, "untracked": untracked})
    (report / "per_class.csv").write_text(per_class)
    frames = np.zeros((8, 48, 64, 3), np.uint8)
    frames[:, 10:30, 8:40] = (np.arange(8) * 30)[:, None, None, None]  # a box that changes colour: real content
    write_video(report / "sample.tracks.mp4", frames, 6.0, container_options={"movflags": "+faststart"})
    _write_json(
        report / "sample.tracks.json",
        {
            "video": "left/left_r000_c00.mp4",
            "fps": 6.0,
            "classes": ["car", "person"],
            "frames_processed": 8,
            "seconds": 0.4,
            "tracks": tracks,
        },
    )
    return test


def _track(track_id: int, label: str, predicted: list[bool]) -> dict[str, Any]:
    return {
        "track_id": track_id,
        "label": label,
        "frames": [
            {
                "frame": i,
                "time_s": i / 6,
                "box_xyxy": [1.0, 2.0, 20.0, 30.0],
                "score": 0.3 if p else 0.9,
                "label": label,
                "predicted": p,
            }
            for i, p in enumerate(predicted)
        ],
    }


@pytest.fixture
def det_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep_mlflow_uri: None) -> Path:
    """A project folder with params for two detectors and no results yet; MLflow points at a store that is not there."""
    write_params(tmp_path, {"detect": {"detectors": [DET_A, DET_B], "model_name": DET_MODEL}})
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'absent.db'}")
    return tmp_path


@pytest.fixture
def det_results(det_project: Path) -> dict[str, dict[str, Any]]:
    """Two evaluated detectors: B has the higher test mAP but is slower; their trackers help by different amounts."""
    a = write_detector(
        det_project,
        DET_A,
        test_map=0.412,
        ms=21.5,
        val_map=0.38,
        tracked=_mot(0.61, 0.72, 0.58, 2),
        untracked=_mot(0.48, 0.31, 0.29, 17),
        tracks=[_track(1, "car", [False] * 4), _track(2, "person", [False] * 2)],
        per_class="class,ap,ap50\ncar,0.5,0.8\nperson,0.324,0.6\n",
    )
    b = write_detector(
        det_project,
        DET_B,
        test_map=0.537,
        ms=48.25,
        val_map=0.45,
        tracked=_mot(0.70, 0.81, 0.66, 1),
        untracked=_mot(0.66, 0.40, 0.35, 9),
        tracks=[
            _track(3, "car", [False, False, True, True, False]),
            _track(7, "person", [False] * 3),
            _track(9, "car", [False, True]),
        ],
        per_class="class,ap,ap50\ncar,0.7,0.9\nperson,,\n",
    )
    _write_json(
        det_project / "reports/detect_promotion.json",
        {
            "model_name": DET_MODEL,
            "promoted": False,
            "reason": "candidate map 0.5370 does not beat champion v1 0.6000 by 0.0",
            "metric": "map",
            "margin": 0.0,
            "candidate_backbone": DET_B,
            "candidate_version": "2",
            "candidate_score": 0.537,
            "candidate_run_id": "r2",
            "champion_version": "1",
            "champion_score": 0.6,
            "champion_run_id": "r1",
            "data_version": "md5:abc123",
        },
    )
    return {DET_A: a, DET_B: b}


def test_detectors_page_compares_recommends_and_plays_the_clip(det_results: dict[str, dict[str, Any]]) -> None:
    at = open_page("detectors")
    table = at.dataframe[0].value.set_index("detector")
    assert table.index.tolist() == [DET_A, DET_B]
    for name, test in det_results.items():
        mot = json.loads((Path("reports/detect") / name / "mot.json").read_text())
        row = table.loc[name]
        assert row["map"] == pytest.approx(test["map"]) and row["map_50"] == pytest.approx(test["map_50"])
        assert row["precision"] == pytest.approx(test["precision"]) and row["recall"] == pytest.approx(test["recall"])
        for key in ("mota", "idf1", "hota"):
            assert row[f"{key}_tracked"] == pytest.approx(mot["tracked"][key])
            assert row[f"{key}_untracked"] == pytest.approx(mot["untracked"][key])
            assert row[f"{key}_gain"] == pytest.approx(mot["tracked"][key] - mot["untracked"][key])
        assert row["id_switches_tracked"] == mot["tracked"]["id_switches"]
        assert row["ms_per_frame"] == pytest.approx(test["ms_per_frame"])
        assert row["params_m"] == pytest.approx(test["params"] / 1e6)
        train = json.loads((Path("models/detect") / name / "metrics.json").read_text())
        assert row["val_map"] == pytest.approx(train["val_map"]) and row["train_s"] == pytest.approx(
            train["train_seconds"]
        )
    assert table.loc[DET_A, "mota_gain"] == pytest.approx(0.13) and table.loc[DET_B, "mota_gain"] == pytest.approx(0.04)
    # highest test mAP wins although it is slower and listed second
    assert table["ship"].tolist() == ["", "recommended"]
    assert any(f"Ship `{DET_B}`" in t and "0.537" in t for t in texts(at, "success"))
    registry = "\n".join(texts(at, "markdown"))
    assert (
        f"Registry `{DET_MODEL}`" in registry and "champion v1" in registry and "does not beat champion v1" in registry
    )
    assert not at.info, texts(at, "info")  # nothing missing

    # the selected detector (the recommended one first): metrics, two charts, the real clip and its tracks
    assert at.selectbox(key="det_pick").value == DET_B
    assert at.metric[0].value == "0.537" and at.metric[1].delta == "+0.040 vs untracked"
    assert at.metric[3].label == "HOTA tracked" and at.metric[3].delta == "+0.310 vs untracked"
    assert len(at.get("vega_lite_chart")) == 2
    assert len(at.get("video")) == 1
    tracks = at.dataframe[1].value
    assert tracks[["track_id", "label", "frames", "predicted"]].values.tolist() == [
        [3, "car", 5, 2],
        [7, "person", 3, 0],
        [9, "car", 2, 1],
    ]
    assert any("person" in t and "no ground truth" in t.lower() for t in texts(at, "caption"))

    at.selectbox(key="det_pick").set_value(DET_A).run()
    assert not at.exception
    assert at.metric[0].value == "0.412" and at.metric[1].delta == "+0.130 vs untracked"
    assert at.dataframe[1].value["track_id"].tolist() == [1, 2] and len(at.get("video")) == 1


def test_detectors_page_says_nothing_to_ship_when_the_gate_found_none(det_results: dict[str, dict[str, Any]]) -> None:
    why = (
        "the candidate fails the floor (map 0.5370, 95% CI [0.0000, 0.9000] over 2 test videos): CI lower bound "
        "0.0000 <= baseline 0.0000 (a detector that finds nothing)"
    )
    _write_json(
        Path("reports/detect_promotion.json"),
        {
            "model_name": DET_MODEL,
            "promoted": False,
            "reason": f"nothing to ship yet: {why}",
            "metric": "map",
            "margin": 0.0,
            "candidate_backbone": DET_B,
            "candidate_version": "1",
            "candidate_score": 0.537,
            "candidate_run_id": "r1",
            "champion_version": None,
            "champion_score": None,
            "champion_run_id": None,
            "data_version": "md5:abc123",
            "candidate_qualifies": False,
            "candidate_ci_low": 0.0,
            "candidate_ci_high": 0.9,
            "champion_after": None,
            "baseline": 0.0,
            "test_videos": 2,
            "small_test_set": True,
        },
    )
    at = open_page("detectors")
    assert any("Nothing to ship yet" in t and why in t for t in texts(at, "warning"))
    assert not at.success, texts(at, "success")
    assert at.dataframe[0].value.set_index("detector")["ship"].to_dict() == {DET_A: "", DET_B: "best test mAP"}
    assert "champion none" in "\n".join(texts(at, "markdown"))

    # no decision yet, and the best test mAP is under detect.min_map (0.05): nothing to ship either
    Path("reports/detect_promotion.json").unlink()
    for name in (DET_A, DET_B):
        path = Path("reports/detect") / name / "metrics.json"
        _write_json(path, {**det_results[name], "map": 0.01 if name == DET_A else 0.02})
    at = open_page("detectors")
    assert any(
        "Nothing to ship yet" in t and f"`{DET_B}` 0.020" in t and "detect.min_map 0.05" in t
        for t in texts(at, "warning")
    ), texts(at, "warning")
    assert not at.success


def test_detectors_page_tie_goes_to_the_faster(det_results: dict[str, dict[str, Any]]) -> None:
    path = Path("reports/detect") / DET_B / "metrics.json"
    _write_json(path, {**det_results[DET_B], "map": det_results[DET_A]["map"]})
    at = open_page("detectors")
    assert at.dataframe[0].value.set_index("detector")["ship"].to_dict() == {DET_A: "recommended", DET_B: ""}
    assert any(f"Ship `{DET_A}`" in t for t in texts(at, "success"))


def test_detectors_page_without_results_says_what_to_run(det_project: Path) -> None:
    at = open_page("detectors")
    info = "\n".join(texts(at, "info"))
    assert "vt detect train" in info and "dvc repro" in info and DET_A in info
    assert not at.dataframe and not at.get("video") and not at.success

    # trained, not yet evaluated: a table of validation numbers and the command that adds the test ones
    _write_json(
        det_project / "models/detect" / DET_A / "metrics.json",
        {"val_map": 0.3, "train_seconds": 12.0, "params_total": 3_500_000},
    )
    at = open_page("detectors")
    row = at.dataframe[0].value.set_index("detector").loc[DET_A]
    assert row["val_map"] == pytest.approx(0.3) and math.isnan(row["map"])
    info = "\n".join(texts(at, "info"))
    assert f"vt detect evaluate -d {DET_A}" in info and f"vt detect train -d {DET_B}" in info
    assert "vt detect promote" in info and not at.success


def test_detector_helpers() -> None:
    import pandas as pd

    from dashboard import data as D

    files = [
        D.DetectorFiles("a", {"val_map": 0.2}, {"map": 0.5, "ms_per_frame": 30.0}, None),
        D.DetectorFiles(
            "b", None, {"map": 0.5, "ms_per_frame": 10.0, "tracked_mota": 0.4, "untracked_mota": 0.5}, None
        ),
        D.DetectorFiles("c", None, None, None),
    ]
    table = D.detector_table(files)
    assert table["detector"].tolist() == ["a", "b"], "a detector without any file has no row"
    assert table.set_index("detector").loc["b", "mota_gain"] == pytest.approx(-0.1), (
        "flat metrics.json keys as fallback"
    )
    assert D.recommend_detector(table)["detector"] == "b"
    assert D.recommend_detector(table.assign(ms_per_frame=float("nan")))["detector"] == "a"
    assert D.recommend_detector(table.assign(map=float("nan"))) is None
    assert D.promotion_champion(
        {"promoted": True, "candidate_version": "3", "candidate_backbone": "a", "candidate_score": 0.5}
    ) == ("3", "a", 0.5)
    # the floor: champion_after says who is champion after the decision (None: nothing to ship)
    assert D.promotion_champion({"promoted": False, "champion_version": "2", "champion_after": None})[0] is None
    assert D.promotion_champion(
        {
            "promoted": False,
            "champion_version": "2",
            "champion_score": 0.4,
            "champion_after": "2",
            "candidate_version": "3",
        }
    ) == ("2", None, 0.4)
    failed = {"promoted": "False", "reason": "nothing to ship yet: the candidate fails the floor", "champion_after": ""}
    assert D.nothing_to_ship(failed) == "nothing to ship yet: the candidate fails the floor"
    assert D.nothing_to_ship({**failed, "reason": "x", "champion_after": "4"}) is None
    assert (
        D.nothing_to_ship(
            {"promoted": "True", "candidate_version": "5", "reason": "first champion (the registry had none)"}
        )
        is None
    )
    assert D.nothing_to_ship(None) is None
    assert (
        D.missing_steps(
            pd.DataFrame({"backbone": ["a"], "accuracy": [0.5], "cv_mean": [0.5]}),
            pd.DataFrame(),
            None,
            "nothing to ship yet: x",
        )
        == []
    )


# --------------------------------------------------------------------------- adaptation (DVC files only, no MLflow)

ADAPT_ROWS = [
    # setting, target_labels, test_macro_f1, ci_low, ci_high, target_im, target_dev
    ("source_only", "none", 0.30, 0.13, 0.44, 0.27, 0.64),
    ("dann", "hidden", 0.50, 0.32, 0.64, 0.60, 0.73),
    ("mmd", "hidden", 0.47, 0.28, 0.61, 0.56, 0.70),
    ("supervised", "train", 0.54, 0.35, 0.69, 0.57, None),
    ("autoencoder", "train", 0.35, 0.19, 0.47, 0.20, None),
    ("scratch", "train", 0.21, 0.08, 0.33, 0.13, None),
]
ADAPT_SUMMARY = {
    "source_only_macro_f1": 0.30,
    "supervised_macro_f1": 0.54,
    "gap": 0.24,
    "gap_ci_low": 0.06,
    "gap_ci_high": 0.41,
    "best_method": "dann",
    "best_method_macro_f1": 0.50,
    "gap_closed": 0.8333,
    "dev_pick": "mmd",
    "dev_pick_macro_f1": 0.47,
    "dev_pick_shortfall": 0.03,
    "im_pick": "dann",
    "im_pick_macro_f1": 0.50,
    "im_pick_shortfall": 0.0,
    "autoencoder_macro_f1": 0.35,
    "scratch_macro_f1": 0.21,
    "autoencoder_gain": 0.14,
    "autoencoder_gain_ci_low": -0.03,
    "autoencoder_gain_ci_high": 0.29,
    "label_free_videos": 84,
}


def write_adaptation(
    root: Path, rows: list[tuple[Any, ...]], summary: dict[str, Any], seeds: list[int | None] | None = None
) -> None:
    """reports/adaptation/ as `vt report adaptation` writes it (the csv's columns, metrics.json, the md's heading);
    ``seeds``: each row's seed column (reports before `adaptation.seeds` have none)."""
    folder = root / "reports/adaptation"
    folder.mkdir(parents=True, exist_ok=True)
    head = "setting,target_labels,epochs,test_videos,test_accuracy,test_macro_f1,ci_low,ci_high,target_im,target_snd,"
    lines = [head + "target_dev" + (",seed" if seeds else "")]
    for i, (setting, labels, f1, low, high, im, dev) in enumerate(rows):
        seed = "" if not seeds else f",{'' if seeds[i] is None else seeds[i]}"
        lines.append(f"{setting},{labels},8,36,{f1},{f1},{low},{high},{im},2.5,{'' if dev is None else dev}{seed}")
    (folder / "adaptation.csv").write_text("\n".join(lines) + "\n")
    _write_json(folder / "metrics.json", summary)
    (folder / "adaptation.md").write_text("# Domain adaptation source -> slow with mini_resnet_tsm\n\n...\n")


def test_adaptation_page_reads_the_report(det_project: Path) -> None:
    at = open_page("adaptation")
    info = "\n".join(texts(at, "info"))
    assert "vt report adaptation" in info and "python3 tasks.py demo --adaptation" in info
    assert not at.dataframe and not at.success

    write_adaptation(det_project, ADAPT_ROWS, ADAPT_SUMMARY)
    at = open_page("adaptation")
    table = at.dataframe[0].value.set_index("setting")
    assert table.index.tolist() == [r[0] for r in ADAPT_ROWS]
    for setting, _, f1, low, high, im, dev in ADAPT_ROWS:
        row = table.loc[setting]
        assert (row["test_macro_f1"], row["ci_low"], row["ci_high"], row["target_im"]) == pytest.approx(
            (f1, low, high, im)
        )
        assert math.isnan(row["target_dev"]) if dev is None else row["target_dev"] == pytest.approx(dev)
    assert table["mark"].to_dict() == {
        "source_only": "",
        "dann": "best hidden-label, IM's pick",
        "mmd": "DEV's pick",
        "supervised": "",
        "autoencoder": "",
        "scratch": "",
    }
    assert table.loc["dann", "labels"].startswith("hidden") and table.loc["supervised", "labels"].startswith("read")
    answer = "\n".join(texts(at, "success"))
    assert "`dann` closes 83% of the gap" in answer and "gap 0.240 [+0.060, +0.410]" in answer
    shown = "\n".join(texts(at, "markdown"))
    assert "chooses `dann`" in shown and "DEV would choose `mmd` (0.030 below the best)" in shown
    assert "a gain of +0.140 [-0.030, +0.290]" in shown and "84 target videos" in shown
    assert "source -> slow with mini_resnet_tsm" in "\n".join(texts(at, "caption"))

    # a report from before the paired intervals, where the best method closes less than half: a warning, no interval
    old = {k: v for k, v in ADAPT_SUMMARY.items() if "_ci_" not in k} | {"gap_closed": 0.25}
    write_adaptation(det_project, ADAPT_ROWS, old)
    at = open_page("adaptation")
    warning = "\n".join(texts(at, "warning"))
    assert "closes 25% of the gap" in warning and "(gap 0.240)." in warning and not at.success
    assert "a gain of +0.140." in "\n".join(texts(at, "markdown"))

    # a report over two seeds (adaptation.seeds): the summary of the means, each figure with its range over the seeds
    rows = [ADAPT_ROWS[0], ADAPT_ROWS[1], ADAPT_ROWS[1], ADAPT_ROWS[3], ADAPT_ROWS[3]]
    ranges = {"seeds": 2, "gap_min": 0.2, "gap_max": 0.3, "gap_closed": 0.6, "gap_closed_min": 0.5}
    ranges |= {"gap_closed_max": 0.7, "im_picks": "dann,mmd", "im_pick_good": 1}
    over = {k: v for k, v in ADAPT_SUMMARY.items() if "_ci_" not in k and "autoencoder" not in k} | ranges
    write_adaptation(det_project, rows, over, seeds=[None, 1, 2, 1, 2])
    at = open_page("adaptation")
    answer = "\n".join(texts(at, "success"))
    assert "Over 2 seeds (means): **`dann` closes 60% of the gap** (50% to 70% by seed)" in answer
    assert "(gap 0.240, +0.200 to +0.300 over the seeds)" in answer
    shown = "\n".join(texts(at, "markdown"))
    assert "by seed IM chose `dann`, `mmd`, within 0.05 of that seed's best at 1 of 2" in shown
    table = at.dataframe[0].value
    assert table["setting"].tolist() == ["source_only", "dann", "dann", "supervised", "supervised"]
    assert math.isnan(table["seed"][0]) and table["seed"][1:].tolist() == [1, 2, 1, 2]

"""Registry and promotion gate against a real `mlflow server`: the floor (bootstrap CI over test videos
above the majority-class baseline) keeps useless models from ever being champion, a qualifying model is
promoted, worse or equal ones are refused, a champion that no longer clears the floor loses its alias;
the champion loads with mlflow.pyfunc and serves `vt predict` on real video files. The bootstrap CI is
checked against the exact bootstrap distribution of a tiny example."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from vt_models.classify.data import load_split_data
from vt_models.classify.promote import promote
from vt_models.classify.runner import train_backbone
from vt_models.cli import format_promotion
from vt_models.config import load_config
from vt_models.eval.bootstrap import (
    classification_statistic,
    majority_baseline,
    majority_class,
    paired_difference,
    video_bootstrap,
)
from vt_models.models.checkpoint import load_checkpoint, save_checkpoint
from vt_models.promotion import PromotionError, verdict

from .conftest import BIN
from .gate_models import always, fitted_on_test

NAME = "vt-video-classifier"


# --------------------------------------------------------------------------- the floor's statistics


def test_bootstrap_ci_equals_the_exact_bootstrap_distribution_of_a_tiny_example() -> None:
    """4 test videos, one misclassified: all 4**4 equally likely resamples enumerated, macro-F1 by scikit-learn."""
    y_true, y_pred = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 2])
    exact = np.array(
        [
            f1_score(y_true[list(d)], y_pred[list(d)], labels=[0, 1, 2], average="macro", zero_division=0)
            for d in itertools.product(range(4), repeat=4)
        ]
    )
    ci = video_bootstrap(
        classification_statistic(y_true, y_pred, 3, "macro_f1"), 4, resamples=1000, confidence=0.95, seed=0
    )
    q = lambda p: float(np.quantile(exact, p, method="inverted_cdf"))  # noqa: E731
    assert q(0.01) <= ci.low <= q(0.05) and q(0.95) <= ci.high <= q(0.99), (
        ci,
        [q(p) for p in (0.01, 0.05, 0.95, 0.99)],
    )
    assert ci.low == pytest.approx(q(0.025)) and ci.high == pytest.approx(q(0.975))
    assert (ci.videos, ci.resamples, ci.confidence) == (4, 1000, 0.95)
    # pairs stay together: resampling true and predicted labels independently would reach 0 at the low end
    assert ci.low > 0.1 and ci.low < f1_score(y_true, y_pred, average="macro")
    # the seed fixes the resamples; a constant statistic (a useless model's typical case) has a point interval
    assert video_bootstrap(classification_statistic(y_true, y_pred, 3, "macro_f1"), 4, seed=0) == ci
    flat = video_bootstrap(lambda idx: 0.25, 7)
    assert (flat.low, flat.high) == (0.25, 0.25)


def test_paired_difference_resamples_both_models_on_the_same_videos() -> None:
    """The interval of macro-F1(a) - macro-F1(b) is the exact bootstrap distribution's of the difference on each
    resample of 4 videos (both models' predictions of a drawn video together), not the two intervals' spread."""
    y_true = np.array([0, 0, 1, 2])
    a, b = np.array([0, 1, 1, 2]), np.array([0, 1, 1, 1])  # a misses one video; b misses that one and another
    f1 = lambda y, p: f1_score(y, p, labels=[0, 1, 2], average="macro", zero_division=0)  # noqa: E731
    exact = np.array(
        [
            f1(y_true[list(d)], a[list(d)]) - f1(y_true[list(d)], b[list(d)])
            for d in itertools.product(range(4), repeat=4)
        ]
    )
    ci = paired_difference(y_true, a, b, 3, "macro_f1", resamples=1000, confidence=0.95, seed=0)
    q = lambda p: float(np.quantile(exact, p, method="inverted_cdf"))  # noqa: E731
    assert q(0.01) <= ci.low <= q(0.05) and q(0.95) <= ci.high <= q(0.99), (ci, [q(p) for p in (0.01, 0.05, 0.95)])
    # a is never worse than b on any resample: paired, the interval never goes below 0
    assert exact.min() >= 0 and ci.low >= 0 and ci.high > 0
    # unpaired, the two models' own intervals overlap, which would read as "no difference"
    lone = [video_bootstrap(classification_statistic(y_true, p, 3, "macro_f1"), 4, seed=0) for p in (a, b)]
    assert lone[0].low < lone[1].high
    same = paired_difference(y_true, a, a, 3, "macro_f1")
    assert (same.low, same.high, same.videos) == (0.0, 0.0, 4)


def test_majority_baseline_is_the_constant_prediction_scored_like_the_model() -> None:
    y_test = np.array([0, 0, 1, 2, 2, 2])
    assert majority_class([1, 1, 0, 2, 2], 3) == 1  # ties: the first class in class order
    assert majority_class([0, 1, 2], 3) == 0
    for metric, sk in (("macro_f1", "macro"), ("weighted_f1", "weighted")):
        expected = f1_score(y_test, np.zeros(6, int), labels=[0, 1, 2], average=sk, zero_division=0)
        assert majority_baseline(y_test, 0, 3, metric) == pytest.approx(expected)
    # macro-F1 of "always 0" = F1 of class 0 (precision 2/6, recall 1 -> 0.5) over 3 classes
    assert majority_baseline(y_test, 0, 3, "macro_f1") == pytest.approx(0.5 / 3)
    assert majority_baseline(y_test, 2, 3, "accuracy") == pytest.approx(0.5)


def test_a_champion_moves_on_the_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The embedded default store (sqlite) gives ``ModelVersion.version`` as an int, the alias read back as a
    string: the gate's compare-and-set must treat 1 and "1" as the same version (it refused every move of an
    existing champion there: "champion moved from v1 to v1"), and still refuse a real concurrent move."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        _champion_moves_and_conflicts(mlflow.MlflowClient(), tmp_path)
    finally:
        mlflow.set_tracking_uri(previous)  # process-wide: later tests get back what they had


def _champion_moves_and_conflicts(client: mlflow.MlflowClient, tmp_path: Path) -> None:
    from vt_models.io import mlflow as tracking

    client.create_registered_model("m")
    for _ in range(3):
        client.create_model_version("m", source=str(tmp_path))
    tracking.move_alias("m", "champion", "1", "first", by="test", expected=None)
    seen = client.get_model_version_by_alias("m", "champion").version  # what the gate's decision read
    move = tracking.move_alias("m", "champion", "2", "better", by="test", expected=seen)
    assert (move.from_version, move.to_version) == ("1", "2")
    assert tracking.current_alias("m", "champion") == "2"
    with pytest.raises(tracking.AliasConflict, match="moved from v1 to v2"):
        tracking.move_alias("m", "champion", "3", "stale decision", by="test", expected=seen)
    assert tracking.current_alias("m", "champion") == "2"


def test_downloads_from_the_registry_draw_no_progress_bar_per_artifact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A gate resolving a registered model printed one MLflow progress bar per artifact (111 lines); the
    project's tracking set-up turns them off unless the user's environment asks for them."""
    from vt_models.io import mlflow as tracking

    # set, then removed: monkeypatch records the variable's state before the test and restores it after
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "")
    monkeypatch.delenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    previous = mlflow.get_tracking_uri()
    tracking.configure()
    try:
        with mlflow.start_run() as run:
            for i in range(3):
                mlflow.log_text(str(i), f"model/part{i}.txt")
        capfd.readouterr()
        mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model", dst_path=str(tmp_path / "a"))
        assert "Downloading artifacts" not in capfd.readouterr().err
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "false"
        monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "true")  # the user's choice stands
        tracking.configure()
        assert os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] == "true"
    finally:
        mlflow.set_tracking_uri(previous)


def test_verdict_covers_floor_and_margin() -> None:
    ok, bad = "clears the floor (...)", "fails the floor (...)"
    assert verdict("macro_f1", 0.0, "test", (0.1, False, bad), None) == (
        False,
        False,
        f"nothing to ship yet: the candidate {bad}",
    )
    assert verdict("macro_f1", 0.0, "test", (0.9, True, ok), None) == (
        True,
        False,
        f"first champion (the registry had none): the candidate {ok}",
    )
    promoted, remove, reason = verdict("macro_f1", 0.0, "test", (0.1, False, bad), ("3", 0.8, True, ok))
    assert (promoted, remove) == (False, False) and "champion v3 stays" in reason
    promoted, remove, reason = verdict("macro_f1", 0.0, "test", (0.1, False, bad), ("3", 0.2, False, bad))
    assert (
        (promoted, remove) == (False, True)
        and reason.startswith("nothing to ship yet")
        and "alias was removed" in reason
    )
    promoted, remove, reason = verdict("macro_f1", 0.0, "test", (0.5, True, ok), ("3", 0.9, False, bad))
    assert (promoted, remove) == (True, False) and "replaces it" in reason, (
        "a qualifying model replaces a failing champion"
    )
    assert verdict("macro_f1", 0.1, "test", (0.85, True, ok), ("3", 0.8, True, ok))[0] is False, "within the margin"
    assert verdict("macro_f1", 0.0, "test", (0.85, True, ok), ("3", 0.8, True, ok))[0] is True


# --------------------------------------------------------------------------- the gate against a real registry


@pytest.mark.slow
def test_promotion_gate_and_champion_serving(
    tiny_project: Path, use_mlflow: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config("params.yaml", ["train.weights=none", "train.epochs=1"])
    train_backbone(cfg, "train", "resnet18", progress=False)
    best = Path("models/train/resnet18/best.pt")
    trained = load_checkpoint(best)
    client = mlflow.MlflowClient()
    data = load_split_data(cfg.frames_dir("target"), cfg.splits_path("target"))
    y_test = np.array([r.label for r in data.records["test"]])
    n_test = len(y_test)
    train_majority = int(np.argmax(np.bincount([r.label for r in data.records["train"]], minlength=3)))

    def candidate(ckpt: dict):
        save_checkpoint(best, {k: v for k, v in ckpt.items() if k != "format"})
        return promote(cfg, "resnet18")

    def champion_version() -> str | None:
        try:
            return client.get_model_version_by_alias(NAME, "champion").version
        except mlflow.exceptions.MlflowException:
            return None

    # a useless model (one class for every video) is registered, never champion: nothing to ship
    useless = candidate(always(trained, train_majority))
    assert not useless.promoted and not useless.candidate_qualifies, useless.reason
    assert useless.reason.startswith("nothing to ship yet: the candidate fails the floor"), useless.reason
    assert useless.baseline == pytest.approx(
        f1_score(y_test, np.full(n_test, train_majority), labels=[0, 1, 2], average="macro", zero_division=0)
    )
    assert useless.candidate_score == pytest.approx(useless.baseline), "it is the majority baseline"
    assert useless.candidate_ci_low <= useless.baseline < useless.candidate_ci_high
    assert data.classes[train_majority] in useless.baseline_rule and "train split" in useless.baseline_rule
    assert champion_version() is None and useless.champion_after is None
    assert client.get_model_version_by_alias(NAME, "challenger").version == useless.candidate_version
    # the small-test flag: the tiny test split has fewer videos than registry.min_test_videos (30)
    assert useless.test_videos == n_test < 30 and useless.small_test_set
    assert f"small test set ({n_test} videos): scores move in steps of 1/{n_test}" in useless.reason
    tags = client.get_model_version(NAME, useless.candidate_version).tags
    assert tags["promotion.candidate_qualifies"] == "False" and tags["promotion.small_test_set"] == "True"
    assert float(tags["promotion.baseline"]) == pytest.approx(useless.baseline)
    assert float(tags["promotion.candidate_ci_low"]) == pytest.approx(useless.candidate_ci_low)
    assert tags["promotion.champion_after"] == "" and tags["promotion.test_videos"] == str(n_test)
    record = json.loads(Path("reports/promotion.json").read_text())
    assert (
        record["champion_after"] is None and record["small_test_set"] is True and record["bootstrap_resamples"] == 1000
    )
    assert record["candidate_ci_high"] == pytest.approx(useless.candidate_ci_high) and record["confidence"] == 0.95
    summary = format_promotion(Path("reports/promotion.json"))
    assert "nothing to ship yet" in summary and "ship: nothing" in summary and "@champion" not in summary

    # another one-class model that is not the majority class: its CI still reaches the baseline
    other = candidate(always(trained, (train_majority + 1) % 3))
    assert not other.promoted and other.reason.startswith("nothing to ship yet") and champion_version() is None

    # a good model clears the floor and becomes the first champion
    good_ckpt = fitted_on_test(trained, cfg)
    good = candidate(good_ckpt)
    assert good.promoted and good.candidate_qualifies and good.candidate_ci_low > good.baseline, good.reason
    assert good.reason.startswith("first champion (the registry had none): the candidate clears the floor"), good.reason
    assert champion_version() == good.candidate_version == good.champion_after
    assert "ship: models:/vt-video-classifier@champion (version " + good.candidate_version in format_promotion(
        Path("reports/promotion.json")
    )

    equal = candidate(good_ckpt)
    assert (
        not equal.promoted
        and "does not beat" in equal.reason
        and equal.candidate_qualifies
        and equal.champion_qualifies
    )
    assert equal.champion_score == pytest.approx(equal.candidate_score)
    assert champion_version() == good.candidate_version == equal.champion_after
    assert client.get_model_version_by_alias(NAME, "challenger").version == equal.candidate_version

    # a model of other classes (a user's own after the demo's): refused before it is registered, with the fix
    versions = len(client.search_model_versions(f"name='{NAME}'"))
    with pytest.raises(PromotionError, match=r"classifies .*'a', 'b', 'c'.*registry.model_name="):
        candidate({**good_ckpt, "classes": ["a", "b", "c"]})
    assert len(client.search_model_versions(f"name='{NAME}'")) == versions
    assert champion_version() == good.candidate_version
    save_checkpoint(best, {k: v for k, v in good_ckpt.items() if k != "format"})  # the last candidate again

    # nothing is scored twice: the candidate's own evaluate stage already has its predictions, and the
    # champion's evidence is in its decision's tags (same data version, same test videos)
    from vt_models.classify import steps

    steps.evaluate(cfg, "resnet18")
    import vt_models.classify.evaluate as evaluate_module

    def no_scoring(*args, **kwargs):
        raise AssertionError("the gate scored a model again")

    with monkeypatch.context() as patched:
        patched.setattr(evaluate_module, "evaluate_checkpoint", no_scoring)
        reused = promote(cfg, "resnet18")
    assert reused.candidate_score == pytest.approx(equal.candidate_score)
    assert (reused.candidate_ci_low, reused.candidate_ci_high) == pytest.approx(
        (equal.candidate_ci_low, equal.candidate_ci_high)
    )
    assert reused.champion_score == pytest.approx(equal.champion_score) and not reused.promoted
    assert reused.test_set == equal.test_set != ""
    # during a flow dvc.lock lags behind the data: with its frames hash unchanged but a test video's content
    # changed, the evaluate stage's predictions are not reused
    from vt_models.classify.promote import reusable_predictions

    frames = cfg.frames_dir("target")
    Path("dvc.lock").write_text(
        json.dumps({"stages": {"extract@target": {"outs": [{"path": str(frames), "md5": "unchanged"}]}}})
    )
    steps.evaluate(cfg, "resnet18")
    test_videos = [r.path for r in data.records["test"]]
    assert reusable_predictions(cfg.eval_dir("resnet18"), best, test_videos, cfg) is not None
    original = (frames / "index.json").read_text()
    index = json.loads(original)
    next(v for v in index["videos"] if v["path"] == test_videos[0])["md5"] = "0" * 32
    (frames / "index.json").write_text(json.dumps(index))
    assert reusable_predictions(cfg.eval_dir("resnet18"), best, test_videos, cfg) is None
    (frames / "index.json").write_text(original)
    Path("dvc.lock").unlink()

    worse = candidate(always(trained, 1))
    assert not worse.promoted and not worse.candidate_qualifies and worse.champion_qualifies
    assert f"champion v{good.candidate_version} stays" in worse.reason and not worse.champion_removed
    assert champion_version() == good.candidate_version, "a worse candidate never becomes champion"

    tags = client.get_model_version(NAME, worse.candidate_version).tags
    assert tags["promotion.promoted"] == "False" and tags["promotion.metric"] == "macro_f1"
    assert float(tags["promotion.champion_score"]) == pytest.approx(good.candidate_score)
    assert tags["promotion.champion_version"] == good.candidate_version and tags["promotion.data_version"]
    assert tags["promotion.champion_qualifies"] == "True" and tags["promotion.champion_after"] == good.candidate_version
    assert (
        tags["promotion.candidate_run_id"] == json.loads(Path("models/train/resnet18/run.json").read_text())["run_id"]
    )
    assert json.loads(Path("reports/promotion.json").read_text())["candidate_version"] == worse.candidate_version

    # fetching the champion twice reuses one folder in the vt cache (no copy per fetch left in /tmp)
    from vt_models.models.weights import resolve_mlflow_checkpoint

    first = resolve_mlflow_checkpoint(f"models:/{NAME}@champion")
    again = resolve_mlflow_checkpoint(f"models:/{NAME}@champion")
    assert first == again and again.is_file() and again.is_relative_to(os.environ["VT_CACHE_DIR"])
    assert load_checkpoint(again)["model"].keys() == good_ckpt["model"].keys()

    # the champion serves: mlflow.pyfunc on real video files, a bad file gets its own error
    videos = sorted(Path("data/raw").rglob("*.mp4"))[:2]
    broken = tiny_project / "broken.mp4"
    broken.write_bytes(b"not a video")
    monkeypatch.setenv("VT_SERVE_ROOT", str(tiny_project))  # the served model reads files under this folder only
    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = loaded.predict(pd.DataFrame({"path": [str(videos[0]), str(broken), str(videos[1])]}))
    assert list(out["error"] == "") == [True, False, True]
    assert set(out["label"][out["error"] == ""]) <= {"left", "right", "zoom_in"}
    probs = out.loc[0, ["p_left", "p_right", "p_zoom_in"]].to_numpy(dtype=float)
    assert probs.sum() == pytest.approx(1.0, abs=1e-4) and out.loc[0, "probability"] == pytest.approx(probs.max())
    assert "not a readable video" in out.loc[1, "error"] or "Error" in out.loc[1, "error"]

    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}")
    res = subprocess.run(
        [
            str(BIN / "vt"),
            "predict",
            "--model",
            f"models:/{NAME}@champion",
            "--json",
            "-k",
            "2",
            str(videos[0]),
            str(broken),
        ],
        cwd=tiny_project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 1, res.stderr
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines[0]["top_k"]) == 2 and lines[0]["top_k"][0]["label"] == out.loc[0, "label"]
    assert "error" in lines[1] and "broken.mp4" in lines[1]["video"]
    table = subprocess.run(
        [str(BIN / "vt"), "predict", "--model", str(best), str(videos[1])],
        cwd=tiny_project,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert table.stdout.startswith(str(videos[1]) + ": ")

    # like with like: the champion's training record holds two of the test videos (it was trained before a re-split).
    # A candidate from another run is scored with the champion only on the test videos neither has seen.
    from vt_models.data.extract import load_index
    from vt_models.data.split import TRAINED_ON

    champ_run = good.candidate_run_id
    md5 = {v["path"]: v["md5"] for v in load_index(cfg.frames_dir("target"))["videos"]}
    own_record = json.loads((best.parent / TRAINED_ON).read_text())
    assert set(own_record) >= {"train", "val"} and not {md5[r.path] for r in data.records["test"]} & set(
        own_record["train"]
    )
    seen_two = tiny_project / "champ" / TRAINED_ON
    seen_two.parent.mkdir()
    seen_two.write_text(
        json.dumps({**own_record, "train": own_record["train"] + [md5[r.path] for r in data.records["test"][:2]]})
    )
    client.log_artifact(champ_run, str(seen_two))
    run_file = best.parent / "run.json"
    with mlflow.start_run(experiment_id=client.get_run(champ_run).info.experiment_id) as other_run:
        pass
    run_file.write_text(json.dumps({**json.loads(run_file.read_text()), "run_id": other_run.info.run_id}))
    fair = candidate(good_ckpt)
    assert fair.decided and fair.split_videos == n_test and fair.seen_excluded == 2 and fair.test_videos == n_test - 2
    assert (
        fair.champion_record is True
        and f"{n_test - 2} of {n_test} test videos unseen by the candidate and champion v" in fair.reason
    )
    assert "(2 left out: seen in training)" in fair.reason and not fair.promoted, fair.reason
    tags = client.get_model_version(NAME, fair.candidate_version).tags
    assert tags["promotion.seen_excluded"] == "2" and tags["promotion.test_videos"] == str(n_test - 2)
    # the candidate's record went to its own run, for the gates after it
    assert "train" in mlflow.artifacts.load_dict(f"runs:/{other_run.info.run_id}/{TRAINED_ON}")
    # the weekly re-evaluation of the champion (flows: evaluate-champion) leaves out the same two videos
    from vt_models.classify.promote import champion_test_score

    week_score, _, week_videos, week_seen = champion_test_score(
        cfg, client.get_model_version_by_alias(NAME, "champion")
    )
    assert (week_videos, week_seen) == (n_test - 2, 2) and week_score == pytest.approx(fair.champion_score)
    # too few unseen test videos: no decision, and the aliases stay where they were
    strict = load_config(
        "params.yaml", ["train.weights=none", "train.epochs=1", f"registry.min_unseen_test_videos={n_test - 1}"]
    )
    save_checkpoint(best, {k: v for k, v in good_ckpt.items() if k != "format"})
    refused = promote(strict, "resnet18")
    assert not refused.decided and not refused.promoted and not refused.champion_removed, refused.reason
    assert refused.reason.startswith(f"no decision: only {n_test - 2} of {n_test} test videos unseen"), refused.reason
    assert f"min_unseen_test_videos={n_test - 1}" in refused.reason
    assert champion_version() == good.candidate_version == refused.champion_after
    client.log_artifact(champ_run, str(best.parent / TRAINED_ON))  # the champion's own record again

    # the data changes: the test split now holds one class only, where nothing can beat always answering the
    # majority class; re-scored, the champion fails the floor and loses its alias; nothing to ship
    splits_file = cfg.splits_path("target")
    splits = json.loads(splits_file.read_text())
    majority_name = data.classes[train_majority]
    splits["splits"]["test"] = [p for p in splits["splits"]["test"] if p.split("/")[0] == majority_name]
    splits_file.write_text(json.dumps(splits))
    dropped = candidate(always(trained, 1))
    assert not dropped.promoted and dropped.champion_removed and not dropped.champion_qualifies, dropped.reason
    assert dropped.champion_version == good.candidate_version and dropped.champion_after is None
    assert dropped.reason.startswith("nothing to ship yet") and "alias was removed" in dropped.reason
    assert dropped.data_version != good.data_version
    assert champion_version() is None
    demoted = client.get_model_version(NAME, good.candidate_version).tags
    assert (
        "fails the floor" in demoted["demoted.reason"]
        and demoted["demoted.by_decision_on"] == dropped.candidate_version
    )
    assert "nothing to ship yet" in format_promotion(Path("reports/promotion.json"))


@pytest.mark.slow
def test_mlflow_models_predict_cli(tiny_project: Path, use_mlflow: str, tmp_path: Path) -> None:
    cfg = load_config("params.yaml", ["train.weights=none", "train.epochs=1"])
    train_backbone(cfg, "train", "resnet18", progress=False)
    decision = promote(cfg, "resnet18")
    video = sorted(Path("data/raw").rglob("*.mp4"))[0].resolve()
    (tmp_path / "input.json").write_text(json.dumps({"dataframe_split": {"columns": ["path"], "data": [[str(video)]]}}))
    res = subprocess.run(
        [
            str(BIN / "mlflow"),
            "models",
            "predict",
            "-m",
            f"models:/{NAME}/{decision.candidate_version}",
            "-i",
            str(tmp_path / "input.json"),
            "-t",
            "json",
            "--env-manager",
            "local",
            "-o",
            str(tmp_path / "out.json"),
        ],
        env=dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", VT_SERVE_ROOT=str(tiny_project)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    preds = json.loads((tmp_path / "out.json").read_text())["predictions"]
    assert preds[0]["label"] in {"left", "right", "zoom_in"} and preds[0]["error"] == ""

"""Rollback of ``champion`` against a real `mlflow server`: the gate records every move of the alias as
version tags, `vt promote --rollback` undoes the latest move not yet undone (with its reason), a rollback
with no previous champion is a clear error, and the dashboard's registry page shows the history.

The gate here is the real one (real registry, real model logging, real alias moves); only the scores are
scripted, since what is under test is where ``champion`` goes, not how a model scores."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import mlflow
import pytest

from tests.project import write_params
from vt_models.eval.bootstrap import Interval
from vt_models.io import mlflow as tracking
from vt_models.promotion import (
    CHAMPION,
    Decision,
    Evidence,
    Floor,
    PromotionError,
    gate,
    previous_champion,
    rollback_champion,
)

from .conftest import BIN
from .gate_models import untrained_classifier
from .videos import good_mp4

# An own registered model: the session's MLflow server is shared with the other registry tests.
NAME = "vt-rollback-test"


def scripted(scores: list[float]) -> Callable[[Path, Path], Evidence]:
    """Evidence for each candidate in turn: a CI of +/- 0.05 around the score, baseline 0.2."""
    queue = list(scores)

    def score(ckpt: Path, splits: Path) -> Evidence:
        s = queue.pop(0)
        return Evidence(s, "md5:fixed", Interval(s - 0.05, s + 0.05, 0.95, 1000, 3), 0.2, "always 'a'")

    return score


@pytest.fixture
def gate_inputs(tmp_path: Path) -> dict:
    return make_gate_inputs(tmp_path)


def make_gate_inputs(tmp_path: Path) -> dict:
    """What the gate reads from a project: a trained run folder, a frames index and a splits file."""
    run_dir = tmp_path / "models" / "train" / "resnet18"
    run_dir.mkdir(parents=True)
    untrained_classifier(run_dir / "best.pt", ["a", "b", "c"])
    (run_dir / "trained_on.json").write_text(json.dumps({"train": ["h-train"], "val": ["h-val"]}))
    frames = tmp_path / "frames"
    frames.mkdir()
    videos = ["a/1.mp4", "b/2.mp4", "c/3.mp4"]
    (frames / "index.json").write_text(
        json.dumps({"videos": [{"path": p, "md5": f"h{i}"} for i, p in enumerate(videos)]})
    )
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps({"classes": ["a", "b", "c"], "splits": {"test": videos}}))
    return {"run_dir": run_dir, "frames_dir": frames, "splits_path": splits, "example": good_mp4(tmp_path / "ex.mp4")}


def run_gate(inputs: dict, score: float | Callable[[Path, Path], Evidence], name: str = NAME) -> Decision:
    """One real gate decision on a freshly registered version whose test score is ``score`` (or what the
    scoring function ``score`` returns)."""
    experiment = tracking.ensure_experiment("vt-rollback-test")
    with mlflow.start_run(experiment_id=experiment) as run:
        pass
    (inputs["run_dir"] / "run.json").write_text(json.dumps({"run_id": run.info.run_id}))
    return gate(
        name,
        "macro_f1",
        0.0,
        "resnet18",
        inputs["run_dir"],
        score if callable(score) else scripted([score]),
        inputs["example"],
        "test",
        inputs["run_dir"] / "promotion.json",
        hint="vt train -b resnet18",
        floor=Floor(0.3, 2, 2),
        frames_dir=inputs["frames_dir"],
        splits_path=inputs["splits_path"],
    )


def champion() -> str | None:
    return tracking.current_alias(NAME, CHAMPION)


def test_previous_champion_undoes_one_move_per_rollback() -> None:
    def move(frm: str | None, to: str | None, by: str = "gate", t: int = 0) -> tracking.AliasMove:
        return tracking.AliasMove(t, CHAMPION, frm, to, "why", by, "me")

    assert previous_champion([]) is None
    history = [move(None, "1"), move("1", "2"), move("2", "3")]
    assert previous_champion(history).from_version == "2"
    # a rollback undoes 2 -> 3; the next one undoes 1 -> 2, never back and forth between 2 and 3
    assert previous_champion([*history, move("3", "2", "rollback")]).from_version == "1"
    assert previous_champion([*history, move("3", "2", "rollback"), move("2", "1", "rollback")]).from_version is None
    # the gate removed a champion that failed the floor: a rollback restores it
    assert previous_champion([move(None, "1"), move("1", None)]).from_version == "1"


def test_gate_records_moves_and_rollback_restores_the_previous_champion(
    gate_inputs: dict, use_mlflow: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = mlflow.MlflowClient()
    with pytest.raises(PromotionError, match=f"{NAME}: no previous champion to roll back to"):
        rollback_champion(NAME, "nothing registered yet")

    first = run_gate(gate_inputs, 0.6)
    assert first.promoted and champion() == first.candidate_version, first.reason
    # one champion only: nothing to roll back to, and the message says why
    with pytest.raises(
        PromotionError, match=rf"no previous champion to roll back to \(v{first.candidate_version} became"
    ):
        rollback_champion(NAME, "too early")
    second = run_gate(gate_inputs, 0.8)
    assert second.promoted and champion() == second.candidate_version, second.reason
    kept = run_gate(gate_inputs, 0.7)  # does not beat 0.8: no move, so no history entry
    assert not kept.promoted and champion() == second.candidate_version

    history = tracking.alias_history(NAME, CHAMPION)
    assert [(m.from_version, m.to_version, m.by) for m in history] == [
        (None, first.candidate_version, "gate"),
        (first.candidate_version, second.candidate_version, "gate"),
    ]
    assert history[1].reason == second.reason and history[0].time_ms < history[1].time_ms
    # kept on the versions the move involves (the registry itself holds the history)
    tags = client.get_model_version(NAME, second.candidate_version).tags
    assert json.loads(tags[history[1].key])["to_version"] == second.candidate_version
    assert history[1].key in client.get_model_version(NAME, first.candidate_version).tags
    assert history[1].key not in client.get_model_version(NAME, kept.candidate_version).tags

    # the CLI: `vt promote --rollback --reason` on this project's registered model
    project = tmp_path / "proj"
    project.mkdir()
    write_params(project, {"registry": {"model_name": NAME}})
    env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", MLFLOW_TRACKING_URI=use_mlflow)
    vt = [str(BIN / "vt"), "promote"]
    res = subprocess.run(
        [*vt, "--rollback", "--reason", "v2 mislabels night videos"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (
        f"champion v{second.candidate_version} -> v{first.candidate_version} (v2 mislabels night videos)" in res.stdout
    )
    assert champion() == first.candidate_version
    back = tracking.alias_history(NAME, CHAMPION)[-1]
    assert (back.from_version, back.to_version, back.by, back.reason) == (
        second.candidate_version,
        first.candidate_version,
        "rollback",
        "v2 mislabels night videos",
    )
    assert back.user and back.key in client.get_model_version(NAME, second.candidate_version).tags

    # the dashboard's registry page shows the history, newest first
    from mlflow.tracking._tracking_service import utils

    from .test_dashboard import open_page

    uri_before = utils._tracking_uri
    monkeypatch.chdir(project)
    import streamlit as st

    st.cache_data.clear()
    at = open_page("registry")
    mlflow.set_tracking_uri(uri_before)
    table = next(d.value for d in at.dataframe if "by" in d.value.columns)
    assert table[["from", "to", "by"]].values.tolist() == [
        [f"v{second.candidate_version}", f"v{first.candidate_version}", "rollback"],
        [f"v{first.candidate_version}", f"v{second.candidate_version}", "gate"],
        ["none", f"v{first.candidate_version}", "gate"],
    ]
    assert table.loc[0, "reason"] == "v2 mislabels night videos" and table.loc[1, "reason"] == second.reason

    # a second rollback would undo the first promotion: there is no champion before it
    res = subprocess.run([*vt, "--rollback"], cwd=project, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "no previous champion to roll back to" in res.stderr, res.stderr
    assert champion() == first.candidate_version
    # the gate's reasons are its own: --reason without --rollback is a usage error
    res = subprocess.run([*vt, "--reason", "x"], cwd=project, env=env, capture_output=True, text=True)
    assert res.returncode == 2 and "--reason goes with --rollback" in res.stderr

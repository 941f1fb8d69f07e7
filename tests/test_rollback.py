"""Rollback of ``champion`` against a real `mlflow server`: the gate records every move of the alias as
version tags, `vt promote --rollback` undoes the latest move not yet undone (with its reason), a rollback
with no previous champion is a clear error, and the dashboard's registry page shows the history.

The gate here is the real one (real registry, real model logging, real alias moves); only the scores are
scripted, since what is under test is where ``champion`` goes, not how a model scores."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import mlflow
import pytest

from tests.project import write_params
from vt_models.io import mlflow as tracking
from vt_models.promotion import (
    CHAMPION,
    PromotionError,
    previous_champion,
    rollback_champion,
)

from .conftest import BIN
from .gate_models import gate_project, run_gate

# An own registered model: the session's MLflow server is shared with the other registry tests.
NAME = "vt-rollback-test"


@pytest.fixture
def gate_inputs(tmp_path: Path) -> dict:
    return gate_project(tmp_path)


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

    first = run_gate(gate_inputs, 0.6, NAME)
    assert first.promoted and champion() == first.candidate_version, first.reason
    # one champion only: nothing to roll back to, and the message says why
    with pytest.raises(
        PromotionError, match=rf"no previous champion to roll back to \(v{first.candidate_version} became"
    ):
        rollback_champion(NAME, "too early")
    second = run_gate(gate_inputs, 0.8, NAME)
    assert second.promoted and champion() == second.candidate_version, second.reason
    kept = run_gate(gate_inputs, 0.7, NAME)  # does not beat 0.8: no move, so no history entry
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

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from vt_models.cli import app
from vt_models.io.files import read_csv

from .project import BIN, ROOT, run
from .videos import good_mp4, hostile_set

runner = CliRunner()


def test_config_show_prints_resolved_config() -> None:
    result = runner.invoke(app, ["--params", str(ROOT / "params.yaml"), "-S", "extract.num_frames=8", "config", "show"])
    assert result.exit_code == 0, result.output
    shown = yaml.safe_load(result.output)
    assert shown["extract"]["num_frames"] == 8
    assert shown["probe"]["min_frames"] == 8  # default filled in


def test_config_error_is_clear_and_exit_code_2(tmp_path: Path) -> None:
    bad = tmp_path / "params.yaml"
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["split"]["k_fold"] = 3
    bad.write_text(yaml.safe_dump(data))
    result = runner.invoke(app, ["--params", str(bad), "config", "show"])
    assert result.exit_code == 2
    assert "unknown key 'split.k_fold'" in result.output and "k_folds" in result.output


def test_probe_command_without_params_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no params.yaml here: defaults apply, -S still works
    hostile_set(tmp_path / "raw")
    result = run(tmp_path, str(BIN / "vt"), "-S", "probe.timeout_s=15", "probe", "raw", "--out", "out")
    assert "usable -> out/manifest.csv" in result.stdout and "quarantined -> out/quarantine.csv" in result.stdout
    assert "see out/quarantine.csv for the reasons" in result.stdout
    assert len(read_csv(tmp_path / "out" / "quarantine.csv")) == 6


def test_probe_exit_code_1_when_nothing_usable(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "raw" / "a").mkdir(parents=True)
    (tmp_path / "raw" / "a" / "x.mp4").write_bytes(b"")
    result = runner.invoke(app, ["probe", "raw", "--out", "out"])
    assert result.exit_code == 1 and "no usable video" in result.output
    result = runner.invoke(app, ["probe", "missing", "--out", "out"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_probe_extract_split_commands_by_dataset(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    for c in ("a", "b"):
        for g in range(3):
            for k in range(2):
                good_mp4(tmp_path / "videos" / c / f"{c}{g}_c{k}.mp4", seed=g * 10 + k)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["datasets"] = {"mine": {"raw": "videos"}}
    params["split"]["datasets"] = {}  # the sample's own fractions name its data sets
    params["sample"]["domains"] = {}
    params["pretrain"]["dataset"] = params["train"]["dataset"] = params["detect"]["dataset"] = "mine"
    params["adaptation"]["dataset"] = "mine"
    params["train"]["weights"] = "none"
    params["split"]["k_folds"] = 2
    params["extract"].update(num_frames=4, short_side=24)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert runner.invoke(app, ["probe", "--dataset", "mine"]).exit_code == 0
    assert runner.invoke(app, ["extract", "--dataset", "mine"]).exit_code == 0
    result = runner.invoke(app, ["split", "--dataset", "mine"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].split()[:4] == ["class", "train", "val", "test"]
    assert (tmp_path / "data" / "splits" / "mine.json").is_file()
    bad = runner.invoke(app, ["extract", "--dataset", "nope"])
    assert bad.exit_code == 2 and "unknown dataset 'nope'; choices: mine" in bad.output


def test_training_steps_before_extraction_say_what_to_run(tmp_path: Path, monkeypatch) -> None:
    """A step run before its frames exist ends with one clear line naming the missing index and the fix, not a
    traceback; `vt report adapt` is the adaptation report under its short name."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    for args, frames in (
        (["train"], "data/frames/target"),
        (["cv"], "data/frames/target"),
        (["report", "transfer"], "data/frames/target"),
        (["report", "adapt"], "data/frames/slow"),
        (["detect", "train"], "data/frames_det/target"),
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output, result.exception)
        fix = "run `vt extract` (`vt detect extract` for detection data) or `dvc repro` first"
        assert f"{frames}/index.json not found: {fix}" in " ".join(result.output.split()), (args, result.output)


def test_models_list_shows_the_registry() -> None:
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["name", "family", "params*", "frames"]
    r2 = next(line for line in lines if line.startswith("r2plus1d_18 "))
    assert "3d" in r2 and "31.5M" in r2 and "KINETICS400_V1" in r2 and "models:/" in r2
    gru = next(line for line in lines if line.startswith("resnet18_gru "))
    assert "rnn+gru" in gru and "IMAGENET1K_V1" in gru
    mvit = next(line for line in lines if line.startswith("mvit_v2_s "))
    assert " 16 " in mvit and "224" in mvit


def test_the_demo_leaves_only_the_adaptation_reports_own_stages_out() -> None:
    from vt_models.cli.demo import _adaptation_only
    from vt_models.config import load_config

    slow = {"adaptation", "probe@slow", "extract@slow", "split@slow"}
    assert _adaptation_only(load_config(ROOT / "params.yaml")) == slow
    # a data set another stage reads keeps its data stages in the demo
    assert _adaptation_only(load_config(ROOT / "params.yaml", ["adaptation.dataset=target"])) == {"adaptation"}
    assert _adaptation_only(load_config(ROOT / "params.yaml", ["detect.dataset=slow"])) == {"adaptation"}


def test_the_demo_leaves_out_the_classifier_frames_of_the_detectors_own_data_set() -> None:
    from vt_models.cli.demo import _detection_only
    from vt_models.config import load_config

    # the detector's source (scenes) is probed for its boxes, but no classifier reads its frames
    assert _detection_only(load_config(ROOT / "params.yaml")) == {"extract@scenes", "split@scenes"}
    # a data set a classifier reads keeps them: the target (detect.dataset) never appears
    assert _detection_only(load_config(ROOT / "params.yaml", ["detect.pretrain.dataset=source"])) == set()
    assert _detection_only(load_config(ROOT / "params.yaml", ["pretrain.dataset=scenes"])) == set()

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from vt_models.config import Config, ConfigError, ProbeConfig, load_config, to_yaml

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_project_params_load_and_round_trip(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "params.yaml")
    assert isinstance(cfg, Config)
    assert cfg.splits_path("target") == Path("data/splits/target.json")
    again = load_config(_write(tmp_path, yaml.safe_load(to_yaml(cfg))))
    assert again == cfg


def test_unknown_key_names_key_and_allowed_keys(tmp_path: Path) -> None:
    data = _params()
    data["extract"]["num_frame"] = 8
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, data))
    msg = str(err.value)
    assert "unknown key 'extract.num_frame'" in msg and "(value 8)" in msg
    assert "allowed keys here: mode, num_frames" in msg
    assert str(tmp_path / "params.yaml") in msg


def test_unknown_key_inside_a_named_dataset(tmp_path: Path) -> None:
    data = _params()
    data["datasets"]["target"]["labels"] = "x.csv"
    with pytest.raises(ConfigError, match=r"unknown key 'datasets.target.labels'.*allowed keys here: raw, labels_csv"):
        load_config(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        (
            ("extract", "mode"),
            "random",
            r"key 'extract.mode' = 'random': Input should be 'uniform', 'segments' or 'fps'",
        ),
        (("extract", "short_side"), 0, r"key 'extract.short_side' = 0: Input should be greater than or equal to 1"),
        (("split", "test_fraction"), 1.5, r"key 'split.test_fraction' = 1.5: Input should be less than 1"),
        (("split", "val_fraction"), 0.9, r"test_fraction \+ val_fraction must be < 1"),
        (("probe", "group_regex"), "(no group)", r"needs a named group"),
        (("sample", "classes"), ["left", "jump"], r"unknown motion classes \['jump'\]; allowed: "),
        (("probe", "timeout_s"), "soon", r"key 'probe.timeout_s' = 'soon': Input should be a valid number"),
        (("flows", "overlap"), "queue", r"key 'flows.overlap' = 'queue': Input should be 'skip', 'wait' or 'allow'"),
        (
            ("train", "flow_span"),
            3,
            r"train.flow_span 3 differs from pretrain.flow_span 2: the source model reads motion",
        ),
    ],
)
def test_bad_values_name_key_value_and_what_is_allowed(tmp_path: Path, key, value, expected) -> None:
    data = _params()
    data[key[0]][key[1]] = value
    with pytest.raises(ConfigError, match=expected):
        load_config(_write(tmp_path, data))


def test_missing_section_and_bad_files(tmp_path: Path) -> None:
    data = _params()
    del data["sample"]
    with pytest.raises(ConfigError, match="missing key 'sample'"):
        load_config(_write(tmp_path, data))
    with pytest.raises(ConfigError, match="params file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_overrides_like_dvc_exp_set(tmp_path: Path) -> None:
    cfg = load_config(ROOT / "params.yaml", ["extract.num_frames=8", "split.k_folds=4", "datasets.target.raw=/videos"])
    assert (cfg.extract.num_frames, cfg.split.k_folds, cfg.datasets["target"].raw) == (8, 4, Path("/videos"))
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        load_config(ROOT / "params.yaml", ["extract.num_frames"])
    with pytest.raises(ConfigError, match="extract.mode"):
        load_config(ROOT / "params.yaml", ["extract.mode=sometimes"])


def test_amp_off_unquoted_means_off_not_a_type_error() -> None:
    """YAML reads `off` as false: `amp: off` in params.yaml and `-S train.amp=off` must still mean fp32."""
    cfg = load_config(ROOT / "params.yaml", ["train.amp=off", "pretrain.amp='off'", "detect.amp=bf16"])
    assert (cfg.train.amp, cfg.pretrain.amp, cfg.detect.amp) == ("off", "off", "bf16")
    with pytest.raises(ConfigError, match="train.amp"):
        load_config(ROOT / "params.yaml", ["train.amp=on"])  # true is not a precision


def test_configs_are_frozen() -> None:
    cfg = ProbeConfig()
    with pytest.raises(ValidationError):
        cfg.min_frames = 3  # type: ignore[misc]


def test_crop_and_detection_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match=r"crop_scale must be \(min, max\) with min <= max, got \[0.9, 0.5\]"):
        load_config(ROOT / "params.yaml", ["train.crop_scale=[0.9, 0.5]"])
    with pytest.raises(ConfigError, match="detect.detectors: unknown \\['yolo'\\]; choices: .*fcos_resnet50_fpn"):
        load_config(ROOT / "params.yaml", ["detect.detectors=[yolo]"])
    with pytest.raises(ConfigError, match=r"low_score \(0.6\) must be below high_score \(0.5\)"):
        load_config(ROOT / "params.yaml", ["detect.tracker.low_score=0.6"])
    with pytest.raises(ConfigError, match="detect.dataset 'nope' is not under datasets"):
        load_config(ROOT / "params.yaml", ["detect.dataset=nope"])


def test_backbones_without_a_source_model_are_named_in_one_error() -> None:
    # replacing pretrain.backbones leaves three keys behind; one error names all it can, with the fix
    with pytest.raises(ConfigError) as err:
        load_config(ROOT / "params.yaml", ["pretrain.backbones=[resnet18_tsm]", "transfer.backbone=resnet18_tsm"])
    msg = str(err.value)
    assert "adaptation.backbone ['mini_resnet_tsm']" in msg
    assert "train.backbones (train.weights is 'source') ['mini_resnet_tsm']" in msg
    assert "transfer.backbone" not in msg  # resnet18_tsm is pretrained now
    assert "Set pretrain.backbones=['mini_resnet_tsm', 'resnet18_tsm']" in msg
    assert "'seed': 42" not in msg  # a check across sections does not dump the whole file
    cfg = load_config(
        ROOT / "params.yaml",
        [
            "pretrain.backbones=[resnet18_tsm]",
            "transfer.backbone=resnet18_tsm",
            "adaptation.backbone=resnet18_tsm",
            "train.weights=none",
        ],
    )
    assert cfg.transfer.backbone == "resnet18_tsm"  # from random weights, train needs no source model

"""Typed, validated configuration loaded from ``params.yaml``.

Every section is a frozen pydantic model that forbids unknown keys, so a typo fails
loudly with the key, the value and what is allowed instead of being silently ignored.
DVC reads the same file for its ``params`` dependencies, so there is one source of truth.
The sections live by pipeline part (``data``, ``training``, ``evaluation``); ``Config`` and the
loader are here. Loading imports no torch: the registry it checks names against is plain data.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from vt_models.config.base import ConfigError, Fraction, PositiveInt, Strict
from vt_models.config.data import (
    VIDEO_EXTENSIONS,
    DatasetConfig,
    DomainSample,
    ExtractConfig,
    ProbeConfig,
    SampleConfig,
    SplitConfig,
)
from vt_models.config.evaluation import (
    DEFAULT_REVERSE_PAIRS,
    AdaptationConfig,
    CvConfig,
    EvaluateConfig,
    FlowsConfig,
    RegistryConfig,
    TransferConfig,
)
from vt_models.config.training import DetectConfig, LoopConfig, PretrainConfig, TrackerConfig, TrainConfig
from vt_models.models.registry import list_backbones, list_detectors

DEFAULT_PARAMS = Path("params.yaml")


class Config(Strict):
    """The whole ``params.yaml``."""

    seed: int = 0
    data_dir: Path = Path("data")
    sample: SampleConfig
    datasets: dict[str, DatasetConfig] = Field(min_length=1)
    probe: ProbeConfig = ProbeConfig()
    extract: ExtractConfig = ExtractConfig()
    split: SplitConfig = SplitConfig()
    pretrain: PretrainConfig = PretrainConfig(dataset="source", weights="none")
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    cv: CvConfig = CvConfig()
    transfer: TransferConfig = TransferConfig()
    adaptation: AdaptationConfig = AdaptationConfig()
    registry: RegistryConfig = RegistryConfig()
    flows: FlowsConfig = FlowsConfig()
    detect: DetectConfig = DetectConfig()

    def _check_source_models(self) -> None:
        """Every backbone that starts from the source model must be one pretraining makes. All such keys are
        named in one error: changing one backbone (say transfer.backbone) usually means changing several."""
        wanted = [
            ("transfer.backbone", [self.transfer.backbone]),
            ("adaptation.backbone", [self.adaptation.backbone]),
            (
                "train.backbones (train.weights is 'source')",
                self.train.backbones if self.train.weights == "source" else [],
            ),
        ]
        problems = [(key, [b for b in names if b not in self.pretrain.backbones]) for key, names in wanted]
        problems = [(key, missing) for key, missing in problems if missing]
        if problems:
            needed = sorted({b for _, missing in problems for b in missing} | set(self.pretrain.backbones))
            raise ValueError(
                f"these need a source model that pretrain.backbones {self.pretrain.backbones} does not make: "
                + "; ".join(f"{key} {missing}" for key, missing in problems)
                + f". Set pretrain.backbones={needed} (or pick backbones from it for those keys; for train, "
                "other train.weights)"
            )

    @model_validator(mode="after")
    def _check(self) -> Config:
        known = {b.name for b in list_backbones()}
        for section in ("pretrain", "train"):
            tc: TrainConfig = getattr(self, section)
            if tc.dataset not in self.datasets:
                raise ValueError(
                    f"{section}.dataset {tc.dataset!r} is not under datasets (allowed: {sorted(self.datasets)})"
                )
            unknown = [b for b in tc.backbones if b not in known]
            if unknown:
                raise ValueError(f"{section}.backbones: unknown {unknown}; choices: {', '.join(sorted(known))}")
        for key, names in (
            ("cv.backbones", self.cv.backbones or []),
            ("transfer.backbone", [self.transfer.backbone]),
            ("adaptation.backbone", [self.adaptation.backbone]),
        ):
            bad = [b for b in names if b not in known]
            if bad:
                raise ValueError(f"{key}: unknown {bad}; choices: {', '.join(sorted(known))}")
        self._check_source_models()
        if self.adaptation.dataset not in self.datasets:
            raise ValueError(
                f"adaptation.dataset {self.adaptation.dataset!r} is not under datasets "
                f"(allowed: {sorted(self.datasets)})"
            )
        if self.adaptation.dataset == self.train.adapt_source:
            raise ValueError(
                f"adaptation.dataset and train.adapt_source are both {self.train.adapt_source!r}: the report adapts "
                "from the labelled source to another data set"
            )
        if self.pretrain.adapt != "none":
            raise ValueError("pretrain.adapt must be none: domain adaptation is a train setting (train.adapt)")
        if self.pretrain.objective == "autoencoder" and self.pretrain.bss:
            raise ValueError("pretrain.bss needs class logits' features under a supervised objective: set it to 0")
        if self.train.adapt != "none" and self.train.adapt_source not in self.datasets:
            raise ValueError(
                f"train.adapt_source {self.train.adapt_source!r} is not under datasets "
                f"(allowed: {sorted(self.datasets)})"
            )
        if self.pretrain.weights == "source":
            raise ValueError("pretrain.weights cannot be 'source' (that is what pretraining makes)")
        if (
            self.train.weights == "source"
            and self.train.modality == self.pretrain.modality == "flow"
            and (self.train.flow_span != self.pretrain.flow_span)
        ):
            raise ValueError(
                f"train.flow_span {self.train.flow_span} differs from pretrain.flow_span {self.pretrain.flow_span}: "
                "the source model reads motion over that many stored frame pairs; set both alike"
            )
        if self.detect.dataset not in self.datasets:
            raise ValueError(
                f"detect.dataset {self.detect.dataset!r} is not under datasets (allowed: {sorted(self.datasets)})"
            )
        known_det = {d.name for d in list_detectors()}
        bad_det = [d for d in self.detect.detectors if d not in known_det]
        if bad_det:
            raise ValueError(f"detect.detectors: unknown {bad_det}; choices: {', '.join(sorted(known_det))}")
        missing = [d for d in self.sample.domains if d not in self.datasets]
        if missing:
            raise ValueError(
                f"sample.domains {missing} have no entry under datasets (allowed: {sorted(self.datasets)})"
            )
        unknown = [d for d in self.split.datasets if d not in self.datasets]
        if unknown:
            raise ValueError(f"split.datasets {unknown} are not data sets (allowed: {sorted(self.datasets)})")
        return self

    def dataset(self, name: str) -> DatasetConfig:
        try:
            return self.datasets[name]
        except KeyError:
            raise ConfigError(f"unknown dataset {name!r}; choices: {', '.join(sorted(self.datasets))}") from None

    # Derived locations: one layout for every dataset, so stages never disagree on paths.
    def probe_dir(self, name: str) -> Path:
        return self.data_dir / "probe" / name

    def frames_dir(self, name: str) -> Path:
        return self.data_dir / "frames" / name

    def splits_path(self, name: str) -> Path:
        return self.data_dir / "splits" / f"{name}.json"

    def eval_dir(self, backbone: str, stage: str = "train") -> Path:
        """Test-split reports: of the fine-tuned model (``train``), or of the source model on the source data
        (``pretrain``)."""
        return Path("reports") / ("evaluate" if stage == "train" else "evaluate_source") / backbone

    # detection data: of detect.dataset unless another dataset is named (detect.pretrain.dataset)
    def detect_probe_dir(self, dataset: str | None = None) -> Path:
        return self.data_dir / "probe_det" / (dataset or self.detect.dataset)

    def detect_frames_dir(self, dataset: str | None = None) -> Path:
        return self.data_dir / "frames_det" / (dataset or self.detect.dataset)

    def detect_splits_path(self, dataset: str | None = None) -> Path:
        return self.data_dir / "splits_det" / f"{dataset or self.detect.dataset}.json"

    def detect_eval_dir(self, detector: str) -> Path:
        return Path("reports") / "detect" / detector

    def run_dir(self, stage: str, backbone: str) -> Path:
        """Checkpoints and metrics of one training stage (``pretrain`` or ``train``) and backbone."""
        return run_dir(stage, backbone)


def run_dir(stage: str, backbone: str) -> Path:
    """The default folder of a classifier's training run (``vt pretrain`` / ``vt train`` without ``--out``)."""
    return Path("models") / stage / backbone


# --------------------------------------------------------------------------- loading


def _unwrap(tp: Any) -> Any:
    """Strip Optional/Annotated so we can walk into nested models for error messages."""
    while True:
        origin = typing.get_origin(tp)
        if origin is Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
            if len(args) != 1:
                return tp
        else:
            return tp


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class found by following ``loc`` (field names and dict keys) from ``model``."""
    current: Any = model
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) in (dict, list, tuple):
            current = typing.get_args(current)[-1]
        else:
            return None
    current = _unwrap(current)
    if typing.get_origin(current) is dict:
        current = _unwrap(typing.get_args(current)[-1])
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def format_validation_error(exc: ValidationError, source: str, model: type[BaseModel] = Config) -> str:
    lines = [f"{source}: invalid configuration ({exc.error_count()} problem(s)):"]
    for err in exc.errors():
        loc = tuple(err["loc"])
        key = ".".join(str(p) for p in loc) or "<root>"
        if err["type"] == "extra_forbidden":
            parent = _model_at(model, loc[:-1])
            allowed = ", ".join(parent.model_fields) if parent else "see params.yaml docs"
            lines.append(f"  - unknown key '{key}' (value {err['input']!r}); allowed keys here: {allowed}")
        elif err["type"] == "missing":
            lines.append(f"  - missing key '{key}': add it to {source}")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            if isinstance(err["input"], dict) and _model_at(model, loc) is not None:
                # a check across a section's keys (or the whole file's): its message names them, and the
                # section's own values would bury it (a dict-valued setting still echoes its value)
                lines.append(f"  - {msg}" if not loc else f"  - in '{key}': {msg}")
            else:
                lines.append(f"  - key '{key}' = {err['input']!r}: {msg}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], parsed YAML value), as ``dvc exp run -S`` takes them."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} must look like key.path=value (e.g. split.k_folds=5)")
    return key.split("."), yaml.safe_load(raw) if raw else None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {text!r}: '{part}' is not a section")
        node[path[-1]] = value
    return data


def load_config(path: Path | str = DEFAULT_PARAMS, overrides: list[str] | None = None) -> Config:
    """Read, override and validate a params file. Raises :class:`ConfigError` with every problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found; run from the project root or pass --params PATH")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    data = apply_overrides(data, overrides or [])
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, str(path))) from None


def to_yaml(cfg: BaseModel) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


__all__ = [
    "AdaptationConfig",
    "Config",
    "ConfigError",
    "CvConfig",
    "DEFAULT_PARAMS",
    "DEFAULT_REVERSE_PAIRS",
    "DatasetConfig",
    "DetectConfig",
    "DomainSample",
    "EvaluateConfig",
    "ExtractConfig",
    "FlowsConfig",
    "Fraction",
    "LoopConfig",
    "PositiveInt",
    "ProbeConfig",
    "RegistryConfig",
    "SampleConfig",
    "SplitConfig",
    "Strict",
    "TrackerConfig",
    "PretrainConfig",
    "TrainConfig",
    "TransferConfig",
    "VIDEO_EXTENSIONS",
    "apply_overrides",
    "format_validation_error",
    "load_config",
    "parse_override",
    "run_dir",
    "to_yaml",
]

"""Typed, validated configuration loaded from ``params.yaml``.

Every section is a frozen pydantic model that forbids unknown keys, so a typo fails
loudly with the key, the value and what is allowed instead of being silently ignored.
DVC reads the same file for its ``params`` dependencies, so there is one source of truth.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vt_models.data.motions import MOTIONS
from vt_models.models.registry import list_backbones, list_detectors

DEFAULT_PARAMS = Path("params.yaml")

VIDEO_EXTENSIONS = (
    ".mp4",
    ".m4v",
    ".mov",
    ".avi",
    ".mkv",
    ".webm",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".flv",
    ".3gp",
    ".ogv",
    ".ts",
    ".mts",
)


class ConfigError(ValueError):
    """A params file that cannot be used; the message names every bad key and the fix."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


PositiveInt = Annotated[int, Field(ge=1)]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class DomainSample(Strict):
    """How many clips one domain of the sample data set gets, and how they look."""

    clips_per_class: PositiveInt
    clips_per_recording: PositiveInt = Field(
        2, description="clips cut from one simulated recording; they share a group id"
    )
    style: Literal["flat", "textured"]


class SampleConfig(Strict):
    """The embedded sample data set (``vt data sample``)."""

    classes: list[str] = Field(min_length=2)
    domains: dict[str, DomainSample]
    sizes: list[tuple[PositiveInt, PositiveInt]] = Field(
        min_length=1, description="(width, height) choices; made even for H.264"
    )
    fps: list[PositiveInt] = Field(min_length=1)
    duration_s: tuple[float, float] = (1.5, 3.0)
    workers: int | None = Field(None, ge=1, description="null: one per CPU core")

    @model_validator(mode="after")
    def _check(self) -> SampleConfig:
        unknown = [c for c in self.classes if c not in MOTIONS]
        if unknown:
            raise ValueError(f"unknown motion classes {unknown}; allowed: {sorted(MOTIONS)}")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"duplicate classes in {self.classes}")
        lo, hi = self.duration_s
        if not 0 < lo <= hi:
            raise ValueError(f"duration_s must be (min, max) with 0 < min <= max, got {self.duration_s}")
        return self


class DatasetConfig(Strict):
    """One labelled video collection: folder-per-class, or any folder plus a CSV manifest."""

    raw: Path
    labels_csv: Path | None = Field(None, description="CSV with path,label[,group]; null: folder-per-class layout")


class ProbeConfig(Strict):
    extensions: list[str] = Field(default_factory=lambda: list(VIDEO_EXTENSIONS), min_length=1)
    min_frames: PositiveInt = 8
    timeout_s: float = Field(30.0, gt=0)
    group_regex: str = Field(
        r"^(?P<group>.+?)_c\d+$",
        description="applied to the file stem; named group 'group' is the recording id",
    )
    workers: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> ProbeConfig:
        import re

        try:
            pattern = re.compile(self.group_regex)
        except re.error as exc:
            raise ValueError(f"group_regex {self.group_regex!r} is not a valid regex: {exc}") from exc
        if "group" not in pattern.groupindex:
            raise ValueError(f"group_regex {self.group_regex!r} needs a named group (?P<group>...)")
        bad = [e for e in self.extensions if not e.startswith(".")]
        if bad:
            raise ValueError(f"extensions must start with '.', got {bad}")
        return self


class ExtractConfig(Strict):
    mode: Literal["uniform", "segments", "fps"] = "uniform"
    num_frames: PositiveInt = Field(16, description="mode=uniform: frames spread over the video")
    num_segments: PositiveInt = Field(4, description="mode=segments: TSN segments")
    frames_per_segment: PositiveInt = Field(4, description="mode=segments: consecutive frames each")
    fps: float = Field(8.0, gt=0, description="mode=fps: sampling rate")
    max_frames: PositiveInt = Field(64, description="mode=fps: cap per video")
    short_side: PositiveInt = 112
    jpeg_quality: int = Field(90, ge=1, le=100)
    flow: bool = Field(
        True,
        description="also store dense optical flow between consecutive stored frames "
        "(OpenCV Farneback, quantised 8-bit images); the flow and two-stream modalities need it",
    )
    timeout_s: float = Field(120.0, gt=0)
    workers: int | None = Field(None, ge=1)


class SplitConfig(Strict):
    test_fraction: Fraction = 0.2
    val_fraction: Fraction = 0.2
    k_folds: int = Field(3, ge=2)

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.test_fraction + self.val_fraction >= 1.0:
            raise ValueError(
                f"test_fraction + val_fraction must be < 1, got {self.test_fraction} + {self.val_fraction}"
            )
        return self


class LoopConfig(Strict):
    """What the generic training loop needs (``vt_models.train.engine``), for every task."""

    dataset: str = "target"
    backbone_lr_mult: float = Field(1.0, gt=0, le=1.0, description="encoder LR = lr * this (discriminative LR)")
    freeze_bn: bool = Field(False, description="keep BatchNorm statistics and affine params fixed")
    epochs: PositiveInt = 8
    batch_size: PositiveInt = 8
    optimizer: Literal["adamw", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0, description="max global grad norm; null: no clipping")
    early_stopping_patience: int | None = Field(
        4, ge=1, description="epochs without a gain of the monitored val metric"
    )
    min_val_videos: int = Field(
        30,
        ge=0,
        description="early stopping and best-epoch selection only with at least this "
        "many validation videos; a smaller validation split cannot tell epochs apart, so the "
        "run trains the fixed schedule and keeps the last epoch",
    )
    precise_bn: int = Field(
        0,
        ge=0,
        description="re-estimate BatchNorm statistics on up to this many training batches "
        "before each validation and checkpoint (precise BN / AdaBN); 0: off",
    )
    num_workers: int = Field(2, ge=0)
    amp: Literal["auto", "bf16", "fp16", "off"] = Field("auto", description="mixed precision on CUDA; CPU is fp32")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    deterministic: bool = True


class TrainConfig(LoopConfig):
    """Fine-tuning a video classifier: one generic loop for every backbone (see ``vt_models.train``)."""

    backbones: list[str] = Field(default_factory=lambda: ["resnet18"], min_length=1)
    weights: str = Field(
        "source",
        description="none | imagenet | kinetics400 | default | <enum member> | source (the pretrain "
        "stage's model for this backbone) | a checkpoint file | models:/NAME@ALIAS",
    )
    strategy: Literal["linear_probe", "partial", "full"] = "full"
    unfreeze_stages: PositiveInt = Field(2, description="strategy=partial: last N encoder stages trained")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    dropout: float = Field(0.3, ge=0, lt=1)
    imbalance: Literal["none", "class_weights", "balanced_sampler"] = "none"
    clip_len: PositiveInt = Field(8, description="frames per clip fed to the model")
    modality: Literal["rgb", "rgb_diff", "flow"] = Field(
        "rgb", description="what the model sees: frames, frame differences, or optical flow (needs extract.flow)"
    )
    clips_per_video: PositiveInt = Field(1, description="random clips drawn from every training video per epoch")
    reverse_p: float = Field(
        0.0,
        ge=0,
        le=1,
        description="time-reversal augmentation: the chance that a training clip of a class in "
        "evaluate.reverse_pairs is played backwards and labelled with its partner (left <-> right); "
        "classes in no pair are never reversed",
    )
    shake_px: float = Field(
        0.0,
        ge=0,
        description="modality flow: std (pixels) of a random camera shake added to "
        "every training flow image, so a shaking camera does not hide the object's motion",
    )
    flow_stabilise: bool = Field(
        True,
        description="modality flow: subtract each flow image's median displacement (the "
        "camera's own motion), as iDT removes camera motion; recorded in the checkpoint",
    )
    flow_span: PositiveInt = Field(
        1,
        description="modality flow: each clip position holds the motion over this many "
        "consecutive stored frame pairs (their flows summed): slow motion adds up, per-pair "
        "estimation noise does not; recorded in the checkpoint",
    )
    cache_mb: int = Field(
        1024, ge=0, description="decoded frames kept in memory per loader process (0: decode every time)"
    )
    crop_size: int | None = Field(96, ge=16, description="input size; null: the weights' native size")
    hflip: bool = Field(False, description="horizontal flip augmentation (off: it swaps left/right motion)")
    crop_scale: tuple[Annotated[float, Field(gt=0, le=1)], Annotated[float, Field(gt=0, le=1)]] = Field(
        (0.5, 1.0), description="training crops cover this (min, max) fraction of the frame area"
    )
    eval_resize: float | None = Field(
        None,
        ge=1.0,
        le=2.0,
        description="eval: short side = crop * this before the "
        "centre crop; null: the weights' convention (256/224), 1.0: the whole short side",
    )
    rnn_hidden: PositiveInt = 256

    @model_validator(mode="after")
    def _check_crop_scale(self) -> TrainConfig:
        if self.crop_scale[0] > self.crop_scale[1]:
            raise ValueError(f"crop_scale must be (min, max) with min <= max, got {list(self.crop_scale)}")
        return self


class TrackerConfig(Strict):
    """ByteTrack-style tracking of detections across frames (``vt_models.track``)."""

    high_score: float = Field(0.5, gt=0, lt=1, description="detections above this start and first match tracks")
    low_score: float = Field(0.1, ge=0, lt=1, description="detections between low and high only extend tracks")
    match_iou: float = Field(0.3, gt=0, lt=1, description="min IoU between a predicted track box and a detection")
    max_age: PositiveInt = Field(8, description="frames a track survives unmatched (occlusion)")
    min_hits: PositiveInt = Field(2, description="matched frames before a track is reported")
    box_smoothing: float = Field(0.5, ge=0, lt=1, description="EMA weight of the previous box (0: no smoothing)")

    @model_validator(mode="after")
    def _check(self) -> TrackerConfig:
        if self.low_score >= self.high_score:
            raise ValueError(f"low_score ({self.low_score}) must be below high_score ({self.high_score})")
        return self


class DetectConfig(LoopConfig):
    """Video object detection by fine-tuning torchvision detectors (``vt detect ...``)."""

    dataset: str = "target"
    annotations: Literal["auto", "mot", "coco"] = Field(
        "auto",
        description="per-video sidecar: <stem>.boxes.csv (MOT-style) or <stem>.coco.json; auto: whichever exists",
    )
    classes: list[str] | None = Field(
        None, description="allowed box labels; null: every label found in the annotations"
    )
    extract: ExtractConfig = ExtractConfig(mode="fps", fps=6.0, max_frames=24, short_side=128, flow=False)
    detectors: list[str] = Field(default_factory=lambda: ["fasterrcnn_mobilenet_v3_large_320_fpn"], min_length=1)
    weights: str = Field(
        "default", description="none | default | coco | <enum member> | a checkpoint file | models:/NAME@ALIAS"
    )
    trainable_backbone_layers: int = Field(
        3, ge=0, le=6, description="backbone stages trained (pretrained weights only)"
    )
    min_size: PositiveInt = Field(320, description="the detector resizes images so the short side is this")
    max_size: PositiveInt = Field(640, description="... and the long side at most this")
    frames_per_video: PositiveInt = Field(4, description="training: random annotated frames per video per epoch")
    hflip: bool = Field(True, description="horizontal flip augmentation (boxes flipped with the image)")
    score_threshold: float = Field(
        0.5, ge=0, lt=1, description="precision/recall and predictions keep boxes above this"
    )
    tracker: TrackerConfig = TrackerConfig()
    model_name: str = Field("vt-video-detector", min_length=1, description="registered model name")
    margin: float = Field(0.0, ge=0, description="promotion: the candidate's mAP must beat the champion's by more")
    min_map: float = Field(
        0.05,
        ge=0,
        le=1,
        description="promotion floor: a champion needs test mAP >= this, and the "
        "lower bound of its bootstrap CI over test videos > 0 (a detector that finds nothing)",
    )


# Classes whose videos played backwards are the other class of the pair (the sample data's classes).
DEFAULT_REVERSE_PAIRS: tuple[tuple[str, str], ...] = (
    ("left", "right"),
    ("rotate_cw", "rotate_ccw"),
    ("zoom_in", "zoom_out"),
)


class EvaluateConfig(Strict):
    """Scoring trained models on the held-out split (``vt evaluate``)."""

    split: Literal["test", "val", "train"] = "test"
    views: PositiveInt = Field(3, description="clips per video for multi-clip testing")
    measure_cost: bool = Field(True, description="GFLOPs, latency and throughput on this device")
    motion_probes: bool = Field(
        True,
        description="also score static, reversed and shuffled versions of each test "
        "video (one clip each): does the model look at motion or at the scenery?",
    )
    reverse_pairs: list[tuple[str, str]] = Field(
        default_factory=lambda: list(DEFAULT_REVERSE_PAIRS),
        description="class pairs that swap when a video is played backwards (the reversed probe's labels); "
        "a class in no pair keeps its label, pairs naming classes the data set lacks are ignored",
    )

    @model_validator(mode="after")
    def _check_reverse_pairs(self) -> EvaluateConfig:
        seen: set[str] = set()
        for a, b in self.reverse_pairs:
            if a == b:
                raise ValueError(f"reverse_pairs: a pair is two different classes, got [{a}, {b}]")
            if {a, b} & seen:
                raise ValueError(f"reverse_pairs: class {sorted({a, b} & seen)[0]!r} is in more than one pair")
            seen |= {a, b}
        return self


class CvConfig(Strict):
    """k-fold cross-validation on train+val (``vt cv``); the folds come from the split stage."""

    backbones: list[str] | None = Field(None, description="null: train.backbones")
    epochs: PositiveInt | None = Field(None, description="null: train.epochs; folds train a fixed number of epochs")
    views: PositiveInt = 3


class TransferConfig(Strict):
    """The transfer-learning report (``vt report transfer``): scratch vs linear probe vs fine-tuning."""

    backbone: str = "resnet18"
    fractions: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [0.5, 1.0], min_length=1)
    epochs: PositiveInt | None = Field(None, description="null: train.epochs")
    modalities: list[Literal["rgb", "rgb_diff", "flow"]] | None = Field(
        None,
        min_length=1,
        description="inputs to compare (null: train.modality); a modality other than "
        "pretrain.modality gets its own source model, pretrained by the report with the pretrain settings",
    )


class RegistryConfig(Strict):
    """The model registry and its promotion gate (``vt promote``)."""

    model_name: str = Field("vt-video-classifier", min_length=1)
    metric: Literal["macro_f1", "accuracy", "macro_recall", "macro_precision", "weighted_f1", "mean_class_accuracy"] = (
        "macro_f1"
    )
    margin: float = Field(0.0, ge=0, description="the candidate must beat the champion by more than this")
    min_score: float = Field(
        0.0,
        ge=0,
        le=1,
        description="promotion floor: a champion needs a test score >= this; the "
        "main guard is that the lower bound of its bootstrap CI beats the majority-class baseline",
    )
    min_test_videos: PositiveInt = Field(
        30,
        description="fewer test videos than this: the decision says the test set is "
        "small (scores move in steps of 1/N); classifiers and detectors",
    )
    min_unseen_test_videos: PositiveInt = Field(
        10,
        description="the gate scores both models only on test videos that neither "
        "trained on; with fewer than this it refuses to decide; classifiers and detectors",
    )
    bootstrap_resamples: int = Field(
        1000, ge=100, description="resamples of the test videos for the CI (seeded by `seed`)"
    )
    confidence: float = Field(0.95, gt=0.5, lt=1, description="confidence level of that CI")


class FlowsConfig(Strict):
    """Prefect orchestration (``flows/``)."""

    dask_address: str | None = Field(
        None, description="tcp://host:8786 of an existing Dask cluster; null: local threads"
    )
    max_workers: int | None = Field(None, ge=1, description="parallel preprocessing tasks; null: one per CPU core")
    push: bool = Field(True, description="retrain ends with one `dvc push` of everything it recorded")
    repro_rest: bool = Field(
        True,
        description="after its own steps, retrain runs `dvc repro` for the stages it does not "
        "run itself but whose inputs changed (cv, the transfer report, detection), "
        "so `dvc status` is clean; false: faster, those stages stay stale",
    )
    git_commit: bool = Field(
        True,
        description="deployment (scheduled) retrain runs commit dvc.lock, .gitignore changes "
        "and the raw-state file to git, naming the flow run; plain calls never do "
        "unless asked (flow parameter git_commit)",
    )
    retrain_cron: str = "0 2 * * *"
    champion_eval_cron: str = "0 3 * * 1"


class Config(Strict):
    """The whole ``params.yaml``."""

    seed: int = 0
    data_dir: Path = Path("data")
    sample: SampleConfig
    datasets: dict[str, DatasetConfig] = Field(min_length=1)
    probe: ProbeConfig = ProbeConfig()
    extract: ExtractConfig = ExtractConfig()
    split: SplitConfig = SplitConfig()
    pretrain: TrainConfig = TrainConfig(dataset="source", weights="none")
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    cv: CvConfig = CvConfig()
    transfer: TransferConfig = TransferConfig()
    registry: RegistryConfig = RegistryConfig()
    flows: FlowsConfig = FlowsConfig()
    detect: DetectConfig = DetectConfig()

    @model_validator(mode="after")
    def _check(self) -> Config:
        for section in ("pretrain", "train"):
            tc: TrainConfig = getattr(self, section)
            if tc.dataset not in self.datasets:
                raise ValueError(
                    f"{section}.dataset {tc.dataset!r} is not under datasets (allowed: {sorted(self.datasets)})"
                )
            known = {b.name for b in list_backbones()}
            unknown = [b for b in tc.backbones if b not in known]
            if unknown:
                raise ValueError(f"{section}.backbones: unknown {unknown}; choices: {', '.join(sorted(known))}")
        known = {b.name for b in list_backbones()}
        for key, names in (("cv.backbones", self.cv.backbones or []), ("transfer.backbone", [self.transfer.backbone])):
            bad = [b for b in names if b not in known]
            if bad:
                raise ValueError(f"{key}: unknown {bad}; choices: {', '.join(sorted(known))}")
        if self.transfer.backbone not in self.pretrain.backbones:
            raise ValueError(
                f"transfer.backbone {self.transfer.backbone!r} needs a source model: "
                f"add it to pretrain.backbones {self.pretrain.backbones}"
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
        if self.train.weights == "source":
            missing = [b for b in self.train.backbones if b not in self.pretrain.backbones]
            if missing:
                raise ValueError(
                    f"train.weights is 'source' but train.backbones {missing} are not in pretrain.backbones "
                    f"{self.pretrain.backbones}: add them there, or choose other train.weights"
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

    def detect_probe_dir(self) -> Path:
        return self.data_dir / "probe_det" / self.detect.dataset

    def detect_frames_dir(self) -> Path:
        return self.data_dir / "frames_det" / self.detect.dataset

    def detect_splits_path(self) -> Path:
        return self.data_dir / "splits_det" / f"{self.detect.dataset}.json"

    def detect_eval_dir(self, detector: str) -> Path:
        return Path("reports") / "detect" / detector

    def run_dir(self, stage: str, backbone: str) -> Path:
        """Checkpoints and metrics of one training stage (``pretrain`` or ``train``) and backbone."""
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

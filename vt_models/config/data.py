"""Config sections of the data steps: the sample data, data sets, probe, extract, split."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, model_validator

from vt_models.config.base import Fraction, PositiveInt, Strict
from vt_models.data.motions import MOTIONS

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


class DomainSample(Strict):
    """How many clips one domain of the sample data set gets, and how they look."""

    clips_per_class: PositiveInt
    clips_per_recording: PositiveInt = Field(
        2, description="clips cut from one simulated recording; they share a group id"
    )
    style: Literal["flat", "textured"]
    shared_scenes: bool = Field(
        True,
        description="recording r of every class is filmed in scene r (a balanced scene x class table, for "
        "classification); false: every recording of every class gets a scene of its own, so the domain shows "
        "as many backgrounds as recordings (a detector's source domain: its boxes, not its classes, are read)",
    )
    motion_scale: float = Field(
        1.0,
        gt=0,
        le=2,
        description="the class motions' size (travel, turn, zoom over a clip) x this: 0.3 films the same actions "
        "at under a third of the speed, a shift that optical flow does not remove",
    )


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
    """One video collection: folder-per-class, any folder plus a CSV manifest, or unlabelled videos."""

    raw: Path
    labels_csv: Path | None = Field(None, description="CSV with path,label[,group]; null: folder-per-class layout")
    labelled: bool = Field(
        True,
        description="false: videos anywhere under raw, no labels read (the unlabelled target of train.adapt, "
        "autoencoder pretraining, label-free promotion)",
    )

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if not self.labelled and self.labels_csv is not None:
            raise ValueError(
                f"labelled is false but labels_csv is {self.labels_csv}: drop labels_csv, or set labelled: true"
            )
        return self


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


# 0: no test split, for a data set nothing is scored on (split.datasets): its test videos would otherwise be held
# out from every model and read by none
TestFraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class SplitFractions(Strict):
    """One data set's own split fractions (``split.datasets.<name>``); a key left out keeps ``split``'s."""

    test_fraction: TestFraction | None = None
    val_fraction: Fraction | None = None


class SplitConfig(Strict):
    test_fraction: TestFraction = 0.2
    val_fraction: Fraction = 0.2
    k_folds: int = Field(3, ge=2)
    datasets: dict[str, SplitFractions] = Field(
        default_factory=dict, description="per data set (datasets.<name>): fractions other than the ones above"
    )

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        for name, cfg in {"split": self, **{f"split.datasets.{k}": self.of(k) for k in self.datasets}}.items():
            if cfg.test_fraction + cfg.val_fraction >= 1.0:
                raise ValueError(
                    f"{name}: test_fraction + val_fraction must be < 1, got {cfg.test_fraction} + {cfg.val_fraction}"
                )
        return self

    def of(self, dataset: str) -> SplitConfig:
        """The fractions ``dataset`` is split by: ``split.datasets.<dataset>``'s over the defaults."""
        own = self.datasets.get(dataset)
        if own is None:
            return self
        changes = {k: v for k, v in own.model_dump().items() if v is not None}
        return self.model_copy(update={**changes, "datasets": {}})

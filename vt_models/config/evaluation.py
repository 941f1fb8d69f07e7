"""Config sections after training: evaluation, CV, the transfer report, the registry gate, the flows."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from vt_models.config.base import PositiveInt, Strict

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
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="null: [seed]; several: each seed draws its own training subsets and initialisations, and "
        "the report adds each setting's mean, std and range over them, and its gain over scratch seed by seed",
    )
    modalities: list[Literal["rgb", "rgb_diff", "flow"]] | None = Field(
        None,
        min_length=1,
        description="inputs to compare (null: train.modality); a modality other than "
        "pretrain.modality gets its own source model, pretrained by the report with the pretrain settings",
    )

    @model_validator(mode="after")
    def _check(self) -> TransferConfig:
        distinct_seeds("transfer", self.seeds)
        return self


def distinct_seeds(section: str, seeds: list[int] | None) -> None:
    """A report's ``seeds`` name each seed once: a repeat would train the same runs again."""
    if seeds is not None and len(set(seeds)) != len(seeds):
        raise ValueError(f"{section}.seeds {seeds} repeats a seed: a repeat trains the same runs again")


class AdaptationConfig(Strict):
    """The domain-adaptation report (``vt report adaptation``): source-only vs each ``train.adapt`` method
    (target labels hidden) vs supervised fine-tuning, on the target's test split."""

    backbone: str = "resnet18"
    dataset: str = Field(
        "target",
        description="the labelled target the report adapts to (its labels hidden from the adapted rows) and scores on",
    )
    methods: list[Literal["dann", "mmd", "coral"]] = Field(
        default_factory=lambda: ["dann", "mmd", "coral"], min_length=1
    )
    epochs: PositiveInt | None = Field(None, description="null: train.epochs")
    clips_per_video: PositiveInt | None = Field(
        None, description="random clips per training video and epoch; null: train.clips_per_video"
    )
    autoencoder: bool = Field(
        True,
        description="also pretrain an autoencoder on pretrain.dataset's training videos (labels unused) and "
        "fine-tune it on the target's labels, beside the same fine-tuning from random weights (scratch)",
    )
    autoencoder_epochs: PositiveInt | None = Field(None, description="autoencoder pretraining epochs; null: pretrain's")
    seeds: list[int] | None = Field(
        None,
        min_length=1,
        description="null: [seed]; several: every trained row once a seed (adversarial methods vary from seed to "
        "seed), and the summary of the settings' means with each difference's range over the seeds; the "
        "autoencoder is pretrained once, at the first seed, and fine-tuned at each",
    )

    @model_validator(mode="after")
    def _check(self) -> AdaptationConfig:
        distinct_seeds("adaptation", self.seeds)
        return self


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
    label_free_metric: Literal["im", "snd"] = Field(
        "im",
        description="the classifier gate's score when the test split has no video (no labels to test on): "
        "information maximisation or soft neighbourhood density of each model's predictions on the same "
        "target videos; the candidate must beat the champion by more than margin",
    )
    label_free_min_diversity: float = Field(
        0.1,
        ge=0,
        le=1,
        description="label-free decisions: the candidate's predicted classes need at least this entropy "
        "(divided by log K; 0: one class for every video), so a collapsed model is never shipped",
    )


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
    overlap: Literal["skip", "wait", "allow"] = Field(
        "skip",
        description="a served deployment's run that falls due while its previous run still goes: skip (it ends "
        "Cancelled; the next run retrains on everything), wait (it waits for the slot; runs pile up when the "
        "interval is shorter than a run) or allow (both run: two retrains would train into one checkpoint and "
        "contend for DVC's lock). Prefect's deployment concurrency limit of 1, CANCEL_NEW or ENQUEUE",
    )
    heartbeat_s: int | None = Field(
        60,
        ge=30,
        description="served flow runs send a heartbeat this often (PREFECT_FLOWS_HEARTBEAT_FREQUENCY; Prefect's "
        "minimum is 30); null: Prefect's default",
    )
    crash_after_s: float | None = Field(
        300,
        gt=0,
        description="flows/serve.py installs a Prefect automation that marks a flow run Crashed after this many "
        "seconds without a heartbeat (its machine or worker died with it); null: none",
    )

    @model_validator(mode="after")
    def _crash_after_heartbeats(self) -> FlowsConfig:
        if self.heartbeat_s is not None and self.crash_after_s is not None and self.crash_after_s <= self.heartbeat_s:
            raise ValueError(
                f"flows.crash_after_s ({self.crash_after_s:g}) must be longer than flows.heartbeat_s "
                f"({self.heartbeat_s}), or healthy runs are crashed between two heartbeats; 3 periods or more is usual"
            )
        return self

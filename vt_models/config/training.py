"""Config sections of training: the generic loop, classifier fine-tuning, detection and tracking."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from vt_models.config.base import PositiveInt, Strict
from vt_models.config.data import ExtractConfig


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
        200,
        ge=0,
        description="early stopping and best-epoch selection only with at least this "
        "many validation videos; a smaller validation split cannot tell epochs apart, so the "
        "run trains the fixed schedule and keeps the last epoch (one of 72 videos is 0.014 of accuracy, "
        "about what late epochs differ by)",
    )
    val_interval: PositiveInt = Field(
        1,
        description="with a fixed schedule (fewer than min_val_videos), validate every N epochs plus the last: "
        "those scores only inform the log, and each validation costs a pass over the validation "
        "split and precise BN's batches; best-epoch selection and early stopping validate every epoch",
    )
    precise_bn: int = Field(
        0,
        ge=0,
        description="re-estimate BatchNorm statistics on up to this many training batches "
        "before each validation and checkpoint (precise BN / AdaBN); 0: off",
    )
    head_epochs: int = Field(
        0,
        ge=0,
        description="LP-FT: the first N epochs train only the new head (the encoder and its BatchNorm "
        "statistics stay as loaded), then everything trains; a head fitted first does not send "
        "large random-head gradients into the pretrained encoder",
    )
    ema_decay: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="score and save an exponential moving average of the weights (per optimizer step, "
        "e.g. 0.99); 0: the weights as trained",
    )
    l2sp: float = Field(
        0.0,
        ge=0,
        description="L2-SP: alpha of alpha/2 * ||w - w_start||^2 over the pretrained encoder's weights, which "
        "then get no weight decay toward zero (the head keeps weight_decay); 0: off; the paper's 0.01-0.1. A linear "
        "probe, which trains no encoder weight, runs without it",
    )
    num_workers: int = Field(2, ge=0)
    amp: Literal["auto", "bf16", "fp16", "off"] = Field(
        "auto",
        description="mixed precision for training steps: auto is bf16 (or fp16 without bf16) on CUDA, and bf16 on "
        "a CPU with bf16 matrix units (AMX), fp32 on other CPUs; off: fp32. Scoring on a CPU is fp32",
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    deterministic: bool = True

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, value: object) -> object:
        # YAML 1.1 reads an unquoted `amp: off` (or `-S train.amp=off`) as false
        return "off" if value is False else value


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
    eval_crop: Literal["centre", "full"] = Field(
        "centre",
        description="eval view: centre (resize by eval_resize, centre square: the torchvision / MMAction2 "
        "convention) or full (the whole frame resized to crop x crop, as the training crops see it: crop_scale of "
        "the area at aspects 3/4-4/3, resized to a square; nothing at the frame's sides is cut off)",
    )
    rnn_hidden: PositiveInt = 256
    adapt: Literal["none", "dann", "mmd", "coral"] = Field(
        "none",
        description="unsupervised domain adaptation: train on the labelled adapt_source data set beside this "
        "data set's training videos with their labels hidden, aligning their pooled features (DANN, "
        "multi-kernel MMD, Deep CORAL); validation is on adapt_source's val split; none: ordinary training",
    )
    adapt_source: str = Field("source", description="adapt: the labelled data set (same classes as dataset)")
    adapt_weight: float = Field(1.0, gt=0, description="adapt: weight of the alignment loss at full ramp")
    adapt_ramp: float = Field(
        10.0,
        ge=0,
        description="adapt: gamma of DANN's ramp 2 / (1 + exp(-gamma p)) - 1 over training progress p, which "
        "scales the reversed gradient (dann) or the loss (mmd, coral); 0: the full weight from the start",
    )
    bss: float = Field(
        0.0,
        ge=0,
        description="batch spectral shrinkage: eta x the k smallest squared singular values of a "
        "batch's features (the paper's eta 0.001); 0: off",
    )
    bss_k: PositiveInt = Field(1, description="bss: how many of the smallest singular values are shrunk")

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.crop_scale[0] > self.crop_scale[1]:
            raise ValueError(f"crop_scale must be (min, max) with min <= max, got {list(self.crop_scale)}")
        if self.adapt != "none" and self.adapt_source == self.dataset:
            raise ValueError(
                f"adapt {self.adapt!r} needs target videos from another data set than its labelled source: "
                f"adapt_source and dataset are both {self.dataset!r}"
            )
        return self

    @property
    def monitor(self) -> str:
        """The validation metric that picks the best epoch (MLflow logs it as ``best_val_<monitor>``)."""
        return "macro_f1"

    @property
    def val_dataset(self) -> str:
        """Whose val split that metric is scored on: an adaptation run's is its labelled source's, since the
        target's labels stay hidden (or there are none)."""
        return self.adapt_source if self.adapt != "none" else self.dataset


class PretrainConfig(TrainConfig):
    """Source-domain pretraining: supervised on the source labels, or an autoencoder that reads no labels."""

    objective: Literal["supervised", "autoencoder"] = Field(
        "supervised",
        description="supervised: classify the source data set's labels; autoencoder: rebuild masked clips "
        "from the encoder's last feature map (labels never read: any folder of videos), see "
        "vt_models.train.reconstruction",
    )
    mask_ratio: float = Field(0.5, ge=0, lt=1, description="autoencoder: fraction of the 8 x 8 cell grid hidden")
    keep_frames: int = Field(
        2,
        ge=0,
        description="autoencoder: frames of each clip left in the encoder's input, drawn per clip, the rest "
        "zeroed (temporal dropout); 0 (or >= clip_len): all",
    )
    camera_noise: float = Field(
        0.5,
        ge=0,
        description="autoencoder, flow only: std of a random global affine flow field (pan, turn, zoom, shear) "
        "added to each input clip, in normalised flow units; 0: none",
    )
    recon_steps: int = Field(
        1, ge=1, description="autoencoder: time steps of the rebuilt target; 1: each cell's motion averaged over a clip"
    )

    @property
    def monitor(self) -> str:
        return "recon_r2" if self.objective == "autoencoder" else "macro_f1"


class TrackerConfig(Strict):
    """ByteTrack-style tracking of detections across frames (``vt_models.track``)."""

    high_score: float = Field(0.5, gt=0, lt=1, description="detections above this start and first match tracks")
    low_score: float = Field(0.1, ge=0, lt=1, description="detections between low and high only extend tracks")
    match_iou: float = Field(
        0.2, gt=0, lt=1, description="min IoU between a predicted track box and a detection (ByteTrack's 0.2)"
    )
    max_age: PositiveInt = Field(8, description="frames a track survives unmatched (occlusion)")
    min_hits: PositiveInt = Field(2, description="matched frames before a track is reported")
    box_smoothing: float = Field(0.5, ge=0, lt=1, description="EMA weight of the previous box (0: no smoothing)")

    @model_validator(mode="after")
    def _check(self) -> TrackerConfig:
        if self.low_score >= self.high_score:
            raise ValueError(f"low_score ({self.low_score}) must be below high_score ({self.high_score})")
        return self


class DetectPretrainConfig(Strict):
    """Detector pretraining on a source domain's boxes (``vt detect pretrain``): offline transfer.

    Everything else (optimizer, batch size, input size, proposals, ...) is the ``detect`` section's.
    """

    dataset: str = Field("source", min_length=1, description="datasets.<name> whose videos carry box sidecars")
    weights: str = Field("none", description="where pretraining starts: none | default | a checkpoint | models:/...")
    epochs: PositiveInt = 6
    lr: float | None = Field(
        None,
        gt=0,
        description="pretraining's learning rate; null: detect.lr. A detector from random weights learns at a "
        "higher rate than one fine-tuned from a trained detector (the sample params: 0.006 here, 0.0005 there)",
    )
    train_sizes: list[PositiveInt] | None = Field(
        None,
        min_length=1,
        description="pretraining's multi-scale training sizes; null: detect.train_sizes",
    )


class DetectConfig(LoopConfig):
    """Video object detection by fine-tuning torchvision detectors (``vt detect ...``)."""

    dataset: str = "target"
    annotations: Literal["auto", "mot", "motchallenge", "coco"] = Field(
        "auto",
        description="per-video sidecar: <stem>.boxes.csv (MOT-style, with a header), <stem>.gt.txt (MOTChallenge / "
        "CVAT MOT 1.1 rows) or <stem>.coco.json; auto: whichever exists",
    )
    classes: list[str] | None = Field(
        None, description="allowed box labels; null: every label found in the annotations"
    )
    class_map: dict[str, str] = Field(
        default_factory=dict,
        description="annotation label -> the detector's class, to merge labels (e.g. {car: vehicle, truck: "
        "vehicle}); the key '*' maps every label not listed (e.g. {'*': object}: one class); {}: labels as they are",
    )
    # stored at the detector's input size (min_size): smaller, the detector would upsample them and the detail is lost
    extract: ExtractConfig = ExtractConfig(mode="fps", fps=6.0, max_frames=64, short_side=320, flow=False)
    detectors: list[str] = Field(default_factory=lambda: ["fasterrcnn_mobilenet_v3_large_320_fpn"], min_length=1)
    weights: str = Field(
        "default",
        description="none | default | coco | <enum member> | source (the detect pretrain stage's model) "
        "| a checkpoint file | models:/NAME@ALIAS",
    )
    pretrain: DetectPretrainConfig = DetectPretrainConfig()
    backbone_weights: str = Field(
        "none",
        description="a classifier checkpoint (file or models:/NAME@ALIAS) of the detector's backbone architecture "
        "whose encoder starts the backbone, in a stage whose weights are none (e.g. detect.pretrain); none: random",
    )
    trainable_backbone_layers: int = Field(
        3, ge=0, le=6, description="backbone stages trained (pretrained weights only)"
    )
    min_size: PositiveInt = Field(320, description="the detector resizes images so the short side is this")
    max_size: PositiveInt = Field(640, description="... and the long side at most this")
    train_sizes: list[PositiveInt] | None = Field(
        None,
        min_length=1,
        description="multi-scale training: each training batch's short side is drawn from these (YOLO-style, one "
        "size a batch, so no batch is padded to its largest image); validation and scoring stay at min_size; "
        "null: every batch at min_size. Smaller sizes make steps cheaper: a CPU's time-to-mAP lever",
    )
    model_options: dict[str, int | float] = Field(
        default_factory=dict,
        description="more keyword arguments of torchvision's detector builder, e.g. rpn_post_nms_top_n_train, "
        "box_batch_size_per_image (a two-stage detector's proposal and sampling counts: its CPU cost)",
    )
    frames_per_video: PositiveInt = Field(4, description="training: random annotated frames per video per epoch")
    min_epoch_frames: int = Field(
        0,
        ge=0,
        description="training: at least this many frames an epoch; with few (long) videos each gives more than "
        "frames_per_video",
    )
    val_frames: PositiveInt = Field(
        8, description="validation: evenly spaced frames per video (frames of a video are alike; each costs a pass)"
    )
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

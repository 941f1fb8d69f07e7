"""The model registry: one strict table of every backbone and detector the product can fine-tune.

Data only, like timm's ``_registry.py``: names, architectures, what the published weights were
trained on, and *names* of the behaviour that builds them (stage listers, patches, networks),
which :mod:`vt_models.models.builder` and :mod:`vt_models.models.detectors` look up. So loading
and checking a config needs no torch, and nothing here imports the code that builds. Registering
a name twice raises; an unknown name lists the choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

S = TypeVar("S")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)

BACKBONE_FAMILIES = ("2d", "rnn", "3d")
MINI_RESNET_WIDTHS = (16, 32, 64, 128)  # vt_models.models.small.MiniResNet's stage widths


class UnknownModelError(KeyError):
    """A backbone or detector name that is not registered; the message lists the choices."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str  # "2d" | "rnn" | "3d"
    arch: str  # torchvision builder name (torchvision.models.get_model), or the name of ``network``
    head_path: str  # the torchvision classifier layer we replace
    feat_dim: int
    crop_size: int  # the input size its pretrained weights were trained at
    pretrained_on: str  # "imagenet" | "kinetics400" | "none" (no published weights: pretrain it here)
    stages: str  # stage lister in builder.STAGES ("resnet", "children:features", ...)
    rnn: str | None = None
    fixed_frames: int | None = None  # MViT's positional encoding fixes the clip length
    fixed_crop: int | None = None
    min_crop: int = 32
    min_frames: int = 1
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    patch: str | None = None  # adapt the torchvision net: builder.PATCHES ("temporal_shift", ...)
    network: str | None = None  # a network torchvision does not have (no weights enum): builder.NETWORKS

    @property
    def has_torchvision_weights(self) -> bool:
        return self.network is None

    @property
    def mean_std(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        return (KINETICS_MEAN, KINETICS_STD) if self.pretrained_on == "kinetics400" else (IMAGENET_MEAN, IMAGENET_STD)

    @property
    def resize_ratio(self) -> float:
        return 128 / 112 if self.pretrained_on == "kinetics400" else 256 / 224


@dataclass(frozen=True)
class DetectorSpec:
    name: str  # torchvision builder name (torchvision.models.get_model)
    family: str  # "faster_rcnn" | "retinanet" | "fcos" | "ssd"
    head_prefixes: tuple[str, ...]  # the class-specific layers re-created for the user's labels
    stages: str  # backbone stage lister in detectors.STAGES ("resnet", "mobilenet_fpn", "ssdlite")
    frozen_bn: bool  # torchvision's pretrained build freezes the backbone's BatchNorm
    fixed_size: int | None = None  # SSD resizes to a fixed square
    builder: str | None = (
        None  # one of models.detectors.BUILDERS (the project's own, no COCO weights); None: torchvision's
    )
    # The classifier architecture whose encoder is this detector's backbone body (`detect.backbone_weights` loads
    # a classifier checkpoint of it), and the prefix of its encoder keys the body drops ("features." for MobileNet)
    classifier_arch: str | None = None
    classifier_prefix: str = ""

    # The questions a BackboneSpec also answers, for the one weights resolver (models.weights).
    @property
    def arch(self) -> str:
        return self.name

    @property
    def pretrained_on(self) -> str:
        return "coco"

    @property
    def has_torchvision_weights(self) -> bool:
        return self.builder is None


class Registry(Generic[S]):
    """A strict name -> spec table: registering a name twice raises, an unknown name lists the choices."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._specs: dict[str, S] = {}

    def register(self, name: str, spec: S) -> S:
        if name in self._specs:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._specs[name] = spec
        return spec

    def get(self, name: str) -> S:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownModelError(
                f"unknown {self.kind} {name!r}; choices: {', '.join(sorted(self._specs))}"
            ) from None

    def all(self) -> list[S]:
        return [self._specs[n] for n in sorted(self._specs)]

    def __contains__(self, name: object) -> bool:
        return name in self._specs


_BACKBONES: Registry[BackboneSpec] = Registry("backbone")
_DETECTORS: Registry[DetectorSpec] = Registry("detector")


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name not in _BACKBONES and spec.family not in BACKBONE_FAMILIES:
        raise ValueError(f"backbone {spec.name!r}: unknown family {spec.family!r}")
    return _BACKBONES.register(spec.name, spec)


def get_spec(name: str) -> BackboneSpec:
    return _BACKBONES.get(name)


def list_backbones() -> list[BackboneSpec]:
    return _BACKBONES.all()


def register_detector(spec: DetectorSpec) -> DetectorSpec:
    return _DETECTORS.register(spec.name, spec)


def get_detector_spec(name: str) -> DetectorSpec:
    return _DETECTORS.get(name)


def list_detectors() -> list[DetectorSpec]:
    return _DETECTORS.all()


# --------------------------------------------------------------------------- backbones


def _imagenet_2d(name: str, head: str, dim: int, stages: str, **extra: Any) -> BackboneSpec:
    fields: dict[str, Any] = {"crop_size": 224, **extra}
    return BackboneSpec(
        name=name,
        family="2d",
        arch=name,
        head_path=head,
        feat_dim=dim,
        pretrained_on="imagenet",
        stages=stages,
        **fields,
    )


_INCEPTION = {"crop_size": 299, "min_crop": 75, "builder_kwargs": {"aux_logits": True, "init_weights": False}}
# CPU-sized 2D CNNs (about 1/25 of ResNet-18's compute at 64 px): TSM on MobileNetV2 is the TSM
# paper's online model; MobileNetV3-small is smaller still. Both have ImageNet weight enums.
_2D: list[tuple[BackboneSpec, tuple[str, ...]]] = [
    # the ImageNet network, and which variants are registered: itself, with temporal shift, with an RNN
    (_imagenet_2d("resnet18", "fc", 512, "resnet"), ("plain", "tsm", "rnn")),
    (_imagenet_2d("resnet50", "fc", 2048, "resnet"), ("plain", "tsm")),
    (_imagenet_2d("mobilenet_v3_large", "classifier.3", 1280, "children:features"), ("plain", "rnn")),
    (_imagenet_2d("efficientnet_b0", "classifier.1", 1280, "children:features"), ("plain",)),
    (_imagenet_2d("vgg16_bn", "classifier.6", 4096, "vgg"), ("plain",)),
    (_imagenet_2d("inception_v3", "fc", 2048, "inception", **_INCEPTION), ("plain",)),
    (_imagenet_2d("mobilenet_v3_small", "classifier.3", 1024, "children:features"), ("plain", "tsm")),
    (_imagenet_2d("mobilenet_v2", "classifier.1", 1280, "children:features"), ("tsm",)),
]
for _base, _variants in _2D:
    if "plain" in _variants:
        register_backbone(_base)
    if "tsm" in _variants:
        register_backbone(replace(_base, name=f"{_base.name}_tsm", patch="temporal_shift", min_frames=2))
    for _cell in ("lstm", "gru") if "rnn" in _variants else ():
        register_backbone(replace(_base, name=f"{_base.name}_{_cell}", family="rnn", rnn=_cell))

# Motion from scratch on a CPU: no published weights, pretrained on the source domain by `vt pretrain`.
for _name, _patch, _frames in (("mini_resnet", None, 1), ("mini_resnet_tsm", "temporal_shift", 2)):
    register_backbone(
        BackboneSpec(
            name=_name,
            family="2d",
            arch="mini_resnet",
            head_path="fc",
            feat_dim=MINI_RESNET_WIDTHS[-1],
            crop_size=64,
            pretrained_on="none",
            stages="resnet",
            patch=_patch,
            min_frames=_frames,
            network="mini_resnet",
        )
    )

_3D: list[tuple[str, str, int, str, int, dict[str, Any]]] = [
    ("r3d_18", "fc", 512, "video_resnet", 112, {}),
    ("mc3_18", "fc", 512, "video_resnet", 112, {}),
    ("r2plus1d_18", "fc", 512, "video_resnet", 112, {}),
    ("s3d", "classifier.1", 1024, "children:features", 224, {"patch": "adaptive_pool3d", "min_frames": 8}),
    ("mvit_v2_s", "head.1", 768, "children:blocks", 224, {"fixed_frames": 16, "fixed_crop": 224}),
    ("swin3d_t", "head", 768, "children:features", 224, {}),
]
for _name, _head, _dim, _stages, _crop, _extra in _3D:
    register_backbone(
        BackboneSpec(
            name=_name,
            family="3d",
            arch=_name,
            head_path=_head,
            feat_dim=_dim,
            crop_size=_crop,
            pretrained_on="kinetics400",
            stages=_stages,
            **_extra,
        )
    )

# --------------------------------------------------------------------------- detectors

for _det in (
    DetectorSpec(
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "faster_rcnn",
        ("net.roi_heads.box_predictor.",),
        "mobilenet_fpn",
        True,
        classifier_arch="mobilenet_v3_large",
        classifier_prefix="features.",
    ),
    DetectorSpec(
        "fasterrcnn_resnet50_fpn_v2",
        "faster_rcnn",
        ("net.roi_heads.box_predictor.",),
        "resnet",
        False,
        classifier_arch="resnet50",
    ),
    DetectorSpec(
        "retinanet_resnet50_fpn_v2",
        "retinanet",
        ("net.head.classification_head.cls_logits.",),
        "resnet",
        False,
        classifier_arch="resnet50",
    ),
    DetectorSpec(
        "fcos_resnet50_fpn",
        "fcos",
        ("net.head.classification_head.cls_logits.",),
        "resnet",
        True,
        classifier_arch="resnet50",
    ),
    DetectorSpec(
        "ssdlite320_mobilenet_v3_large", "ssd", ("net.head.classification_head.",), "ssdlite", False, fixed_size=320
    ),
    # CPU-sized: FCOS on MobileNetV3-Large with a narrow FPN from stride 8 (small objects in small frames)
    DetectorSpec(
        "fcos_mobilenet_v3_large_fpn",
        "fcos",
        ("net.head.classification_head.cls_logits.",),
        "mobilenet_fpn",
        False,
        builder="fcos_mobilenet_v3_large_fpn",
        classifier_arch="mobilenet_v3_large",
        classifier_prefix="features.",
    ),
    # CPU-sized: FCOS on the project's MiniResNet, an FPN from stride 8 (the default detector)
    DetectorSpec(
        "fcos_mini_resnet_fpn",
        "fcos",
        ("net.head.classification_head.cls_logits.",),
        "resnet",
        False,
        builder="fcos_mini_resnet_fpn",
        classifier_arch="mini_resnet",
    ),
):
    register_detector(_det)

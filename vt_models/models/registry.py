"""The backbone registry: one strict table of every model the product can fine-tune.

``build_backbone(name, weights=..., num_classes=...)`` returns the model and the transforms that
match its weights, like torchvision's ``get_model``/weights enums. Registering a name twice
raises; an unknown name lists the choices.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from vt_models.data.modality import CHANNELS, FLOW_BOUND, check_modality, normalisation
from vt_models.models.network import VideoClassifier
from vt_models.models.small import WIDTHS, MiniResNet
from vt_models.models.transforms import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD, ClipTransform
from vt_models.models.tsm import add_temporal_shift

log = logging.getLogger(__name__)
S = TypeVar("S")


class UnknownBackboneError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    family: str  # "2d" | "rnn" | "3d"
    arch: str  # torchvision builder name (torchvision.models.get_model), or the name of ``builder``
    head_path: str  # the torchvision classifier layer we replace
    feat_dim: int
    crop_size: int  # the input size its pretrained weights were trained at
    pretrained_on: str  # "imagenet" | "kinetics400" | "none" (no published weights: pretrain it here)
    stages: Callable[[nn.Module], list[str]]
    rnn: str | None = None
    fixed_frames: int | None = None  # MViT's positional encoding fixes the clip length
    fixed_crop: int | None = None
    min_crop: int = 32
    min_frames: int = 1
    builder_kwargs: dict[str, Any] = field(default_factory=dict)
    patch: Callable[[nn.Module], None] | None = None  # adapt the torchvision net (e.g. pooling)
    builder: Callable[..., nn.Module] | None = None  # a network torchvision does not have (no weights enum)

    @property
    def has_torchvision_weights(self) -> bool:
        return self.builder is None

    @property
    def mean_std(self) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        return (KINETICS_MEAN, KINETICS_STD) if self.pretrained_on == "kinetics400" else (IMAGENET_MEAN, IMAGENET_STD)

    @property
    def resize_ratio(self) -> float:
        return 128 / 112 if self.pretrained_on == "kinetics400" else 256 / 224


@dataclass(frozen=True)
class BackboneTransforms:
    train: ClipTransform
    eval: ClipTransform
    clip_len: int | None  # required number of frames, when the architecture fixes it


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
            raise UnknownBackboneError(
                f"unknown {self.kind} {name!r}; choices: {', '.join(sorted(self._specs))}"
            ) from None

    def all(self) -> list[S]:
        return [self._specs[n] for n in sorted(self._specs)]

    def __contains__(self, name: object) -> bool:
        return name in self._specs


_REGISTRY: Registry[BackboneSpec] = Registry("backbone")


def register_backbone(spec: BackboneSpec) -> BackboneSpec:
    if spec.name not in _REGISTRY and spec.family not in ("2d", "rnn", "3d"):
        raise ValueError(f"backbone {spec.name!r}: unknown family {spec.family!r}")
    return _REGISTRY.register(spec.name, spec)


def get_spec(name: str) -> BackboneSpec:
    return _REGISTRY.get(name)


def list_backbones() -> list[BackboneSpec]:
    return _REGISTRY.all()


# --------------------------------------------------------------------------- stage lists


def _children(prefix: str = "", skip: tuple[str, ...] = ()) -> Callable[[nn.Module], list[str]]:
    """Stages = parameterised children of ``prefix`` (or of the encoder), in order."""

    def stages(encoder: nn.Module) -> list[str]:
        root = encoder.get_submodule(prefix) if prefix else encoder
        names = []
        for name, child in root.named_children():
            if name in skip or not any(True for _ in child.parameters()):
                continue
            names.append(f"{prefix}.{name}" if prefix else name)
        return names

    return stages


def _resnet_stages(encoder: nn.Module) -> list[str]:
    return ["conv1", "layer1", "layer2", "layer3", "layer4"]


def _video_resnet_stages(encoder: nn.Module) -> list[str]:
    return ["stem", "layer1", "layer2", "layer3", "layer4"]


def _vgg_stages(encoder: nn.Module) -> list[str]:
    # conv blocks end at each MaxPool; then the two pretrained fully connected layers
    names, start = [], 0
    for i, layer in enumerate(encoder.features):
        if isinstance(layer, nn.MaxPool2d):
            names.append(f"features.{start}" if i == start else f"features.{i - 1}")
            start = i + 1
    return names + ["classifier.0", "classifier.3"]


def _inception_stages(encoder: nn.Module) -> list[str]:
    return [
        n for n, c in encoder.named_children() if n not in ("AuxLogits", "fc") and any(True for _ in c.parameters())
    ]


def _adaptive_s3d_pool(net: nn.Module) -> None:
    # S3D pools with a fixed (2, 7, 7) kernel, i.e. only 16x224x224 clips work; an adaptive
    # pool has no weights, so pretrained weights still load and smaller clips work too.
    net.avgpool = nn.AdaptiveAvgPool3d(1)


_2D = [
    # name, head path, feature dim, stage lister
    ("resnet18", "fc", 512, _resnet_stages),
    ("resnet50", "fc", 2048, _resnet_stages),
    ("mobilenet_v3_large", "classifier.3", 1280, _children("features")),
    ("efficientnet_b0", "classifier.1", 1280, _children("features")),
    ("vgg16_bn", "classifier.6", 4096, _vgg_stages),
    ("inception_v3", "fc", 2048, _inception_stages),
]
for _name, _head, _dim, _stages in _2D:
    register_backbone(
        BackboneSpec(
            name=_name,
            family="2d",
            arch=_name,
            head_path=_head,
            feat_dim=_dim,
            crop_size=299 if _name == "inception_v3" else 224,
            pretrained_on="imagenet",
            stages=_stages,
            min_crop=75 if _name == "inception_v3" else 32,
            builder_kwargs={"aux_logits": True, "init_weights": False} if _name == "inception_v3" else {},
        )
    )
    if _name in ("resnet18", "resnet50"):
        register_backbone(
            BackboneSpec(
                name=f"{_name}_tsm",
                family="2d",
                arch=_name,
                head_path=_head,
                feat_dim=_dim,
                crop_size=224,
                pretrained_on="imagenet",
                stages=_stages,
                patch=add_temporal_shift,
                min_frames=2,
            )
        )
    if _name in ("resnet18", "mobilenet_v3_large"):
        for _cell in ("lstm", "gru"):
            register_backbone(
                BackboneSpec(
                    name=f"{_name}_{_cell}",
                    family="rnn",
                    arch=_name,
                    head_path=_head,
                    feat_dim=_dim,
                    crop_size=224,
                    pretrained_on="imagenet",
                    stages=_stages,
                    rnn=_cell,
                )
            )

# CPU-sized 2D CNNs (about 1/25 of ResNet-18's compute at 64 px): TSM on MobileNetV2 is the TSM
# paper's online model; MobileNetV3-small is smaller still. Both have ImageNet weight enums.
register_backbone(
    BackboneSpec(
        name="mobilenet_v3_small",
        family="2d",
        arch="mobilenet_v3_small",
        head_path="classifier.3",
        feat_dim=1024,
        crop_size=224,
        pretrained_on="imagenet",
        stages=_children("features"),
    )
)
for _name, _head, _dim in (("mobilenet_v3_small", "classifier.3", 1024), ("mobilenet_v2", "classifier.1", 1280)):
    register_backbone(
        BackboneSpec(
            name=f"{_name}_tsm",
            family="2d",
            arch=_name,
            head_path=_head,
            feat_dim=_dim,
            crop_size=224,
            pretrained_on="imagenet",
            stages=_children("features"),
            patch=add_temporal_shift,
            min_frames=2,
        )
    )

# Motion from scratch on a CPU: no published weights, pretrained on the source domain by `vt pretrain`.
for _name, _patch, _frames in (("mini_resnet", None, 1), ("mini_resnet_tsm", add_temporal_shift, 2)):
    register_backbone(
        BackboneSpec(
            name=_name,
            family="2d",
            arch="mini_resnet",
            head_path="fc",
            feat_dim=WIDTHS[-1],
            crop_size=64,
            pretrained_on="none",
            stages=_resnet_stages,
            patch=_patch,
            min_frames=_frames,
            builder=MiniResNet,
        )
    )

_3D = [
    ("r3d_18", "fc", 512, _video_resnet_stages, 112, {}),
    ("mc3_18", "fc", 512, _video_resnet_stages, 112, {}),
    ("r2plus1d_18", "fc", 512, _video_resnet_stages, 112, {}),
    ("s3d", "classifier.1", 1024, _children("features"), 224, {"patch": _adaptive_s3d_pool, "min_frames": 8}),
    ("mvit_v2_s", "head.1", 768, _children("blocks"), 224, {"fixed_frames": 16, "fixed_crop": 224}),
    ("swin3d_t", "head", 768, _children("features"), 224, {}),
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


# --------------------------------------------------------------------------- building


def torchvision_net(spec: BackboneSpec) -> nn.Module:
    """The bare torchvision network with its original (pretraining) classifier."""
    from torchvision.models import get_model

    net = (
        spec.builder(**spec.builder_kwargs)
        if spec.builder
        else get_model(spec.arch, weights=None, **spec.builder_kwargs)
    )
    if spec.patch is not None:
        spec.patch(net)
    return net


def strip_classifier(spec: BackboneSpec, net: nn.Module) -> nn.Module:
    """Replace the pretraining classifier by Identity so the network outputs features."""
    parent_path, _, leaf = spec.head_path.rpartition(".")
    parent = net.get_submodule(parent_path) if parent_path else net
    setattr(parent, leaf, nn.Identity())
    if spec.arch == "inception_v3":
        net.AuxLogits = None  # the auxiliary head only helps ImageNet training
        net.aux_logits = False
    return net


def transforms_for(
    spec: BackboneSpec,
    crop_size: int | None = None,
    hflip: bool = False,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    eval_resize: float | None = None,
    modality: str = "rgb",
    shake_px: float = 0.0,
    flow_stabilise: bool = False,
    flow_span: int = 1,
) -> BackboneTransforms:
    """``crop_scale``: training crops cover this fraction of the frame's area; ``eval_resize``: evaluation
    resizes the short side to ``crop * eval_resize`` before the centre crop (None: the weights' convention,
    256/224 or 128/112; 1.0 keeps the whole short side, better for small frames with moving objects);
    ``modality``: what the model sees (:mod:`vt_models.data.modality`), which sets the normalisation;
    ``shake_px``: training only, flow: a random camera shake of this std (pixels) added per frame;
    ``flow_stabilise``: flow, train and eval: subtract each frame's median displacement (camera motion);
    ``flow_span``: flow, train and eval: each clip position sums this many consecutive stored flows."""
    size = spec.fixed_crop or crop_size or spec.crop_size
    if size < spec.min_crop:
        raise ValueError(f"{spec.name} needs crop_size >= {spec.min_crop}, got {size}")
    mean, std = normalisation(modality, spec.mean_std)
    common = dict(
        mean=mean,
        std=std,
        crop_size=size,
        resize_ratio=eval_resize or spec.resize_ratio,
        modality=modality,
        stabilise=flow_stabilise and modality == "flow",
        flow_span=flow_span if modality == "flow" else 1,
    )
    return BackboneTransforms(
        train=ClipTransform(train=True, hflip=hflip, scale=tuple(crop_scale), shake=shake_px / FLOW_BOUND, **common),
        eval=ClipTransform(train=False, **common),
        clip_len=spec.fixed_frames,
    )


def build_backbone(
    name: str,
    weights: str = "none",
    num_classes: int = 2,
    *,
    dropout: float = 0.5,
    rnn_hidden: int = 256,
    crop_size: int | None = None,
    hflip: bool = False,
    crop_scale: tuple[float, float] = (0.5, 1.0),
    eval_resize: float | None = None,
    modality: str = "rgb",
    shake_px: float = 0.0,
    flow_stabilise: bool = False,
    flow_span: int = 1,
) -> tuple[VideoClassifier, BackboneTransforms]:
    """Build ``name`` with ``weights`` and a fresh ``num_classes`` head; return it and its transforms.

    ``weights``: ``none``; a torchvision tag (``imagenet``, ``kinetics400``, ``default`` or an enum
    member such as ``IMAGENET1K_V2``); a checkpoint file; or an MLflow model URI
    (``models:/name@alias``, ``models:/name/3``). See :mod:`vt_models.models.weights`.
    ``modality``: ``rgb``, ``rgb_diff`` or ``flow``; the first convolution takes that many channels
    (pretrained RGB filters are averaged over their colour channels, TSN's cross-modality init).
    """
    from vt_models.models.weights import apply_weights

    spec = get_spec(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    check_modality(modality)
    net = torchvision_net(spec)
    model = apply_weights(
        spec, net, weights, num_classes=num_classes, dropout=dropout, rnn_hidden=rnn_hidden, modality=modality
    )
    return model, transforms_for(
        spec, crop_size, hflip, crop_scale, eval_resize, modality, shake_px, flow_stabilise, flow_span
    )


def adapt_input_channels(net: nn.Module, channels: int) -> None:
    """Give the network's first convolution ``channels`` input channels (in place).

    The new filters are the old ones averaged over their input channels and repeated, scaled by
    ``3 / channels`` so the first layer's output keeps its size: TSN's cross-modality initialisation,
    which lets ImageNet weights start a flow network.
    """
    name, conv = next(((n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), (None, None))
    if conv is None:
        raise ValueError(f"{type(net).__name__} has no convolution to take {channels} input channels")
    if conv.in_channels == channels:
        return
    new = type(conv)(
        channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
    )
    with torch.no_grad():
        mean = conv.weight.mean(dim=1, keepdim=True)
        new.weight.copy_(mean.expand_as(new.weight) * (conv.in_channels / channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent_name, _, leaf = name.rpartition(".")
    setattr(net.get_submodule(parent_name) if parent_name else net, leaf, new)


def assemble(
    spec: BackboneSpec, net: nn.Module, num_classes: int, dropout: float, rnn_hidden: int, modality: str = "rgb"
) -> VideoClassifier:
    """Wrap a (loaded) torchvision network into the common classifier with a new head and the modality's input."""
    stage_names = spec.stages(net)
    adapt_input_channels(net, CHANNELS[check_modality(modality)])
    encoder = strip_classifier(spec, net)
    model = VideoClassifier(
        encoder,
        spec.feat_dim,
        num_classes,
        spec.family,
        dropout=dropout,
        rnn=spec.rnn,
        rnn_hidden=rnn_hidden,
        stage_names=stage_names,
    )
    model.modality = modality
    return model


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

"""Building backbones: the behaviour behind the registry's names (timm's ``_builder.py``).

``build_backbone(name, weights=..., num_classes=...)`` returns the model and the transforms that
match its weights, like torchvision's ``get_model`` with a weights enum; ``model_from_checkpoint``
rebuilds exactly what a vt checkpoint describes. The registry (:mod:`vt_models.models.registry`)
names the stage lister, patch and network of each backbone; the tables here hold them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vt_models.data.modality import CHANNELS, FLOW_BOUND, check_modality, normalisation
from vt_models.models.checkpoint import checkpoint_modality, is_vt_checkpoint, load_checkpoint
from vt_models.models.network import VideoClassifier, count_parameters
from vt_models.models.registry import BackboneSpec, get_spec
from vt_models.models.small import WIDTHS, MiniResNet
from vt_models.models.transforms import ClipTransform
from vt_models.models.tsm import add_temporal_shift
from vt_models.models.weights import (
    LoadReport,
    WeightsError,
    WeightsSource,
    load_torchvision_state,
    load_weights_file,
    summarise,
    torchvision_member,
)

__all__ = [
    "BackboneTransforms",
    "adapt_input_channels",
    "apply_weights",
    "assemble",
    "build_backbone",
    "count_parameters",
    "model_from_checkpoint",
    "stage_names",
    "torchvision_net",
    "transforms_for",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneTransforms:
    train: ClipTransform
    eval: ClipTransform
    clip_len: int | None  # required number of frames, when the architecture fixes it


# --------------------------------------------------------------------------- the registry's names


def _children(prefix: str, encoder: nn.Module) -> list[str]:
    """Stages = parameterised children of ``prefix`` (or of the encoder), in order."""
    root = encoder.get_submodule(prefix) if prefix else encoder
    return [
        f"{prefix}.{name}" if prefix else name
        for name, child in root.named_children()
        if any(True for _ in child.parameters())
    ]


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


STAGES: dict[str, Callable[[nn.Module], list[str]]] = {
    "resnet": lambda encoder: ["conv1", "layer1", "layer2", "layer3", "layer4"],
    "video_resnet": lambda encoder: ["stem", "layer1", "layer2", "layer3", "layer4"],
    "vgg": _vgg_stages,
    "inception": _inception_stages,
}


def _adaptive_pool3d(net: nn.Module) -> None:
    # S3D pools with a fixed (2, 7, 7) kernel, i.e. only 16x224x224 clips work; an adaptive
    # pool has no weights, so pretrained weights still load and smaller clips work too.
    net.avgpool = nn.AdaptiveAvgPool3d(1)


PATCHES: dict[str, Callable[[nn.Module], None]] = {
    "temporal_shift": add_temporal_shift,
    "adaptive_pool3d": _adaptive_pool3d,
}
NETWORKS: dict[str, Callable[..., nn.Module]] = {"mini_resnet": MiniResNet}
assert WIDTHS[-1] == get_spec("mini_resnet").feat_dim, "registry.MINI_RESNET_WIDTHS must match small.WIDTHS"


def stage_names(spec: BackboneSpec, encoder: nn.Module) -> list[str]:
    """The encoder's stages, input side first (partial fine-tuning unfreezes the last N)."""
    if spec.stages.startswith("children:"):
        return _children(spec.stages.removeprefix("children:"), encoder)
    return STAGES[spec.stages](encoder)


# --------------------------------------------------------------------------- building


def torchvision_net(spec: BackboneSpec) -> nn.Module:
    """The bare torchvision network with its original (pretraining) classifier."""
    from torchvision.models import get_model

    if spec.network:
        net = NETWORKS[spec.network](**spec.builder_kwargs)
    else:
        net = get_model(spec.arch, weights=None, **spec.builder_kwargs)
    if spec.patch is not None:
        PATCHES[spec.patch](net)
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
    eval_crop: str = "centre",
) -> BackboneTransforms:
    """``crop_scale``: training crops cover this fraction of the frame's area; ``eval_resize``: evaluation
    resizes the short side to ``crop * eval_resize`` before the centre crop (None: the weights' convention,
    256/224 or 128/112; 1.0 keeps the whole short side, better for small frames with moving objects);
    ``eval_crop``: ``centre`` (that centre crop) or ``full`` (the whole frame resized to a square, the
    geometry the training crops have: nothing at the frame's sides is cut off);
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
        eval=ClipTransform(train=False, full_frame=eval_crop == "full", **common),
        clip_len=spec.fixed_frames,
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
    stages = stage_names(spec, net)
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
        stage_names=stages,
    )
    model.modality = modality
    return model


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
    eval_crop: str = "centre",
) -> tuple[VideoClassifier, BackboneTransforms]:
    """Build ``name`` with ``weights`` and a fresh ``num_classes`` head; return it and its transforms.

    ``weights``: ``none``; a torchvision tag (``imagenet``, ``kinetics400``, ``default`` or an enum
    member such as ``IMAGENET1K_V2``); a checkpoint file; or an MLflow model URI
    (``models:/name@alias``, ``models:/name/3``). See :mod:`vt_models.models.weights`.
    ``modality``: ``rgb``, ``rgb_diff`` or ``flow``; the first convolution takes that many channels
    (pretrained RGB filters are averaged over their colour channels, TSN's cross-modality init).
    """
    spec = get_spec(name)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    check_modality(modality)
    net = torchvision_net(spec)
    model = apply_weights(
        spec, net, weights, num_classes=num_classes, dropout=dropout, rnn_hidden=rnn_hidden, modality=modality
    )
    transforms = transforms_for(
        spec, crop_size, hflip, crop_scale, eval_resize, modality, shake_px, flow_stabilise, flow_span, eval_crop
    )
    return model, transforms


# --------------------------------------------------------------------------- weights into a classifier


def _load_into_classifier(
    model: VideoClassifier, state: dict[str, torch.Tensor], report: LoadReport, keep_head: bool
) -> None:
    """Load everything but the head (and anything that no longer fits), strictly otherwise."""
    own = model.state_dict()
    fresh_prefixes = () if keep_head else ("head.",)
    usable = {}
    for key, value in state.items():
        if key.startswith(fresh_prefixes) or key not in own or own[key].shape != value.shape:
            report.dropped.append(key)
        else:
            usable[key] = value
    result = model.load_state_dict(usable, strict=False)
    report.dropped.sort()
    report.loaded = len(usable)
    report.new = sorted(result.missing_keys)
    unexpected_new = [k for k in report.new if not k.startswith(("head.", "temporal."))]
    # an autoencoder checkpoint's decoder (vt_models.train.reconstruction) is meant to be left behind
    unexpected_drop = [k for k in report.dropped if not k.startswith(("head.", "temporal.", "decoder."))]
    if unexpected_new or unexpected_drop:
        raise WeightsError(
            f"weights {report.source} do not fit {type(model.encoder).__name__}: "
            f"missing encoder tensors {summarise(unexpected_new)}; unusable tensors {summarise(unexpected_drop)}. "
            f"Use a checkpoint of the same backbone."
        )


def _from_torchvision_state(
    spec: BackboneSpec,
    net: nn.Module,
    state: dict[str, torch.Tensor],
    report: LoadReport,
    num_classes: int,
    dropout: float,
    rnn_hidden: int,
    modality: str = "rgb",
) -> VideoClassifier:
    """Load a torchvision-layout state dict into the untouched net (every key must match), then re-head it
    (and give its first convolution the modality's channels)."""
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"weights {report.source} do not match torchvision {spec.arch}: missing "
            f"{summarise(result.missing_keys)}, unexpected {summarise(result.unexpected_keys)}"
        )
    report.dropped = sorted(k for k in state if k.startswith((spec.head_path + ".", "AuxLogits.")))
    report.loaded = len(state) - len(report.dropped)
    model = assemble(spec, net, num_classes, dropout, rnn_hidden, modality)
    report.new = sorted(k for k in model.state_dict() if k.startswith(("head.", "temporal.")))
    return model


def apply_weights(
    spec: BackboneSpec,
    net: nn.Module,
    weights: str | WeightsSource,
    *,
    num_classes: int,
    dropout: float,
    rnn_hidden: int,
    keep_head: bool = False,
    modality: str = "rgb",
) -> VideoClassifier:
    """Load ``weights`` for ``spec`` and return the classifier with a ``num_classes`` head and ``modality`` input.

    Torchvision (RGB) weights start any modality (cross-modality init of the first convolution); a
    vt checkpoint must have been trained on the same modality.
    """
    source = weights if isinstance(weights, WeightsSource) else WeightsSource.parse(weights)
    report = LoadReport(source=source.text)
    if source.kind == "none":
        model = assemble(spec, net, num_classes, dropout, rnn_hidden, modality)
        report.new = sorted(model.state_dict())
        log.info("%s: random initialisation (weights=none)", spec.name)
    elif source.kind == "torchvision":
        member = torchvision_member(spec, source.text)
        report.source = f"{member.__class__.__name__}.{member.name}"
        state = load_torchvision_state(member)
        model = _from_torchvision_state(spec, net, state, report, num_classes, dropout, rnn_hidden, modality)
    else:
        ckpt = load_weights_file(source)
        vt = is_vt_checkpoint(ckpt)
        state = ckpt["model"] if vt else ckpt.get("state_dict", ckpt)
        if vt and ckpt.get("arch") != spec.arch:
            raise WeightsError(
                f"{source} is a checkpoint of backbone {ckpt.get('backbone')!r} ({ckpt.get('arch')}), "
                f"it cannot initialise {spec.name!r} ({spec.arch})"
            )
        if vt and checkpoint_modality(ckpt) != modality:
            trained_on = checkpoint_modality(ckpt)
            raise WeightsError(
                f"{source} was trained on modality {trained_on!r}, this model reads {modality!r}: set the modality "
                f"to {trained_on!r}, or start from weights of a {modality!r} model"
            )
        if vt:
            report.objective = str(ckpt.get("training_objective", "supervised"))
        if vt or any(k.startswith("encoder.") for k in state):
            model = assemble(spec, net, num_classes, dropout, rnn_hidden, modality)
            _load_into_classifier(model, state, report, keep_head)
        else:  # a plain state dict in torchvision's own layout for this arch
            model = _from_torchvision_state(spec, net, state, report, num_classes, dropout, rnn_hidden, modality)
    model.load_report = report  # type: ignore[attr-defined]
    model.weights_source = report.source  # type: ignore[attr-defined]
    log.info("%s: %s", spec.name, report)
    return model


def model_from_checkpoint(ckpt: dict[str, Any] | Path) -> tuple[VideoClassifier, BackboneTransforms]:
    """Rebuild the exact model and eval/train transforms described by a vt checkpoint (strict)."""
    if isinstance(ckpt, Path):
        ckpt = load_checkpoint(ckpt)
    if not is_vt_checkpoint(ckpt):
        raise WeightsError("not a vt-models checkpoint (no 'format' marker): use it as weights= instead")
    if ckpt.get("training_objective") == "autoencoder":
        raise WeightsError(
            "an autoencoder checkpoint (pretrain.objective: autoencoder) has an encoder but no trained classifier: "
            "fine-tune from it (train.weights: source, or its file) and score, serve or register that model"
        )
    spec = get_spec(ckpt["backbone"])
    args = ckpt.get("model_args", {})
    modality = checkpoint_modality(ckpt)
    model = assemble(
        spec,
        torchvision_net(spec),
        ckpt["num_classes"],
        args.get("dropout", 0.0),
        args.get("rnn_hidden", 256),
        modality,
    )
    model.load_state_dict(ckpt["model"], strict=True)
    model.weights_source = ckpt.get("weights_source", "checkpoint")  # type: ignore[attr-defined]
    transforms = transforms_for(
        spec,
        args.get("crop_size"),
        hflip=False,
        crop_scale=tuple(args.get("crop_scale", (0.5, 1.0))),
        eval_resize=args.get("eval_resize"),
        modality=modality,
        flow_stabilise=bool(args.get("flow_stabilise", False)),  # older checkpoints: none
        flow_span=int(args.get("flow_span", 1)),  # older checkpoints: one pair per position
        eval_crop=args.get("eval_crop", "centre"),  # older checkpoints: the centre crop
    )
    return model, transforms

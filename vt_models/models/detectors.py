"""Building detectors: torchvision detectors, fine-tuned for the user's box labels.

``build_detector(name, weights=..., num_classes=...)`` mirrors :func:`~vt_models.models.builder.build_backbone`:
the spec comes from the registry (:mod:`vt_models.models.registry`), weights from the shared resolver
(:mod:`vt_models.models.weights`): torchvision's COCO enums (TORCH_HOME cache, clear offline error),
a vt checkpoint file, an MLflow model URI, or ``none`` (only when asked for). The class-specific
layers of the box predictor are re-created for ``num_classes`` user labels (plus background) and
everything else is loaded strictly, with a report of what was dropped and what is new.

Labels inside a detector are ``1..num_classes``; 0 is the background (torchvision's convention).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vt_models.models.checkpoint import checkpoint_modality, is_vt_checkpoint
from vt_models.models.network import count_parameters
from vt_models.models.registry import DetectorSpec, get_detector_spec
from vt_models.models.weights import (
    LoadReport,
    WeightsError,
    WeightsSource,
    load_torchvision_state,
    load_weights_file,
    summarise,
    torchvision_member,
)

log = logging.getLogger(__name__)


class VideoDetector(nn.Module):
    """A torchvision detector with the product's metadata; ``forward`` is torchvision's."""

    encoder_prefixes = ("net.backbone.",)  # the generic loop's discriminative LR applies here
    family = "detector"

    def __init__(self, net: nn.Module, spec: DetectorSpec, classes: list[str]) -> None:
        super().__init__()
        self.net = net
        self.spec = spec
        self.classes = list(classes)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None) -> Any:
        return self.net(images, targets)


# --------------------------------------------------------------------------- backbone stages


def _resnet_stages(net: nn.Module) -> list[list[nn.Module]]:
    body = net.backbone.body
    return [[body.conv1, body.bn1], [body.layer1], [body.layer2], [body.layer3], [body.layer4]]


def _mobilenet_blocks(blocks: list[nn.Module]) -> list[list[nn.Module]]:
    """Group MobileNet blocks into stages at the stride-changing blocks, as torchvision does."""
    cuts = [0] + [i for i, b in enumerate(blocks) if getattr(b, "_is_cn", False)] + [len(blocks) - 1]
    cuts = sorted(set(cuts))
    return [blocks[a:b] for a, b in itertools.pairwise(cuts)] + [[blocks[-1]]]


def _mobilenet_fpn_stages(net: nn.Module) -> list[list[nn.Module]]:
    return _mobilenet_blocks(list(net.backbone.body.children()))


def _ssdlite_stages(net: nn.Module) -> list[list[nn.Module]]:
    return _mobilenet_blocks([*net.backbone.features[0], *net.backbone.features[1]])


STAGES: dict[str, Callable[[nn.Module], list[list[nn.Module]]]] = {
    "resnet": _resnet_stages,
    "mobilenet_fpn": _mobilenet_fpn_stages,
    "ssdlite": _ssdlite_stages,
}


# --------------------------------------------------------------------------- building


def _frozen_bn(module: nn.Module) -> None:
    """Swap BatchNorm2d for FrozenBatchNorm2d in place, as torchvision's pretrained builds have it."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            frozen.weight.copy_(child.weight.detach())
            frozen.bias.copy_(child.bias.detach())
            frozen.running_mean.copy_(child.running_mean)
            frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            _frozen_bn(child)


def freeze_backbone(model: VideoDetector, trainable_layers: int) -> int:
    """Train only the last ``trainable_layers`` backbone stages (the FPN and heads always train)."""
    stages = STAGES[model.spec.stages](model.net)
    for stage in stages[: max(0, len(stages) - trainable_layers)]:
        for module in stage:
            module.requires_grad_(False)
    return min(trainable_layers, len(stages))


def fcos_mobilenet_v3_large_fpn(*, num_classes: int, fpn_channels: int = 64, **kwargs: Any) -> nn.Module:
    """FCOS on MobileNetV3-Large, random weights, with an FPN of ``fpn_channels`` over the ends of its stride
    8, 16 and 32 stages (+ a stride-64 max-pool level).

    torchvision's MobileNet FPNs start at stride 32 with 256 channels: sized for COCO's 320-640 px
    images, too coarse for 15-40 px objects in 128 px frames and too costly on a CPU. FCOS needs no
    anchor sizes to tune; its levels' box-size ranges follow from their strides. ``kwargs`` go to
    :class:`~torchvision.models.detection.FCOS` (``min_size``, ``score_thresh``, ...).
    """
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN

    features = mobilenet_v3_large(weights=None).features
    ends = {"6": "0", "12": "1", "16": "2"}  # last block at stride 8, 16, 32
    channels = [features[int(i)].out_channels for i in ends]
    backbone = BackboneWithFPN(features, ends, channels, int(fpn_channels))
    # FCOS reads each level's stride from its anchor size: one square "anchor" per location
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,)), ((1.0,),) * 4)
    return FCOS(backbone, num_classes, anchor_generator=anchors, **kwargs)


def fcos_mini_resnet_fpn(*, num_classes: int, fpn_channels: int = 64, head_convs: int = 2, **kwargs: Any) -> nn.Module:
    """FCOS on the CPU-sized :class:`~vt_models.models.small.MiniResNet` (RGB), random weights, with an FPN of
    ``fpn_channels`` over its stride 8 and 16 stages (+ a stride-32 max-pool level) and ``head_convs``
    convolutions per head tower (torchvision's FCOS has 4).

    Why: objects of 15-60 px in 128 px frames (the sample data's, and many real videos') want a detector
    that keeps resolution early: this backbone's stem works at full resolution, where MobileNets are at
    stride 4 after two layers. Measured on 2 CPU cores, batches of 4 frames of 128 x 171 px: a training step
    takes 150 ms (fasterrcnn_mobilenet_v3_large_320_fpn: 790 ms); a stride-4 FPN level too: 270 ms.
    """
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.fcos import FCOSHead

    from vt_models.models.small import WIDTHS, MiniResNet

    ends = {"layer3": "0", "layer4": "1"}  # stride 8, 16
    backbone = BackboneWithFPN(MiniResNet(in_channels=3), ends, list(WIDTHS[2:]), int(fpn_channels))
    # FCOS reads each level's stride from its anchor size, and assigns objects up to 8 strides to a level
    anchors = AnchorGenerator(((8,), (16,), (32,)), ((1.0,),) * 3)
    head = FCOSHead(backbone.out_channels, 1, num_classes, num_convs=int(head_convs))
    return FCOS(backbone, num_classes, anchor_generator=anchors, head=head, **kwargs)


# the project's own detector builders, by DetectorSpec.builder
BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fcos_mobilenet_v3_large_fpn": fcos_mobilenet_v3_large_fpn,
    "fcos_mini_resnet_fpn": fcos_mini_resnet_fpn,
}


def _option_names(spec: DetectorSpec) -> set[str]:
    """The keyword arguments a detector takes: its builder's, its model class's and its input transform's.

    Why: torchvision's detectors hand unknown keywords to their input transform, which ignores them, so a
    typo or another family's option (``nms_thresh`` is Faster R-CNN's ``box_nms_thresh``) would do nothing.
    """
    import inspect

    from torchvision.models import get_model_builder
    from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
    from torchvision.models.detection.ssd import SSD
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    family = {"faster_rcnn": FasterRCNN, "retinanet": RetinaNet, "fcos": FCOS, "ssd": SSD}[spec.family]
    builder = BUILDERS[spec.builder] if spec.builder is not None else get_model_builder(spec.name)
    names: set[str] = set()
    for fn in (builder, family.__init__, GeneralizedRCNNTransform.__init__):
        names |= {
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
        }
    # set by the project (weights, classes, the shared backbone): not the user's to pass
    return names - {"weights", "weights_backbone", "num_classes", "backbone", "progress", "head", "anchor_generator"}


def _architecture(spec: DetectorSpec, num_classes: int, frozen_bn: bool, options: dict[str, Any]) -> nn.Module:
    """The spec's builder with ``options``: its keyword arguments (input size, proposal counts, ...)."""
    from torchvision.models import get_model

    kwargs = {k: v for k, v in options.items() if v is not None}
    if spec.fixed_size is not None:  # SSD-style detectors resize to one size: min/max do not apply
        kwargs.pop("min_size", None)
        kwargs.pop("max_size", None)
    allowed = _option_names(spec)
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise WeightsError(
            f"detector {spec.name} ({spec.family}) has no option {unknown} (detect.model_options); "
            f"it takes: {sorted(allowed)}"
        )
    try:
        if spec.builder is not None:
            net = BUILDERS[spec.builder](num_classes=num_classes + 1, **kwargs)
        else:
            net = get_model(spec.name, weights=None, weights_backbone=None, num_classes=num_classes + 1, **kwargs)
    except TypeError as exc:  # an option this builder does not take
        raise WeightsError(f"detector {spec.name} does not take the options {sorted(kwargs)}: {exc}") from exc
    if frozen_bn:
        _frozen_bn(net.backbone)
    _fp32_group_norms(net)
    return net


class Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm that normalises in fp32 under autocast and hands back the input's dtype (the same parameters and
    state dict as :class:`torch.nn.GroupNorm`; in fp32 it is the same computation).

    Why: CUDA's autocast already runs group norm in fp32, but a CPU's bf16 autocast does not, and there oneDNN's
    bf16 group norm took 3.5x the fp32 time: in an fcos_mini_resnet_fpn training step (4 frames of 192 x 256 px,
    one thread) a quarter of the step. With it a bf16 step took 100 ms against 138 (fp32: 189).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = nn.functional.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps)
        return out.to(x.dtype)


def _fp32_group_norms(net: nn.Module) -> None:
    """Swap every GroupNorm of ``net`` (FCOS's and RetinaNet v2's heads) for :class:`Fp32GroupNorm`, in place."""
    for module in net.modules():
        for name, child in module.named_children():
            if type(child) is nn.GroupNorm:
                swapped = Fp32GroupNorm(child.num_groups, child.num_channels, child.eps, child.affine)
                swapped.load_state_dict(child.state_dict())
                setattr(module, name, swapped)


def _load(
    model: VideoDetector, state: dict[str, torch.Tensor], report: LoadReport, prefix: str, keep_head: bool = False
) -> None:
    """Load everything but the class-specific head layers (unless ``keep_head``), strictly; record what was
    dropped and new."""
    own = model.state_dict()
    usable, dropped = {}, []
    for key, value in state.items():
        full = prefix + key
        head = full.startswith(model.spec.head_prefixes)
        if full in own and own[full].shape == value.shape and (keep_head or not head):
            usable[full] = value
        else:
            dropped.append(full)
    result = model.load_state_dict(usable, strict=False)
    # BatchNorm's step counter is bookkeeping, not a weight; checkpoints of frozen-BN nets lack it.
    new = sorted(k for k in result.missing_keys if not k.endswith("num_batches_tracked"))
    bad = [k for k in dropped + new if not k.startswith(model.spec.head_prefixes)]
    if bad:
        raise WeightsError(
            f"weights {report.source} do not fit detector {model.spec.name}: "
            f"{summarise(bad)} outside the box predictor. Use weights of the same detector."
        )
    report.loaded, report.dropped, report.new = len(usable), sorted(dropped), new


def load_classifier_backbone(model: VideoDetector, weights: str) -> str:
    """Start the detector's backbone body from the encoder of a classifier checkpoint (a file or an MLflow model
    URI) of the spec's ``classifier_arch``, strictly: every body tensor comes from it, with its shape.

    Why: the seeds' recipe, an image-pretrained CNN under a detector; offline, the classifier that `vt pretrain`
    trains on the source domain is that CNN. Returns what was loaded, in words."""
    spec = model.spec
    if spec.classifier_arch is None:
        raise WeightsError(
            f"detector {spec.name} has no classifier backbone to start from (detect.backbone_weights): "
            "set it to none, or pick a detector whose backbone is a classifier's"
        )
    source = WeightsSource.parse(weights)
    if source.kind not in ("file", "mlflow"):
        raise WeightsError(
            f"detect.backbone_weights takes a classifier checkpoint file or models:/NAME@ALIAS, got {weights!r}"
        )
    ckpt = load_weights_file(source)
    if not is_vt_checkpoint(ckpt) or ckpt.get("task", "classify") != "classify":
        raise WeightsError(f"{source} is not a vt-models classifier checkpoint: detect.backbone_weights needs one")
    if ckpt.get("arch") != spec.classifier_arch:
        raise WeightsError(
            f"{source} is a {ckpt.get('arch')!r} classifier; detector {spec.name}'s backbone is a "
            f"{spec.classifier_arch!r}: pretrain a classifier of that architecture with pretrain.modality rgb"
        )
    body = model.net.backbone.body
    own = {k: v for k, v in body.state_dict().items() if not k.endswith("num_batches_tracked")}
    prefix = "encoder." + spec.classifier_prefix
    state = {k[len(prefix) :]: v for k, v in ckpt["model"].items() if k.startswith(prefix) and k[len(prefix) :] in own}
    wrong = sorted(k for k, v in state.items() if v.shape != own[k].shape)
    if wrong:
        modality = checkpoint_modality(ckpt)
        raise WeightsError(
            f"{source}: {summarise(wrong)} differ in shape from detector {spec.name}'s backbone (the classifier "
            f"reads {modality}, the detector RGB frames): pretrain the classifier with pretrain.modality rgb"
        )
    missing = sorted(set(own) - set(state))
    if missing:
        raise WeightsError(f"{source} lacks {summarise(missing)} of detector {spec.name}'s backbone")
    body.load_state_dict(state, strict=False)
    return f"backbone from classifier {source} ({len(state)} tensors)"


def build_detector(
    name: str,
    weights: str = "none",
    classes: list[str] | None = None,
    *,
    trainable_backbone_layers: int | None = 3,
    min_size: int | None = None,
    max_size: int | None = None,
    options: dict[str, Any] | None = None,
    backbone_weights: str = "none",
) -> VideoDetector:
    """Build detector ``name`` for ``classes`` with ``weights`` (see the module docstring).

    ``options``: more keyword arguments of torchvision's builder, e.g. the proposal and sampling
    counts of a two-stage detector (``rpn_post_nms_top_n_train``, ``box_batch_size_per_image``).

    ``trainable_backbone_layers``: the last N backbone stages train, the earlier ones are frozen
    (pretrained weights only: freezing random layers helps nothing, so ``none`` trains them all).

    ``backbone_weights``: with ``weights`` ``none``, a classifier checkpoint whose encoder starts the backbone
    (:func:`load_classifier_backbone`; the rest is new); with any other ``weights`` it must be ``none``.
    """
    spec = get_detector_spec(name)
    classes = list(classes or ["object"])
    options = {"min_size": min_size, "max_size": max_size, **(options or {})}
    source = WeightsSource.parse(weights)
    report = LoadReport(source=source.text)
    from_classifier = WeightsSource.parse(backbone_weights).kind != "none"
    if from_classifier and source.kind != "none":
        raise WeightsError(
            f"detect.backbone_weights {backbone_weights!r} and weights {weights!r} both initialise the backbone: "
            "set one of them to none"
        )
    if source.kind == "none":
        frozen = False
        model = VideoDetector(_architecture(spec, len(classes), frozen, options), spec, classes)
        report.new = sorted(model.state_dict())
        trainable_backbone_layers = None
        if from_classifier:
            report.source = load_classifier_backbone(model, backbone_weights)
            body = {k for k in report.new if k.startswith("net.backbone.body.")}
            report.loaded = sum(1 for k in body if not k.endswith("num_batches_tracked"))  # a counter, not a weight
            report.new = [k for k in report.new if k not in body]
            log.info("%s: %s, the rest random", name, report.source)
        else:
            log.info("%s: random initialisation (weights=none)", name)
    elif source.kind == "torchvision":
        member = torchvision_member(spec, source.text)
        report.source = f"{member.__class__.__name__}.{member.name}"
        state = load_torchvision_state(member)
        frozen = spec.frozen_bn
        model = VideoDetector(_architecture(spec, len(classes), frozen, options), spec, classes)
        _load(model, state, report, "net.")
    else:
        ckpt = load_weights_file(source)
        if is_vt_checkpoint(ckpt):
            if ckpt.get("task") != "detect" or ckpt.get("detector") != name:
                raise WeightsError(
                    f"{source} is a checkpoint of {ckpt.get('detector') or ckpt.get('backbone')!r} "
                    f"({ckpt.get('task', 'classify')}), it cannot initialise detector {name!r}"
                )
            frozen, state, prefix = bool(ckpt.get("frozen_bn")), ckpt["model"], ""
            # the same labels in the same order (source and target boxes of one kind): the box predictor
            # transfers too; any other label set starts it afresh, as with COCO weights
            same_labels = list(ckpt.get("classes", [])) == classes
        else:  # a plain torchvision state dict of this detector
            frozen, state, prefix, same_labels = spec.frozen_bn, ckpt.get("state_dict", ckpt), "net.", False
        model = VideoDetector(_architecture(spec, len(classes), frozen, options), spec, classes)
        _load(model, state, report, prefix, keep_head=same_labels)
    if trainable_backbone_layers is not None:
        stages = freeze_backbone(model, trainable_backbone_layers)
        log.info("%s: last %d backbone stage(s) trainable", name, stages)
    model.frozen_bn = frozen  # type: ignore[attr-defined]  (the checkpoint records it; rebuilding needs it)
    model.load_report = report  # type: ignore[attr-defined]
    model.weights_source = report.source  # type: ignore[attr-defined]
    log.info("%s: %s (%d of %d params trainable)", name, report, count_parameters(model, True), count_parameters(model))
    return model


def detector_from_checkpoint(ckpt: dict[str, Any]) -> VideoDetector:
    """Rebuild the exact detector a vt checkpoint describes (strict)."""
    if not is_vt_checkpoint(ckpt) or ckpt.get("task") != "detect":
        raise WeightsError("not a vt-models detector checkpoint (no task 'detect'): pass it as weights= instead")
    spec = get_detector_spec(ckpt["detector"])
    net = _architecture(spec, len(ckpt["classes"]), bool(ckpt.get("frozen_bn")), dict(ckpt.get("model_args", {})))
    model = VideoDetector(net, spec, ckpt["classes"])
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise WeightsError(
            f"checkpoint does not fit {spec.name}: missing {summarise(missing)}, "
            f"unexpected {summarise(list(unexpected))}"
        )
    model.weights_source = ckpt.get("weights_source", "checkpoint")  # type: ignore[attr-defined]
    return model

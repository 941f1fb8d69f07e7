"""Where pretrained weights come from, and strict loading that says exactly what changed.

Sources: ``none`` (random init, only when asked for), torchvision weight enums (ImageNet for 2D
CNNs, Kinetics-400 for video nets; downloaded when online, read from the ``TORCH_HOME`` cache
offline), a checkpoint file, or an MLflow model URI. When pretrained weights cannot be had the
error says which file to place where; there is never a silent fallback to random weights.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from vt_models.models.checkpoint import is_vt_checkpoint, load_checkpoint
from vt_models.models.network import VideoClassifier
from vt_models.models.registry import BackboneSpec, assemble, torchvision_net

log = logging.getLogger(__name__)

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
TORCHVISION_TAGS = ("default", "imagenet", "kinetics400")


class WeightsError(RuntimeError):
    """Weights that cannot be found or do not fit the model; says what to do."""


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    dropped: list[str] = field(default_factory=list)  # in the weights, not in the model (old head)
    new: list[str] = field(default_factory=list)  # in the model, freshly initialised (new head)

    def __str__(self) -> str:
        return (
            f"weights {self.source}: {self.loaded} tensors loaded; dropped {_summarise(self.dropped)}; "
            f"new {_summarise(self.new)}"
        )


def _summarise(keys: list[str]) -> str:
    return "none" if not keys else ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


def weights_kind(weights: str) -> str:
    """'none' | 'mlflow' | 'file' | 'torchvision' for a weights spec string."""
    w = weights.strip()
    if w.lower() == "none":
        return "none"
    if w.startswith(MLFLOW_SCHEMES):
        return "mlflow"
    if "/" in w or os.sep in w or w.endswith((".pt", ".pth", ".ckpt", ".bin")) or Path(w).is_file():
        return "file"
    return "torchvision"


# --------------------------------------------------------------------------- torchvision enums


def torchvision_member(spec: BackboneSpec, tag: str) -> Any:
    """The weights enum member for ``tag`` (``imagenet``, ``kinetics400``, ``default``, or a member name)."""
    from torchvision.models import get_model_weights

    if not spec.has_torchvision_weights:
        raise WeightsError(
            f"{spec.name} has no published weights ({tag!r} asked for): pretrain it on your source domain "
            f"(`vt pretrain`, then weights: source), or give a checkpoint file or models:/NAME@ALIAS"
        )
    enum = get_model_weights(spec.arch)
    choices = ", ".join(["default", spec.pretrained_on, *enum.__members__])
    key = tag.split(".")[-1]
    if key.lower() in TORCHVISION_TAGS:
        if key.lower() not in ("default", spec.pretrained_on):
            raise WeightsError(f"{spec.name} has {spec.pretrained_on} weights, not {key}; choices: {choices}")
        return enum.DEFAULT
    try:
        return enum[key]
    except KeyError:
        raise WeightsError(
            f"unknown weights {tag!r} for {spec.name}; choices: {choices}, none, a file, or models:/NAME@ALIAS"
        ) from None


def torchvision_cache_path(member: Any) -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(member.url).path).name


def _online(url: str, timeout: float = 3.0) -> bool:
    if os.environ.get("VT_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    host = urlparse(url).hostname or ""
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def load_torchvision_state(member: Any) -> dict[str, torch.Tensor]:
    """State dict of a torchvision weights enum member: TORCH_HOME cache first, then download."""
    cached = torchvision_cache_path(member)
    if cached.is_file():
        log.info("weights %s from cache %s", member, cached)
        return torch.load(cached, map_location="cpu", weights_only=True)
    fix = (
        f"Place the file {cached.name} at {cached} (download it from {member.url} on a machine with "
        f"internet; TORCH_HOME={os.environ.get('TORCH_HOME', '<unset>')} decides the folder), "
        f"or choose other weights: none, a checkpoint file, or an MLflow model URI."
    )
    if not _online(member.url):
        raise WeightsError(f"pretrained weights {member} are not in the cache and there is no network. {fix}")
    try:
        return torch.hub.load_state_dict_from_url(member.url, map_location="cpu", progress=True, weights_only=True)
    except Exception as exc:  # URLError, HTTPError, hash mismatch
        raise WeightsError(f"could not download pretrained weights {member}: {exc}. {fix}") from exc


# --------------------------------------------------------------------------- checkpoints


def mlflow_download_dir(uri: str) -> Path:
    """Where a ``models:/`` URI is downloaded: one folder per tracking server and URI under the user cache
    (``VT_CACHE_DIR``, default ``~/.cache/vt-models``). It is replaced on every fetch, so repeated
    fetches (the gate re-scoring the champion, the dashboard) do not pile up copies in /tmp."""
    import hashlib
    import os

    import mlflow

    root = Path(os.environ.get("VT_CACHE_DIR") or Path.home() / ".cache" / "vt-models")
    key = hashlib.sha256(f"{mlflow.get_tracking_uri()}|{uri}".encode()).hexdigest()[:16]
    return root / "mlflow-models" / key


def resolve_mlflow_checkpoint(uri: str) -> Path:
    """Download an MLflow model and return the vt checkpoint file inside it."""
    import shutil

    import mlflow

    dest = mlflow_download_dir(uri)
    shutil.rmtree(dest, ignore_errors=True)  # an alias may have moved: always fetch afresh
    dest.mkdir(parents=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except Exception as exc:
        raise WeightsError(
            f"cannot fetch MLflow model {uri} (tracking URI {mlflow.get_tracking_uri()}): {exc}. "
            f"Check the name/alias/version with `mlflow models` or the MLflow UI, or set MLFLOW_TRACKING_URI."
        ) from exc
    found = sorted(local.rglob("checkpoint.pt")) if local.is_dir() else [local]
    if not found:
        raise WeightsError(f"MLflow model {uri} has no checkpoint.pt artifact (not a vt-models model?)")
    return found[0]


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
    unexpected_drop = [k for k in report.dropped if not k.startswith(("head.", "temporal."))]
    if unexpected_new or unexpected_drop:
        raise WeightsError(
            f"weights {report.source} do not fit {type(model.encoder).__name__}: "
            f"missing encoder tensors {_summarise(unexpected_new)}; unusable tensors {_summarise(unexpected_drop)}. "
            f"Use a checkpoint of the same backbone."
        )


def apply_weights(
    spec: BackboneSpec,
    net: nn.Module,
    weights: str,
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
    kind = weights_kind(weights)
    report = LoadReport(source=weights)
    if kind == "none":
        model = assemble(spec, net, num_classes, dropout, rnn_hidden, modality)
        report.new = sorted(model.state_dict())
        log.info("%s: random initialisation (weights=none)", spec.name)
    elif kind == "torchvision":
        member = torchvision_member(spec, weights)
        report.source = f"{member.__class__.__name__}.{member.name}"
        model = _from_torchvision_state(
            spec, net, load_torchvision_state(member), report, num_classes, dropout, rnn_hidden, modality
        )
    else:
        path = resolve_mlflow_checkpoint(weights) if kind == "mlflow" else Path(weights)
        if not path.is_file():
            raise WeightsError(f"weights file {path} not found: give an existing checkpoint path")
        ckpt = load_checkpoint(path)
        state = ckpt["model"] if is_vt_checkpoint(ckpt) else ckpt.get("state_dict", ckpt)
        if is_vt_checkpoint(ckpt) and ckpt.get("arch") != spec.arch:
            raise WeightsError(
                f"{weights} is a checkpoint of backbone {ckpt.get('backbone')!r} ({ckpt.get('arch')}), "
                f"it cannot initialise {spec.name!r} ({spec.arch})"
            )
        if is_vt_checkpoint(ckpt) and checkpoint_modality(ckpt) != modality:
            trained_on = checkpoint_modality(ckpt)
            raise WeightsError(
                f"{weights} was trained on modality {trained_on!r}, this model reads {modality!r}: set the modality "
                f"to {trained_on!r}, or start from weights of a {modality!r} model"
            )
        if is_vt_checkpoint(ckpt) or any(k.startswith("encoder.") for k in state):
            model = assemble(spec, net, num_classes, dropout, rnn_hidden, modality)
            _load_into_classifier(model, state, report, keep_head)
        else:  # a plain state dict in torchvision's own layout for this arch
            model = _from_torchvision_state(spec, net, state, report, num_classes, dropout, rnn_hidden, modality)
    model.load_report = report  # type: ignore[attr-defined]
    model.weights_source = report.source  # type: ignore[attr-defined]
    log.info("%s: %s", spec.name, report)
    return model


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
            f"{_summarise(result.missing_keys)}, unexpected {_summarise(result.unexpected_keys)}"
        )
    report.dropped = sorted(k for k in state if k.startswith((spec.head_path + ".", "AuxLogits.")))
    report.loaded = len(state) - len(report.dropped)
    model = assemble(spec, net, num_classes, dropout, rnn_hidden, modality)
    report.new = sorted(k for k in model.state_dict() if k.startswith(("head.", "temporal.")))
    return model


def model_from_checkpoint(ckpt: dict[str, Any]) -> tuple[VideoClassifier, Any]:
    """Rebuild the exact model and eval/train transforms described by a vt checkpoint (strict)."""
    from vt_models.models.registry import get_spec, transforms_for

    if not is_vt_checkpoint(ckpt):
        raise WeightsError("not a vt-models checkpoint (no 'format' marker): use it as weights= instead")
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
    return model, transforms_for(
        spec,
        args.get("crop_size"),
        hflip=False,
        crop_scale=tuple(args.get("crop_scale", (0.5, 1.0))),
        eval_resize=args.get("eval_resize"),
        modality=modality,
        flow_stabilise=bool(args.get("flow_stabilise", False)),  # older checkpoints: none
        flow_span=int(args.get("flow_span", 1)),
    )  # older checkpoints: one pair per position


def checkpoint_modality(ckpt: dict[str, Any]) -> str:
    """The input modality a vt checkpoint was trained on (checkpoints from before modalities: rgb)."""
    return str(ckpt.get("model_args", {}).get("modality", "rgb"))

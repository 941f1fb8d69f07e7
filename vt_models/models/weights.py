"""Where pretrained weights come from, and strict loading that says exactly what changed.

A weights string is parsed once into a :class:`WeightsSource`; :func:`fetch_weights` turns it into
tensors for any registered model (backbone or detector), so both builders share one resolver.

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
from typing import Any, Literal, Protocol
from urllib.parse import urlparse

import torch

from vt_models.models.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")
TORCHVISION_TAGS = ("default", "imagenet", "kinetics400", "coco")
WeightsKind = Literal["none", "torchvision", "file", "mlflow"]


class WeightsError(RuntimeError):
    """Weights that cannot be found or do not fit the model; says what to do."""


@dataclass
class LoadReport:
    source: str
    loaded: int = 0
    dropped: list[str] = field(default_factory=list)  # in the weights, not in the model (old head)
    new: list[str] = field(default_factory=list)  # in the model, freshly initialised (new head)
    objective: str = "supervised"  # how the weights were trained (a vt checkpoint's training_objective)

    def __str__(self) -> str:
        return (
            f"weights {self.source}: {self.loaded} tensors loaded; dropped {summarise(self.dropped)}; "
            f"new {summarise(self.new)}"
        )


def summarise(keys: list[str]) -> str:
    return "none" if not keys else ", ".join(keys[:6]) + (f" (+{len(keys) - 6} more)" if len(keys) > 6 else "")


@dataclass(frozen=True)
class WeightsSource:
    """A weights string, parsed once: ``none``, a torchvision tag or enum member, a file, or an MLflow URI."""

    text: str
    kind: WeightsKind

    @classmethod
    def parse(cls, weights: str) -> WeightsSource:
        w = weights.strip()
        if w.lower() == "none":
            return cls(w, "none")
        if w.startswith(MLFLOW_SCHEMES):
            return cls(w, "mlflow")
        if "/" in w or os.sep in w or w.endswith((".pt", ".pth", ".ckpt", ".bin")) or Path(w).is_file():
            return cls(w, "file")
        return cls(w, "torchvision")

    def __str__(self) -> str:
        return self.text


def resolve_source(weights: str, checkpoint: Path, setting: str, command: str) -> str:
    """``source`` means ``checkpoint``, the best model of the matching pretraining stage (classifier or
    detector); any other weights string is returned as it is. ``setting`` and ``command`` go into the error."""
    if weights != "source":
        return weights
    if not checkpoint.is_file():
        raise WeightsError(
            f"{setting} is 'source' but {checkpoint} does not exist: run `{command}` (or `dvc repro`) first"
        )
    return str(checkpoint)


def weights_kind(weights: str) -> WeightsKind:
    """'none' | 'mlflow' | 'file' | 'torchvision' for a weights spec string."""
    return WeightsSource.parse(weights).kind


# --------------------------------------------------------------------------- torchvision enums


class TorchvisionModel(Protocol):
    """What the resolver asks of a registry spec (backbone or detector)."""

    name: str

    @property
    def arch(self) -> str: ...

    @property
    def pretrained_on(self) -> str: ...

    @property
    def has_torchvision_weights(self) -> bool: ...


def torchvision_member(spec: TorchvisionModel, tag: str) -> Any:
    """The weights enum member for ``tag`` (``default``, what it was trained on such as ``imagenet``, or a member)."""
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
            f"unknown weights {tag!r} for {spec.name}; choices: {choices}, "
            "none, a checkpoint file, or models:/NAME@ALIAS"
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

    from vt_models.io.mlflow import redacted

    dest = mlflow_download_dir(uri)
    shutil.rmtree(dest, ignore_errors=True)  # an alias may have moved: always fetch afresh
    dest.mkdir(parents=True)
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
    except Exception as exc:
        raise WeightsError(
            f"cannot fetch MLflow model {uri} (tracking URI {redacted(mlflow.get_tracking_uri())}): {exc}. "
            f"Check the name/alias/version with `mlflow models` or the MLflow UI, or set MLFLOW_TRACKING_URI."
        ) from exc
    found = sorted(local.rglob("checkpoint.pt")) if local.is_dir() else [local]
    if not found:
        raise WeightsError(f"MLflow model {uri} has no checkpoint.pt artifact (not a vt-models model?)")
    return found[0]


def load_weights_file(source: WeightsSource) -> dict[str, Any]:
    """The checkpoint dict behind a ``file`` or ``mlflow`` source (weights-only load), with a clear error."""
    path = resolve_mlflow_checkpoint(source.text) if source.kind == "mlflow" else Path(source.text)
    if not path.is_file():
        raise WeightsError(f"weights file {path} not found: give an existing checkpoint path")
    return load_checkpoint(path)

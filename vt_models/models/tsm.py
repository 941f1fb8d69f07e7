"""Temporal Shift Module (Lin, Gan and Han, ICCV 2019) for 2D CNNs, as in MMAction2's TSM.

A per-frame 2D CNN averaged over time (TSN) cannot tell a clip from its reverse: left from right,
clockwise from counter-clockwise, zoom in from zoom out. TSM shifts 1/8 of the channels one frame
back and 1/8 one frame forward at the input of every residual branch, so each frame's features mix
in its neighbours' and the network sees motion, with no parameters and almost no compute.

The shift is a forward pre-hook on each block's first convolution (the "residual shift"): the
state dict keeps torchvision's layout, so ImageNet weights load unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

FOLD_DIV = 8  # 1/8 of the channels shift each way (the paper's choice)


def _shift(x: torch.Tensor, frames: int, fold: int, forward: bool) -> torch.Tensor:
    """The shift itself, each output element written once: in the ``forward`` direction the first fold
    comes from t+1 and the second from t-1; the other direction (its gradient) swaps the two."""
    nt, c, h, w = x.shape
    x = x.reshape(nt // frames, frames, c, h, w)  # a view in either memory format (NCHW or channels-last)
    out = torch.empty_like(x)
    first, second = slice(0, fold), slice(fold, 2 * fold)
    ahead, behind = (first, second) if forward else (second, first)
    out[:, :-1, ahead] = x[:, 1:, ahead]
    out[:, -1, ahead] = 0
    out[:, 1:, behind] = x[:, :-1, behind]
    out[:, 0, behind] = 0
    out[:, :, 2 * fold :] = x[:, :, 2 * fold :]
    return out.view(nt, c, h, w)


class _TemporalShift(torch.autograd.Function):
    """The shift with its gradient written out (the opposite shift), as the TSM authors' code does.
    Autograd through the sliced assignments instead built three full-size zero tensors per shift in the
    backward pass: the shifts took about a quarter of mini_resnet_tsm's training step on a CPU."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, frames: int, fold: int) -> torch.Tensor:
        ctx.frames, ctx.fold = frames, fold
        return _shift(x, frames, fold, forward=True)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        return _shift(grad, ctx.frames, ctx.fold, forward=False), None, None


def temporal_shift(x: torch.Tensor, frames: int, fold_div: int = FOLD_DIV) -> torch.Tensor:
    """Shift channels of ``x`` (B*T, C, H, W) along time: the first fold from t+1, the second from t-1
    (zeros at the clip's ends)."""
    if frames <= 1:
        return x
    return _TemporalShift.apply(x, frames, x.shape[1] // fold_div)


class ShiftState:
    """The clip length the shift regroups frames by; shared by the network and its hooked convs
    (a plain object, so deep copies of the network get their own, consistent copy)."""

    def __init__(self) -> None:
        self.frames = 1


def _shift_hook(module: nn.Module, inputs: tuple[Any, ...]) -> tuple[torch.Tensor]:
    return (temporal_shift(inputs[0], module.tsm_state.frames),)


def _residual_branch_inputs(net: nn.Module) -> list[nn.Module]:
    """The first layer of every residual branch: ResNet blocks' ``conv1``; the expansion layer of
    MobileNet inverted residuals that have a skip connection (the TSM paper's online MobileNetV2)."""
    if hasattr(net, "layer1"):
        return [block.conv1 for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for block in layer]
    firsts = []
    for block in net.modules():
        if getattr(block, "use_res_connect", False):
            branch = getattr(block, "block", None) or block.conv
            firsts.append(branch[0])
    if not firsts:
        raise ValueError(f"no residual blocks to shift in {type(net).__name__}")
    return firsts


def add_temporal_shift(net: nn.Module) -> None:
    """Install the shift on every residual block of a torchvision ResNet or MobileNet (in place).

    The video classifier sets ``net.tsm_state.frames`` to the clip length before running a clip's
    frames through the network.
    """
    state = ShiftState()
    net.tsm_state = state
    for layer in _residual_branch_inputs(net):
        layer.tsm_state = state
        layer.register_forward_pre_hook(_shift_hook)

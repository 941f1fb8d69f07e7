"""The cost side of a model: parameters, GFLOPs per clip, latency and throughput on this device."""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn


def count_flops(model: nn.Module, clip: torch.Tensor) -> float:
    """Forward FLOPs for one clip (multiply-add = 2 FLOPs), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(clip[:1])
    return float(counter.get_total_flops())


@torch.no_grad()
def measure_speed(
    model: nn.Module,
    clip_shape: tuple[int, ...],
    device: torch.device,
    batch_sizes: tuple[int, ...] = (1, 4, 8),
    repeats: int = 5,
) -> dict[str, Any]:
    """Median latency per clip at batch 1 and throughput (clips/s) at each batch size."""
    model = model.to(device).eval()
    out: dict[str, Any] = {"device": str(device)}

    def run(bs: int) -> float:
        x = torch.randn(bs, *clip_shape, device=device)
        model(x)  # warm-up
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    for bs in batch_sizes:
        seconds = run(bs)
        if bs == 1:
            out["latency_ms"] = 1000 * seconds
        out[f"throughput_bs{bs}"] = bs / seconds
    return out


def model_cost(
    model: nn.Module, clip_shape: tuple[int, ...], device: torch.device, batch_sizes: tuple[int, ...] = (1, 4, 8)
) -> dict[str, Any]:
    params = sum(p.numel() for p in model.parameters())
    size_mb = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**20
    cpu_model = model.to("cpu")
    gflops = count_flops(cpu_model, torch.randn(1, *clip_shape)) / 1e9
    return {
        "params": params,
        "size_mb": size_mb,
        "gflops_per_clip": gflops,
        **measure_speed(model, clip_shape, device, batch_sizes),
    }

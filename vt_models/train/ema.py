"""An exponential moving average of the weights (Polyak averaging, as timm's ``ModelEmaV3``).

The averaged weights are the ones validated and saved: on small data the last epochs' weights
jump with every batch, and their average generalises better than any one of them. BatchNorm
statistics are not averaged; precise BN (``precise_bn``) re-estimates them for the averaged
weights before each validation.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.names = [name for name, _ in model.named_parameters()]
        self.params = [p for _, p in model.named_parameters()]
        self.shadow = [p.detach().clone() for p in self.params]
        self.updates = 0
        self.raw: list[torch.Tensor] | None = None

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step. The decay ramps up over the first steps (``(1 + n) / (10 + n)``), so the
        average does not hold on to the random head it started from."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in self.params], 1 - decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block (to score and save them), its own after."""
        with torch.no_grad():
            self.raw = [p.detach().clone() for p in self.params]
            for p, s in zip(self.params, self.shadow, strict=True):
                p.copy_(s)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, r in zip(self.params, self.raw, strict=True):
                    p.copy_(r)
            self.raw = None

    def state_dict(self) -> dict[str, Any]:
        """For a checkpoint written inside :meth:`applied` (whose ``model`` holds the average): the training
        weights and the update count, which exact resume needs."""
        if self.raw is None:
            raise RuntimeError("WeightAverage.state_dict() is only meaningful inside applied()")
        return {"updates": self.updates, "raw": dict(zip(self.names, self.raw, strict=True))}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """After the model has loaded the checkpoint's (averaged) weights: they become the average again, and
        the model gets its training weights back."""
        self.updates = int(state["updates"])
        for p, s, name in zip(self.params, self.shadow, self.names, strict=True):
            s.copy_(p)
            p.copy_(state["raw"][name])

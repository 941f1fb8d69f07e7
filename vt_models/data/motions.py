"""The sample data's classes: each is one dominant motion of the main object.

Plain data (no numpy), so that checking ``sample.classes`` in a config loads nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Motion:
    """The dominant motion of the main object, i.e. what defines one class."""

    kind: Literal["translate", "rotate", "zoom"]
    dx: float = 0.0  # translate: unit direction in image coordinates (y points down)
    dy: float = 0.0
    sign: int = 0  # rotate: +1 clockwise on screen, -1 counter-clockwise; zoom: +1 grows


MOTIONS: dict[str, Motion] = {
    "left": Motion("translate", dx=-1.0),
    "right": Motion("translate", dx=1.0),
    "up": Motion("translate", dy=-1.0),
    "down": Motion("translate", dy=1.0),
    "rotate_cw": Motion("rotate", sign=1),
    "rotate_ccw": Motion("rotate", sign=-1),
    "zoom_in": Motion("zoom", sign=1),
    "zoom_out": Motion("zoom", sign=-1),
}

"""Synthetic motion-classification videos: the classes differ only by how one object moves.

Every clip shows a main object (track 1) on a cluttered background. Its class is its
dominant motion: translation direction, rotation direction or scaling. The object is large
(radius ~10-40% of the short side) and the class motion strong (travel ~25-45% of the frame,
a third to two thirds of a turn, radius x1.8-2.4), in every style alike. Position, size and
angle are drawn from one distribution shared by all classes and anchored at the middle of
the clip, so a single frame (or the mean frame) carries little or no class information;
only the change over time does. Nuisances a model must ignore: a randomly wandering
distractor object (track 2), small pose wobble and drift, occluders passing in front,
camera jitter, lighting drift, sensor noise.

Two styles model a domain gap with identical classes:

* ``flat`` (source): saturated plain-coloured objects on light pastel backgrounds, mild
  clutter, a distractor clearly smaller than the main object, rare thin occluders, little
  noise and camera shake, almost constant lighting: the easy domain to learn motion from.
* ``textured`` (target): muted palette, striped/checkered/noisy objects on dark textured
  backgrounds with textured clutter, a distractor about as big as the main object, strong
  noise, lighting drift, vignetting, frequent wide occlusions, stronger camera shake.

Scenes carry no class information. A *recording* (the clips ``<cls>_rNNN_cNN`` sharing a
group id) is filmed in one *scene*: background and clutter, main-object and distractor
appearance, occluder colour, noise and vignette levels, and the camera (frame size and fps).
Each domain has one pool of scenes, and the scene id of recording ``r`` is ``r`` itself,
whatever the class: recording ``r`` of every class is filmed in scene ``r``. So each domain's
``ceil(clips_per_class / clips_per_recording)`` scenes are each used exactly once by every
class, a perfectly balanced scene x class table: neither a scene's look nor which classes (or
how many clips of each) it appears with says anything about the class. (A hash-based draw from
a pool would leave chance imbalances, i.e. a little class information in the scene.) The scene
seed is ``(seed, domain, scene id)``; everything else (motion, pose, duration, distractor
path, occluders, lighting drift, noise) is drawn per clip from ``(seed, domain, class,
recording, clip)``.

Rendering is numpy-vectorised per frame (coordinate grids and masks over each object's
bounding square, 2x2 supersampled); clips are written as H.264 MP4 with a
``<name>.boxes.csv`` sidecar of MOT-style boxes.
"""

from __future__ import annotations

import colorsys
import csv
import hashlib
import math
import multiprocessing
import os
import re
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from tqdm import tqdm

from vt_models.video.encode import write_video

if TYPE_CHECKING:
    from vt_models.config import Config

__all__ = [
    "BOXES_HEADER",
    "MOTIONS",
    "SHAPES",
    "STYLES",
    "TEXTURES",
    "Appearance",
    "Box",
    "Clip",
    "Motion",
    "Scene",
    "clip_name",
    "generate_sample",
    "make_scene",
    "read_boxes_csv",
    "render_clip",
    "write_boxes_csv",
]


# --------------------------------------------------------------------------- registry


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

STYLES = ("flat", "textured")
# Every shape fits in the unit disc of its local frame, so `scale` is its bounding radius.
SHAPES = ("disc", "square", "triangle", "cross", "ell", "arrow", "ring")
TEXTURES = ("solid", "stripes", "checker", "noise")

from vt_models.data.annotations import MOT_HEADER as BOXES_HEADER  # noqa: E402  (one definition)

Box = tuple[int, int, float, float, float, float, str]

# Contrasting spot drawn off-centre on the object (where the shape covers it) so that
# shapes with rotational symmetry (disc, square, cross) still show which way they turn.
_MARKER_U, _MARKER_R = 0.45, 0.25


@dataclass(frozen=True)
class _StyleSpec:
    """Per-domain knobs; the classes and their motion ranges are the same for every style."""

    textures: tuple[str, ...]
    texture_p: tuple[float, ...]
    saturation: tuple[float, float]
    value: tuple[float, float]
    clutter: tuple[int, int]  # number of static background shapes, [lo, hi)
    noise_sigma: tuple[float, float]  # per-pixel Gaussian noise, in [0, 1] intensity units
    jitter_sigma: float  # camera shake innovation, pixels
    gain_drift: float  # max |linear brightness change| over the clip
    gain_wave: float  # max amplitude of a slow brightness oscillation
    contrast_drift: float
    tint_drift: float  # per-channel (white balance) drift
    vignette: tuple[float, float]
    occluder_p: float
    occluder_bar: tuple[float, float]  # bar half width, x short side
    occluder_blob: tuple[float, float]  # blob radius, x short side
    distractor_p: float
    distractor_size: tuple[float, float]  # distractor radius, x the main object's (mid-clip) radius


_STYLE_SPECS: dict[str, _StyleSpec] = {
    "flat": _StyleSpec(
        # patterned objects too: on a plain disc only the outline and the marker show a turn or a
        # zoom, too little motion to learn those classes from a few hundred clips.
        # The looks stay plain, but the nuisances of filming are nearly the target's: a shaking camera,
        # sensor noise, lighting drift, occluders and a moving distractor. A source model that never
        # saw them learned motion that did not survive them: fine-tuned on the textured target it
        # scored test accuracy 0.56-0.64, against 0.75-0.78 from this source (one seed each, 36 videos).
        textures=("checker", "solid"),
        texture_p=(0.6, 0.4),
        saturation=(0.65, 1.0),
        value=(0.7, 1.0),
        clutter=(2, 6),
        noise_sigma=(0.01, 0.03),
        jitter_sigma=0.9,
        gain_drift=0.2,
        gain_wave=0.08,
        contrast_drift=0.2,
        tint_drift=0.0,
        vignette=(0.0, 0.0),
        occluder_p=0.4,
        occluder_bar=(0.02, 0.06),
        occluder_blob=(0.08, 0.18),
        distractor_p=0.6,
        distractor_size=(0.4, 0.8),
    ),
    "textured": _StyleSpec(
        textures=("stripes", "checker", "noise", "solid"),
        texture_p=(0.35, 0.3, 0.25, 0.1),
        saturation=(0.25, 0.65),
        value=(0.35, 0.9),
        clutter=(6, 12),
        noise_sigma=(0.025, 0.045),
        jitter_sigma=0.9,
        gain_drift=0.3,
        gain_wave=0.12,
        contrast_drift=0.3,
        tint_drift=0.08,
        vignette=(0.15, 0.4),
        occluder_p=0.55,
        occluder_bar=(0.04, 0.08),
        occluder_blob=(0.12, 0.22),
        distractor_p=0.65,
        distractor_size=(0.5, 0.9),
    ),
}


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class Appearance:
    """How one object looks: shape, texture and colours (all in its own rotating frame)."""

    shape: str
    texture: str
    color: np.ndarray  # (3,) float32 RGB in [0, 1]
    color2: np.ndarray  # second texture colour
    marker_color: np.ndarray
    freq: float = 8.0  # stripes: radians per unit radius; checker: cells per unit
    tex_angle: float = 0.0
    phase: float = 0.0
    tile: np.ndarray | None = None  # noise texture: (n, n) weights in [0, 1]
    marker: bool = True


@dataclass(frozen=True)
class Scene:
    """One scene: background, objects' appearance, camera properties; no class in it.

    Every clip filmed in it shares it (in :func:`generate_sample`: the clips of recording
    ``r`` of every class); what differs per clip is the motion, the occluders, lighting
    drift and noise realisation.
    """

    style: str
    width: int
    height: int
    margin: int  # background is padded by this many pixels so camera jitter never shows an edge
    background: np.ndarray  # (height + 2*margin, width + 2*margin, 3) float32 in [0, 1]
    main: Appearance
    distractor: Appearance
    occluder_color: np.ndarray
    noise_sigma: float
    vignette: float


@dataclass(frozen=True)
class Clip:
    """Rendered frames plus MOT-style boxes of the objects (track 1: main, 2: distractor)."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    boxes: list[Box]  # (frame, track_id, x, y, w, h, label): pixels, x,y = top-left
    fps: int
    meta: dict[str, Any] = field(default_factory=dict)  # motion/style/shape, for debugging


# --------------------------------------------------------------------------- colours


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def _luma(c: np.ndarray) -> float:
    return float(c @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


def _object_color(rng: np.random.Generator, spec: _StyleSpec, avoid: np.ndarray) -> np.ndarray:
    """A palette colour that stands out from ``avoid`` (the background mean)."""
    best, best_d = None, -1.0
    for _ in range(12):
        c = _hsv(rng.random(), rng.uniform(*spec.saturation), rng.uniform(*spec.value))
        d = float(np.linalg.norm(c - avoid)) + 0.5 * abs(_luma(c) - _luma(avoid))
        if d > best_d:
            best, best_d = c, d
        if d > 0.45:
            break
    assert best is not None
    return best


def _appearance(rng: np.random.Generator, style: str, avoid: np.ndarray) -> Appearance:
    """A random object look in the style's palette, contrasting with colour ``avoid``."""
    spec = _STYLE_SPECS[style]
    color = _object_color(rng, spec, avoid)
    texture = str(rng.choice(spec.textures, p=spec.texture_p))
    if rng.random() < 0.5:  # second texture colour: a darker shade or another hue
        color2 = color * np.float32(rng.uniform(0.3, 0.6))
    else:
        color2 = _object_color(rng, spec, color)
    marker_color = _hsv(rng.random(), 0.2, 0.12) if _luma(color) > 0.45 else _hsv(rng.random(), 0.1, 0.95)
    freq = rng.uniform(5.0, 10.0) if texture == "stripes" else rng.uniform(1.5, 2.5)
    return Appearance(
        shape=str(rng.choice(SHAPES)),
        texture=texture,
        color=color,
        color2=color2.astype(np.float32),
        marker_color=marker_color,
        freq=float(freq),
        tex_angle=float(rng.uniform(0, math.pi)),
        phase=float(rng.uniform(0, 2 * math.pi)),
        tile=rng.random((6, 6), dtype=np.float32) if texture == "noise" else None,
    )


# --------------------------------------------------------------------------- drawing


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside test in the object's local frame (+u is the 'front', unit bounding radius)."""
    au, av = np.abs(u), np.abs(v)
    if shape == "disc":
        return u * u + v * v <= 0.95**2
    if shape == "square":
        return (au <= 0.68) & (av <= 0.68)
    if shape == "triangle":  # equilateral, circumradius 0.98, a vertex on +u
        s3 = math.sqrt(3.0) / 2
        return (u >= -0.49) & (0.5 * u + s3 * v <= 0.49) & (0.5 * u - s3 * v <= 0.49)
    if shape == "cross":
        return ((au <= 0.28) & (av <= 0.94)) | ((av <= 0.28) & (au <= 0.94))
    if shape == "ell":
        return ((u >= -0.7) & (u <= -0.25) & (av <= 0.7)) | ((au <= 0.7) & (v >= 0.25) & (v <= 0.7))
    if shape == "arrow":
        shaft = (av <= 0.2) & (u >= -0.95) & (u <= 0.1)
        head = (u >= 0.1) & (u <= 0.95) & (av <= 0.6 * (0.95 - u) / 0.85)
        return shaft | head
    if shape == "ring":  # a "C": ring with a gap on +u
        r2 = u * u + v * v
        return (r2 <= 0.95**2) & (r2 >= 0.5**2) & ~((u > 0) & (av < 0.3))
    raise ValueError(f"unknown shape {shape!r}; allowed: {SHAPES}")


def _texture(app: Appearance, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colour at local coordinates; textures live in the object frame so they turn with it."""
    if app.texture == "solid":
        color = np.broadcast_to(app.color, u.shape + (3,))
    elif app.texture == "stripes":
        t = np.sin(app.freq * (u * math.cos(app.tex_angle) + v * math.sin(app.tex_angle)) + app.phase) > 0
        color = np.where(t[..., None], app.color2, app.color)
    elif app.texture == "checker":
        t = (np.floor(u * app.freq + 8.0) + np.floor(v * app.freq + 8.0)) % 2 > 0
        color = np.where(t[..., None], app.color2, app.color)
    elif app.texture == "noise":
        assert app.tile is not None
        n = app.tile.shape[0]
        iu = np.clip(((u + 1) * (n / 2)).astype(np.intp), 0, n - 1)
        iv = np.clip(((v + 1) * (n / 2)).astype(np.intp), 0, n - 1)
        w = app.tile[iv, iu][..., None]
        color = app.color + (app.color2 - app.color) * w
    else:
        raise ValueError(f"unknown texture {app.texture!r}; allowed: {TEXTURES}")
    if app.marker:
        spot = (u - _MARKER_U) ** 2 + v * v <= _MARKER_R**2
        color = np.where(spot[..., None], app.marker_color, color)
    return color


def _pool2(a: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block over the first two axes (cheaper than a reshaped mean)."""
    return (a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2]) * np.float32(0.25)


def _draw(
    canvas: np.ndarray, app: Appearance, cx: float, cy: float, angle: float, scale: float
) -> tuple[float, float, float, float] | None:
    """Composite one object onto ``canvas`` (H, W, 3 float32, in place).

    ``angle`` grows clockwise on screen (image y points down). Returns the object's box
    (x, y, w, h) clipped to the canvas, or None when no part of it is inside.
    """
    h, w = canvas.shape[:2]
    x0, x1 = max(0, math.floor(cx - scale)), min(w, math.ceil(cx + scale) + 1)
    y0, y1 = max(0, math.floor(cy - scale)), min(h, math.ceil(cy + scale) + 1)
    if x0 >= x1 or y0 >= y1 or scale <= 0:
        return None
    # 2x2 supersampling: sub-pixel centres at +0.25 and +0.75 give anti-aliased edges,
    # so slow sub-pixel motion still changes the pixels smoothly.
    xs = (np.arange(2 * x0, 2 * x1, dtype=np.float32) * 0.5 + 0.25 - cx) / scale
    ys = (np.arange(2 * y0, 2 * y1, dtype=np.float32) * 0.5 + 0.25 - cy) / scale
    c, s = math.cos(angle), math.sin(angle)
    u = xs[None, :] * c + ys[:, None] * s  # rotate the pixel grid by -angle into the object frame
    v = ys[:, None] * c - xs[None, :] * s
    mask = _shape_mask(app.shape, u, v)
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    color = _texture(app, u, v) * mask[..., None]
    alpha = _pool2(mask.astype(np.float32))[..., None]
    premult = _pool2(color)
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - alpha
    region += premult
    bx, by = x0 + cols[0] * 0.5, y0 + rows[0] * 0.5
    return bx, by, x0 + (cols[-1] + 1) * 0.5 - bx, y0 + (rows[-1] + 1) * 0.5 - by


# --------------------------------------------------------------------------- backgrounds


def _value_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1]: a coarse random grid, smoothly interpolated."""
    gy, gx = cells + 1, max(1, round(cells * w / h)) + 1
    grid = rng.random((gy + 1, gx + 1), dtype=np.float32)
    ys = (np.arange(h, dtype=np.float32) + 0.5) * (gy - 1) / h
    xs = (np.arange(w, dtype=np.float32) + 0.5) * (gx - 1) / w
    iy, ix = ys.astype(np.intp), xs.astype(np.intp)
    fy, fx = ys - iy, xs - ix
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None], (fx * fx * (3 - 2 * fx))[None, :]  # smoothstep
    top = grid[iy][:, ix] * (1 - fx) + grid[iy][:, ix + 1] * fx
    bottom = grid[iy + 1][:, ix] * (1 - fx) + grid[iy + 1][:, ix + 1] * fx
    return top * (1 - fy) + bottom * fy


def _background(rng: np.random.Generator, style: str, h: int, w: int) -> np.ndarray:
    """Static cluttered background (h, w, 3) float32 in [0, 1]."""
    spec = _STYLE_SPECS[style]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    beta = rng.uniform(0, 2 * math.pi)
    ramp = ((xx - w / 2) * math.cos(beta) + (yy - h / 2) * math.sin(beta)) / max(h, w)
    if style == "flat":
        base = _hsv(rng.random(), rng.uniform(0.08, 0.3), rng.uniform(0.75, 0.95))
        img = base * (1 + rng.uniform(0.03, 0.1) * ramp)[..., None]
    else:
        base = _hsv(rng.random(), rng.uniform(0.15, 0.5), rng.uniform(0.25, 0.55))
        other = _hsv(rng.random(), rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6))
        mix = _value_noise(rng, h, w, int(rng.integers(2, 5)))[..., None]
        detail = _value_noise(rng, h, w, int(rng.integers(10, 24)))
        period = rng.uniform(5.0, 16.0)
        gamma = rng.uniform(0, 2 * math.pi)
        grating = np.sin((xx * math.cos(gamma) + yy * math.sin(gamma)) * (2 * math.pi / period))
        lum = 1 + 0.35 * (detail - 0.5) + rng.uniform(0.04, 0.12) * grating + 0.3 * ramp
        img = (base * (1 - mix) + other * mix) * lum[..., None]
    img = img.astype(np.float32)
    avoid = img.mean(axis=(0, 1))
    lo, hi = spec.clutter
    for _ in range(int(rng.integers(lo, hi))):
        app = _appearance(rng, style, avoid)
        if style == "flat":  # mild clutter: low-contrast pastel shapes
            pastel = base + (app.color - base) * np.float32(rng.uniform(0.15, 0.35))
            app = Appearance(app.shape, "solid", pastel, pastel, pastel, marker=False)
        else:  # same family as the objects but dimmer, so the object is not trivially the brightest
            app = Appearance(
                app.shape,
                app.texture,
                app.color * 0.7,
                app.color2 * 0.7,
                app.marker_color * 0.7,
                app.freq,
                app.tex_angle,
                app.phase,
                app.tile,
                marker=bool(rng.random() < 0.5),
            )
        scale = rng.uniform(0.06, 0.2) * min(h, w)
        _draw(img, app, rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 2 * math.pi), scale)
    return np.clip(img, 0.0, 1.0)


def make_scene(style: str, width: int, height: int, rng: np.random.Generator) -> Scene:
    """Draw one scene's look: background, main/distractor appearance, camera noise."""
    if style not in _STYLE_SPECS:
        raise ValueError(f"unknown style {style!r}; allowed: {STYLES}")
    if width < 8 or height < 8:
        raise ValueError(f"width and height must be >= 8, got {width}x{height}")
    spec = _STYLE_SPECS[style]
    margin = max(3, math.ceil(0.04 * max(width, height)))
    background = _background(rng, style, height + 2 * margin, width + 2 * margin)
    avoid = background.mean(axis=(0, 1))
    main = _appearance(rng, style, avoid)
    distractor = _appearance(rng, style, avoid)
    occluder = (
        _hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.1, 0.9))
        if style == "textured"
        else _object_color(rng, spec, avoid) * np.float32(0.7)
    )
    return Scene(
        style=style,
        width=width,
        height=height,
        margin=margin,
        background=background,
        main=main,
        distractor=distractor,
        occluder_color=occluder.astype(np.float32),
        noise_sigma=float(rng.uniform(*spec.noise_sigma)),
        vignette=float(rng.uniform(*spec.vignette)),
    )


# --------------------------------------------------------------------------- motion


@dataclass(frozen=True)
class _Track:
    """Per-frame pose of one object in world (un-jittered) pixel coordinates."""

    cx: np.ndarray
    cy: np.ndarray
    angle: np.ndarray
    scale: np.ndarray


# Class motion magnitudes, shared by every style (the domain gap is appearance only).
_RADIUS = (0.1, 0.4)  # main object's bounding radius at mid-clip, x short side (log-uniform)
_SPAN = (0.25, 0.45)  # translation: total travel over the clip, x frame width (or height)
_TURN = (2.0, 4.2)  # rotation: total turn over the clip, radians (~1/3 to 2/3 of a turn)
_ZOOM = (1.8, 2.4)  # zoom: last/first radius ratio (area: 3.2x to 5.8x)
_MAX_TURN_PER_FRAME = 0.45  # radians: short clips turn less, so consecutive frames stay unambiguous
_VISIBLE = 0.5  # translation paths keep the centre within this many radii outside the frame
# The ranges trade motion strength against single-frame ambiguity: the first frame's
# position (size) must not give the direction (of a zoom) away, so the travel (log zoom)
# has to stay well below the spread of positions (log radii) the object can start from.


def _main_track(motion: Motion, rng: np.random.Generator, width: int, height: int, n: int) -> _Track:
    """Main object's poses.

    Position, angle and size at the *middle* of the clip come from one distribution for
    every class; the class only sets how they change around that midpoint. So the mean
    frame is uninformative and first/last frames only weakly so. The radius range is wide
    (log-uniform) so that even the first frame of a zoom says little about its direction;
    translation paths may start or end with the object partly outside the frame (as when
    something walks into view) so that the start position says little about the direction.
    """
    side = min(width, height)
    tau = np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)
    ease = rng.uniform(-0.35, 0.35)  # non-uniform speed, still monotonic (|ease| < 1)
    s = tau + ease * np.sin(2 * math.pi * tau) / (2 * math.pi) - 0.5  # warped time in [-0.5, 0.5]
    scale0 = math.exp(rng.uniform(math.log(_RADIUS[0]), math.log(_RADIUS[1]))) * side
    # Travel along x and y is drawn for every class (same random stream, same mid-clip
    # distribution); the mid-clip centre is anywhere that keeps the whole path, were the
    # object translating, within `_VISIBLE` radii of the frame (so it stays partly visible).
    slack = _VISIBLE * scale0
    span_x, span_y = rng.uniform(*_SPAN) * width, rng.uniform(*_SPAN) * height
    cx0 = rng.uniform(0.5 * span_x - slack, width + slack - 0.5 * span_x)
    cy0 = rng.uniform(0.5 * span_y - slack, height + slack - 0.5 * span_y)
    angle0 = rng.uniform(0, 2 * math.pi)
    # Nuisance wobble/drift, small next to the class motion, so the class must be read
    # from the dominant, sustained change and not from "anything moves".
    drift = rng.uniform(0, 0.06) * side
    dphi = rng.uniform(0, 2 * math.pi)
    wob_f, wob_p = rng.uniform(0.5, 1.5), rng.uniform(0, 2 * math.pi, size=3)
    wave = np.sin(2 * math.pi * wob_f * tau[None, :] + wob_p[:, None])
    cx = cx0 + drift * math.cos(dphi) * s
    cy = cy0 + drift * math.sin(dphi) * s
    angle = angle0 + rng.uniform(0, 0.2) * wave[0]
    scale = scale0 * (1 + rng.uniform(0, 0.06) * wave[1])
    if motion.kind == "translate":
        cx = cx + motion.dx * span_x * s + abs(motion.dy) * rng.uniform(0, 0.02) * width * wave[2]
        cy = cy + motion.dy * span_y * s + abs(motion.dx) * rng.uniform(0, 0.02) * height * wave[2]
    elif motion.kind == "rotate":
        turn = min(rng.uniform(*_TURN), _MAX_TURN_PER_FRAME * max(n - 1, 1))
        angle = angle0 + motion.sign * turn * s
    elif motion.kind == "zoom":
        factor = rng.uniform(*_ZOOM)
        scale = scale0 * factor ** (motion.sign * s)
    return _Track(cx, cy, angle, scale)


def _distractor_track(rng: np.random.Generator, width: int, height: int, n: int, radius: float) -> _Track:
    """An object of bounding radius ``radius`` wandering randomly (damped random walk,
    bouncing off the edges)."""
    side = min(width, height)
    step = rng.uniform(0.006, 0.015) * side
    vel = rng.normal(0, step, size=(n, 2))
    pos = np.empty((n, 2))
    p = np.array([rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height])
    v = rng.normal(0, 2 * step, size=2)
    lim = np.array([width, height], dtype=float)
    for t in range(n):  # n is ~100 at most: a Python loop over frames is cheap
        v = 0.85 * v + vel[t]
        p = p + v
        out = (p < 0) | (p > lim)
        v[out] *= -1
        p = np.clip(p, 0, lim)
        pos[t] = p
    angle = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, 0.05, size=n))
    return _Track(pos[:, 0], pos[:, 1], angle, np.full(n, radius))


def _jitter(rng: np.random.Generator, sigma: float, n: int, limit: int) -> np.ndarray:
    """Integer camera shake per frame, (n, 2): a zero-mean AR(1) walk, so no net pan."""
    out = np.zeros((n, 2), dtype=np.intp)
    j = np.zeros(2)
    noise = rng.normal(0, sigma, size=(n, 2))
    for t in range(n):
        j = 0.6 * j + noise[t]
        out[t] = np.clip(np.rint(j), -limit, limit)
    return out


@dataclass(frozen=True)
class _Occluder:
    """Something passing in front of everything for frames [start, stop)."""

    kind: Literal["bar", "blob"]
    start: int
    stop: int
    p0: tuple[float, float]
    p1: tuple[float, float]
    normal: tuple[float, float]
    size: float  # bar: half width; blob: radius


def _occluder(
    rng: np.random.Generator, spec: _StyleSpec, width: int, height: int, n: int, near: tuple[float, float]
) -> _Occluder:
    """A bar sweeping across the frame, or a blob crossing near the object's mean position."""
    side = min(width, height)
    length = max(2, int(round(n * rng.uniform(0.3, 0.7))))
    start = int(rng.integers(0, max(1, n - length + 1)))
    beta = rng.uniform(0, 2 * math.pi)
    normal = (math.cos(beta), math.sin(beta))
    if rng.random() < 0.6:  # a bar sweeping across the whole frame passes over the object
        half = rng.uniform(*spec.occluder_bar) * side
        reach = 0.5 * math.hypot(width, height) + half + 1
        cx, cy = width / 2, height / 2
        p0 = (cx - normal[0] * reach, cy - normal[1] * reach)
        p1 = (cx + normal[0] * reach, cy + normal[1] * reach)
        return _Occluder("bar", start, min(n, start + length), p0, p1, normal, half)
    radius = rng.uniform(*spec.occluder_blob) * side
    reach = 0.6 * math.hypot(width, height)
    mx, my = near[0] + rng.normal(0, 0.1 * side), near[1] + rng.normal(0, 0.1 * side)
    p0 = (mx - normal[0] * reach, my - normal[1] * reach)
    p1 = (mx + normal[0] * reach, my + normal[1] * reach)
    return _Occluder("blob", start, min(n, start + length), p0, p1, normal, radius)


def _draw_occluder(
    canvas: np.ndarray,
    occ: _Occluder,
    t: int,
    color: np.ndarray,
    grid: tuple[np.ndarray, np.ndarray],
    shift: np.ndarray,
) -> None:
    """Composite the occluder at frame ``t`` (full-frame mask; only while it is active)."""
    if not occ.start <= t < occ.stop:
        return
    f = (t - occ.start + 0.5) / (occ.stop - occ.start)
    px = occ.p0[0] + (occ.p1[0] - occ.p0[0]) * f - shift[0]
    py = occ.p0[1] + (occ.p1[1] - occ.p0[1]) * f - shift[1]
    xx, yy = grid
    if occ.kind == "bar":
        dist = np.abs((xx - px) * occ.normal[0] + (yy - py) * occ.normal[1])
    else:
        dist = np.hypot(xx - px, yy - py)
    alpha = np.clip(occ.size + 0.5 - dist, 0.0, 1.0)[..., None]  # 1-pixel soft edge
    canvas *= 1.0 - alpha
    canvas += alpha * color


# --------------------------------------------------------------------------- rendering


def render_clip(
    motion: str,
    style: str,
    width: int,
    height: int,
    fps: int,
    n_frames: int,
    rng: np.random.Generator,
    scene: Scene | None = None,
) -> Clip:
    """Render one clip of class ``motion``; ``scene`` (default: a fresh one from ``rng``)
    fixes the recording's look. Deterministic given ``rng``'s state."""
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; allowed: {sorted(MOTIONS)}")
    if n_frames < 1 or fps < 1:
        raise ValueError(f"n_frames and fps must be >= 1, got {n_frames}, {fps}")
    if scene is None:
        scene = make_scene(style, width, height, rng)
    elif (scene.style, scene.width, scene.height) != (style, width, height):
        raise ValueError(
            f"scene is {scene.style} {scene.width}x{scene.height}, clip asked for {style} {width}x{height}"
        )
    spec = _STYLE_SPECS[style]
    n, m = n_frames, scene.margin
    main = _main_track(MOTIONS[motion], rng, width, height, n)
    has_distractor = rng.random() < spec.distractor_p
    # Smaller than the main object (flat) or about as big (textured); the main object's
    # geometric-mean radius is the same for every class, so the distractor's size says nothing.
    main_radius = float(np.exp(np.log(main.scale).mean()))
    distractor = (
        _distractor_track(rng, width, height, n, rng.uniform(*spec.distractor_size) * main_radius)
        if has_distractor
        else None
    )
    distractor_behind = rng.random() < 0.5
    occ = (
        _occluder(rng, spec, width, height, n, (float(main.cx.mean()), float(main.cy.mean())))
        if rng.random() < spec.occluder_p
        else None
    )
    shake = _jitter(rng, spec.jitter_sigma, n, m)

    layers: list[tuple[int, Appearance, _Track]] = [(1, scene.main, main)]
    if distractor is not None:
        entry = (2, scene.distractor, distractor)
        layers.insert(0 if distractor_behind else 1, entry)

    frames = np.empty((n, height, width, 3), dtype=np.float32)
    grid = tuple(np.mgrid[0:height, 0:width].astype(np.float32)[::-1]) if occ else None
    boxes: list[Box] = []
    for t in range(n):
        jx, jy = shake[t]
        canvas = frames[t]
        canvas[:] = scene.background[m + jy : m + jy + height, m + jx : m + jx + width]
        for track_id, app, track in layers:
            box = _draw(canvas, app, track.cx[t] - jx, track.cy[t] - jy, track.angle[t], track.scale[t])
            if box is not None:
                boxes.append((t, track_id, *map(float, box), app.shape))
        if occ is not None:
            _draw_occluder(canvas, occ, t, scene.occluder_color, grid, shake[t])  # type: ignore[arg-type]
    boxes.sort(key=lambda b: (b[0], b[1]))
    out = _photometric(frames, rng, spec, scene)
    meta = {
        "motion": motion,
        "style": style,
        "shape": scene.main.shape,
        "texture": scene.main.texture,
        "distractor": has_distractor,
        "occluder": occ.kind if occ else None,
    }
    return Clip(frames=out, boxes=boxes, fps=int(fps), meta=meta)


def _photometric(frames: np.ndarray, rng: np.random.Generator, spec: _StyleSpec, scene: Scene) -> np.ndarray:
    """Lighting drift (gain, contrast, white balance), vignetting and sensor noise -> uint8.

    Works in place on ``frames`` (float32 in [0, 1]); the per-frame affine maps and the
    0..255 scaling are folded together so the big array is touched only a few times.
    """
    n, h, w, _ = frames.shape
    tau = (np.linspace(0.0, 1.0, n) if n > 1 else np.zeros(1)) - 0.5
    wave = np.sin(2 * math.pi * rng.uniform(0.3, 1.2) * tau + rng.uniform(0, 2 * math.pi))
    gain = 1 + rng.uniform(-spec.gain_drift, spec.gain_drift) * tau + rng.uniform(0, spec.gain_wave) * wave
    contrast = 1 + rng.uniform(-spec.contrast_drift, spec.contrast_drift) * tau
    tint = 1 + rng.uniform(-spec.tint_drift, spec.tint_drift, size=3)[None, :] * tau[:, None]
    # ((x - 0.5) * contrast + 0.5) * gain * tint * 255  ==  x * a + b
    g = 255.0 * gain[:, None] * tint  # (n, 3)
    a = g * contrast[:, None]
    b = g * 0.5 * (1 - contrast[:, None]) + 0.5  # +0.5: round to nearest when casting
    sigma = np.float32(255.0 * scene.noise_sigma)
    chroma = None
    if spec.noise_sigma[0] > 0.02:
        # Per-channel colour noise, uniform (same variance as Gaussian, ~5x cheaper to draw);
        # its -0.5 centring is folded into b.
        k = 0.4 * math.sqrt(12.0) * float(sigma)
        chroma = rng.random((n, h, w, 3), dtype=np.float32)
        chroma *= np.float32(k)
        b = b - 0.5 * k
    frames *= a.astype(np.float32)[:, None, None, :]
    if scene.vignette > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx + 0.5 - w / 2) / (w / 2)) ** 2 + ((yy + 0.5 - h / 2) / (h / 2)) ** 2
        frames *= (1 - 0.5 * scene.vignette * r2)[None, :, :, None]
    frames += b.astype(np.float32)[:, None, None, :]
    lum = rng.standard_normal((n, h, w, 1), dtype=np.float32)
    lum *= sigma
    frames += lum
    if chroma is not None:
        frames += chroma
    np.clip(frames, 0.0, 255.0, out=frames)
    return frames.astype(np.uint8)


# --------------------------------------------------------------------------- boxes CSV


def write_boxes_csv(path: Path | str, boxes: list[Box]) -> None:
    """Write MOT-style boxes: header ``frame,track_id,x,y,w,h,label``."""
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(BOXES_HEADER)
        for frame, track, x, y, w, h, label in boxes:
            writer.writerow((frame, track, f"{x:.2f}", f"{y:.2f}", f"{w:.2f}", f"{h:.2f}", label))


def read_boxes_csv(path: Path | str) -> list[Box]:
    """Inverse of :func:`write_boxes_csv` (the strict reader is :mod:`vt_models.data.annotations`)."""
    from vt_models.data.annotations import read_mot_csv

    return [(b.frame, b.track_id, b.x, b.y, b.w, b.h, b.label) for b in read_mot_csv(path)]


# --------------------------------------------------------------------------- data set


def clip_name(cls: str, recording: int, clip: int) -> str:
    """File stem of one clip; the probe's group regex maps it to ``<cls>_r<recording>``."""
    return f"{cls}_r{recording:03d}_c{clip:02d}"


def _generated_pattern(cls: str) -> re.Pattern[str]:
    """Files this module writes into ``<raw>/<cls>/`` (including interrupted temp files)."""
    return re.compile(rf"^\.?{re.escape(cls)}_r\d+_c\d+(\.partial)?\.(mp4|boxes\.csv)$")


def _stable_hash(text: str) -> int:
    """Seed material from a name; unlike ``hash()`` it does not change between processes."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


_SCENE_TAG, _CLIP_TAG = 1, 2


@dataclass(frozen=True)
class _Task:
    path: Path
    cls: str
    style: str
    scene_seed: tuple[int, ...]  # (_SCENE_TAG, seed, domain, scene id): no class in it
    clip_seed: tuple[int, ...]
    sizes: tuple[tuple[int, int], ...]
    fps: tuple[int, ...]
    duration_s: tuple[float, float]


def _scene_seed(seed: int, domain: str, scene_id: int) -> tuple[int, ...]:
    """Seed of one scene of a domain's pool; the class is deliberately not part of it."""
    return (_SCENE_TAG, seed, _stable_hash(domain), scene_id)


def _camera(task: _Task) -> tuple[np.random.Generator, int, int, int]:
    """(scene rng, width, height, fps): size and fps belong to the scene (one camera), so
    they are the first draws from the scene's seed; the rest of the stream is the scene's look."""
    scene_rng = np.random.default_rng(np.random.SeedSequence(task.scene_seed))
    width, height = task.sizes[int(scene_rng.integers(len(task.sizes)))]
    fps = task.fps[int(scene_rng.integers(len(task.fps)))]
    return scene_rng, width, height, fps


def _clip_spec(task: _Task) -> tuple[np.random.Generator, np.random.Generator, int, int, int, int]:
    """(scene rng, clip rng, width, height, fps, n_frames) of one task; the duration is per clip."""
    scene_rng, width, height, fps = _camera(task)
    rng = np.random.default_rng(np.random.SeedSequence(task.clip_seed))
    n_frames = max(1, round(rng.uniform(*task.duration_s) * fps))
    return scene_rng, rng, width, height, fps, n_frames


def _run_task(task: _Task) -> tuple[Path, int]:
    """Render and encode one clip (runs in a worker process); returns (path, n_frames)."""
    scene_rng, rng, width, height, fps, n_frames = _clip_spec(task)
    scene = make_scene(task.style, width, height, scene_rng)
    clip = render_clip(task.cls, task.style, width, height, fps, n_frames, rng, scene)
    # Write under temporary names, then rename: an interrupted run leaves no half file
    # under a final name (and the temp names match the clean-up pattern).
    stem = task.path.name.removesuffix(".mp4")
    tmp_video = task.path.with_name(f".{stem}.partial.mp4")
    tmp_boxes = task.path.with_name(f".{stem}.partial.boxes.csv")
    write_video(tmp_video, clip.frames, fps)  # repeatable x264 settings live in write_video
    write_boxes_csv(tmp_boxes, clip.boxes)
    os.replace(tmp_video, task.path)
    os.replace(tmp_boxes, task.path.with_name(f"{stem}.boxes.csv"))
    return task.path, n_frames


def _even(n: int) -> int:
    return max(8, n - n % 2)


def _plan(cfg: Config) -> tuple[list[_Task], dict[str, dict[str, int]]]:
    sample = cfg.sample
    seed = cfg.seed % 2**64
    sizes = tuple((_even(w), _even(h)) for w, h in sample.sizes)
    tasks: list[_Task] = []
    counts: dict[str, dict[str, int]] = {}
    for domain, dom in sample.domains.items():
        raw = Path(cfg.datasets[domain].raw)
        counts[domain] = {}
        for cls in sample.classes:
            base = (seed, _stable_hash(domain), _stable_hash(cls))
            for i in range(dom.clips_per_class):
                rec, k = divmod(i, dom.clips_per_recording)
                tasks.append(
                    _Task(
                        path=raw / cls / f"{clip_name(cls, rec, k)}.mp4",
                        cls=cls,
                        style=dom.style,
                        # Scene id = recording index: recording r of every class is filmed
                        # in scene r of this domain (see the module docstring).
                        scene_seed=_scene_seed(seed, domain, rec),
                        clip_seed=(_CLIP_TAG, *base, rec, k),
                        sizes=sizes,
                        fps=tuple(sample.fps),
                        duration_s=tuple(sample.duration_s),  # type: ignore[arg-type]
                    )
                )
            counts[domain][cls] = dom.clips_per_class
    paths = [t.path for t in tasks]
    if len(set(paths)) != len(paths):
        from vt_models.config import ConfigError  # local: config imports this module lazily

        raise ConfigError(
            f"sample.domains {list(sample.domains)} share a raw folder; give each domain its own "
            "datasets.<domain>.raw so their clips do not overwrite each other"
        )
    return tasks, counts


def _clean(folder: Path, cls: str) -> None:
    """Remove what an earlier run generated for ``cls``; leave every other file alone."""
    if not folder.is_dir():
        return
    pattern = _generated_pattern(cls)
    for path in folder.iterdir():
        if path.is_file() and pattern.match(path.name):
            path.unlink()


def generate_sample(cfg: Config, progress: bool = True) -> dict[str, dict[str, int]]:
    """For every domain in cfg.sample.domains write cfg.datasets[domain].raw/<class>/<name>.mp4
    plus a sidecar <name>.boxes.csv; return {domain: {class: n_clips}}.

    Deterministic from ``cfg.seed``: a recording's scene (look and camera) comes from
    (seed, domain, recording index), the same for every class, and the rest of a clip's
    randomness from (seed, domain, class, recording, clip), so output is byte-identical
    across runs and worker counts.
    """
    tasks, counts = _plan(cfg)
    for domain in cfg.sample.domains:
        raw = Path(cfg.datasets[domain].raw)
        for cls in cfg.sample.classes:
            _clean(raw / cls, cls)
            (raw / cls).mkdir(parents=True, exist_ok=True)
    workers = min(cfg.sample.workers or os.cpu_count() or 1, max(1, len(tasks)))
    with tqdm(total=len(tasks), desc="sample", unit="clip", disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                _run_task(task)
                bar.update()
        else:
            # fork: workers inherit the imported modules, no re-import cost per worker.
            method = "fork" if sys.platform.startswith("linux") else "spawn"
            ctx = multiprocessing.get_context(method)
            pool = ProcessPoolExecutor(workers, mp_context=ctx)
            try:
                futures = {pool.submit(_run_task, task): task for task in tasks}
                for future in as_completed(futures):
                    try:
                        future.result()
                    except Exception as exc:
                        raise RuntimeError(f"sample: rendering {futures[future].path} failed: {exc}") from exc
                    bar.update()
            finally:
                # On error or Ctrl-C drop the queued clips instead of rendering them all first.
                pool.shutdown(wait=True, cancel_futures=True)
    return counts

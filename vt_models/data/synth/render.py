"""Rendering one clip: the main object's class motion, a distractor, occluders, camera and lighting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from vt_models.data.annotations import Box
from vt_models.data.motions import MOTIONS, Motion
from vt_models.data.synth.scene import (
    _STYLE_SPECS,
    MIN_VISIBLE,
    Appearance,
    Scene,
    _cells_box,
    _paint,
    _StyleSpec,
    make_scene,
    unit_area,
)


@dataclass(frozen=True)
class Clip:
    """Rendered frames plus MOT-style boxes of the objects (track 1: main, 2: distractor, 3+: the
    background's static shapes, see :class:`Prop`)."""

    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    boxes: list[Box]  # pixels, x,y = top-left; only where at least MIN_VISIBLE of the object shows
    fps: int
    # The moving objects' (tracks 1 and 2) boxes in every frame they are drawn in, with the fraction of
    # the shape that shows there (MOT17's visibility): the rendered motion, whatever hides it.
    drawn: list[tuple[Box, float]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)  # motion/style/shape, for debugging


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


def _main_track(
    motion: Motion, rng: np.random.Generator, width: int, height: int, n: int, motion_scale: float = 1.0
) -> _Track:
    """Main object's poses; ``motion_scale`` scales the class motion, not the nuisance wobble and drift.

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
    span_x, span_y = rng.uniform(*_SPAN) * width * motion_scale, rng.uniform(*_SPAN) * height * motion_scale
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
        angle = angle0 + motion.sign * turn * motion_scale * s
    elif motion.kind == "zoom":
        factor = rng.uniform(*_ZOOM)
        scale = scale0 * factor ** (motion.sign * motion_scale * s)
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
) -> np.ndarray | None:
    """Composite the occluder at frame ``t`` (full-frame mask; only while it is active); returns its
    (H, W, 1) alpha, None while inactive."""
    if not occ.start <= t < occ.stop:
        return None
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
    return alpha


@dataclass(frozen=True)
class _Painted:
    """A moving object as drawn in one frame: its pose and the 2x2-supersampled cells it covers."""

    track_id: int
    app: Appearance
    pose: tuple[float, float, float, float]  # cx, cy, angle, scale in frame pixels
    x0: int  # frame pixel of the mask's first cell
    y0: int
    mask: np.ndarray


def _visible_boxes(
    t: int, painted: list[_Painted], scene: Scene, occluder: np.ndarray | None, left: int, top: int
) -> tuple[list[Box], list[tuple[Box, float]]]:
    """The frame's boxes: each object's box (its whole shape, clipped to the frame) where at least
    ``MIN_VISIBLE`` of the shape shows, i.e. is in the frame and not under anything drawn after it.

    Walks the drawing order backwards, from the occluder down to the background's static shapes,
    collecting what covers what in ``cover`` (frame cells). Also returns every moving object's box
    with the fraction of it that shows.
    """
    h, w = scene.height, scene.width
    cover = np.zeros((2 * h, 2 * w), dtype=bool)
    if occluder is not None:
        cover |= (occluder[..., 0] >= 0.5).repeat(2, axis=0).repeat(2, axis=1)
    boxes: list[Box] = []
    drawn: list[tuple[Box, float]] = []
    for p in reversed(painted):
        region = cover[2 * p.y0 : 2 * p.y0 + p.mask.shape[0], 2 * p.x0 : 2 * p.x0 + p.mask.shape[1]]
        cx, cy, angle, scale = p.pose
        inside = cx - scale >= 0 and cy - scale >= 0 and cx + scale <= w and cy + scale <= h
        # The whole shape's cells; beyond the frame's edge its area (within a few edge cells of the count)
        area = int(p.mask.sum()) if inside else 4 * scale * scale * unit_area(p.app.shape)
        shows = float((p.mask & ~region).sum()) / max(area, 1)
        cells = _cells_box(p.mask, p.x0, p.y0)
        assert cells is not None  # _paint returns only masks with set cells
        box = Box(t, p.track_id, *map(float, cells), p.app.shape)
        drawn.append((box, shows))
        if shows >= MIN_VISIBLE:
            boxes.append(box)
        region |= p.mask
    for prop in scene.props:  # static objects: their boxes move with the crop, i.e. the shake
        box = prop.box(left, top, w, h, cover)
        if box is not None:
            boxes.append(Box(t, prop.track_id, *map(float, box), prop.label))
    return boxes, drawn


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
    motion_scale: float = 1.0,
) -> Clip:
    """Render one clip of class ``motion``; ``scene`` (default: a fresh one from ``rng``)
    fixes the recording's look; ``motion_scale`` multiplies the class motion (travel, turn, zoom exponent).
    Deterministic given ``rng``'s state."""
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
    main = _main_track(MOTIONS[motion], rng, width, height, n, motion_scale)
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
    drawn: list[tuple[Box, float]] = []
    for t in range(n):
        jx, jy = shake[t]
        canvas = frames[t]
        canvas[:] = scene.background[m + jy : m + jy + height, m + jx : m + jx + width]
        painted: list[_Painted] = []
        for track_id, app, track in layers:
            pose = (float(track.cx[t] - jx), float(track.cy[t] - jy), float(track.angle[t]), float(track.scale[t]))
            cells = _paint(canvas, app, *pose)
            if cells is not None:
                painted.append(_Painted(track_id, app, pose, *cells))
        alpha = (
            _draw_occluder(canvas, occ, t, scene.occluder_color, grid, shake[t])  # type: ignore[arg-type]
            if occ is not None
            else None
        )
        visible, moving = _visible_boxes(t, painted, scene, alpha, m + jx, m + jy)
        boxes += visible
        drawn += moving
    boxes.sort(key=lambda b: (b.frame, b.track_id))
    drawn.sort(key=lambda d: (d[0].frame, d[0].track_id))
    out = _photometric(frames, rng, spec, scene)
    meta = {
        "motion": motion,
        "style": style,
        "shape": scene.main.shape,
        "texture": scene.main.texture,
        "distractor": has_distractor,
        "occluder": occ.kind if occ else None,
    }
    return Clip(frames=out, boxes=boxes, fps=int(fps), meta=meta, drawn=drawn)


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
    # Per-channel factors tiled along the row ((n, 1, w*3) instead of (n, 1, 1, 3)): the same products,
    # but numpy's inner loop then runs over whole rows instead of 3 values at a time (~5x faster).
    rows = frames.reshape(n, h, w * 3)
    rows *= np.tile(a.astype(np.float32), (1, w))[:, None, :]
    if scene.vignette > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx + 0.5 - w / 2) / (w / 2)) ** 2 + ((yy + 0.5 - h / 2) / (h / 2)) ** 2
        rows *= np.repeat(1 - 0.5 * scene.vignette * r2, 3, axis=1)[None, :, :]
    rows += np.tile(b.astype(np.float32), (1, w))[:, None, :]
    lum = rng.standard_normal((n, h, w, 1), dtype=np.float32)
    lum *= sigma
    frames += lum
    if chroma is not None:
        frames += chroma
    np.clip(frames, 0.0, 255.0, out=frames)
    return frames.astype(np.uint8)

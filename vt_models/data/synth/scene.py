"""A scene of the sample data: background, clutter, object looks and camera, drawn per style."""

from __future__ import annotations

import colorsys
import functools
import math
from dataclasses import dataclass

import numpy as np

STYLES = ("flat", "textured")

# Every shape fits in the unit disc of its local frame, so `scale` is its bounding radius.
SHAPES = ("disc", "square", "triangle", "cross", "ell", "arrow", "ring")
TEXTURES = ("solid", "stripes", "checker", "noise")


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


# Track id of the first static background object (1: the main object, 2: the distractor).
FIRST_PROP_TRACK = 3
# An object is annotated in a frame only while at least this fraction of its area is in view and not
# painted over by what is drawn after it (clutter, the moving objects, occluders): a sliver at the
# frame's edge, or a shape mostly hidden under another, is not something a per-frame detector can be
# asked to find and name.
MIN_VISIBLE = 0.5


@dataclass(frozen=True)
class Prop:
    """A static shape of the background that is an object: annotated as track ``track_id``, labelled
    with its shape, in every frame that shows enough of it (the camera shake moves its box)."""

    track_id: int
    label: str
    x0: int  # background pixel of the masks' first cell
    y0: int
    mask: np.ndarray  # (2 rows, 2 cols) bool: the 2x2-supersampled cells it covers in the background
    visible: np.ndarray  # the cells of ``mask`` that no clutter drawn after it covers
    area: int  # cells of the whole shape, also those beyond the background's edge

    def box(
        self, left: int, top: int, width: int, height: int, cover: np.ndarray | None = None
    ) -> tuple[float, float, float, float] | None:
        """Its box (x, y, w, h) in the ``width`` x ``height`` frame cropped from the background at
        pixel (left, top), clipped to the frame; None when too little of it is visible there.
        ``cover`` (2 * height, 2 * width) bool marks the frame's cells that something drawn over the
        background hides (the moving objects, occluders)."""
        c0, r0 = max(0, 2 * (left - self.x0)), max(0, 2 * (top - self.y0))
        c1, r1 = max(0, 2 * (left + width - self.x0)), max(0, 2 * (top + height - self.y0))
        visible = self.visible[r0:r1, c0:c1]
        if cover is not None and visible.size:
            fr, fc = 2 * (self.y0 - top) + r0, 2 * (self.x0 - left) + c0  # frame cell of visible[0, 0]
            visible = visible & ~cover[fr : fr + visible.shape[0], fc : fc + visible.shape[1]]
        if visible.sum() < MIN_VISIBLE * self.area:
            return None
        return _cells_box(self.mask[r0:r1, c0:c1], self.x0 + c0 // 2 - left, self.y0 + r0 // 2 - top)


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
    props: tuple[Prop, ...] = ()  # the background's static objects, in background pixels


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


def _premult(app: Appearance, u: np.ndarray, v: np.ndarray, mask: np.ndarray, alpha2d: np.ndarray) -> np.ndarray:
    """The object's colour times its coverage ``mask``, pooled 2x2 (premultiplied, at canvas resolution).

    Textures live in the object frame, so they turn with it. A texture mixes at most three colours, so each
    colour's coverage is pooled (one channel) and the colours mixed after: 4x fewer values to pool than
    pooling the coloured image, with the same result up to float rounding."""
    if app.marker:
        spot = (u - _MARKER_U) ** 2 + v * v <= _MARKER_R**2
        body = mask & ~spot
    else:
        spot, body = None, mask
    if app.texture == "solid":
        parts = [(alpha2d if spot is None else _pool2(body.astype(np.float32)), app.color)]
    elif app.texture in ("stripes", "checker"):
        if app.texture == "stripes":
            t = np.sin(app.freq * (u * math.cos(app.tex_angle) + v * math.sin(app.tex_angle)) + app.phase) > 0
        else:
            t = (np.floor(u * app.freq + 8.0) + np.floor(v * app.freq + 8.0)) % 2 > 0
        parts = [
            (_pool2((body & ~t).astype(np.float32)), app.color),
            (_pool2((body & t).astype(np.float32)), app.color2),
        ]
    elif app.texture == "noise":
        assert app.tile is not None
        n = app.tile.shape[0]
        iu = np.clip(((u + 1) * (n / 2)).astype(np.intp), 0, n - 1)
        iv = np.clip(((v + 1) * (n / 2)).astype(np.intp), 0, n - 1)
        w = app.tile[iv, iu] * body
        parts = [(_pool2(body.astype(np.float32)), app.color), (_pool2(w), app.color2 - app.color)]
    else:
        raise ValueError(f"unknown texture {app.texture!r}; allowed: {TEXTURES}")
    if spot is not None:
        parts.append((_pool2((mask & spot).astype(np.float32)), app.marker_color))
    out = parts[0][0][..., None] * np.asarray(parts[0][1], np.float32)
    for weight, color in parts[1:]:
        out += weight[..., None] * np.asarray(color, np.float32)
    return out


def _pool2(a: np.ndarray) -> np.ndarray:
    """Mean of each 2x2 block over the first two axes (cheaper than a reshaped mean)."""
    return (a[0::2, 0::2] + a[0::2, 1::2] + a[1::2, 0::2] + a[1::2, 1::2]) * np.float32(0.25)


def _cells_box(mask: np.ndarray, x0: float, y0: float) -> tuple[float, float, float, float] | None:
    """Box (x, y, w, h) of the set cells of a 2x2-supersampled mask whose first cell is at pixel (x0, y0)."""
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    if cols.size == 0:
        return None
    bx, by = x0 + cols[0] * 0.5, y0 + rows[0] * 0.5
    return bx, by, x0 + (cols[-1] + 1) * 0.5 - bx, y0 + (rows[-1] + 1) * 0.5 - by


def _paint(
    canvas: np.ndarray, app: Appearance, cx: float, cy: float, angle: float, scale: float
) -> tuple[int, int, np.ndarray] | None:
    """Composite one object onto ``canvas`` (H, W, 3 float32, in place).

    ``angle`` grows clockwise on screen (image y points down). Returns (x0, y0, mask): the
    2x2-supersampled cells the object covers, clipped to the canvas, whose first cell is at
    pixel (x0, y0); None when no part of it is inside.
    """
    h, w = canvas.shape[:2]
    x0, x1 = max(0, math.floor(cx - scale)), min(w, math.ceil(cx + scale) + 1)
    y0, y1 = max(0, math.floor(cy - scale)), min(h, math.ceil(cy + scale) + 1)
    if x0 >= x1 or y0 >= y1 or scale <= 0:
        return None
    u, v = _local_grid(cx, cy, angle, scale, (x0, x1), (y0, y1))
    mask = _shape_mask(app.shape, u, v)
    if not mask.any():
        return None
    alpha2d = _pool2(mask.astype(np.float32))
    alpha = alpha2d[..., None]
    premult = _premult(app, u, v, mask, alpha2d)
    region = canvas[y0:y1, x0:x1]
    region *= 1.0 - alpha
    region += premult
    return x0, y0, mask


def _local_grid(
    cx: float, cy: float, angle: float, scale: float, xs_px: tuple[int, int], ys_px: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Object-frame coordinates (u, v) of the 2x2 sub-pixel centres of pixels [x0, x1) x [y0, y1)."""
    # 2x2 supersampling: sub-pixel centres at +0.25 and +0.75 give anti-aliased edges,
    # so slow sub-pixel motion still changes the pixels smoothly.
    xs = (np.arange(2 * xs_px[0], 2 * xs_px[1], dtype=np.float32) * 0.5 + 0.25 - cx) / scale
    ys = (np.arange(2 * ys_px[0], 2 * ys_px[1], dtype=np.float32) * 0.5 + 0.25 - cy) / scale
    c, s = math.cos(angle), math.sin(angle)
    u = xs[None, :] * c + ys[:, None] * s  # rotate the pixel grid by -angle into the object frame
    v = ys[:, None] * c - xs[None, :] * s
    return u, v


def shape_cells(shape: str, cx: float, cy: float, angle: float, scale: float) -> int:
    """The 2x2-supersampled cells the whole shape covers, also those beyond any frame's edge."""
    whole = ((math.floor(cx - scale), math.ceil(cx + scale) + 1), (math.floor(cy - scale), math.ceil(cy + scale) + 1))
    return int(_shape_mask(shape, *_local_grid(cx, cy, angle, scale, *whole)).sum())


@functools.cache
def unit_area(shape: str) -> float:
    """The shape's area in units of its bounding radius squared (4 cells per pixel: x 4 scale**2 for cells)."""
    return shape_cells(shape, 0.0, 0.0, 0.0, 200.0) / (4 * 200.0**2)


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


def _background(rng: np.random.Generator, style: str, h: int, w: int) -> tuple[np.ndarray, tuple[Prop, ...]]:
    """Static cluttered background (h, w, 3) float32 in [0, 1], and its clutter shapes as objects.

    Every clutter shape is an object, in both styles: one rule for both domains. The flat style's
    pastel prints are objects too, not scenery: they have the objects' outlines, and even the faintest
    differ from the background by ~18/255 in their most different channel (1st percentile of 3000
    draws), several times the sensor noise (sigma 2.5-7.6/255), so a per-frame detector sees a square
    there as surely as the main object's square. Left out, they would teach the source detector that
    faint shapes are not objects, which the target's dimmed clutter (annotated) contradicts.
    """
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
    owner = np.full((2 * h, 2 * w), -1, dtype=np.int16)  # per sub-pixel cell: the clutter shape on top
    painted: list[tuple[str, int, int, np.ndarray, int]] = []
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
        cx, cy, angle = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, 2 * math.pi)
        cells = _paint(img, app, cx, cy, angle, scale)
        if cells is not None:
            x0, y0, mask = cells
            owner[2 * y0 : 2 * y0 + mask.shape[0], 2 * x0 : 2 * x0 + mask.shape[1]][mask] = len(painted)
            # The whole shape's area, also beyond the background's edge: what the visible part is a fraction of.
            painted.append((app.shape, x0, y0, mask, shape_cells(app.shape, cx, cy, angle, scale)))
    props = tuple(
        Prop(
            FIRST_PROP_TRACK + i,
            shape,
            x0,
            y0,
            mask,
            mask & (owner[2 * y0 : 2 * y0 + mask.shape[0], 2 * x0 : 2 * x0 + mask.shape[1]] == i),
            area,
        )
        for i, (shape, x0, y0, mask, area) in enumerate(painted)
    )
    return np.clip(img, 0.0, 1.0), props


def make_scene(style: str, width: int, height: int, rng: np.random.Generator) -> Scene:
    """Draw one scene's look: background, main/distractor appearance, camera noise."""
    if style not in _STYLE_SPECS:
        raise ValueError(f"unknown style {style!r}; allowed: {STYLES}")
    if width < 8 or height < 8:
        raise ValueError(f"width and height must be >= 8, got {width}x{height}")
    spec = _STYLE_SPECS[style]
    margin = max(3, math.ceil(0.04 * max(width, height)))
    background, props = _background(rng, style, height + 2 * margin, width + 2 * margin)
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
        props=props,
    )

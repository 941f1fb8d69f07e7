"""The synthetic motion data set: shapes, motion actually encoded, no single-frame shortcut,
scenes shared by every class, deterministic generation that only touches its own files."""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path

import numpy as np
import pytest

from vt_models.config import Config
from vt_models.data.synth import (
    MOTIONS,
    SHAPES,
    STYLES,
    Clip,
    generate_sample,
    make_scene,
    read_boxes_csv,
    render_clip,
    write_boxes_csv,
)
from vt_models.data.synth import render as synth_render
from vt_models.data.synth import sample as synth_sample
from vt_models.data.synth import scene as synth_scene

W, H, FPS, T = 64, 48, 10, 12
GROUP_RE = re.compile(r"^(?P<group>.+?)_c\d+$")  # the probe's default group_regex


def _render(motion: str, seed: int, style: str = "flat", w: int = W, h: int = H, n: int = T) -> Clip:
    return render_clip(motion, style, w, h, FPS, n, np.random.default_rng(seed))


def _main(clip: Clip) -> tuple[np.ndarray, np.ndarray]:
    """(frame indices, boxes x,y,w,h) of the main object (track 1) in every frame it is drawn in,
    also where too little of it shows to be annotated: the rendered motion."""
    rows = [b for b, _ in clip.drawn if b.track_id == 1]
    return np.array([b.frame for b in rows]), np.array([(b.x, b.y, b.w, b.h) for b in rows], dtype=float)


def _slope(t: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(t, y, 1)[0])


# --------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("motion", sorted(MOTIONS))
def test_every_motion_renders_with_boxes_inside_the_frame(motion: str, style: str) -> None:
    clip = _render(motion, seed=3, style=style)
    scene = make_scene(style, W, H, np.random.default_rng(3))  # render_clip's first draws, without a scene
    assert clip.frames.shape == (T, H, W, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == FPS
    assert clip.boxes, "the main object must be visible"
    props = {p.track_id: p.label for p in scene.props}
    for b in clip.boxes:
        assert 0 <= b.frame < T and b.track_id in (1, 2, *props)
        assert b.label in SHAPES and b.label == props.get(b.track_id, b.label)
        assert b.w > 0 and b.h > 0
        assert 0 <= b.x and b.x + b.w <= W and 0 <= b.y and b.y + b.h <= H
    frames_with_main = {b.frame for b in clip.boxes if b.track_id == 1}
    assert len(frames_with_main) >= T // 2  # the others: under half of it shows (test_boxes_follow_the_visible_object)


def test_required_classes_and_styles_exist() -> None:
    required = {"left", "right", "up", "down", "rotate_cw", "rotate_ccw", "zoom_in", "zoom_out"}
    assert required <= set(MOTIONS)
    assert STYLES == ("flat", "textured")


def test_render_is_deterministic_and_validates_arguments() -> None:
    a, b = _render("zoom_in", 5, "textured"), _render("zoom_in", 5, "textured")
    assert np.array_equal(a.frames, b.frames) and a.boxes == b.boxes
    with pytest.raises(ValueError, match="unknown motion"):
        _render("sideways", 0)
    scene = make_scene("flat", W, H, np.random.default_rng(0))
    with pytest.raises(ValueError, match="scene is flat"):
        render_clip("left", "textured", W, H, FPS, T, np.random.default_rng(0), scene)


def test_clips_of_one_scene_share_the_background() -> None:
    scene = make_scene("textured", W, H, np.random.default_rng(1))
    a = render_clip("left", "textured", W, H, FPS, T, np.random.default_rng(10), scene)
    b = render_clip("left", "textured", W, H, FPS, T, np.random.default_rng(11), scene)
    c = _render("left", 12, "textured")
    # Median over time removes the moving objects, leaving background (+ lighting).
    bg = [np.median(x.frames.astype(float), axis=0) for x in (a, b, c)]
    assert np.abs(bg[0] - bg[1]).mean() < np.abs(bg[0] - bg[2]).mean()
    assert a.meta["shape"] == b.meta["shape"]


# --------------------------------------------------------------------------- motion is encoded


@pytest.mark.parametrize(
    ("motion", "axis", "sign"),
    [("right", "x", 1), ("left", "x", -1), ("down", "y", 1), ("up", "y", -1)],
)
def test_translation_moves_the_box_centre(motion: str, axis: str, sign: int) -> None:
    for seed in range(12):
        t, box = _main(_render(motion, seed, style=STYLES[seed % 2]))
        centre = box[:, 0] + box[:, 2] / 2 if axis == "x" else box[:, 1] + box[:, 3] / 2
        assert sign * _slope(t, centre) > 0.2, (motion, seed)


@pytest.mark.parametrize(("motion", "sign"), [("zoom_in", 1), ("zoom_out", -1)])
def test_zoom_changes_the_box_area(motion: str, sign: int) -> None:
    for seed in range(12):
        t, box = _main(_render(motion, seed, style=STYLES[seed % 2]))
        area = box[:, 2] * box[:, 3]
        assert sign * _slope(t, np.log(area)) > 0, (motion, seed)


def test_motion_scale_shrinks_the_class_motion_and_1_changes_nothing() -> None:
    """The ``slow`` domain: the same actions at a fraction of their size; at 1.0 every pixel is the default's."""
    for seed in range(6):
        clip = _render("right", seed, "textured")
        same = render_clip("right", "textured", W, H, FPS, T, np.random.default_rng(seed), motion_scale=1.0)
        assert np.array_equal(clip.frames, same.frames) and clip.boxes == same.boxes
    ratios = []
    for motion, measure in (("right", "x"), ("zoom_in", "log_area")):
        for seed in range(12):
            slopes = []
            for scale in (1.0, 0.3):
                rng = np.random.default_rng(seed)
                t, box = _main(render_clip(motion, "flat", 2 * W, 2 * H, FPS, 2 * T, rng, motion_scale=scale))
                y = box[:, 0] + box[:, 2] / 2 if measure == "x" else np.log(box[:, 2] * box[:, 3])
                slopes.append(_slope(t, y))
            ratios.append(slopes[1] / slopes[0])
    # the class motion shrinks to about 0.3 of itself; the nuisance drift and wobble, which stay, add scatter
    assert 0.15 < float(np.median(ratios)) < 0.45, ratios


@pytest.mark.parametrize("style", STYLES)
def test_objects_are_large_and_class_motion_strong(style: str) -> None:
    """Learnable from little data: the main object is big and its class motion large,
    measured on the boxes (clipped to the frame), in both styles alike."""
    travel, zoom, side = [], [], []
    for seed in range(16):
        for motion, axis, sign in (("right", 0, 1), ("left", 0, -1), ("down", 1, 1), ("up", 1, -1)):
            t, box = _main(_render(motion, seed, style))
            centre = box[:, axis] + box[:, axis + 2] / 2
            travel.append(sign * _slope(t, centre) * (T - 1) / (W, H)[axis])
        for motion, sign in (("zoom_in", 1), ("zoom_out", -1)):
            t, box = _main(_render(motion, seed, style))
            zoom.append(math.exp(sign * _slope(t, np.log(box[:, 2] * box[:, 3])) * (T - 1)))
        t, box = _main(_render("rotate_cw", seed, style))
        side.append(np.median(np.maximum(box[:, 2], box[:, 3])) / min(W, H))
    # Translation: a quarter of the frame or more (partly out of frame at the ends shortens it).
    assert min(travel) > 0.09 and np.median(travel) > 0.25, np.round(travel, 2)
    # Zoom: the area changes at least ~2x over the clip, typically > 3x.
    assert min(zoom) > 1.6 and np.median(zoom) > 3.0, np.round(zoom, 2)
    # Size: never a speck; typically about a quarter of the short side across.
    assert min(side) > 0.12 and np.median(side) > 0.24, np.round(side, 2)


def test_flat_distractors_stay_smaller_than_the_main_object() -> None:
    """Flat (source) style: a distractor in most clips, like the target's, but never as big as the main object."""
    ratios = []
    for seed in range(40):
        clip = _render("rotate_ccw", seed, "flat")
        main = np.mean([b.w * b.h for b in clip.boxes if b.track_id == 1])
        other = [b.w * b.h for b in clip.boxes if b.track_id == 2]
        if other:
            ratios.append(np.mean(other) / main)
    assert len(ratios) >= 16  # distractor_p 0.6 of 40 clips
    assert max(ratios) < 0.7, np.round(ratios, 2)


def _polar_profiles(clip: Clip, n_angles: int = 90) -> np.ndarray:
    """Grey values around the main object's (mean) box centre on rings, one row per frame."""
    t, box = _main(clip)
    cx, cy = (box[:, 0] + box[:, 2] / 2).mean(), (box[:, 1] + box[:, 3] / 2).mean()
    radius = np.median(np.minimum(box[:, 2], box[:, 3])) / 2
    theta = np.arange(n_angles) * 2 * math.pi / n_angles  # clockwise on screen (y down)
    rings = np.linspace(0.35, 0.9, 5) * radius
    xs = np.clip(np.rint(cx - 0.5 + rings[:, None] * np.cos(theta)), 0, clip.frames.shape[2] - 1).astype(int)
    ys = np.clip(np.rint(cy - 0.5 + rings[:, None] * np.sin(theta)), 0, clip.frames.shape[1] - 1).astype(int)
    grey = clip.frames.astype(float).mean(axis=-1)
    prof = grey[:, ys, xs]  # (T, rings, angles)
    prof -= prof.mean(axis=-1, keepdims=True)
    return prof


def _rotation_from_pixels(clip: Clip, max_shift: int = 12) -> float:
    """Mean angular shift between consecutive frames (bins; > 0 clockwise), by circular
    cross-correlation of the polar profiles: measured on pixels, not on render parameters."""
    prof = _polar_profiles(clip)
    shifts = np.arange(-max_shift, max_shift + 1)
    best = []
    for a, b in zip(prof[:-1], prof[1:], strict=True):
        score = [np.sum(b * np.roll(a, k, axis=-1)) for k in shifts]
        best.append(shifts[int(np.argmax(score))])
    return float(np.mean(best))


@pytest.mark.parametrize("style", STYLES)
def test_rotation_direction_is_visible_in_the_pixels(style: str) -> None:
    cw = [_rotation_from_pixels(_render("rotate_cw", s, style, 128, 96, 16)) for s in range(10)]
    ccw = [_rotation_from_pixels(_render("rotate_ccw", s, style, 128, 96, 16)) for s in range(10)]
    assert sum(r > 0 for r in cw) >= 8, cw
    assert sum(r < 0 for r in ccw) >= 8, ccw
    assert np.mean(cw) > 0.5 and np.mean(ccw) < -0.5


def test_cw_reversed_in_time_measures_as_ccw() -> None:
    for seed in range(4):
        clip = _render("rotate_cw", seed, "flat", 128, 96, 16)
        rev = Clip(frames=clip.frames[::-1].copy(), boxes=clip.boxes, fps=clip.fps, drawn=clip.drawn)
        assert _rotation_from_pixels(clip) > 0 > _rotation_from_pixels(rev)


# --------------------------------------------------------------------------- no single-frame shortcut


def _best_threshold_accuracy(a: np.ndarray, b: np.ndarray) -> float:
    """Accuracy of the best 1-D threshold classifier separating samples a from b."""
    best = 0.5
    for thr in np.unique(np.concatenate([a, b])):
        acc = ((a < thr).mean() + (b >= thr).mean()) / 2
        best = max(best, acc, 1 - acc)
    return best


def _feature_at(motion: str, frame: int, feature: str, n: int = 100) -> np.ndarray:
    out = []
    for seed in range(n):
        t, box = _main(_render(motion, 10_000 + seed))
        b = box[np.argmin(np.abs(t - frame))]
        out.append(b[0] + b[2] / 2 if feature == "x" else b[2] * b[3])
    return np.array(out)


def test_single_frames_do_not_give_the_class_away() -> None:
    left0, right0 = _feature_at("left", 0, "x"), _feature_at("right", 0, "x")
    # Start positions overlap over most of the frame width ...
    overlap = min(left0.max(), right0.max()) - max(left0.min(), right0.min())
    assert overlap > 0.4 * W
    # ... so the best position threshold on the first frame is a weak classifier,
    assert _best_threshold_accuracy(left0, right0) < 0.8
    # and in the middle frame it is near chance: the class is in the change over time.
    mid = (T - 1) // 2
    assert _best_threshold_accuracy(_feature_at("left", mid, "x"), _feature_at("right", mid, "x")) < 0.62
    zin0, zout0 = _feature_at("zoom_in", 0, "area"), _feature_at("zoom_out", 0, "area")
    assert min(zin0.max(), zout0.max()) > max(zin0.min(), zout0.min())
    assert _best_threshold_accuracy(zin0, zout0) < 0.8
    zin, zout = _feature_at("zoom_in", mid, "area"), _feature_at("zoom_out", mid, "area")
    assert _best_threshold_accuracy(zin, zout) < 0.62


def test_mid_clip_pose_is_the_same_for_every_class() -> None:
    """Position, size and angle in the middle of a clip come from one distribution for all
    classes (independent seeds per class): no pair of classes is told apart by a threshold."""
    poses = {}
    for i, (name, motion) in enumerate(sorted(MOTIONS.items())):
        rows = []
        for seed in range(200):
            rng = np.random.default_rng(1000 * i + seed)
            n = int(rng.integers(T, 4 * T))
            track = synth_render._main_track(motion, rng, 160, 120, n)
            mid = [float(np.interp((n - 1) / 2, np.arange(n), a)) for a in (track.cx, track.cy, track.scale)]
            rows.append((mid[0], mid[1], math.log(mid[2]), float(track.angle[(n - 1) // 2]) % (2 * math.pi)))
        poses[name] = np.array(rows)
    names = sorted(poses)
    worst = max(
        _best_threshold_accuracy(poses[a][:, j], poses[b][:, j])
        for j in range(4)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    )
    assert worst < 0.62, worst


def test_styles_differ_visibly() -> None:
    """Domain gap in the looks (both styles film with shake, noise and lighting drift): the textured style
    has more high-frequency energy (textures) and is darker."""

    def frames(style: str) -> np.ndarray:
        return np.concatenate([_render(m, s, style).frames for s in range(3) for m in ("left", "zoom_in")])

    flat, textured = frames("flat"), frames("textured")

    def roughness(f: np.ndarray) -> float:
        return float(np.abs(np.diff(f.astype(float), axis=2)).mean())

    assert roughness(textured) > 1.4 * roughness(flat)
    assert flat.mean() > textured.mean() + 0.2 * 255


# --------------------------------------------------------------------------- boxes CSV


def test_boxes_csv_round_trip(tmp_path: Path) -> None:
    boxes = _render("left", 1, "textured").boxes
    path = tmp_path / "a.boxes.csv"
    write_boxes_csv(path, boxes)
    assert path.read_text().splitlines()[0] == "frame,track_id,x,y,w,h,label"
    assert read_boxes_csv(path) == boxes  # coordinates are multiples of 0.5: exact in CSV


# --------------------------------------------------------------------------- generate_sample


# --------------------------------------------------------------------------- static objects


@pytest.mark.parametrize("style", STYLES)
def test_every_background_shape_is_an_annotated_object(style: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each clutter shape becomes one prop (track 3, 4, ... in drawing order, labelled with its shape),
    and its box in a frame is where the shape lands there: the same shape drawn alone at the crop's
    offset on an empty frame gets the same box (clipped to the frame), or none when under half shows."""
    drawn: list[tuple[str, float, float, float, float]] = []
    paint = synth_scene._paint

    def spy(
        canvas: np.ndarray, app: synth_scene.Appearance, cx: float, cy: float, angle: float, scale: float
    ) -> tuple[int, int, np.ndarray] | None:
        drawn.append((app.shape, cx, cy, angle, scale))
        return paint(canvas, app, cx, cy, angle, scale)

    monkeypatch.setattr(synth_scene, "_paint", spy)
    checked = dropped = 0
    for seed in range(6):
        drawn.clear()
        scene = make_scene(style, 80, 60, np.random.default_rng(seed))
        lo, hi = synth_scene._STYLE_SPECS[style].clutter
        assert lo <= len(scene.props) < hi and len(drawn) == len(scene.props)
        assert [p.track_id for p in scene.props] == list(range(3, 3 + len(drawn)))
        assert [p.label for p in scene.props] == [shape for shape, *_ in drawn]
        corners = [(0, 0), (2 * scene.margin, 2 * scene.margin), (0, 2 * scene.margin)]  # crop offsets
        for prop, (shape, cx, cy, angle, scale) in zip(scene.props, drawn, strict=True):
            if prop.visible.sum() < prop.mask.sum():
                continue  # partly under clutter drawn later: test_a_prop_is_annotated_only_while_half_of_it_shows
            for left, top in corners:
                white = np.ones(3, np.float32)
                alone = paint(
                    np.zeros((60, 80, 3), np.float32),
                    synth_scene.Appearance(shape, "solid", white, white, white),
                    cx - left,
                    cy - top,
                    angle,
                    scale,
                )
                box = prop.box(left, top, 80, 60)
                in_view = 0 if alone is None else int(alone[2].sum())
                if in_view < 0.5 * prop.area - 4:  # a few cells of slack: float rounding at the edges
                    assert box is None, (seed, prop.track_id)
                    dropped += 1
                elif in_view > 0.5 * prop.area + 4:
                    assert box is not None and alone is not None
                    expected = synth_scene._cells_box(alone[2], alone[0], alone[1])
                    assert np.allclose(box, expected, atol=0.5), (seed, prop.track_id, box, expected)
                    checked += 1
    assert checked >= 20 and dropped >= 2, (checked, dropped)


def _square_prop(visible_cols: int = 20) -> synth_scene.Prop:
    """A 10 x 10 px square prop at background pixel (10, 10), its first ``visible_cols`` cell columns uncovered."""
    mask = np.ones((20, 20), bool)
    visible = mask.copy()
    visible[:, visible_cols:] = False
    return synth_scene.Prop(3, "square", 10, 10, mask, visible, 400)


def test_a_prop_is_annotated_only_while_half_of_it_shows() -> None:
    prop = _square_prop()
    assert prop.box(0, 0, 40, 40) == (10.0, 10.0, 10.0, 10.0)
    assert prop.box(4, 7, 40, 40) == (6.0, 3.0, 10.0, 10.0)  # the crop moves the box the other way
    assert prop.box(14, 0, 40, 40) == (0.0, 10.0, 6.0, 10.0)  # 60% in view: clipped to the frame
    assert prop.box(16, 0, 40, 40) is None  # 40% in view
    assert prop.box(0, 0, 16, 40) == (10.0, 10.0, 6.0, 10.0)
    assert prop.box(0, 0, 14, 40) is None
    assert prop.box(40, 40, 40, 40) is None  # wholly outside
    # Covered by clutter drawn after it: the box stays the whole shape's, but 40% showing is too little.
    assert _square_prop(visible_cols=12).box(0, 0, 40, 40) == (10.0, 10.0, 10.0, 10.0)
    assert _square_prop(visible_cols=8).box(0, 0, 40, 40) is None


def _painted(track_id: int, cx: float, cy: float, scale: float) -> synth_render._Painted:
    """A solid square drawn at (cx, cy) on a 40 x 40 frame, as render_clip records it."""
    white = np.ones(3, np.float32)
    app = synth_scene.Appearance("square", "solid", white, white, white, marker=False)
    cells = synth_scene._paint(np.zeros((40, 40, 3), np.float32), app, cx, cy, 0.0, scale)
    assert cells is not None
    return synth_render._Painted(track_id, app, (cx, cy, 0.0, scale), *cells)


def test_boxes_follow_the_visible_object() -> None:
    """An object, moving or static, is annotated only in frames where at least half of it shows: not
    under what is drawn after it (the other moving object, an occluder) nor outside the frame."""
    import dataclasses

    scene = dataclasses.replace(make_scene("flat", 40, 40, np.random.default_rng(0)), props=(_square_prop(),))
    boxes_of = lambda boxes: {b.track_id: (b.x, b.y, b.w, b.h) for b in boxes}  # noqa: E731
    main, prop_box = _painted(1, 30, 30, 8), (10.0, 10.0, 10.0, 10.0)
    # Alone: the main object's square (side 0.68 x 2 x 8 px) and the prop, with their whole boxes.
    visible, drawn = synth_render._visible_boxes(0, [main], scene, None, 0, 0)
    assert boxes_of(visible) == {1: boxes_of([drawn[0][0]])[1], 3: prop_box} and drawn[0][1] == 1.0
    # The distractor right under the main object: drawn, not annotated.
    visible, drawn = synth_render._visible_boxes(0, [_painted(2, 30, 30, 8), main], scene, None, 0, 0)
    assert set(boxes_of(visible)) == {1, 3} and dict((b.track_id, f) for b, f in drawn) == {1: 1.0, 2: 0.0}
    # An occluder over 70% of the main object hides it; over 30% the box stays the whole shape's.
    (x, y, w, h) = boxes_of(visible)[1]
    for covered, annotated in ((0.7, False), (0.3, True)):
        alpha = np.zeros((40, 40, 1), np.float32)
        alpha[:, : int(round(x + covered * w))] = 1.0
        visible, _ = synth_render._visible_boxes(0, [main], scene, alpha, 0, 0)
        assert (1 in boxes_of(visible)) is annotated and (not annotated or boxes_of(visible)[1] == (x, y, w, h))
    # The main object over the static square hides it.
    visible, _ = synth_render._visible_boxes(0, [_painted(1, 15, 15, 8)], scene, None, 0, 0)
    assert set(boxes_of(visible)) == {1}
    # Two thirds outside the frame: under half of it shows.
    visible, drawn = synth_render._visible_boxes(0, [_painted(1, 42, 20, 8)], scene, None, 0, 0)
    assert 1 not in boxes_of(visible) and 0.25 < drawn[0][1] < 0.4


@pytest.mark.parametrize("style", STYLES)
def test_rendered_clips_annotate_exactly_the_visible_moving_objects(style: str) -> None:
    dropped = kept = 0
    for seed in range(12):
        clip = _render("zoom_in", seed, style, 96, 72, 16)
        annotated = {(b.frame, b.track_id) for b in clip.boxes if b.track_id in (1, 2)}
        for box, shows in clip.drawn:
            assert ((box.frame, box.track_id) in annotated) is (shows >= synth_scene.MIN_VISIBLE)
            dropped += shows < synth_scene.MIN_VISIBLE
            kept += shows >= synth_scene.MIN_VISIBLE
        assert annotated <= {(b.frame, b.track_id) for b, _ in clip.drawn}
    assert kept > 5 * dropped > 0, (kept, dropped)  # occluders, the distractor, the frame's edge hide some


def test_static_boxes_follow_the_camera_shake(monkeypatch: pytest.MonkeyPatch) -> None:
    """A known shake: every static object's box moves against it, pixel for pixel, frame by frame."""
    shake = np.array([[0, 0], [2, -1], [-3, 2], [1, 3], [-2, -2], [3, 0]], dtype=np.intp)
    monkeypatch.setattr(synth_render, "_jitter", lambda rng, sigma, n, limit: shake[:n])
    scene = make_scene("textured", 96, 72, np.random.default_rng(4))
    clip = render_clip("left", "textured", 96, 72, FPS, len(shake), np.random.default_rng(5), scene)
    by_track: dict[int, dict[int, tuple[float, ...]]] = {}
    for b in clip.boxes:
        by_track.setdefault(b.track_id, {})[b.frame] = (b.x, b.y, b.w, b.h)
    moved = 0
    for prop in scene.props:
        boxes = by_track.get(prop.track_id, {})
        for t, (x, y, w, h) in boxes.items():
            x0, y0, w0, h0 = boxes.get(0, (np.nan,) * 4)
            inside = all(0 < v for v in (x, y, x0, y0)) and x + w < 96 and y + h < 72 and x0 + w0 < 96 and y0 + h0 < 72
            if t and inside:  # unclipped in both frames: the same box, shifted by minus the shake
                assert (x - x0, y - y0, w, h) == (-shake[t][0], -shake[t][1], w0, h0), (prop.track_id, t)
                moved += 1
    assert moved >= 5  # 8 with these seeds: the rest touch the frame edge in frame 0 or t


def _config(tmp_path: Path, workers: int) -> Config:
    return Config.model_validate(
        {
            "seed": 7,
            "data_dir": str(tmp_path / "data"),
            "sample": {
                "classes": ["left", "rotate_cw"],
                "domains": {
                    "source": {"clips_per_class": 3, "clips_per_recording": 2, "style": "flat"},
                    "target": {"clips_per_class": 2, "clips_per_recording": 2, "style": "textured"},
                },
                "sizes": [[65, 49], [80, 60]],  # odd sizes are made even
                "fps": [8, 10],
                "duration_s": [1.0, 1.5],
                "workers": workers,
            },
            # The project's default dataset names, so other sections' defaults validate.
            "datasets": {"source": {"raw": str(tmp_path / "src")}, "target": {"raw": str(tmp_path / "tgt")}},
        }
    )


def _digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.md5(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_generate_sample_writes_a_deterministic_grouped_data_set(tmp_path: Path) -> None:
    decord = pytest.importorskip("decord")
    # Files the generator must leave alone, and one stale file from an earlier bigger run.
    keep = [
        tmp_path / "src" / "left" / "notes.txt",
        tmp_path / "src" / "left" / "my_own.mp4",
        tmp_path / "src" / "README.md",
        tmp_path / "src" / "zoom_in" / "zoom_in_r000_c00.mp4",
    ]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("user data")
    stale = tmp_path / "src" / "left" / "scene009_c00.mp4"
    stale.write_text("old")
    (tmp_path / "src" / "left" / "scene009_c00.boxes.csv").write_text("old")
    old_name = tmp_path / "src" / "left" / "left_r009_c00.mp4"  # the names of earlier versions go too
    old_name.write_text("old")

    cfg = _config(tmp_path, workers=2)
    counts = generate_sample(cfg, progress=False)
    assert counts == {"source": {"left": 3, "rotate_cw": 3}, "target": {"left": 2, "rotate_cw": 2}}
    assert all(p.read_text() == "user data" for p in keep)
    assert not stale.exists() and not stale.with_name("scene009_c00.boxes.csv").exists() and not old_name.exists()

    expected = {
        "src": ["scene000_c00", "scene000_c01", "scene001_c00"],
        "tgt": ["scene000_c00", "scene000_c01"],
    }
    tasks = {t.path: t for t in synth_sample._plan(cfg)[0]}
    cameras: dict[str, dict[str, dict[str, set]]] = {}
    for domain, suffixes in expected.items():
        for cls in ("left", "rotate_cw"):
            folder = tmp_path / domain / cls
            videos = sorted(p.name for p in folder.glob("scene*.mp4"))
            assert videos == [f"{s}.mp4" for s in suffixes]
            assert not list(folder.glob(".*")), "no temporary files left behind"
            shapes: dict[str, set] = {}
            for name in videos:
                path = folder / name
                _, _, width, height, fps, n_frames = synth_sample._clip_spec(tasks[path])
                reader = decord.VideoReader(str(path))
                assert len(reader) == n_frames
                assert reader[0].shape == (height, width, 3)
                assert (width, height) in {(64, 48), (80, 60)} and fps in (8, 10)
                assert round(1.0 * fps) <= n_frames <= round(1.5 * fps)
                boxes = read_boxes_csv(path.with_name(path.stem + ".boxes.csv"))
                assert {b.frame for b in boxes if b.track_id == 1} <= set(range(n_frames))
                group = GROUP_RE.match(path.stem)["group"]
                label = next(b.label for b in boxes if b.track_id == 1)
                shapes.setdefault(group, set()).add((width, height, fps, label))
            # Clips of one recording share group, camera and main object shape; the group is the scene.
            assert sorted(shapes) == sorted({s.split("_")[0] for s in suffixes})
            assert all(len(v) == 1 for v in shapes.values())
            cameras.setdefault(domain, {})[cls] = shapes
    # ... and so do recording r of every class: one group (scene-disjoint splits), one camera and look.
    for per_class in cameras.values():
        assert per_class["left"] == per_class["rotate_cw"]

    first = _digests(tmp_path)
    # Byte-identical again, and independent of the number of workers.
    generate_sample(_config(tmp_path, workers=1), progress=False)
    assert _digests(tmp_path) == first


def _plan_scenes(cfg: Config) -> dict[tuple[str, str], tuple[int, ...]]:
    """{(raw folder, recording): scene seed}, checking that recording r of every class agrees."""
    out: dict[tuple[str, str], tuple[int, ...]] = {}
    for task in synth_sample._plan(cfg)[0]:
        key = (task.path.parent.parent.name, task.path.stem.split("_")[-2])  # e.g. ("src", "r001")
        assert out.setdefault(key, task.scene_seed) == task.scene_seed, (task.path, key)
    return out


def test_scene_seed_does_not_depend_on_the_class(tmp_path: Path) -> None:
    cfg = _config(tmp_path, workers=1)
    tasks = synth_sample._plan(cfg)[0]
    for task in tasks:  # (tag, seed, domain, scene id): no class in it
        assert synth_sample._stable_hash(task.cls) not in task.scene_seed
    # Every scene is used by every class (scene id = recording index) ...
    by_scene: dict[tuple[int, ...], set[str]] = {}
    for task in tasks:
        by_scene.setdefault(task.scene_seed, set()).add(task.cls)
    assert len(by_scene) == 3  # source: r000, r001; target: r000
    assert all(classes == {"left", "rotate_cw"} for classes in by_scene.values())
    # ... and other classes get exactly the same scenes: the class list does not enter.
    classes = ["zoom_out", "up", "left"]
    other = cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"classes": classes})})
    assert _plan_scenes(other) == _plan_scenes(cfg)
    # Different recordings (and domains) get different scenes.
    assert len(set(_plan_scenes(cfg).values())) == 3


def test_recording_r_of_every_class_has_the_same_scene(tmp_path: Path) -> None:
    """The scene a clip is rendered in is identical across classes: camera, background,
    objects' looks; another recording's scene is not."""
    by_scene: dict[tuple[int, ...], list] = {}
    for task in synth_sample._plan(_config(tmp_path, workers=1))[0]:
        scene_rng, _, width, height, fps, _ = synth_sample._clip_spec(task)
        scene = make_scene(task.style, width, height, scene_rng)
        by_scene.setdefault(task.scene_seed, []).append((task.cls, fps, scene))
    for entries in by_scene.values():
        assert len({cls for cls, _, _ in entries}) >= 2
        _, fps0, s0 = entries[0]
        for _, fps, s in entries[1:]:
            assert (fps, s.width, s.height, s.margin) == (fps0, s0.width, s0.height, s0.margin)
            assert np.array_equal(s.background, s0.background)
            for app, app0 in ((s.main, s0.main), (s.distractor, s0.distractor)):
                assert (app.shape, app.texture) == (app0.shape, app0.texture)
                assert np.array_equal(app.color, app0.color) and np.array_equal(app.color2, app0.color2)
            assert np.array_equal(s.occluder_color, s0.occluder_color)
            assert (s.noise_sigma, s.vignette) == (s0.noise_sigma, s0.vignette)
            assert [(p.track_id, p.label, p.x0, p.y0, p.area) for p in s.props] == [
                (p.track_id, p.label, p.x0, p.y0, p.area) for p in s0.props
            ]
    backgrounds = [entries[0][2].background for entries in by_scene.values()]
    for i, a in enumerate(backgrounds):
        assert not any(a.shape == b.shape and np.allclose(a, b) for b in backgrounds[i + 1 :])


def _static_background(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(median frame over time, mask of pixels no moving object's box ever came near) of a decoded clip."""
    decord = pytest.importorskip("decord")
    reader = decord.VideoReader(str(path))
    frames = reader.get_batch(list(range(len(reader)))).asnumpy().astype(float)
    free = np.ones(frames.shape[1:3], dtype=bool)
    for b in read_boxes_csv(path.with_name(path.stem + ".boxes.csv")):
        if b.track_id >= synth_scene.FIRST_PROP_TRACK:
            continue  # a static object is part of the background both clips share
        free[max(0, int(b.y) - 2) : math.ceil(b.y + b.h) + 2, max(0, int(b.x) - 2) : math.ceil(b.x + b.w) + 2] = False
    return np.median(frames, axis=0), free


def test_written_clips_show_the_same_background_under_every_class(tmp_path: Path) -> None:
    """End to end, on the decoded MP4s: where no object passes, recording r of two classes
    shows the same background (it only differs by lighting drift, noise and camera shake)."""
    pytest.importorskip("decord")
    generate_sample(_config(tmp_path, workers=1), progress=False)
    for domain, recs in (("src", ("scene000", "scene001")), ("tgt", ("scene000",))):
        for rec in recs:
            a, free_a = _static_background(tmp_path / domain / "left" / f"{rec}_c00.mp4")
            b, free_b = _static_background(tmp_path / domain / "rotate_cw" / f"{rec}_c00.mp4")
            assert a.shape == b.shape, (domain, rec)  # same camera
            free = free_a & free_b
            assert free.mean() > 0.2, (domain, rec)  # enough uncovered background to compare
            corr = np.corrcoef(a[free].ravel(), b[free].ravel())[0, 1]
            assert corr > 0.7 and np.abs(a - b)[free].mean() < 12, (domain, rec, corr)


def test_generate_sample_refuses_domains_sharing_a_folder(tmp_path: Path) -> None:
    from vt_models.config import ConfigError

    data = _config(tmp_path, workers=1).model_dump(mode="json")
    data["datasets"]["target"]["raw"] = data["datasets"]["source"]["raw"]
    with pytest.raises(ConfigError, match="share a raw folder"):
        generate_sample(Config.model_validate(data), progress=False)
    assert not list(tmp_path.rglob("*.mp4"))


def test_unshared_scenes_give_every_recording_its_own_scene_and_group(tmp_path: Path) -> None:
    """A detector's source domain (shared_scenes: false): one scene per class and recording, named so the
    probe's group regex keeps each in one group; rendering is still deterministic and cleans up after itself."""
    from vt_models.data.probe import group_of

    cfg = _config(tmp_path, workers=1)
    domains = dict(cfg.sample.domains)
    domains["target"] = domains["target"].model_copy(update={"clips_per_recording": 1, "shared_scenes": False})
    cfg = cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"domains": domains})})
    tasks = [t for t in synth_sample._plan(cfg)[0] if t.path.parent.parent.name == "tgt"]
    assert sorted(t.path.name for t in tasks) == [
        "left_scene000_c00.mp4", "left_scene001_c00.mp4", "rotate_cw_scene000_c00.mp4", "rotate_cw_scene001_c00.mp4"
    ]  # fmt: skip
    assert len({t.scene_seed for t in tasks}) == 4  # no scene shared between classes or recordings
    groups = {group_of(t.path.stem, re.compile(cfg.probe.group_regex)) for t in tasks}
    assert groups == {"left_scene000", "left_scene001", "rotate_cw_scene000", "rotate_cw_scene001"}
    scenes = []
    for task in tasks:
        scene_rng, _, width, height, _, _ = synth_sample._clip_spec(task)
        scenes.append(make_scene(task.style, width, height, scene_rng).background)
    assert not any(np.array_equal(a, b) for i, a in enumerate(scenes) for b in scenes[i + 1 :])
    # the source keeps its shared scenes: recording r of both classes in one scene
    source = {t.scene_seed for t in synth_sample._plan(cfg)[0] if t.path.parent.parent.name == "src"}
    assert len(source) == 2

    generate_sample(cfg, progress=False)
    first = _digests(tmp_path / "tgt")
    assert len(first) == 8  # 4 videos and their box sidecars
    generate_sample(cfg, progress=False)
    assert _digests(tmp_path / "tgt") == first
    # one recording a class now: the clean-up recognises the new names, so recording 1's files go
    domains["target"] = domains["target"].model_copy(update={"clips_per_class": 1})
    generate_sample(cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"domains": domains})}), False)
    assert sorted(_digests(tmp_path / "tgt")) == sorted(k for k in first if "scene000" in k)

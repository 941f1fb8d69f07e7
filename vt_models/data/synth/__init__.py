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

Scenes carry no class information. A *recording* (the clips ``<cls>/sceneNNN_cNN``) is filmed
in one *scene*: background and clutter, main-object and distractor appearance, occluder
colour, noise and vignette levels, and the camera (frame size and fps).
Each domain has one pool of scenes, and the scene id of recording ``r`` is ``r`` itself,
whatever the class: recording ``r`` of every class is filmed in scene ``r``. So each domain's
``ceil(clips_per_class / clips_per_recording)`` scenes are each used exactly once by every
class, a perfectly balanced scene x class table: neither a scene's look nor which classes (or
how many clips of each) it appears with says anything about the class. (A hash-based draw from
a pool would leave chance imbalances, i.e. a little class information in the scene.) The scene
seed is ``(seed, domain, scene id)``; everything else (motion, pose, duration, distractor
path, occluders, lighting drift, noise) is drawn per clip from ``(seed, domain, class,
recording, clip)``.

A domain can also leave its scenes unshared (``shared_scenes: false``): recording ``r`` of each class
then has a scene of its own, seeded by ``(seed, domain, class, scene id)`` and named
``<cls>_scene<NNN>``. That domain is not for classification (a scene is seen with one class), but for
a detector, whose task is the boxes: as many backgrounds and clutter layouts as recordings, where
shared scenes would repeat each one in every class.

A clip's file stem names its scene, not its class, so the probe's default group regex makes each
scene one group across all classes, as UCF101's groups are: the splits are scene-disjoint, and a
test scene is never seen in training (under any class), so a model cannot score by recognising
a scene it learned under another label.

Rendering is numpy-vectorised per frame (coordinate grids and masks over each object's
bounding square, 2x2 supersampled); clips are written as H.264 MP4 with a
``<name>.boxes.csv`` sidecar of MOT-style boxes.

Boxes, labelled with the object's shape (``SHAPES``), are those of every object, so that one frame
tells a detector what to find: the main object (track 1), the distractor (track 2) and each static
shape the background shows (tracks 3, 4, ... in drawing order, the same in every clip of a scene):
the textured style's dimmed clutter and the flat style's pastel prints alike (why: ``scene._background``).
A box covers the whole shape, clipped to the frame; a static shape's box moves with the camera shake
as the background is cropped. Boxes follow the visible object: an object, moving or static, is left
out of a frame where under half of the shape shows (outside the frame, or under what is drawn after
it: clutter, the other moving object, an occluder). Occluders are not objects and carry no box.
``Clip.drawn`` keeps the moving objects' boxes in every frame with the fraction that shows.
"""

from vt_models.data.motions import MOTIONS, Motion
from vt_models.data.synth.render import Clip, render_clip
from vt_models.data.synth.sample import BOXES_HEADER, Box, clip_name, generate_sample, read_boxes_csv, write_boxes_csv
from vt_models.data.synth.scene import FIRST_PROP_TRACK, SHAPES, STYLES, TEXTURES, Appearance, Prop, Scene, make_scene

__all__ = [
    "BOXES_HEADER",
    "FIRST_PROP_TRACK",
    "MOTIONS",
    "SHAPES",
    "STYLES",
    "TEXTURES",
    "Appearance",
    "Box",
    "Clip",
    "Motion",
    "Prop",
    "Scene",
    "clip_name",
    "generate_sample",
    "make_scene",
    "read_boxes_csv",
    "render_clip",
    "write_boxes_csv",
]

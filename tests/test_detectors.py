"""The detector registry: every detector trains a step, weights load from every source (COCO enum
from the TORCH_HOME cache, vt checkpoint, none) with a strict report, clear errors otherwise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from vt_models.config import LoopConfig, load_config
from vt_models.detect.data import FrameBoxDataset, collate, frames_per_video, load_detection_data
from vt_models.detect.task import DetectionTask
from vt_models.models.checkpoint import load_checkpoint, save_checkpoint
from vt_models.models.detectors import (
    Fp32GroupNorm,
    _frozen_bn,
    _option_names,
    build_detector,
    detector_from_checkpoint,
)
from vt_models.models.registry import (
    DetectorSpec,
    UnknownModelError,
    get_detector_spec,
    list_detectors,
    register_detector,
)
from vt_models.models.weights import WeightsError, torchvision_cache_path, torchvision_member
from vt_models.train.optim import build_optimizer

CLASSES = ["disc", "square", "ring"]


def test_registry_is_strict() -> None:
    names = {s.name for s in list_detectors()}
    assert {
        "fasterrcnn_mobilenet_v3_large_320_fpn",
        "fasterrcnn_resnet50_fpn_v2",
        "retinanet_resnet50_fpn_v2",
        "fcos_resnet50_fpn",
        "ssdlite320_mobilenet_v3_large",
    } <= names
    with pytest.raises(ValueError, match="already registered"):
        register_detector(get_detector_spec("fcos_resnet50_fpn"))
    with pytest.raises(UnknownModelError, match="choices: .*fasterrcnn_mobilenet_v3_large_320_fpn"):
        get_detector_spec("yolo")


def test_the_cpu_sized_fcos_sees_small_objects_from_stride_8_and_has_no_coco_weights() -> None:
    model = build_detector("fcos_mobilenet_v3_large_fpn", "none", CLASSES, min_size=128, max_size=192)
    features = model.net.backbone(torch.zeros(1, 3, 128, 160))
    assert [tuple(f.shape[1:]) for f in features.values()] == [(64, 16, 20), (64, 8, 10), (64, 4, 5), (64, 2, 3)]
    assert model.net.head.classification_head.cls_logits.out_channels == len(CLASSES) + 1
    with pytest.raises(WeightsError, match="fcos_mobilenet_v3_large_fpn has no published weights"):
        build_detector("fcos_mobilenet_v3_large_fpn", "default", CLASSES)


def test_the_default_cpu_detector_is_fcos_on_mini_resnet_from_stride_8() -> None:
    from torchvision.models.resnet import BasicBlock

    from vt_models.train.runtime import to_device

    model = build_detector("fcos_mini_resnet_fpn", "none", CLASSES, min_size=128, max_size=192)
    body = model.net.backbone.body  # MiniResNet: a full-resolution stem, then one BasicBlock a stage
    assert body.conv1.stride == (1, 1) and isinstance(body.layer3[0], BasicBlock)
    features = model.net.backbone(torch.zeros(1, 3, 128, 160))
    assert [tuple(f.shape[1:]) for f in features.values()] == [(64, 16, 20), (64, 8, 10), (64, 4, 5)]
    # FCOS reads a level's stride from its anchor size: 8, 16, 32 as the feature maps above
    assert [s[0] for s in model.net.anchor_generator.sizes] == [8, 16, 32]
    assert len(model.net.head.classification_head.conv) == 2 * 3  # two conv + GroupNorm + ReLU a tower
    assert model.net.head.classification_head.cls_logits.out_channels == len(CLASSES) + 1
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    # channels-last convolutions on a CPU (150 against 186 ms a training step of 4 frames on 2 cores)
    assert to_device(model, torch.device("cpu")).net.backbone.body.conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    with pytest.raises(WeightsError, match="fcos_mini_resnet_fpn has no published weights"):
        build_detector("fcos_mini_resnet_fpn", "default", CLASSES)


def test_group_norms_run_in_fp32_under_cpu_autocast_and_keep_torchvisions_state_dict() -> None:
    from torchvision.models.detection import fcos_resnet50_fpn

    model = build_detector("fcos_mini_resnet_fpn", "none", ["object"])
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(type(m) is Fp32GroupNorm for m in norms)  # the heads' towers
    # the same keys as torchvision's GroupNorm: COCO weights and older checkpoints load as before
    reference = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=2)
    ours = build_detector("fcos_resnet50_fpn", "none", ["object"]).net
    assert ours.head.state_dict().keys() == reference.head.state_dict().keys()
    norm = norms[0]
    torch.nn.init.normal_(norm.weight)
    x = torch.randn(2, norm.num_channels, 6, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x.bfloat16())
    assert out.dtype == torch.bfloat16
    expected = torch.nn.functional.group_norm(x.bfloat16().float(), norm.num_groups, norm.weight, norm.bias, norm.eps)
    assert torch.equal(out, expected.bfloat16())  # normalised in fp32, rounded once
    assert torch.equal(norm(x), torch.nn.functional.group_norm(x, norm.num_groups, norm.weight, norm.bias, norm.eps))


def test_the_default_input_size_keeps_wide_footage_at_its_short_side() -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "params.yaml")
    dc = cfg.detect
    model = build_detector(dc.detectors[0], "none", CLASSES, min_size=dc.min_size, max_size=dc.max_size)
    model.eval()
    for height, width in ((192, 341), (144, 256), (120, 160)):  # 16:9 stored at 192 px; the sample's sizes
        images, _ = model.net.transform([torch.zeros(3, height, width)])
        assert images.image_sizes[0][0] == dc.min_size, (height, width, images.image_sizes)


def test_few_long_videos_give_more_frames_an_epoch(tiny_data: Path) -> None:
    # the sample's 60 training videos at 2 a video reach a floor of 120: as they were
    assert frames_per_video(60, 2, 120) == 2 and frames_per_video(576, 2, 120) == 2
    # MOT-style footage: 5 long recordings would make 10 frames an epoch; each gives 24 instead
    assert frames_per_video(5, 2, 120) == 24 and frames_per_video(7, 2, 120) == 18  # ceil(120 / 7)
    assert frames_per_video(5, 2, 0) == 2 and frames_per_video(0, 2, 120) == 2  # no floor; no videos
    data = load_detection_data(tiny_data / "data/frames_det/target", tiny_data / "data/splits_det/target.json")
    videos = data.records["train"]
    per_video = frames_per_video(len(videos), 1, 4 * len(videos) + 1)
    assert per_video == 5
    assert len(FrameBoxDataset(videos, data.classes, train=True, frames_per_video=per_video)) == 5 * len(videos)


@pytest.mark.parametrize("name", [s.name for s in list_detectors()])
def test_every_detector_trains_a_step_on_tiny_data(name: str, tiny_data: Path) -> None:
    data = load_detection_data(tiny_data / "data/frames_det/target", tiny_data / "data/splits_det/target.json")
    ds = FrameBoxDataset(data.records["train"], data.classes, train=True, frames_per_video=1, hflip=True)
    images, targets, ids = collate([ds[i] for i in range(2)])  # SSD's BatchNorm needs two images
    assert all(len(t["boxes"]) == len(t["labels"]) > 0 for t in targets)
    torch.manual_seed(0)
    model = build_detector(name, "none", data.classes, min_size=64, max_size=96)
    task = DetectionTask(data.classes)
    optimizer = build_optimizer(model, LoopConfig(lr=1e-3))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(model.spec.head_prefixes)}
    assert before
    loss, n = task.loss(model, (images, targets, ids), torch.device("cpu"))
    assert n == 2 and torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the new class layers learned nothing"
    model.eval()
    out = task.predict(model, (images, targets, ids), torch.device("cpu"))
    assert list(out["image_ids"]) == list(ids)
    assert out["gt_boxes"].shape == (sum(len(t["boxes"]) for t in targets), 4)
    assert set(out["det_labels"]) <= set(range(len(data.classes)))  # background never leaks out


def test_multi_scale_training_draws_one_size_a_batch_and_scores_at_min_size(tiny_data: Path) -> None:
    data = load_detection_data(tiny_data / "data/frames_det/target", tiny_data / "data/splits_det/target.json")
    ds = FrameBoxDataset(data.records["train"], data.classes, train=True, frames_per_video=1)
    batch = collate([ds[i] for i in range(3)])
    model = build_detector("fcos_mini_resnet_fpn", "none", data.classes, min_size=96, max_size=160)
    seen: list[list[tuple[int, int]]] = []
    model.net.transform.register_forward_hook(lambda _m, _args, out: seen.append(out[0].image_sizes))
    task = DetectionTask(data.classes, train_sizes=[48, 64])
    cpu = torch.device("cpu")

    def short_sides(steps: int) -> list[set[int]]:
        seen.clear()
        torch.manual_seed(0)
        for _ in range(steps):
            loss, _ = task.loss(model, batch, cpu)
            assert torch.isfinite(loss)
        return [{min(size) for size in sizes} for sizes in seen]

    model.train()
    drawn = short_sides(8)
    assert all(len(sides) == 1 for sides in drawn), drawn  # every frame of a batch at one size: none padded up
    assert {side for sides in drawn for side in sides} == {48, 64}, drawn  # both sizes drawn
    assert short_sides(8) == drawn  # from torch's seeded generator: a resumed run draws the same
    assert model.net.transform.min_size == (96,)  # put back after each step
    model.eval()
    seen.clear()
    task.predict(model, batch, cpu)
    assert {min(size) for size in seen[0]} == {96}  # validation and scoring at min_size
    # without train_sizes every batch trains at min_size
    model.train()
    task = DetectionTask(data.classes)
    assert short_sides(2) == [{96}, {96}]


def test_the_backbone_starts_from_a_classifier_of_its_architecture(tmp_path: Path) -> None:
    from vt_models.models.builder import build_backbone

    torch.manual_seed(0)
    classifier, _ = build_backbone("mini_resnet", "none", 3, modality="rgb")
    meta = {"backbone": "mini_resnet", "arch": "mini_resnet", "classes": ["a", "b", "c"]}
    path = save_checkpoint(
        tmp_path / "rgb.pt", {**meta, "model_args": {"modality": "rgb"}, "model": classifier.state_dict()}
    )
    torch.manual_seed(1)
    model = build_detector("fcos_mini_resnet_fpn", "none", CLASSES, min_size=64, backbone_weights=str(path))
    body = {k: v for k, v in model.net.backbone.body.state_dict().items() if not k.endswith("num_batches_tracked")}
    encoder = classifier.state_dict()
    assert body and all(torch.equal(v, encoder[f"encoder.{k}"]) for k, v in body.items())
    assert model.load_report.loaded == len(body) and not any(
        k.startswith("net.backbone.body.") for k in model.load_report.new
    )
    assert "classifier" in model.weights_source and str(path) in model.weights_source
    # the rest of the detector is new: the FPN and heads are not the classifier's
    assert any(k.startswith("net.backbone.fpn.") for k in model.load_report.new)

    flow, _ = build_backbone("mini_resnet", "none", 3, modality="flow")
    flow_path = save_checkpoint(
        tmp_path / "flow.pt", {**meta, "model_args": {"modality": "flow"}, "model": flow.state_dict()}
    )
    with pytest.raises(
        WeightsError, match=r"reads flow, the detector RGB frames\): pretrain the classifier with pretrain.modality rgb"
    ):
        build_detector("fcos_mini_resnet_fpn", "none", CLASSES, backbone_weights=str(flow_path))
    other = save_checkpoint(tmp_path / "other.pt", {**meta, "arch": "resnet18", "model": {}})
    with pytest.raises(
        WeightsError, match="is a 'resnet18' classifier; detector fcos_mini_resnet_fpn's backbone is a 'mini_resnet'"
    ):
        build_detector("fcos_mini_resnet_fpn", "none", CLASSES, backbone_weights=str(other))
    with pytest.raises(WeightsError, match="both initialise the backbone"):
        build_detector("fcos_mini_resnet_fpn", str(path), CLASSES, backbone_weights=str(path))
    with pytest.raises(WeightsError, match="ssdlite320_mobilenet_v3_large has no classifier backbone"):
        build_detector("ssdlite320_mobilenet_v3_large", "none", CLASSES, backbone_weights=str(path))


@pytest.mark.parametrize("name", [s.name for s in list_detectors() if s.classifier_arch])
def test_each_detector_body_is_its_classifier_encoder(name: str) -> None:
    """The key mapping behind detect.backbone_weights, for every detector that declares a classifier arch."""
    from vt_models.models.builder import build_backbone

    spec = get_detector_spec(name)
    classifier, _ = build_backbone(spec.classifier_arch, "none", 2)
    prefix = "encoder." + spec.classifier_prefix
    encoder = {k[len(prefix) :]: v.shape for k, v in classifier.state_dict().items() if k.startswith(prefix)}
    body = build_detector(name, "none", CLASSES).net.backbone.body.state_dict()
    assert body and all(encoder.get(k) == v.shape for k, v in body.items() if not k.endswith("num_batches_tracked"))


def test_class_map_merges_annotation_labels_into_the_detectors_classes(tiny_data: Path) -> None:
    frames, splits = tiny_data / "data/frames_det/target", tiny_data / "data/splits_det/target.json"
    plain = load_detection_data(frames, splits)
    assert len(plain.classes) > 1 and plain.label_map == {}
    one = load_detection_data(frames, splits, class_map={"*": "object"})
    assert one.classes == ["object"] and set(one.label_map) == set(plain.classes)
    ds = FrameBoxDataset(one.records["train"], one.classes, train=False, label_map=one.label_map)
    labels = torch.cat([ds[i][1]["labels"] for i in range(len(ds))])
    assert labels.numel() > 0 and set(labels.tolist()) == {1}
    # one label renamed, the others as they are
    first, *rest = plain.classes
    some = load_detection_data(frames, splits, class_map={first: "renamed"})
    assert some.classes == sorted(["renamed", *rest]) and some.label_map == {first: "renamed"}
    # a checkpoint's classes that the mapped labels do not fit: the error names the map
    with pytest.raises(ValueError, match="class_map"):
        load_detection_data(frames, splits, ["other"], class_map={"*": "object"})


def test_frames_stored_below_source_and_detector_input_are_counted(tiny_data: Path) -> None:
    data = load_detection_data(tiny_data / "data/frames_det/target", tiny_data / "data/splits_det/target.json")
    stored, source = data.short_sides[0]
    assert len(data.short_sides) == sum(len(r) for r in data.records.values()) and stored > 0 and source > 0
    # the detector reads no more than is stored: nothing lost; reading more than the source has: nothing to keep
    assert data.detail_lost(stored) == 0
    assert data.detail_lost(10_000) == sum(s < src for s, src in data.short_sides)
    lossy = replace(data, short_sides=[(128, 1080), (128, 96), (192, 1080)])
    assert lossy.detail_lost(192) == 1  # 1080 p stored at 128 for a 192 px detector; 96 px upsampled is no loss


def _fake_coco_cache(name: str, torch_home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, dict]:
    """What `weights: default` finds offline: a torchvision-layout 91-class state dict in TORCH_HOME
    (made here from a random init: the download itself cannot run in this sandbox)."""
    from torchvision.models import get_model

    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    spec = get_detector_spec(name)
    torch.manual_seed(1)
    net = get_model(name, weights=None, weights_backbone=None, num_classes=91)
    if spec.frozen_bn:
        _frozen_bn(net.backbone)
    path = torchvision_cache_path(torchvision_member(spec, "default"))
    path.parent.mkdir(parents=True, exist_ok=True)
    state = net.state_dict()
    torch.save(state, path)
    return path, state


def test_coco_weights_load_strictly_and_the_box_predictor_is_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    _, state = _fake_coco_cache(name, tmp_path / "torch", monkeypatch)
    model = build_detector(name, "default", CLASSES, trainable_backbone_layers=2)
    report = model.load_report
    assert report.source == "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1"
    assert report.dropped == sorted(
        f"net.roi_heads.box_predictor.{k}"
        for k in ("bbox_pred.bias", "bbox_pred.weight", "cls_score.bias", "cls_score.weight")
    )
    assert report.loaded == len(state) - 4
    own = model.state_dict()
    for key in ("backbone.body.0.0.weight", "rpn.head.conv.0.0.weight", "roi_heads.box_head.fc6.weight"):
        assert torch.equal(own[f"net.{key}"], state[key])  # pretrained tensors really loaded
    assert model.net.roi_heads.box_predictor.cls_score.out_features == len(CLASSES) + 1
    # trainable_backbone_layers: early backbone stages frozen, the last ones and the heads train
    body = list(model.net.backbone.body.children())
    assert not any(p.requires_grad for p in body[0].parameters())
    assert all(p.requires_grad for p in body[-1].parameters())
    assert all(p.requires_grad for p in model.net.roi_heads.parameters())
    assert type(body[0][1]).__name__ == "FrozenBatchNorm2d"  # as torchvision's pretrained build


def test_missing_coco_weights_offline_say_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    monkeypatch.setenv("VT_OFFLINE", "1")
    with pytest.raises(
        WeightsError,
        match=r"not in the cache and there is no network\. "
        r"Place the file fasterrcnn_mobilenet_v3_large_320_fpn-\w+\.pth at .*empty",
    ):
        build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", "default", CLASSES)
    with pytest.raises(WeightsError, match="unknown weights 'IMAGENET1K_V1' .* choices: default, coco, COCO_V1"):
        build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", "IMAGENET1K_V1", CLASSES)


def test_checkpoints_describe_themselves_and_refuse_other_detectors(tmp_path: Path) -> None:
    name = "ssdlite320_mobilenet_v3_large"
    torch.manual_seed(0)
    model = build_detector(name, "none", CLASSES)
    ckpt = {
        "task": "detect",
        "detector": name,
        "classes": CLASSES,
        "frozen_bn": False,
        "model_args": {},
        "weights_source": "none",
        "model": model.state_dict(),
    }
    path = save_checkpoint(tmp_path / "best.pt", ckpt)
    rebuilt = detector_from_checkpoint(load_checkpoint(path)).eval()
    image = [torch.rand(3, 64, 80)]
    with torch.no_grad():
        a, b = model.eval()(image)[0], rebuilt(image)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])
    # fine-tuning from our own checkpoint onto other classes keeps everything but the class layers
    again = build_detector(name, str(path), ["a", "b"])
    assert again.load_report.dropped and all(
        k.startswith("net.head.classification_head.") for k in again.load_report.dropped
    )
    # the same labels, reordered: as many classes, but the class layers must not be reused row for row
    shuffled = build_detector(name, str(path), CLASSES[::-1])
    assert shuffled.load_report.dropped and all(
        k.startswith("net.head.classification_head.") for k in shuffled.load_report.dropped
    )
    # the same labels in the same order (source and target of one kind): everything transfers
    same = build_detector(name, str(path), CLASSES)
    assert not same.load_report.dropped and not same.load_report.new
    for key, value in model.state_dict().items():
        assert torch.equal(same.state_dict()[key], value), key
    with pytest.raises(WeightsError, match="cannot initialise detector 'fcos_resnet50_fpn'"):
        build_detector("fcos_resnet50_fpn", str(path), CLASSES)
    with pytest.raises(WeightsError, match="not found"):
        build_detector(name, str(tmp_path / "missing.pt"), CLASSES)


def test_spec_is_frozen_dataclass() -> None:
    spec = get_detector_spec("fcos_resnet50_fpn")
    assert isinstance(spec, DetectorSpec) and spec.family == "fcos"
    with pytest.raises(AttributeError):
        spec.family = "x"  # type: ignore[misc]


def test_prediction_covers_the_whole_video_and_reports_source_pixels(tmp_path: Path) -> None:
    import json

    import numpy as np

    from vt_models.config import DetectConfig
    from vt_models.detect.predict import DetectorPredictor, VideoTracks
    from vt_models.track.tracker import TrackedBox
    from vt_models.video.decode import open_video

    from .videos import good_mp4

    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    torch.manual_seed(0)
    model = build_detector(name, "none", CLASSES, min_size=64, max_size=96)
    dc = DetectConfig(extract={"mode": "fps", "fps": 5.0, "max_frames": 8, "short_side": 48})
    ckpt = load_checkpoint(
        save_checkpoint(
            tmp_path / "det.pt",
            {
                "task": "detect",
                "detector": name,
                "classes": CLASSES,
                "frozen_bn": False,
                "model_args": {"min_size": 64, "max_size": 96},
                "extract": dc.extract.model_dump(mode="json"),
                "config": dc.model_dump(mode="json"),
                "model": model.state_dict(),
            },
        )
    )
    video = good_mp4(tmp_path / "long.mp4", n_frames=40, width=128, height=96, fps=10)
    predictor = DetectorPredictor(ckpt)
    result = predictor.annotate(video, tmp_path / "out.mp4", tmp_path / "out.json")
    assert len(result.frame_indices) == 20, "every 2nd frame of all 40, not the 8 a training clip keeps"
    assert result.scale == (2.0, 2.0)
    assert open_video(tmp_path / "out.mp4").info.num_frames == 20
    assert json.loads((tmp_path / "out.json").read_text())["frames_processed"] == 20
    # boxes in the JSON are in source-video pixels
    box = TrackedBox(track_id=3, box=np.array([1.0, 2.0, 11.0, 12.0]), score=0.9, label=1, predicted=False)
    tracks = VideoTracks("v.mp4", 10.0, [0], CLASSES, [[box]], 0.1, (2.0, 2.0)).to_json()["tracks"]
    assert tracks == [
        {
            "track_id": 3,
            "label": "square",
            "frames": [
                {
                    "frame": 0,
                    "time_s": 0.0,
                    "box_xyxy": [2.0, 4.0, 22.0, 24.0],
                    "score": 0.9,
                    "label": "square",
                    "predicted": False,
                }
            ],
        }
    ]


def test_model_options_reach_the_detector_and_an_option_it_does_not_take_is_an_error() -> None:
    model = build_detector("fcos_mini_resnet_fpn", "none", CLASSES, min_size=64, options={"nms_thresh": 0.5})
    assert model.net.nms_thresh == 0.5
    # torchvision hands unknown keywords to its input transform, which ignores them: the builder must refuse
    with pytest.raises(WeightsError, match=r"no option \['nms_thresh'\].*box_nms_thresh"):
        build_detector("fasterrcnn_mobilenet_v3_large_320_fpn", "none", CLASSES, options={"nms_thresh": 0.5})
    with pytest.raises(WeightsError, match=r"no option \['head_conv'\].*head_convs"):
        build_detector("fcos_mini_resnet_fpn", "none", CLASSES, options={"head_conv": 2})
    # the Faster R-CNN proposal counts params.yaml suggests, and min/max size, are options of their detectors
    for spec in list_detectors():
        names = _option_names(spec)
        assert {"min_size", "max_size"} <= names, spec.name
        if spec.family == "faster_rcnn":
            assert {"rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_test", "box_batch_size_per_image"} <= names

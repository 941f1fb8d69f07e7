"""The backbone registry and weights loading, on tiny inputs with random or project-made weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from vt_models.models.builder import build_backbone, model_from_checkpoint, stage_names, torchvision_net
from vt_models.models.checkpoint import load_checkpoint
from vt_models.models.registry import (
    BackboneSpec,
    UnknownModelError,
    get_spec,
    list_backbones,
    register_backbone,
)
from vt_models.models.weights import WeightsError, torchvision_cache_path, torchvision_member

from .gate_models import untrained_classifier

HEAVY = {"mvit_v2_s", "vgg16_bn", "inception_v3", "swin3d_t", "s3d", "resnet50", "efficientnet_b0"}
ALL = [s.name for s in list_backbones()]


def _input(name: str, batch: int = 2) -> torch.Tensor:
    spec = get_spec(name)
    frames = spec.fixed_frames or max(4, spec.min_frames)
    size = spec.fixed_crop or max(48, spec.min_crop)
    return torch.randn(batch, 3, frames, size, size)


def test_registry_has_the_required_backbones() -> None:
    families = {s.name: s.family for s in list_backbones()}
    for name in ("resnet18", "resnet50", "mobilenet_v3_large", "efficientnet_b0", "vgg16_bn", "inception_v3"):
        assert families[name] == "2d"
    for name in ("r3d_18", "mc3_18", "r2plus1d_18", "s3d", "mvit_v2_s", "swin3d_t"):
        assert families[name] == "3d"
    assert families["resnet18_lstm"] == families["resnet18_gru"] == "rnn"


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY else n for n in ALL])
def test_forward_backward_every_backbone(name: str) -> None:
    torch.manual_seed(0)
    model, transforms = build_backbone(name, "none", num_classes=5, dropout=0.1, rnn_hidden=32)
    model.train()
    x = _input(name)
    logits = model(x)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())
    ]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"
    assert model.stages(), "partial fine-tuning needs stages"
    assert transforms.eval.crop_size >= get_spec(name).min_crop


def test_transforms_match_weights() -> None:
    _, t2d = build_backbone("resnet18", "none", 3)
    _, t3d = build_backbone("r3d_18", "none", 3, crop_size=64)
    assert t2d.eval.mean == (0.485, 0.456, 0.406) and t2d.eval.crop_size == 224
    assert t3d.eval.mean == (0.43216, 0.394666, 0.37645) and t3d.eval.crop_size == 64
    clip = torch.randint(0, 255, (6, 50, 70, 3), dtype=torch.uint8)
    assert t3d.train(clip).shape == (3, 6, 64, 64) and t3d.eval(clip).shape == (3, 6, 64, 64)
    _, mvit = build_backbone("mvit_v2_s", "none", 3, crop_size=64)
    assert mvit.clip_len == 16 and mvit.eval.crop_size == 224  # fixed by its positional encoding


def test_unknown_and_duplicate_names() -> None:
    with pytest.raises(UnknownModelError, match=r"unknown backbone 'resnet19'; choices: .*r3d_18.*resnet18"):
        build_backbone("resnet19")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(get_spec("resnet18"))
    with pytest.raises(ValueError, match="unknown family"):
        register_backbone(BackboneSpec(**{**get_spec("resnet18").__dict__, "name": "x_new", "family": "4d"}))


def _fake_torchvision_cache(name: str, torch_home: Path) -> dict[str, torch.Tensor]:
    """A project-made checkpoint in torchvision's cache layout (we cannot download the real one)."""
    spec = get_spec(name)
    torch.manual_seed(123)
    state = torchvision_net(spec).state_dict()
    member = torchvision_member(spec, "default")
    path = torchvision_cache_path(member)
    assert str(path).startswith(str(torch_home))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def test_torchvision_weights_from_cache_replace_the_head(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = _fake_torchvision_cache("resnet18", tmp_path)
    model, _ = build_backbone("resnet18", "imagenet", num_classes=4)
    report = model.load_report
    assert report.source == "ResNet18_Weights.IMAGENET1K_V1"
    assert report.dropped == ["fc.bias", "fc.weight"] and report.new == ["head.1.bias", "head.1.weight"]
    assert report.loaded == len(state) - 2
    assert torch.equal(model.encoder.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert model.head[1].out_features == 4
    # the same weights feed the CNN+RNN variant; the RNN is new
    rnn, _ = build_backbone("resnet18_gru", "IMAGENET1K_V1", num_classes=4)
    assert any(k.startswith("temporal.") for k in rnn.load_report.new)
    assert torch.equal(rnn.encoder.conv1.weight, state["conv1.weight"])


def test_video_weights_from_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = _fake_torchvision_cache("r2plus1d_18", tmp_path)
    model, t = build_backbone("r2plus1d_18", "kinetics400", num_classes=3)
    assert torch.equal(model.encoder.layer1[0].conv1[0][0].weight, state["layer1.0.conv1.0.0.weight"])
    assert model.load_report.dropped == ["fc.bias", "fc.weight"]
    with pytest.raises(
        WeightsError,
        match="r2plus1d_18 has kinetics400 weights, not imagenet; choices: default, kinetics400, KINETICS400_V1",
    ):
        build_backbone("r2plus1d_18", "imagenet", num_classes=3)
    with pytest.raises(WeightsError, match="unknown weights 'IMAGENET1K_V9'"):
        build_backbone("resnet18", "IMAGENET1K_V9", num_classes=3)


def test_missing_pretrained_weights_offline_fail_with_where_to_put_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("VT_OFFLINE", "1")
    with pytest.raises(WeightsError) as err:
        build_backbone("mc3_18", "kinetics400", num_classes=3)
    msg = str(err.value)
    expected = tmp_path / "hub" / "checkpoints" / "mc3_18-a90a0ba3.pth"
    assert "not in the cache and there is no network" in msg
    assert f"Place the file mc3_18-a90a0ba3.pth at {expected}" in msg
    assert "https://download.pytorch.org/models/mc3_18-a90a0ba3.pth" in msg
    assert "choose other weights: none, a checkpoint file, or an MLflow model URI" in msg


def test_weights_from_a_checkpoint_file_are_strict(tmp_path: Path) -> None:
    ckpt = untrained_classifier(tmp_path / "src.pt", ["a", "b", "c", "d", "e"], "resnet18")
    model, _ = build_backbone("resnet18", str(tmp_path / "src.pt"), num_classes=2)
    assert model.head[1].out_features == 2
    assert model.load_report.dropped == ["head.1.bias", "head.1.weight"]
    assert torch.equal(model.encoder.conv1.weight, ckpt["model"]["encoder.conv1.weight"])
    with pytest.raises(WeightsError, match="checkpoint of backbone 'resnet18'.*cannot initialise 'r3d_18'"):
        build_backbone("r3d_18", str(tmp_path / "src.pt"), num_classes=2)
    with pytest.raises(WeightsError, match="not found"):
        build_backbone("resnet18", str(tmp_path / "missing.pt"), num_classes=2)
    # a checkpoint rebuilds itself exactly, with nothing else needed
    again, transforms = model_from_checkpoint(load_checkpoint(tmp_path / "src.pt"))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ckpt["model"].values(), strict=True))
    assert transforms.eval.crop_size == 32


def test_plain_torchvision_state_dict_file(tmp_path: Path) -> None:
    torch.manual_seed(5)
    state = torchvision_net(get_spec("mobilenet_v3_large")).state_dict()
    torch.save(state, tmp_path / "mine.pth")
    model, _ = build_backbone("mobilenet_v3_large", str(tmp_path / "mine.pth"), num_classes=3)
    assert model.load_report.dropped == ["classifier.3.bias", "classifier.3.weight"]
    assert torch.equal(model.encoder.features[0][0].weight, state["features.0.0.weight"])
    broken = {k: v for k, v in state.items() if not k.startswith("features.16")}
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match="missing features.16"):
        build_backbone("mobilenet_v3_large", str(tmp_path / "broken.pth"), num_classes=3)


def test_checkpoints_load_weights_only(tmp_path: Path) -> None:
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pt", "wb") as fh:
        pickle.dump({"model": Evil()}, fh)
    with pytest.raises(Exception, match="weights-only"):
        load_checkpoint(tmp_path / "evil.pt")


def test_two_saves_of_one_checkpoint_at_once_both_land_and_a_failed_save_keeps_the_old(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs saving ``best.pt`` into one folder at once: the second saves between the first's write and
    its rename. With one fixed temporary name the second's rename took the first's file away, and the
    first failed with FileNotFoundError."""
    from vt_models.models import checkpoint

    best = tmp_path / "best.pt"
    real_save = torch.save
    nested: list[str] = []

    def save_and_meanwhile_save_again(obj, fh, *args, **kwargs):
        real_save(obj, fh, *args, **kwargs)
        if not nested:  # the other run saves between this one's write and its rename
            nested.append("started")
            checkpoint.save_checkpoint(best, {"epoch": 2})
            nested.append("saved")

    monkeypatch.setattr(checkpoint.torch, "save", save_and_meanwhile_save_again)
    checkpoint.save_checkpoint(best, {"epoch": 1})
    assert nested == ["started", "saved"]
    assert load_checkpoint(best)["epoch"] == 1  # the last rename wins, and it is a whole checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]  # no temporary file left

    def crash(obj, fh, *args, **kwargs):
        fh.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_checkpoint(best, {"epoch": 3})
    assert load_checkpoint(best)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]


def test_temporal_shift_moves_channel_folds_one_frame() -> None:
    from vt_models.models.tsm import temporal_shift

    x = torch.arange(2 * 3 * 16, dtype=torch.float32).reshape(2 * 3, 16, 1, 1)  # B=2, T=3, C=16
    out = temporal_shift(x, frames=3).view(2, 3, 16)
    src = x.view(2, 3, 16)
    assert torch.equal(out[:, :2, :2], src[:, 1:, :2]) and torch.all(out[:, 2, :2] == 0)  # from the next frame
    assert torch.equal(out[:, 1:, 2:4], src[:, :2, 2:4]) and torch.all(out[:, 0, 2:4] == 0)  # from the previous
    assert torch.equal(out[:, :, 4:], src[:, :, 4:])
    assert torch.equal(temporal_shift(x, frames=1), x)


def test_temporal_shift_gradient_is_the_opposite_shift() -> None:
    """The shift's hand-written backward pass agrees with numerical differentiation."""
    from vt_models.models.tsm import temporal_shift

    x = torch.randn(2 * 3, 16, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: temporal_shift(t, frames=3), (x,))
    (grad,) = torch.autograd.grad(temporal_shift(x, frames=3).view(2, 3, 16, 4)[:, 1, 0].sum(), x)
    assert grad.view(2, 3, 16, 4)[:, 2, 0].eq(1).all() and grad.sum() == 2 * 4  # fold 0 at t=1 came from t=2
    # channels-last (how training runs 2D nets) in, the same values out, in the same layout and no copy to NCHW
    last = x.detach().to(memory_format=torch.channels_last).requires_grad_()
    out = temporal_shift(last, frames=3)
    assert torch.equal(out, temporal_shift(x, frames=3)) and out.is_contiguous(memory_format=torch.channels_last)
    (grad_last,) = torch.autograd.grad(out.view(2, 3, 16, 4)[:, 1, 0].sum(), last)
    assert torch.equal(grad_last, grad)


def test_tsm_sees_time_direction_tsn_does_not() -> None:
    """Why TSM: averaging per-frame features (TSN) gives a clip and its reverse the same score."""
    import copy

    torch.manual_seed(0)
    clip = torch.randn(2, 3, 4, 32, 32)
    reverse = clip.flip(2)
    for name, sees_order in (("resnet18", False), ("resnet18_tsm", True)):
        model, _ = build_backbone(name, "none", num_classes=3, dropout=0.0)
        model.eval()
        with torch.no_grad():
            same = torch.allclose(model(clip), model(reverse), atol=1e-5)
            assert same is not sees_order, name
            if sees_order:  # a deep copy shifts by its own clip length, consistently
                twin = copy.deepcopy(model)
                assert torch.allclose(twin(clip), model(clip), atol=1e-6)
                assert twin(torch.randn(1, 3, 2, 32, 32)).shape == (1, 3)


def test_tsm_keeps_the_torchvision_state_dict_layout() -> None:
    tsm, _ = build_backbone("resnet18_tsm", "none", num_classes=3)
    tsn, _ = build_backbone("resnet18", "none", num_classes=3)
    assert tsm.state_dict().keys() == tsn.state_dict().keys()  # ImageNet weights load unchanged


def test_flow_transforms_flip_and_shake() -> None:
    """A flipped flow clip points the other way in x; camera-shake augmentation moves every pixel of a
    frame by one vector (and only for flow, only in training)."""
    from vt_models.models.builder import transforms_for
    from vt_models.models.registry import get_spec

    spec = get_spec("mobilenet_v3_small_tsm")
    clip = torch.zeros(4, 32, 32, 2)
    clip[..., 0] = -0.5  # everything moves left
    flip = transforms_for(spec, 32, hflip=True, crop_scale=(1.0, 1.0), modality="flow").train
    torch.manual_seed(0)
    outs = [flip(clip) for _ in range(8)]
    assert any(o[0].mean() > 0 for o in outs) and any(o[0].mean() < 0 for o in outs)  # flipped: rightward
    shaky = transforms_for(spec, 32, crop_scale=(1.0, 1.0), modality="flow", shake_px=1.5).train
    out = shaky(torch.zeros(4, 32, 32, 2))
    per_frame = out.flatten(2)  # (C, T, H*W)
    assert torch.allclose(per_frame, per_frame[..., :1].expand_as(per_frame))  # one vector per frame
    assert per_frame[..., 0].abs().max() > 0
    steady = transforms_for(spec, 32, modality="flow", shake_px=1.5).eval
    assert steady(torch.zeros(4, 32, 32, 2)).abs().max() == 0


def test_flow_model_takes_two_channels_and_imagenet_filters_start_it(tmp_path) -> None:
    from vt_models.models.builder import adapt_input_channels

    net = torchvision.models.resnet18()
    rgb = net.conv1.weight.detach().clone()
    adapt_input_channels(net, 2)
    assert net.conv1.in_channels == 2
    # TSN cross-modality init: the RGB filters' channel mean, scaled so the output keeps its size
    assert torch.allclose(net.conv1.weight, rgb.mean(1, keepdim=True).expand(-1, 2, -1, -1) * 1.5)
    model, t = build_backbone("mobilenet_v3_small_tsm", "none", num_classes=3, modality="flow", crop_size=32)
    assert model(torch.randn(2, 2, 4, 32, 32)).shape == (2, 3)
    assert t.eval.modality == "flow" and len(t.eval.mean) == 2


def test_mini_resnet_is_a_small_motion_net_with_no_published_weights(tmp_path: Path) -> None:
    """The CPU default: full resolution up to its first block, TSM on every block, pretrained only by us."""
    torch.manual_seed(0)
    model, t = build_backbone("mini_resnet_tsm", "none", num_classes=6, modality="flow", crop_size=64, dropout=0.0)
    assert model.encoder.conv1.in_channels == 2 and model.encoder.conv1.stride == (1, 1)
    assert sum(p.numel() for p in model.parameters()) < 500_000
    assert stage_names(get_spec("mini_resnet_tsm"), model.encoder) == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    clip = torch.randn(2, 2, 8, 64, 64)
    model.eval()
    with torch.no_grad():
        assert model(clip).shape == (2, 6)
        assert not torch.allclose(model(clip), model(clip.flip(2)), atol=1e-5)  # the shift sees time's direction
    with pytest.raises(WeightsError, match=r"no published weights .*vt pretrain"):
        build_backbone("mini_resnet_tsm", "default", num_classes=6)
    # its own checkpoints start it, with the TSM variant reading a plain one's weights
    path = tmp_path / "mini.pt"
    ckpt = untrained_classifier(path, ["a", "b", "c"], "mini_resnet")
    tuned, _ = build_backbone("mini_resnet_tsm", str(path), num_classes=2, crop_size=32)
    assert torch.equal(
        tuned.state_dict()["encoder.layer4.0.conv2.weight"], ckpt["model"]["encoder.layer4.0.conv2.weight"]
    )
    rebuilt, _ = model_from_checkpoint(load_checkpoint(path))
    assert torch.equal(rebuilt.state_dict()["encoder.conv1.weight"], ckpt["model"]["encoder.conv1.weight"])


def test_flow_stabilise_removes_the_camera_motion_and_travels_in_the_checkpoint(tmp_path: Path) -> None:
    """A panning camera adds one displacement to every pixel; the median removes it, the object's own motion stays."""
    from vt_models.models.builder import transforms_for

    spec = get_spec("mini_resnet_tsm")
    clip = torch.full((3, 32, 32, 2), 0.0)
    clip[..., 0] = 0.3  # the camera pans: everything drifts right
    clip[:, 8:16, 8:16, 0] = -0.2  # one object moves left in the world
    for train in (False, True):
        t = transforms_for(spec, 32, crop_scale=(1.0, 1.0), eval_resize=1.0, modality="flow", flow_stabilise=True)
        out = (t.train if train else t.eval)(clip) * t.eval.std[0]  # undo the scaling (mean 0)
        assert out[:, :, 0, 0].abs().max() < 1e-6  # background: still
        assert out[0, :, 12, 12].allclose(torch.full((3,), -0.5), atol=1e-5)  # object: its motion relative to the scene
    plain = transforms_for(spec, 32, crop_scale=(1.0, 1.0), eval_resize=1.0, modality="flow").eval
    assert (plain(clip)[0, :, 0, 0] * plain.std[0]).allclose(torch.full((3,), 0.3), atol=1e-5)
    # RGB is never "stabilised"
    assert not transforms_for(spec, 32, modality="rgb", flow_stabilise=True).eval.stabilise
    path = tmp_path / "flow.pt"
    untrained_classifier(path, ["a", "b"], "mini_resnet_tsm")
    ckpt = load_checkpoint(path)
    assert not model_from_checkpoint(ckpt)[1].eval.stabilise  # checkpoints from before the option: none
    model, _ = build_backbone("mini_resnet_tsm", "none", num_classes=2, modality="flow", crop_size=32)
    ckpt.update(model=model.state_dict(), model_args={**ckpt["model_args"], "modality": "flow", "flow_stabilise": True})
    assert model_from_checkpoint(ckpt)[1].eval.stabilise and model_from_checkpoint(ckpt)[1].train.stabilise


def test_full_frame_eval_keeps_the_frames_sides_and_travels_in_the_checkpoint(tmp_path: Path) -> None:
    """eval_crop full: a 4:3 frame is resized whole to the square input (as the training crops are), so
    an object at the frame's side stays in view; the centre crop cuts it off. The checkpoint carries it."""
    from vt_models.models.builder import transforms_for

    spec = get_spec("mini_resnet_tsm")
    clip = torch.zeros((2, 48, 64, 3), dtype=torch.uint8)
    clip[:, 20:28, 0:6] = 255  # a bright object at the left edge
    centre = transforms_for(spec, 32, eval_resize=1.0).eval
    full = transforms_for(spec, 32, eval_resize=1.0, eval_crop="full").eval
    assert full(clip).shape == centre(clip).shape == (3, 2, 32, 32)
    assert full(clip)[:, :, :, :3].max() > 1.0  # the object, normalised
    assert centre(clip).max() < 0.0  # only the black background is left (below the ImageNet mean)
    path = tmp_path / "m.pt"
    untrained_classifier(path, ["a", "b"], "mini_resnet_tsm")
    ckpt = load_checkpoint(path)
    assert not model_from_checkpoint(ckpt)[1].eval.full_frame  # checkpoints from before the option: centre
    ckpt.update(model_args={**ckpt["model_args"], "eval_crop": "full"})
    assert model_from_checkpoint(ckpt)[1].eval.full_frame

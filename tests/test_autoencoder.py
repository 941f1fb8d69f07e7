"""Autoencoder pretraining (``pretrain.objective: autoencoder``): masking, the reconstruction task in the
generic loop, and fine-tuning from its encoder through the ordinary ``weights`` mechanism."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from vt_models.classify.runner import train_backbone
from vt_models.config import ConfigError, load_config
from vt_models.models.builder import build_backbone, model_from_checkpoint
from vt_models.models.checkpoint import load_checkpoint
from vt_models.models.weights import WeightsError
from vt_models.train.reconstruction import (
    RECON_CELLS,
    UPSCALE,
    ReconstructionDecoder,
    ReconstructionTask,
    attach_decoder,
    camera_motion,
    drop_frames,
    recon_target,
    tube_mask,
)
from vt_models.train.runtime import seed_everything


def test_tube_mask_hides_the_same_cells_in_every_frame() -> None:
    clips = torch.ones(3, 2, 5, 32, 40)
    masked = tube_mask(clips, 0.5, torch.Generator().manual_seed(0))
    hidden = masked == 0
    assert torch.equal(hidden, hidden[:, :, :1].expand_as(hidden)), "a tube: the same cells in every frame"
    assert torch.equal(hidden[:, :1], hidden[:, 1:]), "every channel"
    assert 0.3 < hidden.float().mean() < 0.7
    assert not torch.equal(hidden[0], hidden[1]), "each clip its own mask"
    assert torch.equal(tube_mask(clips, 0.0), clips)


def test_the_target_is_the_clean_clip_pooled_to_a_coarse_grid() -> None:
    clips = torch.arange(2 * 2 * 8 * 32 * 32, dtype=torch.float32).reshape(2, 2, 8, 32, 32)
    target = recon_target(clips, 4)
    assert target.shape == (2, 2, 4, 16, 16)
    assert torch.allclose(target[0, 0, 0, 0, 0], clips[0, 0, :2, :2, :2].mean())
    assert recon_target(clips[:, :, :3], 4).shape == (2, 2, 3, 16, 16), "short clips keep all their frames"
    assert torch.allclose(recon_target(clips, 1)[:, :, 0], target.mean(2)), "one step: the clip's average"


def test_each_feature_place_rebuilds_the_block_of_cells_it_covers() -> None:
    """The decoder's pixel shuffle: a 2D map of 2 x 2 places gives 8 x 8 cells, place (i, j) the 4 x 4 block at
    (4i, 4j) from its own channels only; the 3D decoder puts the same channels in the same places, frame by frame."""
    flat = torch.nn.AdaptiveAvgPool2d(1)
    dec2 = ReconstructionDecoder(flat, 2, three_d=False)
    fmap = torch.zeros(1, 5, 2, 2)
    fmap[0, :, 1, 0] = 1.0  # only place (1, 0) has features
    dec2._catch(flat, (fmap,), None)
    with torch.no_grad():
        dec2.proj(fmap)  # materialise, then weights that copy feature 0 into every output
        dec2.proj.weight.zero_()
        dec2.proj.weight[:, 0] = 1.0
        dec2.proj.bias.zero_()
    dec2._catch(flat, (fmap,), None)
    cells = dec2(1, 1, 1)[0, :, 0, ::2, ::2]  # the 8 x 8 cells, each twice in the 16 x 16 grid
    assert torch.equal(cells[0, 4:, :4], torch.ones(4, 4)) and cells.sum() == 2 * 16
    deep = torch.nn.AdaptiveAvgPool3d(1)
    dec3 = ReconstructionDecoder(deep, 2, three_d=True)
    maps = torch.randn(1, 5, 3, 2, 2)
    dec3._catch(deep, (maps,), None)
    with torch.no_grad():
        dec3.proj(maps)
    dec3._catch(deep, (maps,), None)
    out3 = dec3(1, 3, 4)
    per_frame = torch.stack(
        [
            F.pixel_shuffle(F.conv2d(maps[:, :, k], dec3.proj.weight[:, :, 0], dec3.proj.bias), UPSCALE)
            for k in range(3)
        ],
        dim=2,
    )
    assert torch.allclose(out3, F.adaptive_avg_pool3d(per_frame, (3, *RECON_CELLS)), atol=1e-6)


def test_camera_motion_adds_one_affine_flow_field_a_clip() -> None:
    clips = torch.zeros(3, 2, 4, 9, 9)
    moved = camera_motion(clips, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(moved, moved[:, :, :1].expand_as(moved)), "the same field in every frame"
    # affine in x and y: the second difference along each axis is zero, the centre is the translation
    assert torch.allclose(moved.diff(n=2, dim=-1), torch.zeros(1), atol=1e-5)
    assert torch.allclose(moved.diff(n=2, dim=-2), torch.zeros(1), atol=1e-5)
    assert moved[:, :, 0, 4, 4].abs().sum() > 0 and not torch.equal(moved[0], moved[1]), "each clip its own"
    assert torch.equal(camera_motion(clips, 0.0), clips)
    with pytest.raises(ValueError, match="2 channels"):
        camera_motion(torch.zeros(1, 3, 2, 4, 4), 0.5)


def test_drop_frames_keeps_that_many_frames_of_each_clip() -> None:
    clips = torch.ones(5, 2, 8, 4, 4)
    kept = drop_frames(clips, 2, torch.Generator().manual_seed(0)).flatten(3).amax(3)[:, 0]  # (B, T): 1 where kept
    assert torch.equal(kept.sum(1), torch.full((5,), 2.0))
    assert len({tuple(k.tolist()) for k in kept}) > 1, "each clip its own frames"
    assert torch.equal(drop_frames(clips, 0), clips) and torch.equal(drop_frames(clips, 8), clips)


def test_validation_scores_the_same_corrupted_clips_every_pass() -> None:
    seed_everything(0)
    model, _ = build_backbone("mini_resnet_tsm", "none", 2, modality="flow")
    attach_decoder(model, 2, 8)
    task = ReconstructionTask(0.5, seed=0, keep_frames=2, camera_noise=0.5, steps=1)
    batch = (torch.randn(4, 2, 8, 32, 32), None)
    model.eval()
    first = task.score(task.predict(model, batch, torch.device("cpu")))
    again = task.score(task.predict(model, batch, torch.device("cpu")))
    assert first == again
    clean = batch[0]
    assert not torch.equal(task.corrupt(clean, task.generator), task.corrupt(clean, task.generator))


def test_reconstruction_learns_the_motion_pattern_from_the_pooled_features() -> None:
    """Flow-like clips whose whole pattern is one of two directions: after a few steps the decoder rebuilds
    them from the feature vector far better than the mean clip does (R^2 well above 0)."""
    seed_everything(0)
    model, _ = build_backbone("mini_resnet_tsm", "none", 2, modality="flow")
    attach_decoder(model, 2, 4)
    task = ReconstructionTask(mask_ratio=0.5, seed=0)
    direction = torch.randint(0, 2, (32,)).float() * 2 - 1
    clips = torch.zeros(32, 2, 4, 32, 32)
    clips[:, 0] = direction[:, None, None, None]  # x displacement: left or right everywhere
    clips += 0.1 * torch.randn_like(clips)
    batch = (clips, torch.full((32,), -1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = task.score(task.predict(model.eval(), batch, torch.device("cpu")))["recon_r2"]
    model.train()
    for _ in range(30):
        opt.zero_grad()
        loss, n = task.loss(model, batch, torch.device("cpu"))
        loss.backward()
        opt.step()
    after = task.score(task.predict(model.eval(), batch, torch.device("cpu")))
    assert n == 32 and after["recon_r2"] > 0.5 > before, (before, after)


@pytest.mark.parametrize(("backbone", "modality"), [("r3d_18", "rgb"), ("resnet18_gru", "rgb_diff")])
def test_the_decoder_reads_the_feature_map_of_3d_and_rnn_models(backbone: str, modality: str) -> None:
    model, _ = build_backbone(backbone, "none", 3, modality=modality, rnn_hidden=16)
    attach_decoder(model, 3, 4, size=32)
    loss, n = ReconstructionTask(0.5).loss(model, (torch.randn(2, 3, 4, 32, 32), None), torch.device("cpu"))
    loss.backward()
    assert n == 2 and torch.isfinite(loss)
    first = next(m for m in model.encoder.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d)))
    assert model.decoder.proj.weight.grad is not None and first.weight.grad is not None


@pytest.mark.slow
def test_autoencoder_pretraining_then_fine_tuning_from_its_encoder(tiny_project: Path) -> None:
    cfg = load_config(
        "params.yaml",
        [
            "pretrain.objective=autoencoder",
            "pretrain.backbones=[mini_resnet_tsm]",
            "train.backbones=[mini_resnet_tsm]",
            "pretrain.modality=flow",
            "train.modality=flow",
            "transfer.backbone=mini_resnet_tsm",
            "adaptation.backbone=mini_resnet_tsm",
            "pretrain.epochs=2",
            "train.epochs=1",
        ],
    )
    pre = train_backbone(cfg, "pretrain", "mini_resnet_tsm", progress=False, track=False)
    ckpt = load_checkpoint(pre.best_path)
    assert ckpt["training_objective"] == "autoencoder"
    assert any(k.startswith("decoder.") for k in ckpt["model"])
    assert {"val_recon_r2", "val_loss"} <= set(ckpt["history"][-1])
    with pytest.raises(WeightsError, match="autoencoder checkpoint .* fine-tune from it"):
        model_from_checkpoint(ckpt)

    fine = train_backbone(cfg, "train", "mini_resnet_tsm", progress=False, track=False)
    tuned = load_checkpoint(fine.best_path)
    assert tuned["training_objective"] == "supervised" and tuned["weights_source"].endswith(
        "pretrain/mini_resnet_tsm/best.pt"
    )
    assert not any(k.startswith("decoder.") for k in tuned["model"])
    # its encoder learnt no classes, so it fine-tunes at the full lr, not at train.backbone_lr_mult
    assert cfg.train.backbone_lr_mult < 1.0 and tuned["config"]["backbone_lr_mult"] == 1.0
    model, _ = build_backbone("mini_resnet_tsm", str(pre.best_path), 3, modality="flow")
    assert model.load_report.dropped[: len(model.load_report.dropped)] and all(
        k.startswith(("decoder.", "head.")) for k in model.load_report.dropped
    )
    assert torch.equal(model.encoder.conv1.weight, ckpt["model"]["encoder.conv1.weight"])
    assert model.load_report.objective == "autoencoder"
    model_from_checkpoint(tuned)  # a classifier again


def test_autoencoder_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="pretrain.bss"):
        load_config("params.yaml", ["pretrain.objective=autoencoder", "pretrain.bss=0.001"])
    with pytest.raises(ConfigError, match="objective"):
        load_config("params.yaml", ["pretrain.objective=vae"])

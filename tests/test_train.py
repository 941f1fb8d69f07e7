"""The generic training loop: strategies, schedule, gradient health, checkpoints and exact resume."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from vt_models.classify.strategy import apply_strategy
from vt_models.classify.task import ClassificationTask, class_weights
from vt_models.config import TrainConfig
from vt_models.models.builder import build_backbone
from vt_models.models.checkpoint import load_checkpoint
from vt_models.train.engine import NonFiniteError, Trainer
from vt_models.train.optim import param_groups, warmup_cosine
from vt_models.train.runtime import amp_dtype, cpu_has_bf16_units, eval_dtype, seed_everything

CFG = TrainConfig(
    epochs=4, batch_size=4, lr=3e-3, warmup_epochs=0.5, num_workers=0, early_stopping_patience=None, dropout=0.2
)


def _clips(n: int = 16, classes: int = 2, seed: int = 0) -> TensorDataset:
    """Tiny clips whose class is the direction of a moving bright column: needs time to solve."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 4, 16, 16, generator=g) * 0.1
    y = torch.arange(n) % classes
    for i in range(n):
        for t in range(4):
            col = 2 + 3 * t if y[i] == 0 else 13 - 3 * t
            x[i, :, t, :, col] += 2.0
    return TensorDataset(x, y)


class TinyNet(nn.Module):
    family = "3d"

    def __init__(self, classes: int = 2) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(), nn.AdaptiveAvgPool3d((2, 1, 2)), nn.Flatten()
        )
        self.head = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def _loaders(seed: int = 0) -> tuple[DataLoader, DataLoader]:
    train = DataLoader(_clips(16, seed=seed), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed))
    val = DataLoader(_clips(8, seed=seed + 1), batch_size=4)
    return train, val


def _trainer(tmp: Path, cfg: TrainConfig = CFG, model: nn.Module | None = None, **kw) -> Trainer:
    seed_everything(0)
    model = model or TinyNet()
    return Trainer(model, ClassificationTask(2), cfg, tmp, {"backbone": "tiny"}, seed=0, progress=False, **kw)


class Crash(RuntimeError):
    """A simulated crash at the end of an epoch."""


def crash_after(epoch: int) -> Callable[[int, dict], None]:
    """An ``on_epoch_end`` that crashes the run after ``epoch`` (0-based), its checkpoint written."""

    def crash(e: int, row: dict) -> None:
        if e == epoch:
            raise Crash

    return crash


def test_loss_falls_and_checkpoints_describe_themselves(tmp_path: Path) -> None:
    result = _trainer(tmp_path, CFG.model_copy(update={"epochs": 10, "lr": 1e-2})).fit(*_loaders())
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.6 * losses[0], losses
    assert result.best_score >= 0.9
    ckpt = load_checkpoint(result.last_path)
    assert ckpt["backbone"] == "tiny" and ckpt["epoch"] == 9 and len(ckpt["history"]) == 10
    assert {"optimizer", "scheduler", "scaler", "rng", "model", "format"} <= set(ckpt)
    # best.pt is the deployable weights with their meta: no resume state, a third of the size
    best = load_checkpoint(result.best_path)
    assert best["backbone"] == "tiny" and "model" in best and not {"optimizer", "scheduler", "rng"} & set(best)
    for key in ("clips_per_s", "data_wait_fraction", "grad_norm", "lr", "val_macro_f1", "val_loss"):
        assert key in result.history[0], key
    assert 0.0 <= result.history[0]["data_wait_fraction"] <= 1.0


def test_cpu_precision_follows_amp_and_the_cpu() -> None:
    cpu = torch.device("cpu")
    precision = {amp: amp_dtype(CFG.model_copy(update={"amp": amp}), cpu) for amp in ("auto", "bf16", "fp16", "off")}
    assert precision == {
        "auto": torch.bfloat16 if cpu_has_bf16_units() else None,  # bf16 only where the CPU has the matrix units
        "bf16": torch.bfloat16,
        "fp16": None,  # emulated on a CPU: fp32
        "off": None,
    }
    # scoring stays fp32 on a CPU whatever the training ran in; CUDA scores in the training dtype
    assert eval_dtype(torch.bfloat16, cpu) is None
    assert eval_dtype(torch.bfloat16, torch.device("cuda")) is torch.bfloat16


def test_bf16_training_on_cpu_learns_and_keeps_fp32_weights(tmp_path: Path) -> None:
    cfg = CFG.model_copy(update={"epochs": 10, "lr": 1e-2, "amp": "bf16"})
    trainer = _trainer(tmp_path, cfg)
    assert trainer.dtype is torch.bfloat16 and trainer.eval_dtype is None
    result = trainer.fit(*_loaders())
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.6 * losses[0], losses
    assert result.best_score >= 0.9
    assert load_checkpoint(result.best_path)["precision"] == "bf16"
    weights = load_checkpoint(result.best_path)["model"]
    assert all(v.dtype == torch.float32 for v in weights.values() if v.is_floating_point())
    # bf16 steps move the weights differently from fp32 ones: the precision is real, not a label
    fp32 = _trainer(tmp_path / "fp32", cfg.model_copy(update={"amp": "off"})).fit(*_loaders())
    other = load_checkpoint(fp32.best_path)["model"]
    assert any(not torch.equal(weights[k], other[k]) for k in weights if weights[k].is_floating_point())


def test_a_run_without_resume_state_keeps_the_same_weights_and_cannot_resume(tmp_path: Path) -> None:
    """resume_state=False (CV folds, report runs): last.pt holds the weights only, the same weights as a run that
    keeps its resume state; asking such a run to resume fails and says why."""
    kept = _trainer(tmp_path / "a").fit(*_loaders())
    lean = _trainer(tmp_path / "b", resume_state=False).fit(*_loaders())
    a, b = load_checkpoint(kept.last_path), load_checkpoint(lean.last_path)
    assert "optimizer" in a and not {"optimizer", "scheduler", "scaler", "rng"} & set(b)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert lean.last_path.stat().st_size < 0.6 * kept.last_path.stat().st_size
    with pytest.raises(ValueError, match="keeps no resume state"):
        _trainer(tmp_path / "b", resume_state=False).fit(*_loaders(), resume=True)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_after_a_crash_equals_an_uninterrupted_run(tmp_path: Path, ema_decay: float) -> None:
    cfg = CFG.model_copy(update={"ema_decay": ema_decay})
    full = _trainer(tmp_path / "a", cfg)
    full.fit(*_loaders())
    with pytest.raises(Crash):
        _trainer(tmp_path / "b", cfg, on_epoch_end=crash_after(1)).fit(*_loaders())
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == 1
    torch.manual_seed(999)  # a fresh process would start from any RNG state; resume restores it
    resumed = _trainer(tmp_path / "b", cfg).fit(*_loaders(), resume=True)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    if ema_decay:  # the saved model is the average; the training weights travel beside it, for resume
        assert a["ema"]["updates"] == b["ema"]["updates"] == 4 * 4
        for key, raw in a["ema"]["raw"].items():
            assert torch.equal(raw, b["ema"]["raw"][key]), key
        assert not torch.equal(a["ema"]["raw"]["encoder.0.weight"], a["model"]["encoder.0.weight"])
    assert [r["train_loss"] for r in a["history"]] == [r["train_loss"] for r in b["history"]]
    assert len(resumed.history) == 4


@pytest.mark.parametrize(("ema_decay", "crash"), [(0.0, 0), (0.9, 0), (0.0, 1), (0.9, 1)])
def test_resume_between_validations_equals_an_uninterrupted_run(tmp_path: Path, ema_decay: float, crash: int) -> None:
    # val_interval 3 over 5 epochs validates epochs 2 and 4. A crash after epoch 0 or 1 resumes from an unvalidated
    # epoch's checkpoint (with EMA: saved as validated epochs save it), and the next epoch must stay unvalidated
    # (precise BN's extra forward passes would change the statistics and the RNG stream)
    cfg = CFG.model_copy(update={"epochs": 5, "val_interval": 3, "precise_bn": 2, "ema_decay": ema_decay})
    full = _trainer(tmp_path / "a", cfg).fit(*_loaders())
    with pytest.raises(Crash):
        _trainer(tmp_path / "b", cfg, on_epoch_end=crash_after(crash)).fit(*_loaders())
    assert load_checkpoint(tmp_path / "b" / "last.pt")["epoch"] == crash
    torch.manual_seed(999)
    resumed = _trainer(tmp_path / "b", cfg).fit(*_loaders(), resume=True)
    assert [int(r["epoch"]) for r in resumed.history if "val_count" in r] == [2, 4]
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]


def test_weight_average_is_scored_and_saved(tmp_path: Path) -> None:
    """ema_decay: checkpoints hold the running average of the weights, which still solves the task."""
    from vt_models.train.ema import WeightAverage

    model = nn.Linear(2, 1)
    start = model.weight.detach().clone()
    ema = WeightAverage(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update()  # the first update's decay is min(0.5, 2/11): the average moves 9/11 of the way
    with ema.applied():
        averaged = model.weight.detach().clone()
    assert torch.equal(model.weight, torch.ones_like(start))  # the training weights come back
    assert torch.allclose(averaged, 2 / 11 * start + 9 / 11)
    result = _trainer(tmp_path, CFG.model_copy(update={"epochs": 10, "lr": 1e-2, "ema_decay": 0.9})).fit(*_loaders())
    assert result.best_score >= 0.9


def test_non_finite_loss_names_the_step(tmp_path: Path) -> None:
    data = _clips(12)
    data.tensors[0][6] = float("nan")  # the 2nd batch of an unshuffled loader
    loader = DataLoader(data, batch_size=4)
    with pytest.raises(NonFiniteError, match=r"loss became nan at epoch 1, step 2 \(global step 1\).*lower train.lr"):
        _trainer(tmp_path).fit(loader, loader)


def test_early_stopping(tmp_path: Path) -> None:
    cfg = CFG.model_copy(
        update={"epochs": 30, "early_stopping_patience": 2, "lr": 1e-9, "warmup_epochs": 0, "min_val_videos": 8}
    )
    result = _trainer(tmp_path, cfg).fit(*_loaders())
    assert result.stopped_early and len(result.history) < 30 and result.selected


def test_small_validation_split_trains_the_fixed_schedule_and_keeps_the_last_epoch(tmp_path: Path, caplog) -> None:
    # 8 validation clips < min_val_videos: neither early stopping nor best-epoch picking on noise
    cfg = CFG.model_copy(
        update={"epochs": 5, "early_stopping_patience": 1, "lr": 1e-9, "warmup_epochs": 0, "min_val_videos": 9}
    )
    with caplog.at_level("INFO", logger="vt_models.train.engine"):
        result = _trainer(tmp_path, cfg).fit(*_loaders())
    assert not result.stopped_early and len(result.history) == 5
    assert result.best_epoch == 4 and not result.selected
    assert load_checkpoint(result.best_path)["epoch"] == 4
    assert "fixed schedule of 5 epochs" in caplog.text
    # each validated epoch is saved, none of them called "best": nothing was compared
    assert "(saved: fixed schedule)" in caplog.text and "(best)" not in caplog.text
    from types import SimpleNamespace

    from vt_models.cli.app import fit_line

    summary = SimpleNamespace(result=result, best_score=0.5, best_path="b.pt")
    line = fit_line("train tiny", "macro-F1", summary)
    assert line.startswith("train tiny: val macro-F1 0.5000 at epoch 5, the last (a fixed schedule")
    adapted = fit_line("train tiny", "macro-F1", summary, " on x")
    assert adapted.startswith("train tiny: val macro-F1 0.5000 on x at epoch 5")


def test_fixed_schedule_validates_every_val_interval_epochs_plus_the_last(tmp_path: Path, caplog) -> None:
    cfg = CFG.model_copy(update={"epochs": 7, "val_interval": 3, "min_val_videos": 9, "precise_bn": 2})
    with caplog.at_level("INFO", logger="vt_models.train.engine"):
        result = _trainer(tmp_path, cfg).fit(*_loaders())
    validated = [int(r["epoch"]) for r in result.history if "val_count" in r]
    assert validated == [2, 5, 6] and len(result.history) == 7
    assert "fixed schedule of 7 epochs" in caplog.text  # decided before training, from the validation split's size
    assert all("train_loss" in r for r in result.history)
    assert result.best_epoch == 6 and load_checkpoint(result.best_path)["epoch"] == 6
    assert load_checkpoint(result.last_path)["epoch"] == 6
    assert "(validation every 3 epochs)" in caplog.text
    # the CSV keeps one row per epoch; unvalidated epochs leave the val columns empty
    from vt_models.train.tracked import write_outputs

    meta = {"strategy": {"params_total": 1, "params_trainable": 1}, "backbone": "tiny"}
    _, history_csv, _ = write_outputs(tmp_path, result, meta)
    import csv

    rows = list(csv.DictReader(history_csv.open()))
    assert [r["val_macro_f1"] != "" for r in rows] == [e in validated for e in range(7)]
    assert all(r["train_loss"] != "" for r in rows)
    # best-epoch selection scores every epoch, whatever val_interval says
    picked = _trainer(tmp_path / "sel", cfg.model_copy(update={"min_val_videos": 8})).fit(*_loaders())
    assert all("val_count" in r for r in picked.history)


def test_precise_bn_replaces_stale_statistics_with_the_training_data_average(tmp_path: Path) -> None:
    from vt_models.train.norm import recalibrate_bn

    model = TinyNet()
    bn = model.encoder[1]
    bn.running_mean.fill_(5.0)  # "source-domain" statistics
    bn.running_var.fill_(9.0)
    data = _clips(16)
    loader = DataLoader(data, batch_size=4)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    used = recalibrate_bn(model, ClassificationTask(2), loader, torch.device("cpu"), batches=100)
    assert used == 4
    # the cumulative average over the 4 batches of the per-batch means of the first conv's output
    with torch.no_grad():
        feats = model.encoder[0](data.tensors[0])
    per_batch = feats.reshape(4, 4, 8, -1).transpose(1, 2).reshape(4, 8, -1).mean(-1)
    assert torch.allclose(bn.running_mean, per_batch.mean(0), atol=1e-5)
    assert bn.momentum == 0.1  # restored
    for k, v in model.state_dict().items():
        if k in weights:
            assert torch.equal(v, weights[k]), k  # no weight changed


@pytest.mark.parametrize("strategy", ["linear_probe", "partial"])
def test_frozen_parameters_and_bn_statistics_stay_unchanged(tmp_path: Path, strategy: str) -> None:
    model, _ = build_backbone("resnet18", "none", num_classes=2, dropout=0.0)
    summary = apply_strategy(model, strategy, unfreeze_stages=1)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("head.", "encoder.layer4."))}
    trainable_before = model.encoder.layer4[0].conv1.weight.clone()
    assert summary["params_trainable"] < summary["params_total"]
    data = TensorDataset(torch.randn(8, 3, 2, 32, 32), torch.arange(8) % 2)
    cfg = CFG.model_copy(update={"epochs": 1, "strategy": strategy, "crop_size": 32})
    Trainer(model, ClassificationTask(2), cfg, tmp_path, {}, progress=False).fit(
        DataLoader(data, batch_size=4), DataLoader(data, batch_size=4)
    )
    after = {k: v.cpu() for k, v in model.state_dict().items()}  # the fit moved the model to CUDA where there is one
    changed = [k for k, v in frozen.items() if not torch.equal(v, after[k])]
    assert not changed, f"frozen tensors changed: {changed[:5]}"
    moved = not torch.equal(trainable_before, model.encoder.layer4[0].conv1.weight.detach().cpu())
    assert moved == (strategy == "partial")


def test_lp_ft_trains_the_head_first_then_the_encoder(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """head_epochs: the encoder's weights and BatchNorm statistics stay as loaded while the head learns."""
    model = TinyNet()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    snapshots: list[dict[str, torch.Tensor]] = []
    cfg = CFG.model_copy(update={"epochs": 3, "head_epochs": 2, "precise_bn": 0})
    trainer = _trainer(tmp_path, cfg, model)
    trainer.on_epoch_end = lambda epoch, row: snapshots.append(
        {k: v.cpu().clone() for k, v in model.state_dict().items()}
    )
    with caplog.at_level("INFO", logger="vt_models.train.engine"):
        trainer.fit(*_loaders())
    assert "epochs 1-2 train the head only" in caplog.text
    encoder = [k for k in start if k.startswith("encoder.")]
    assert any("running_mean" in k for k in encoder)
    for epoch in (0, 1):
        assert all(torch.equal(start[k], snapshots[epoch][k]) for k in encoder), epoch
        assert not torch.equal(start["head.1.weight"], snapshots[epoch]["head.1.weight"])
    moved = [k for k in encoder if not torch.equal(start[k], snapshots[2][k])]
    assert "encoder.0.weight" in moved and "encoder.1.running_mean" in moved


def test_strategy_errors_and_freeze_bn() -> None:
    model, _ = build_backbone("resnet18", "none", num_classes=2)
    with pytest.raises(ValueError, match="has 5 stages"):
        apply_strategy(model, "partial", unfreeze_stages=9)
    apply_strategy(model, "full", freeze_bn=True)
    assert not model.encoder.bn1.weight.requires_grad and model.encoder.conv1.weight.requires_grad
    rnn, _ = build_backbone("resnet18_lstm", "none", num_classes=2)
    apply_strategy(rnn, "linear_probe")
    assert all(p.requires_grad for p in rnn.temporal.parameters())
    assert not any(p.requires_grad for p in rnn.encoder.parameters())


def test_discriminative_lr_and_no_decay_groups() -> None:
    model, _ = build_backbone("resnet18", "none", num_classes=2)
    groups = {g["name"]: g for g in param_groups(model, TrainConfig(lr=0.01, backbone_lr_mult=0.1, weight_decay=0.05))}
    assert groups["encoder"]["lr"] == pytest.approx(0.001) and groups["head"]["lr"] == 0.01
    assert groups["encoder_no_decay"]["weight_decay"] == 0.0 and groups["encoder"]["weight_decay"] == 0.05


def test_warmup_then_cosine() -> None:
    f = warmup_cosine(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.01) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.505, abs=1e-3) and f(100) == pytest.approx(0.01)
    values = [f(s) for s in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))


def test_class_weights_like_sklearn_balanced() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    labels = [0, 0, 0, 1, 2, 2]
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert np.allclose(class_weights(labels, 3).numpy(), expected)


def test_the_resume_hint_names_the_folder_a_run_was_trained_into() -> None:
    from vt_models.train.tracked import resume_hint

    assert resume_hint("train", "r18") == "`vt train -b r18 --resume`"
    assert resume_hint("train", "r18", Path("models/train/r18")) == "`vt train -b r18 --resume`"
    assert resume_hint("pretrain", "r18", Path("runs/ae")) == "`vt pretrain -b r18 --out runs/ae --resume`"
    assert resume_hint("detect", "scenes", Path("elsewhere")) == "`vt detect train -d scenes --resume`"

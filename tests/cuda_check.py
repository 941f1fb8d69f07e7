"""CUDA paths of the training engine, for a machine with a GPU: ``python3 tests/cuda_check.py`` (exit 1 on a failure).

Classifiers of each family (2D TSM, CNN+RNN, 3D) and detectors train on tiny synthetic data under bf16 and fp16
autocast; checkpoints saved from the GPU load on the CPU (weights only) and score the same clips as the GPU model
(max |logit difference| printed; for detectors, the top box of each validation image). Issue 12's paths run there
too: autoencoder pretraining (2D and 3D; the CPU model rebuilds the same clip) and domain adaptation (DANN, MMD,
CORAL with BSS and L2-SP; alignment loss and label-free scores finite, the classifier still learns). Not collected by
pytest (CI has no GPU); tests/test_train.py also runs on a GPU. ``python3 tests/cuda_check.py NAME ...`` checks
only those models.
"""

import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from vt_models.classify.task import ClassificationTask
from vt_models.config import LoopConfig, PretrainConfig, TrainConfig
from vt_models.detect.data import collate
from vt_models.detect.task import DetectionTask
from vt_models.models.builder import build_backbone
from vt_models.models.checkpoint import load_checkpoint
from vt_models.models.detectors import build_detector
from vt_models.train.engine import TargetStream, Trainer
from vt_models.train.objective import FeatureObjective
from vt_models.train.reconstruction import ReconstructionTask, attach_decoder
from vt_models.train.runtime import seed_everything

assert torch.cuda.is_available(), "no CUDA here"
print("torch", torch.__version__, torch.cuda.get_device_name(0), "bf16", torch.cuda.is_bf16_supported(), flush=True)
failures = []
only = set(sys.argv[1:])  # model names to check; none given: all


def clips(n, classes=3, c=3, t=8, s=64):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, t, s, s, generator=g) * 0.1
    y = torch.arange(n) % classes
    for i in range(n):  # a bright column moving left, right or standing still
        for k in range(t):
            col = [4 + 6 * k, s - 5 - 6 * k, s // 2][int(y[i])]
            x[i, :, k, :, max(0, min(s - 1, col))] += 2.0
    return TensorDataset(x, y)


@contextmanager
def fitted(name, amp, model, task, c, objective=None, target=None, **train):
    """Fit ``model`` on the moving-column clips on the GPU (6 epochs, seed 0, in a temporary folder that lasts as
    long as the block, so its checkpoints can be loaded): yields the trainer, the fit's result and its seconds."""
    cfg = TrainConfig(epochs=6, batch_size=8, lr=3e-3, warmup_epochs=0.5, num_workers=0, amp=amp, **train)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(model, task, cfg, Path(tmp), {"backbone": name}, seed=0, progress=False, objective=objective)
        assert tr.device.type == "cuda", tr.device
        t0 = time.time()
        loaders = DataLoader(clips(48, c=c), batch_size=8, shuffle=True), DataLoader(clips(24, c=c), batch_size=8)
        res = tr.fit(*loaders, target=target)
        yield tr, res, time.time() - t0


def check_classifier(name, amp, modality="rgb", c=3):
    seed_everything(0)
    model, _ = build_backbone(name, "none", 3, modality=modality, crop_size=64, dropout=0.0)
    with fitted(name, amp, model, ClassificationTask(3), c) as (tr, res, dt):
        ck = load_checkpoint(res.best_path)
        cpu, _ = build_backbone(name, "none", 3, modality=modality, crop_size=64, dropout=0.0)
        cpu.load_state_dict(ck["model"])
        x = clips(8, c=c).tensors[0]
        cpu.eval()
        gpu = tr.model.eval()
        with torch.no_grad():
            a = cpu(x)
            b = gpu(x.cuda()).float().cpu()
        diff = (a - b).abs().max().item()
    last = res.history[-1]
    print(
        f"{name:28s} amp={amp:5s} dtype={tr.dtype} {dt:5.1f}s best={res.best_score:.3f} "
        f"loss={last.get('train_loss', float('nan')):.3f} cpu/gpu max|diff|={diff:.2e}",
        flush=True,
    )
    # the small net must learn; for the others the path must run (a non-finite loss already raises in the engine)
    learns = res.best_score > 0.6 or name != "mini_resnet_tsm"
    if not (learns and diff < 5e-2):
        failures.append(f"{name} {amp}: best {res.best_score:.3f}, diff {diff:.2e}")


def check_autoencoder(name, amp, modality, c):
    """The product's denoising reconstruction (``pretrain``'s defaults: tube mask, camera motion for flow, temporal
    dropout; its corruptions drawn on the CPU, applied on the GPU) trains on the GPU; the checkpoint (encoder +
    decoder) rebuilds the same clip on the CPU."""
    seed_everything(0)
    model, _ = build_backbone(name, "none", 1, modality=modality, crop_size=64, dropout=0.0)
    attach_decoder(model, c, 8)
    pc = PretrainConfig()
    camera = pc.camera_noise if modality == "flow" else 0.0
    task = ReconstructionTask(pc.mask_ratio, 0, pc.keep_frames, camera, pc.recon_steps)
    with fitted(name, amp, model, task, c) as (tr, res, dt):
        cpu, _ = build_backbone(name, "none", 1, modality=modality, crop_size=64, dropout=0.0)
        attach_decoder(cpu, c, 8)
        cpu.load_state_dict(load_checkpoint(res.best_path)["model"])  # strict: encoder, head and decoder
        x = clips(8, c=c).tensors[0]
        gpu = tr.model.eval()
        with torch.no_grad():
            cpu.eval().features(x)
            a = cpu.decoder(len(x), x.shape[2], pc.recon_steps)
            gpu.features(x.cuda())
            b = gpu.decoder(len(x), x.shape[2], pc.recon_steps).float().cpu()
        diff = (a - b).abs().max().item()
    first, last = res.history[0], res.history[-1]
    print(
        f"{name + ' autoencoder':28s} amp={amp:5s} dtype={tr.dtype} {dt:5.1f}s val R^2={res.best_score:.3f} "
        f"loss {first['train_loss']:.3f} -> {last['train_loss']:.3f} cpu/gpu max|diff|={diff:.2e}",
        flush=True,
    )
    # the loss must fall (val R^2 of these near-constant synthetic clips says little: their variance is tiny)
    if not (last["train_loss"] < 0.5 * first["train_loss"] and diff < 5e-2):
        failures.append(
            f"{name} autoencoder {amp}: loss {first['train_loss']:.3f} -> {last['train_loss']:.3f}, diff {diff:.2e}"
        )


def check_adaptation(name, amp, method, modality, c):
    """Domain alignment (with BSS and L2-SP) on the GPU: its parts are finite, the label-free scores are
    recorded and the classifier still learns the labelled source."""
    seed_everything(0)
    model, _ = build_backbone(name, "none", 3, modality=modality, crop_size=64, dropout=0.0)
    objective = FeatureObjective(model.head[-1].in_features, method, 1.0, 10.0, bss=0.001)
    shifted = TensorDataset(clips(24, c=c).tensors[0] * 1.5 + 0.3, torch.full((24,), -1))  # another "domain"
    target = TargetStream(
        DataLoader(shifted, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(5)),
        DataLoader(shifted, batch_size=8),
    )
    with fitted(name, amp, model, ClassificationTask(3), c, objective, target, l2sp=0.01) as (tr, res, dt):
        pass
    last = res.history[-1]
    parts = {k: last.get(k, float("nan")) for k in ("train_align_loss", "train_bss", "train_l2sp", "target_im")}
    print(
        f"{name + ' ' + method:28s} amp={amp:5s} dtype={tr.dtype} {dt:5.1f}s best={res.best_score:.3f} "
        + " ".join(f"{k}={v:.3g}" for k, v in parts.items()),
        flush=True,
    )
    finite = all(torch.isfinite(torch.tensor(v)) for v in parts.values())
    # as for plain training, only the small net must learn: DANN on resnet18_gru reached val 0.556 in two of six
    # runs (fp32 / bf16 / fp16, seeds 0 and 1; adversarial training varies by seed), the path itself runs
    learns = res.best_score > 0.6 or name != "mini_resnet_tsm"
    if not (finite and learns):
        failures.append(f"{name} {method} {amp}: best {res.best_score:.3f}, parts {parts}")


class Boxes(Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        img = torch.rand(3, 96, 128, generator=g) * 0.2
        x, y = int(torch.randint(0, 80, (1,), generator=g)), int(torch.randint(0, 50, (1,), generator=g))
        img[:, y : y + 40, x : x + 40] = 0.9
        return (
            img,
            {"boxes": torch.tensor([[x, y, x + 40, y + 40]], dtype=torch.float32), "labels": torch.tensor([1])},
            i,
        )


def check_detector(name, amp):
    seed_everything(0)
    model = build_detector(name, "none", ["object"], trainable_backbone_layers=5, min_size=96, max_size=128)
    cfg = LoopConfig(epochs=8, batch_size=4, lr=2e-3, warmup_epochs=0.5, num_workers=0, amp=amp)
    with tempfile.TemporaryDirectory() as tmp:
        tr = Trainer(model, DetectionTask(["object"]), cfg, Path(tmp), {"detector": name}, seed=0, progress=False)
        assert tr.device.type == "cuda", tr.device
        t0 = time.time()
        res = tr.fit(
            DataLoader(Boxes(64), batch_size=4, shuffle=True, collate_fn=collate),
            DataLoader(Boxes(16), batch_size=4, collate_fn=collate),
        )
        cpu = build_detector(name, "none", ["object"], trainable_backbone_layers=5, min_size=96, max_size=128)
        cpu.load_state_dict(load_checkpoint(res.best_path)["model"])  # strict: every tensor of the GPU model
        images = [Boxes(16)[i][0] for i in range(4)]
        with torch.no_grad():
            a = cpu.eval()(images)
            b = tr.model.eval()([im.cuda() for im in images])
        # the top box of each image (boxes come sorted by score), where both models find one
        shift = max(
            (
                (x["boxes"][0] - y["boxes"][0].float().cpu()).abs().max().item()
                for x, y in zip(a, b, strict=True)
                if len(x["boxes"]) and len(y["boxes"])
            ),
            default=float("nan"),
        )
    print(
        f"{name:28s} amp={amp:5s} dtype={tr.dtype} {time.time() - t0:5.1f}s val mAP={res.best_score:.3f} "
        f"cpu/gpu top box max|diff|={shift:.2f} px",
        flush=True,
    )
    if (name.startswith("fcos") and not res.best_score > 0.3) or not shift < 2.0:
        failures.append(f"{name} {amp}: val mAP {res.best_score:.3f}, top box diff {shift:.2f} px")


def run(check, name, *args):
    """One case, unless NAME arguments leave it out; a failure is recorded and the next case runs."""
    if only and name not in only:
        return
    try:
        check(name, *args)
    except Exception as e:  # report every case, then fail
        failures.append(f"{check.__name__} {name} {args}: {type(e).__name__}: {e}")
        print("FAILED", check.__name__, name, args, repr(e)[:500], flush=True)


for case in [
    ("mini_resnet_tsm", "auto", "flow", 2),
    ("mini_resnet_tsm", "fp16", "flow", 2),
    ("resnet18_tsm", "auto", "rgb", 3),
    ("resnet18_gru", "auto", "rgb", 3),
    ("r2plus1d_18", "auto", "rgb", 3),
    ("r2plus1d_18", "fp16", "rgb", 3),
]:
    run(check_classifier, *case)
for case in [
    ("mini_resnet_tsm", "auto", "flow", 2),
    ("mini_resnet_tsm", "fp16", "flow", 2),
    ("r2plus1d_18", "auto", "rgb", 3),
]:
    run(check_autoencoder, *case)
for case in [
    ("mini_resnet_tsm", "auto", "dann", "flow", 2),
    ("mini_resnet_tsm", "fp16", "mmd", "flow", 2),
    ("mini_resnet_tsm", "auto", "coral", "flow", 2),
    ("resnet18_gru", "auto", "dann", "rgb", 3),
]:
    run(check_adaptation, *case)
for case in [
    ("fcos_mini_resnet_fpn", "auto"),
    ("fcos_mini_resnet_fpn", "fp16"),
    ("fasterrcnn_mobilenet_v3_large_320_fpn", "auto"),
]:
    run(check_detector, *case)
print("FAILURES:", failures if failures else "none")
sys.exit(1 if failures else 0)

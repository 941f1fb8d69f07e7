"""Evaluate a trained checkpoint on a split: clip- and video-level metrics, predictions, cost, and
"does it look at motion?" (the motion probes of :mod:`vt_models.classify.motion`).

Multi-clip testing: each video is seen as ``views`` evenly shifted clips; clip-level metrics score
every clip, video-level metrics average the clips' probabilities per video (what ships).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader

from vt_models.classify.data import ClipDataset, load_split_data, require_labels
from vt_models.classify.motion import PROBES, motion_probes
from vt_models.classify.predictions import prediction_columns, prediction_rows
from vt_models.classify.task import ClassificationTask, EmbeddingTask
from vt_models.data.extract import load_index
from vt_models.data.modality import CHANNELS
from vt_models.data.split import videos_digest
from vt_models.eval.cost import model_cost
from vt_models.eval.metrics import EvalReport, classification_metrics
from vt_models.io.files import file_md5, write_csv, write_json
from vt_models.models.builder import model_from_checkpoint
from vt_models.models.checkpoint import load_checkpoint
from vt_models.train.engine import predict
from vt_models.train.runtime import resolve_device, to_device

log = logging.getLogger(__name__)


def evaluate_records(
    ckpt: dict[str, Any],
    records: list[Any],
    views: int = 3,
    batch_size: int = 8,
    device: str = "auto",
    num_workers: int = 0,
    built: tuple[Any, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(video labels, video probabilities, clip probabilities) for records, with ``views`` clips each.

    ``built``: the (model, transforms) of ``ckpt`` when the caller already rebuilt them.
    """
    out = _predict_clips(ckpt, records, views, batch_size, device, num_workers, built, ClassificationTask)
    clip_probs = out["probs"]
    video_probs = clip_probs.reshape(len(records), views, -1).mean(axis=1)
    labels = np.asarray([r.label for r in records], np.int64)
    return labels, video_probs, clip_probs


def embed_records(
    ckpt: dict[str, Any], records: list[Any], views: int = 1, batch_size: int = 8, device: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """(video features, video probabilities) for records: the pooled features the head reads and its
    softmax, each averaged over ``views`` clips per video."""
    out = _predict_clips(ckpt, records, views, batch_size, device, 0, None, EmbeddingTask)
    return tuple(out[k].reshape(len(records), views, -1).mean(axis=1) for k in ("features", "probs"))  # type: ignore[return-value]


def _predict_clips(
    ckpt: dict[str, Any],
    records: list[Any],
    views: int,
    batch_size: int,
    device: str,
    num_workers: int,
    built: tuple[Any, Any] | None,
    task: type[ClassificationTask],
) -> dict[str, np.ndarray]:
    model, transforms = built or model_from_checkpoint(ckpt)
    dev = resolve_device(device)
    to_device(model, dev)
    ds = ClipDataset(records, transforms.eval, int(ckpt["clip_len"]), train=False, views=views)
    loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return predict(model, task(ckpt["num_classes"]), loader, dev)


def _confusion_png(cm: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * len(classes), 1.0 + 0.6 * len(classes)))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(
                j, i, int(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > cm.max() / 2 else "black"
            )
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate_checkpoint(
    checkpoint: Path | str,
    frames_dir: Path,
    splits_path: Path,
    out_dir: Path,
    split: str = "test",
    views: int = 3,
    device: str = "auto",
    measure_cost: bool = True,
    probes: bool = True,
    reverse_pairs: Sequence[Sequence[str]] | None = None,
    seed: int = 0,
) -> EvalReport:
    """Score ``checkpoint`` on ``split``; write metrics.json, predictions.csv, confusion matrix CSV/PNG.

    ``probes``: also score the motion probes (``motion_*`` metrics, a ``motion_warning`` when the model
    scores about as well without motion; per-video probe predictions as extra predictions.csv columns),
    reversed clips against labels swapped by ``reverse_pairs`` (default: ``evaluate.reverse_pairs``'s
    default), shuffled with ``seed``.
    """
    ckpt = load_checkpoint(checkpoint)
    data = load_split_data(frames_dir, splits_path)
    require_labels(
        data.classes,
        Path(splits_path).stem,
        "there is nothing to score against; `vt promote` decides on it label-free (registry.label_free_metric)",
    )
    if data.classes != list(ckpt["classes"]):
        raise ValueError(f"{checkpoint} was trained on classes {ckpt['classes']}, the split has {data.classes}")
    records = data.records[split]
    model, transforms = model_from_checkpoint(ckpt)  # once, for the scores and the cost
    labels, video_probs, clip_probs = evaluate_records(ckpt, records, views, device=device, built=(model, transforms))
    k = len(data.classes)
    top_k = tuple(x for x in (1, 5) if x <= k)
    video = classification_metrics(labels, video_probs.argmax(1), k, video_probs, top_k)
    clip = classification_metrics(np.repeat(labels, views), clip_probs.argmax(1), k, clip_probs, top_k)
    scalars = {key: v for key, v in video.items() if isinstance(v, float)}
    metrics: dict[str, Any] = {
        "split": split,
        "videos": len(records),
        "views": views,
        **scalars,
        **{f"clip_{key}": v for key, v in clip.items() if isinstance(v, float)},
        "per_class_f1": dict(zip(data.classes, video["per_class"]["f1"], strict=True)),
        "data_version": data.data_version,
        "checkpoint_md5": file_md5(Path(checkpoint)),  # which model these scores are of (the gate reuses them)
        "test_set": videos_digest(load_index(frames_dir), [r.path for r in records]),  # which videos, which content
    }
    probe_preds: dict[str, np.ndarray] = {}
    if probes:
        from vt_models.config import DEFAULT_REVERSE_PAIRS

        probe_metrics, probe_preds = motion_probes(
            model,
            transforms.eval,
            int(ckpt["clip_len"]),
            records,
            data.classes,
            video_probs.argmax(1),
            metrics["accuracy"],
            DEFAULT_REVERSE_PAIRS if reverse_pairs is None else reverse_pairs,
            resolve_device(device),
            seed,
        )
        metrics.update(probe_metrics)
    if measure_cost:
        shape = (
            CHANNELS[transforms.eval.modality],
            int(ckpt["clip_len"]),
            transforms.eval.crop_size,
            transforms.eval.crop_size,
        )
        metrics.update(model_cost(model, shape, resolve_device(device)))

    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "metrics.json", metrics)
    preds = prediction_rows([r.path for r in records], data.classes, labels, video_probs)
    probe_cols = [*(f"{p}_pred" for p in PROBES), "reversed_target"] if probe_preds else []
    for i, row in enumerate(preds):
        row.update({col: data.classes[int(probe_preds[col][i])] for col in probe_cols})
    write_csv(out_dir / "predictions.csv", preds, [*prediction_columns(data.classes), *probe_cols])
    cm = np.asarray(video["confusion_matrix"])
    write_csv(
        out_dir / "confusion_matrix.csv",
        [{"true": c, **{p: int(cm[i, j]) for j, p in enumerate(data.classes)}} for i, c in enumerate(data.classes)],
        ["true", *data.classes],
    )
    per_class = [
        {
            "class": c,
            "precision": video["per_class"]["precision"][i],
            "recall": video["per_class"]["recall"][i],
            "f1": video["per_class"]["f1"][i],
            "support": video["per_class"]["support"][i],
        }
        for i, c in enumerate(data.classes)
    ]
    write_csv(out_dir / "per_class.csv", per_class, ["class", "precision", "recall", "f1", "support"])
    _confusion_png(cm, data.classes, out_dir / "confusion_matrix.png", f"{ckpt['backbone']} ({split}, video level)")
    log.info(
        "evaluate %s on %s: accuracy %.3f, macro-F1 %.3f over %d videos",
        ckpt["backbone"],
        split,
        metrics["accuracy"],
        metrics["macro_f1"],
        len(records),
    )
    if probes:
        log.info(
            "evaluate %s motion probes (1 clip per video): static %.3f, reversed (swapped labels) %.3f, "
            "changed under reversal %.3f, shuffled %.3f; chance %.3f, majority %.3f",
            ckpt["backbone"],
            *(
                metrics[f"motion_{k}"]
                for k in (
                    "static_accuracy",
                    "reversed_accuracy",
                    "reversed_changed",
                    "shuffled_accuracy",
                    "chance",
                    "majority",
                )
            ),
        )
        if "motion_warning" in metrics:
            log.warning("evaluate %s: WARNING %s", ckpt["backbone"], metrics["motion_warning"])
    return EvalReport(out_dir, metrics, data.classes)

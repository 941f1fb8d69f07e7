"""What transfer learning buys: scratch vs linear probe vs full fine-tuning, at several data sizes.

All settings use one backbone and the same target test split. Training subsets are stratified
and nested (the 50% subset contains the 25% one), drawn reproducibly from the seed. Every row has a
bootstrap confidence interval over the test videos (:mod:`vt_models.eval.bootstrap`), so a gap between
two settings can be read against the noise of a small test split. Each setting trains the same
fixed schedule (``transfer.epochs``) and keeps its last epoch: the target's validation split is too
small to pick epochs on. With several ``transfer.seeds`` every setting runs once a seed (its own subsets and
initialisation), and ``summary.csv`` gives each setting's mean, std and range over the seeds and its gain over
scratch paired seed by seed: at a few videos a class one seed's test score moves by 0.1-0.3.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from vt_models.classify.data import VideoRecord, load_split_data, require_labels
from vt_models.classify.evaluate import evaluate_records
from vt_models.classify.runner import prepare_fit
from vt_models.config import Config
from vt_models.eval.bootstrap import classification_statistic, video_bootstrap
from vt_models.eval.metrics import classification_metrics
from vt_models.io.files import atomic_write_text, write_csv
from vt_models.models.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

SETTINGS = {
    # name: (weights, strategy)
    "scratch": ("none", "full"),
    "linear_probe": ("source", "linear_probe"),
    "full_finetune": ("source", "full"),
}
REPORT_DIR = Path("reports") / "transfer"


def stratified_subset(records: list[VideoRecord], fraction: float, seed: int) -> list[VideoRecord]:
    """At least one video per class; the same seed gives nested subsets for growing fractions."""
    rng = np.random.default_rng(seed)
    out = []
    for label in sorted({r.label for r in records}):
        recs = [r for r in records if r.label == label]
        order = rng.permutation(len(recs))
        out += [recs[i] for i in order[: max(1, math.ceil(fraction * len(recs)))]]
    return sorted(out, key=lambda r: r.path)


def test_scores(cfg: Config, ckpt: dict[str, Any], records: list[VideoRecord], device: str) -> dict[str, Any]:
    """A report row's test figures: multi-clip (``evaluate.views``) accuracy and macro-F1 with the bootstrap
    interval of macro-F1 over the videos (the registry's resamples and confidence)."""
    return scored_test(cfg, ckpt, records, device)[0]


def scored_test(
    cfg: Config, ckpt: dict[str, Any], records: list[VideoRecord], device: str
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """(:func:`test_scores`' figures, (labels, predicted classes) per test video): a report that compares two
    rows on the same videos resamples their predictions together."""
    labels, probs, _ = evaluate_records(ckpt, records, cfg.evaluate.views, device=device)
    classes = int(ckpt["num_classes"])
    m = classification_metrics(labels, probs.argmax(1), classes, probs)
    ci = video_bootstrap(
        classification_statistic(labels, probs.argmax(1), classes, "macro_f1"),
        len(labels),
        resamples=cfg.registry.bootstrap_resamples,
        confidence=cfg.registry.confidence,
        seed=cfg.seed,
    )
    figures = {
        "test_videos": len(labels),
        "test_accuracy": round(m["accuracy"], 4),
        "test_macro_f1": round(m["macro_f1"], 4),
        "ci_low": round(ci.low, 4),
        "ci_high": round(ci.high, 4),
    }
    return figures, (np.asarray(labels, np.int64), probs.argmax(1))


def source_model(cfg: Config, backbone: str, modality: str, progress: bool = True) -> str:
    """``source`` for the pretrain stage's own modality; else a source model of ``modality`` trained by this
    report (pretrain settings, same source data) under the report folder. It is trained on every run, never
    reused: a model from an earlier run may come from other source data or settings."""
    if modality == cfg.pretrain.modality:
        return "source"
    out = REPORT_DIR / "source" / f"{backbone}-{modality}"
    log.info(
        "transfer: pretraining a %s source model of %s (the pretrain stage's is %s)",
        modality,
        backbone,
        cfg.pretrain.modality,
    )
    src = load_split_data(cfg.frames_dir(cfg.pretrain.dataset), cfg.splits_path(cfg.pretrain.dataset))
    pc = cfg.pretrain.model_copy(update={"modality": modality, "weights": "none"})
    return str(
        prepare_fit(cfg, "pretrain", backbone, src, tc=pc)
        .run(out, cfg.seed, progress=progress, resume_state=False)
        .best_path
    )


def transfer_report(cfg: Config, progress: bool = True, track: bool = True) -> list[dict[str, Any]]:
    backbone = cfg.transfer.backbone
    data = load_split_data(cfg.frames_dir(cfg.train.dataset), cfg.splits_path(cfg.train.dataset))
    require_labels(data.classes, cfg.train.dataset, "the report trains on labelled subsets and scores the test split")
    test = data.records[cfg.evaluate.split]
    rows: list[dict[str, Any]] = []
    modalities = cfg.transfer.modalities or [cfg.train.modality]
    sources = {m: source_model(cfg, backbone, m, progress) for m in modalities}
    seeds = cfg.transfer.seeds or [cfg.seed]
    runs = [(m, f, s) for m in modalities for f in sorted(cfg.transfer.fractions) for s in seeds]
    for modality, fraction, seed in runs:
        # the seed draws the subset and seeds the model's init and the loaders: a report at seeds [N] is one at seed N
        scfg = cfg.model_copy(update={"seed": seed})
        subset = stratified_subset(data.records["train"], fraction, seed)
        for setting, (weights, strategy) in SETTINGS.items():
            tc = cfg.train.model_copy(
                update={
                    "weights": sources[modality] if weights == "source" else weights,
                    "strategy": strategy,
                    "early_stopping_patience": None,
                    "modality": modality,
                    "epochs": cfg.transfer.epochs or cfg.train.epochs,
                    "adapt": "none",  # the report compares supervised settings on target labels
                }
            )
            fit = prepare_fit(scfg, "train", backbone, data, tc=tc, train_records=subset)
            run_name = f"{modality}-{setting}-{fraction:g}" + (f"-seed{seed}" if len(seeds) > 1 else "")
            result = fit.run(REPORT_DIR / "runs" / run_name, seed, progress=progress, resume_state=False)
            scores = test_scores(scfg, load_checkpoint(result.last_path), test, tc.device)
            rows.append(
                {
                    "modality": tc.modality,
                    "setting": setting,
                    "fraction": fraction,
                    "seed": seed,
                    "train_videos": len(subset),
                    "weights": weights,
                    "strategy": strategy,
                    **scores,
                    "epochs": len(result.history),
                }
            )
            log.info(
                "transfer %s %s at %g of the data (%d videos, seed %d): test macro-F1 %.3f [%.3f, %.3f]",
                modality,
                setting,
                fraction,
                len(subset),
                seed,
                scores["test_macro_f1"],
                scores["ci_low"],
                scores["ci_high"],
            )
    columns = list(rows[0])
    conf = f"{cfg.registry.confidence:.0%}"
    summary = seed_summary(rows)
    write_csv(REPORT_DIR / "summary.csv", summary, list(summary[0]))
    extra = ""
    if len(seeds) > 1:
        extra = f"## Over seeds {', '.join(map(str, seeds))}\n\n{to_markdown(summary, list(summary[0]))}"
        for r in summary:
            log.info(
                "transfer %s %s at %g: test macro-F1 %.3f +- %.3f over %d seeds, gain over scratch %s",
                r["modality"],
                r["setting"],
                r["fraction"],
                r["mean_macro_f1"],
                r["std"],
                r["seeds"],
                "-" if r["gain_vs_scratch"] is None else f"{r['gain_vs_scratch']:+.3f}",
            )
    md = write_table(
        REPORT_DIR / "transfer",
        rows,
        f"# Transfer learning on `{cfg.train.dataset}` with {backbone} ({', '.join(modalities)})\n\n"
        f"ci_low / ci_high: {conf} bootstrap interval of the test macro-F1 over test videos.",
        extra,
    )
    if track:
        import mlflow

        from vt_models.io import mlflow as tracking

        with tracking.report_run(
            "vt-transfer",
            f"transfer-{backbone}",
            {"backbone": backbone, "data_version": data.data_version},
            {
                "backbone": backbone,
                "fractions": ",".join(f"{f:g}" for f in cfg.transfer.fractions),
                "seeds": ",".join(map(str, seeds)),
            },
        ):
            for r in summary:  # one seed: its own score; several: their mean (and std)
                step = int(round(100 * r["fraction"]))
                mlflow.log_metric(f"{r['modality']}_{r['setting']}_test_macro_f1", r["mean_macro_f1"], step=step)
                if len(seeds) > 1:
                    mlflow.log_metric(f"{r['modality']}_{r['setting']}_test_macro_f1_std", r["std"], step=step)
            mlflow.log_table(data={c: [r[c] for r in rows] for c in columns}, artifact_file="transfer.json")
            mlflow.log_artifact(str(md))
    return rows


def seed_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each (modality, fraction, setting) over the report's seeds: mean, sample std, min and max of the test
    macro-F1, and the gain over scratch paired seed by seed (both rows of a seed train on the same videos)."""
    groups: dict[tuple[str, float, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["modality"], r["fraction"], r["setting"]), []).append(r)
    scratch = {(r["modality"], r["fraction"], r["seed"]): r["test_macro_f1"] for r in rows if r["setting"] == "scratch"}
    out = []
    for (modality, fraction, setting), group in groups.items():
        gains = np.array([r["test_macro_f1"] - scratch[(modality, fraction, r["seed"])] for r in group])
        paired = setting != "scratch"
        out.append(
            {
                "modality": modality,
                "setting": setting,
                "fraction": fraction,
                "train_videos": group[0]["train_videos"],
                "seeds": len(group),
                **spread([r["test_macro_f1"] for r in group]),
                "gain_vs_scratch": round(float(gains.mean()), 4) if paired else None,
                "gain_min": round(float(gains.min()), 4) if paired else None,
                "gain_max": round(float(gains.max()), 4) if paired else None,
            }
        )
    return out


def spread(f1: list[float]) -> dict[str, float]:
    """A setting's test macro-F1 over seeds: ``mean_macro_f1``, sample ``std`` (0 for one seed), ``min``, ``max``."""
    a = np.asarray(f1, dtype=float)
    return {
        "mean_macro_f1": round(float(a.mean()), 4),
        "std": round(float(a.std(ddof=1)) if len(a) > 1 else 0.0, 4),
        "min": round(float(a.min()), 4),
        "max": round(float(a.max()), 4),
    }


def write_table(stem: Path, rows: list[dict[str, Any]], heading: str, extra: str = "") -> Path:
    """A report's rows as ``<stem>.csv`` and, under ``heading`` (and before ``extra``), ``<stem>.md``."""
    columns = list(rows[0])
    write_csv(stem.with_suffix(".csv"), rows, columns)
    tail = f"\n\n{extra}" if extra else ""
    return atomic_write_text(stem.with_suffix(".md"), f"{heading}\n\n{to_markdown(rows, columns)}{tail}\n")


def to_markdown(rows: list[dict[str, Any]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("-" if r[c] is None else str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines)

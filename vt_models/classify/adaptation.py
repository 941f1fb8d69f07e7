"""What unsupervised domain adaptation buys on the target domain, with the target's labels hidden.

On one backbone and the target's test split, the report compares:

- ``source_only``: the source model (the pretrain stage's) as it is;
- each method of ``adaptation.methods``: the ``train`` settings with ``adapt`` set to it, i.e. the source
  model trained further on the labelled source data beside the unlabelled target training videos;
- ``supervised``: the ``train`` settings with the target's labels (the ceiling adaptation aims at);
- with ``adaptation.autoencoder``: ``autoencoder``, an autoencoder pretrained on ``pretrain.dataset``'s
  training videos (labels unused, :mod:`vt_models.train.reconstruction`) then fine-tuned like
  ``supervised``, and ``scratch``, the same fine-tuning from random weights: what pretraining on
  unlabelled video buys when few target labels exist.

Every row has the test macro-F1 with a bootstrap interval over test videos, and the summary's differences
between two rows (``gap``: supervised over source-only; ``autoencoder_gain``: autoencoder over scratch) a paired
one (:func:`paired_intervals`). Every row also has the label-free scores
(:mod:`vt_models.eval.unsupervised`) of its model on every target video outside the test split (train and
val, labels hidden; ``evaluate.views`` clips each): IM, which picks the method (``im_pick``), SND, and for the
rows that never read a target label DEV (``dev_pick``: the lowest risk, recorded beside IM's). Either pick
can then be read against the method the hidden labels prefer.

With several ``adaptation.seeds`` every trained row runs once a seed (adversarial methods vary from seed to
seed; the autoencoder is pretrained once, at the first seed): the summary is then that of the settings' mean
scores (:func:`over_seeds`), each difference with its range over the seeds, and ``adaptation.md`` adds each
setting's mean, std and range.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from vt_models.classify.data import SplitData, VideoRecord, load_split_data, require_labels
from vt_models.classify.evaluate import embed_records
from vt_models.classify.runner import adaptation_data, prepare_fit, source_weights
from vt_models.classify.transfer import scored_test, spread, to_markdown, write_table
from vt_models.config import Config
from vt_models.eval.bootstrap import paired_difference
from vt_models.eval.unsupervised import deep_embedded_validation, label_free_scores
from vt_models.io.files import write_json
from vt_models.models.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

REPORT_DIR = Path("reports") / "adaptation"


def _score(
    cfg: Config,
    ckpt: dict[str, Any],
    test: list[VideoRecord],
    unlabelled: list[VideoRecord],
    labelled: SplitData | None = None,
) -> tuple[dict[str, Any], tuple[np.ndarray, np.ndarray]]:
    """(the test figures (:func:`vt_models.classify.transfer.test_scores`) and the label-free scores on
    ``unlabelled`` (``evaluate.views`` clips per video, as the test videos are scored; labels not read), with
    the ``labelled`` source data also DEV (``target_dev``) from the source's train and val videos; the test
    videos' (labels, predicted classes))."""
    device = cfg.train.device
    target_feats, target_probs = embed_records(ckpt, unlabelled, cfg.evaluate.views, device=device)
    free = label_free_scores(target_probs)
    figures, predictions = scored_test(cfg, ckpt, test, device)
    row = {
        **figures,
        "target_im": round(free["im"], 4),
        "target_snd": round(free["snd"], 4) if "snd" in free else None,  # SND needs two videos
        "target_dev": None,
    }
    if labelled is not None:
        source_train, _ = embed_records(ckpt, labelled.records["train"], 1, device=device)
        source_val, val_probs = embed_records(ckpt, labelled.records["val"], 1, device=device)
        labels = np.asarray([r.label for r in labelled.records["val"]], np.int64)
        losses = -np.log(np.clip(val_probs[np.arange(len(labels)), labels], 1e-12, 1.0))
        row["target_dev"] = round(deep_embedded_validation(source_train, source_val, losses, target_feats, cfg.seed), 4)
    return row, predictions


def _autoencoder(cfg: Config, progress: bool) -> str:
    """Pretrain the report's autoencoder on ``pretrain.dataset`` (in the target model's modality); its
    checkpoint path."""
    backbone, tc = cfg.adaptation.backbone, cfg.train
    pc = cfg.pretrain.model_copy(
        update={
            "objective": "autoencoder",
            "weights": "none",
            "epochs": cfg.adaptation.autoencoder_epochs or cfg.pretrain.epochs,
            **{k: getattr(tc, k) for k in ("modality", "flow_span", "flow_stabilise", "clip_len", "crop_size")},
        }
    )
    data = load_split_data(cfg.frames_dir(pc.dataset), cfg.splits_path(pc.dataset))
    result = prepare_fit(cfg, "pretrain", backbone, data, tc=pc).run(
        REPORT_DIR / "runs" / "autoencoder_pretrain", cfg.seed, progress=progress, resume_state=False
    )
    log.info("adaptation: autoencoder pretrained, val reconstruction R^2 %.3f", result.best_score)
    return str(result.best_path)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The gap between source-only and supervised, how much of it the best method closes, and the method
    the label-free score picks (and how far below the best it is)."""
    by = {r["setting"]: r for r in rows}
    methods = [r for r in rows if r["target_labels"] == "hidden"]
    source, supervised = by["source_only"]["test_macro_f1"], by["supervised"]["test_macro_f1"]
    best = max(methods, key=lambda r: r["test_macro_f1"])
    picked = max(methods, key=lambda r: r["target_im"])
    dev = [r for r in methods if r.get("target_dev") is not None]
    dev_pick = min(dev, key=lambda r: r["target_dev"]) if dev else None
    gap = supervised - source
    extra = {}
    if "autoencoder" in by and "scratch" in by:
        ae, scratch = by["autoencoder"]["test_macro_f1"], by["scratch"]["test_macro_f1"]
        extra = {"autoencoder_macro_f1": ae, "scratch_macro_f1": scratch, "autoencoder_gain": round(ae - scratch, 4)}
    return {
        "source_only_macro_f1": source,
        "supervised_macro_f1": supervised,
        "gap": round(gap, 4),
        "best_method": best["setting"],
        "best_method_macro_f1": best["test_macro_f1"],
        "gap_closed": round((best["test_macro_f1"] - source) / gap, 4) if gap > 0 else None,
        "dev_pick": dev_pick["setting"] if dev_pick else None,
        "dev_pick_macro_f1": dev_pick["test_macro_f1"] if dev_pick else None,
        "dev_pick_shortfall": round(best["test_macro_f1"] - dev_pick["test_macro_f1"], 4) if dev_pick else None,
        "im_pick": picked["setting"],
        "im_pick_macro_f1": picked["test_macro_f1"],
        "im_pick_shortfall": round(best["test_macro_f1"] - picked["test_macro_f1"], 4),
        **extra,
    }


# the summary's differences between two rows: (name, row, row it is measured against)
DIFFERENCES = (("gap", "supervised", "source_only"), ("autoencoder_gain", "autoencoder", "scratch"))


def paired_intervals(
    cfg: Config, predictions: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int
) -> dict[str, float]:
    """``<name>_ci_low`` / ``<name>_ci_high`` of each of :data:`DIFFERENCES` whose two rows were scored: the
    bootstrap interval of the difference in test macro-F1, the two rows' predictions of the same test videos
    resampled together (the registry's resamples and confidence)."""
    out: dict[str, float] = {}
    for name, a, b in DIFFERENCES:
        if a in predictions and b in predictions:
            labels, pred_a = predictions[a]
            ci = paired_difference(
                labels,
                pred_a,
                predictions[b][1],
                num_classes,
                "macro_f1",
                resamples=cfg.registry.bootstrap_resamples,
                confidence=cfg.registry.confidence,
                seed=cfg.seed,
            )
            out |= {f"{name}_ci_low": round(ci.low, 4), f"{name}_ci_high": round(ci.high, 4)}
    return out


def summary_at_seed(
    cfg: Config, rows: list[dict[str, Any]], predictions: dict[str, tuple[np.ndarray, np.ndarray]], num_classes: int
) -> dict[str, Any]:
    """One seed's summary (:func:`summarise`), each difference's paired interval beside it."""
    intervals = paired_intervals(cfg, predictions, num_classes)
    summary: dict[str, Any] = {}
    for key, value in summarise(rows).items():
        summary[key] = value
        summary |= {k: v for k, v in intervals.items() if k.rsplit("_ci_", 1)[0] == key}
    return summary


# the summary's figures that vary from seed to seed, each given with its range over the seeds
SPREAD = ("gap", "gap_closed", "im_pick_shortfall", "dev_pick_shortfall", "autoencoder_gain")
# IM's pick counts as a good one within this of the best method (the tolerance)
PICK_TOLERANCE = 0.05


def over_seeds(rows: list[dict[str, Any]], per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary over several seeds: :func:`summarise` of each setting's mean scores (test macro-F1, IM and
    DEV averaged over its seeds; source-only is one model), each of :data:`SPREAD` with its ``_min`` / ``_max``
    over the seeds' own summaries (``per_seed``, differences paired within a seed), each seed's IM pick and best
    method, and at how many seeds IM's pick was within :data:`PICK_TOLERANCE` of that seed's best."""
    means = []
    for setting in dict.fromkeys(r["setting"] for r in rows):
        group = [r for r in rows if r["setting"] == setting]
        mean: dict[str, Any] = {"setting": setting, "target_labels": group[0]["target_labels"]}
        for key in ("test_macro_f1", "target_im", "target_dev"):
            values = [r[key] for r in group if r.get(key) is not None]
            mean[key] = round(float(np.mean(values)), 4) if values else None
        means.append(mean)
    summary: dict[str, Any] = {"seeds": len(per_seed)}
    for key, value in summarise(means).items():
        summary[key] = value
        values = [s[key] for s in per_seed if s.get(key) is not None]
        if key in SPREAD and values:
            summary |= {f"{key}_min": min(values), f"{key}_max": max(values)}
    summary["best_methods"] = ",".join(s["best_method"] for s in per_seed)
    summary["im_picks"] = ",".join(s["im_pick"] for s in per_seed)
    summary["im_pick_good"] = sum(s["im_pick_shortfall"] <= PICK_TOLERANCE for s in per_seed)
    return summary


def setting_spread(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each trained setting's test macro-F1 over the seeds (:func:`vt_models.classify.transfer.spread`)."""
    out = []
    for setting in dict.fromkeys(r["setting"] for r in rows if r["seed"] is not None):
        f1 = [r["test_macro_f1"] for r in rows if r["setting"] == setting]
        out.append({"setting": setting, "seeds": len(f1), **spread(f1)})
    return out


def adaptation_report(cfg: Config, progress: bool = True, track: bool = True) -> dict[str, Any]:
    """Train and score every setting; write ``reports/adaptation/`` (csv, md, metrics.json)."""
    ac, backbone = cfg.adaptation, cfg.adaptation.backbone
    # every row trains toward adaptation.dataset: its labels hidden (the methods) or read (supervised)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"dataset": ac.dataset})})
    data = load_split_data(cfg.frames_dir(cfg.train.dataset), cfg.splits_path(cfg.train.dataset))
    require_labels(
        data.classes,
        cfg.train.dataset,
        f"the report scores every setting on its labelled {cfg.evaluate.split} split; adapt to it with "
        "`vt -S train.adapt=dann train` and let `vt promote` decide label-free",
    )
    test = data.records[cfg.evaluate.split]
    # the label-free scores read every target video but the test ones (labels hidden): more videos and views
    # steady them; IM on the 60 training videos alone had DANN and MMD within 0.02 at two seeds of three (README)
    unlabelled = [r for s, recs in data.records.items() if s != cfg.evaluate.split for r in recs]
    labelled = adaptation_data(cfg, cfg.train, data)  # the labelled source: DEV's validation videos
    source = source_weights(cfg, "train.weights", backbone, "source")
    first, source_predictions = _score(cfg, load_checkpoint(source), test, unlabelled, labelled)
    # source-only is the pretrain stage's model, trained at no seed of the report's
    source_row = {"setting": "source_only", "seed": None, "target_labels": "none", "epochs": 0, **first}
    seeds = ac.seeds or [cfg.seed]
    settings = [(m, "hidden", source) for m in ac.methods] + [("supervised", "train", source)]
    if ac.autoencoder:
        encoder = _autoencoder(cfg.model_copy(update={"seed": seeds[0]}), progress)
        settings += [("autoencoder", "train", encoder), ("scratch", "train", "none")]
    rows: list[dict[str, Any]] = [source_row]
    per_seed: list[dict[str, Any]] = []  # each seed's own summary
    for seed in seeds:
        scfg = cfg.model_copy(update={"seed": seed})
        predictions = {"source_only": source_predictions}  # per setting: the test videos' (labels, predicted classes)
        seed_rows = []
        for setting, target_labels, weights in settings:
            tc = cfg.train.model_copy(
                update={
                    "weights": weights,
                    "adapt": setting if target_labels == "hidden" else "none",
                    "epochs": ac.epochs or cfg.train.epochs,
                    # the ceiling trains exactly as the train stage does
                    "clips_per_video": (ac.clips_per_video if target_labels == "hidden" else None)
                    or cfg.train.clips_per_video,
                }
            )
            fit = prepare_fit(scfg, "train", backbone, data, tc=tc)
            run_dir = REPORT_DIR / "runs" / (setting + (f"-seed{seed}" if len(seeds) > 1 else ""))
            result = fit.run(run_dir, seed, progress=progress, resume_state=False)
            row = {"setting": setting, "seed": seed, "target_labels": target_labels, "epochs": len(result.history)}
            # DEV for the models that never read a target label, the ones a pick chooses among
            scored, predictions[setting] = _score(
                scfg,
                load_checkpoint(result.best_path),
                test,
                unlabelled,
                labelled if target_labels == "hidden" else None,
            )
            seed_rows.append({**row, **scored})
            log.info(
                "adaptation %s (seed %d): test macro-F1 %.3f, target IM %.3f, DEV %s",
                setting,
                seed,
                scored["test_macro_f1"],
                scored["target_im"],
                "-" if scored["target_dev"] is None else f"{scored['target_dev']:.3f}",
            )
        rows += seed_rows
        per_seed.append(summary_at_seed(scfg, [source_row, *seed_rows], predictions, len(data.classes)))
    summary = per_seed[0] if len(seeds) == 1 else over_seeds(rows, per_seed)
    summary["label_free_videos"] = len(unlabelled)
    write_json(REPORT_DIR / "metrics.json", summary)
    extra = to_markdown([summary], list(summary))
    if len(seeds) > 1:
        table = setting_spread(rows)
        extra += (
            f"\n\n## Over seeds {', '.join(map(str, seeds))}\n\n{to_markdown(table, list(table[0]))}"
            "\n\nThe summary above is that of these means; each difference's _min / _max is its range over the "
            "seeds, paired within a seed."
        )
    md = write_table(
        REPORT_DIR / "adaptation",
        rows,
        f"# Domain adaptation {cfg.train.adapt_source} -> {cfg.train.dataset} with {backbone}\n\n"
        f"target_labels: what of the target's labels training saw; ci_low / ci_high: "
        f"{cfg.registry.confidence:.0%} bootstrap interval of the test macro-F1; target_im / target_snd: "
        "label-free scores on the target's videos outside the test split (im picks the method); target_dev: DEV's "
        "risk (lower is better), the labelled source's val videos weighted toward the target. In the summary, "
        "gap_ci_* and autoencoder_gain_ci_*: the same interval of each difference, both rows' predictions of the "
        "test videos resampled together (paired).",
        extra,
    )
    if track:
        import mlflow

        from vt_models.io import mlflow as tracking

        with tracking.report_run(
            "vt-adaptation",
            f"adaptation-{backbone}",
            {"backbone": backbone, "data_version": data.data_version},
            {"backbone": backbone, **cfg.adaptation.model_dump(mode="json")},
        ):
            for r in rows:  # a row's step: its seed's place in adaptation.seeds (source-only: 0)
                mlflow.log_metrics(
                    {
                        f"{r['setting']}_{k}": r[k]
                        for k in ("test_macro_f1", "target_im", "target_snd", "target_dev")
                        if r.get(k) is not None
                    },
                    step=0 if r["seed"] is None else seeds.index(r["seed"]),
                )
            mlflow.log_metrics({k: v for k, v in summary.items() if isinstance(v, (int, float))})
            mlflow.log_artifact(str(md))
    return {"rows": rows, "summary": summary}

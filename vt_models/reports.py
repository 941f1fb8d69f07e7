"""Report rows and their rendering, one module for the CLI, the Prefect flows and the dashboard: training,
source, motion-probe and detection results from the DVC metrics files, and the gate's decision.

Each ``format_*`` builds its rows once and renders them as terminal text or, with ``markdown=True``, as
a Markdown table (the flows' summaries). Nothing here imports torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vt_models.config import Config


def format_training_table(cfg: Config, markdown: bool = False) -> str:
    """One row per backbone from the DVC metrics files: validation, test, CV, cost."""
    from vt_models.classify.cv import cv_dir

    load = _json_or_empty
    f = _num
    headers = (
        "backbone",
        "val F1",
        "test acc",
        "test recall",
        "test F1",
        "CV F1 (mean+/-std)",
        "params",
        "GFLOPs",
        "latency ms",
        "train s",
    )
    rows = []
    for name in cfg.train.backbones:
        tr, ev, cvm = (
            load(cfg.run_dir("train", name) / "metrics.json"),
            load(cfg.eval_dir(name) / "metrics.json"),
            load(cv_dir(name) / "metrics.json"),
        )
        cv_txt = f"{cvm['mean_macro_f1']:.3f} +/- {cvm['std_macro_f1']:.3f}" if "mean_macro_f1" in cvm else "-"
        rows.append(
            (
                name,
                f(tr, "val_macro_f1"),
                f(ev, "accuracy"),
                f(ev, "macro_recall"),
                f(ev, "macro_f1"),
                cv_txt,
                f"{tr['params_total'] / 1e6:.1f}M" if "params_total" in tr else "-",
                f(ev, "gflops_per_clip", "{:.2f}"),
                f(ev, "latency_ms", "{:.1f}"),
                f(tr, "train_seconds", "{:.0f}"),
            )
        )
    return render(headers, rows, markdown)


def format_source_table(cfg: Config, markdown: bool = False) -> str:
    """The source (pretraining) models on the source test split, with the static-clip probe; '' when not evaluated."""
    headers = ("backbone", "modality", "test videos", "test acc", "test F1", "static acc", "chance")
    rows = []
    for name in cfg.pretrain.backbones:
        ev = _json_or_empty(cfg.eval_dir(name, "pretrain") / "metrics.json")
        if ev:
            rows.append(
                (
                    name,
                    cfg.pretrain.modality,
                    ev.get("videos", "-"),
                    _num(ev, "accuracy"),
                    _num(ev, "macro_f1"),
                    _num(ev, "motion_static_accuracy"),
                    _num(ev, "motion_chance"),
                )
            )
    return render(headers, rows, markdown) if rows else ""


MOTION_KEYS = ("static_accuracy", "reversed_accuracy", "reversed_changed", "shuffled_accuracy", "chance", "majority")


def motion_summary(m: dict[str, Any]) -> str:
    """One line of motion-probe figures from an evaluation's metrics."""
    f = lambda key: _num(m, f"motion_{key}")  # noqa: E731
    return (
        f"does it look at motion? accuracy on static clips {f('static_accuracy')}, on reversed clips against swapped "
        f"labels {f('reversed_accuracy')} (prediction changed for {f('reversed_changed')} of videos), on shuffled "
        f"clips {f('shuffled_accuracy')}; chance {f('chance')}, majority class {f('majority')}"
    )


def format_motion_table(cfg: Config, markdown: bool = False) -> str:
    """One row per evaluated backbone with motion probes: test accuracy next to the probes' scores; '' when none."""
    headers = (
        "backbone",
        "test acc",
        "static acc",
        "reversed acc",
        "reversed changed",
        "shuffled acc",
        "chance",
        "majority",
        "warning",
    )
    rows, warnings = [], []
    for name in cfg.train.backbones:
        ev = _json_or_empty(cfg.eval_dir(name) / "metrics.json")
        if "motion_static_accuracy" in ev:
            rows.append(
                (
                    name,
                    _num(ev, "accuracy"),
                    *(_num(ev, f"motion_{k}") for k in MOTION_KEYS),
                    "reads scenery?" if ev.get("motion_warning") else "-",
                )
            )
        if ev.get("motion_warning"):
            warnings.append(f"WARNING {name}: {ev['motion_warning']}")
    return ("\n\n" if markdown else "\n").join([render(headers, rows, markdown), *warnings]) if rows else ""


def _json_or_empty(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _num(d: dict[str, Any], key: str, fmt: str = "{:.3f}") -> str:
    """A metric formatted for a table, ``-`` when that file or key is missing."""
    return fmt.format(d[key]) if key in d else "-"


def render(headers: tuple[str, ...], rows: list[tuple[Any, ...]], markdown: bool = False) -> str:
    return markdown_table(headers, rows) if markdown else text_table(headers, rows)


def markdown_table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    lines = [headers, tuple("---" for _ in headers), *rows]
    return "\n".join("| " + " | ".join(str(c) for c in r) + " |" for r in lines)


def text_table(headers: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    """Left-aligned columns, two spaces apart, for the terminal."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [headers, *rows]
    )


def format_detection_table(cfg: Config, markdown: bool = False) -> str:
    """One row per detector: test mAP, precision/recall, MOT with vs without tracking, speed, size."""
    headers = (
        "detector",
        "val mAP",
        "test mAP",
        "mAP@.5",
        "precision",
        "recall",
        "MOTA trk/raw",
        "IDF1 trk/raw",
        "HOTA trk/raw",
        "ms/frame",
        "params",
    )
    rows = []
    for name in cfg.detect.detectors:
        tr, ev = (
            _json_or_empty(cfg.run_dir("detect", name) / "metrics.json"),
            _json_or_empty(cfg.detect_eval_dir(name) / "metrics.json"),
        )
        f = _num
        rows.append(
            (
                name,
                f(tr, "val_map"),
                f(ev, "map"),
                f(ev, "map_50"),
                f(ev, "precision"),
                f(ev, "recall"),
                f"{f(ev, 'tracked_mota', '{:.2f}')}/{f(ev, 'untracked_mota', '{:.2f}')}",
                f"{f(ev, 'tracked_idf1', '{:.2f}')}/{f(ev, 'untracked_idf1', '{:.2f}')}",
                f"{f(ev, 'tracked_hota', '{:.2f}')}/{f(ev, 'untracked_hota', '{:.2f}')}",
                f(ev, "ms_per_frame", "{:.0f}"),
                f"{ev['params'] / 1e6:.1f}M" if "params" in ev else "-",
            )
        )
    return render(headers, rows, markdown)


def champion_after(decision: dict[str, Any]) -> str | None:
    """The champion version after a gate decision (``reports/*promotion.json`` or the registry's tags); None
    when the registry has none. A record from before the floor existed has no ``champion_after``: then the
    candidate when promoted, else the old champion."""
    if "champion_after" in decision:
        version = decision["champion_after"]
    elif str(decision.get("promoted")).lower() == "true":
        version = decision.get("candidate_version")
    else:
        version = decision.get("champion_version")
    return None if version in (None, "") else str(version)


def nothing_to_ship(decision: dict[str, Any] | None) -> str | None:
    """ "nothing to ship yet: <why>" when the last gate decision left the registry without a champion, else None."""
    from vt_models.promotion import NOTHING_TO_SHIP

    if not decision or champion_after(decision) is not None:
        return None
    reason = str(decision.get("reason") or "no model has been promoted")
    return reason if reason.startswith(NOTHING_TO_SHIP) else f"{NOTHING_TO_SHIP}: {reason}"


def format_decision(d: dict[str, Any]) -> str:
    """A gate decision in three lines: the candidate and what happened, the reason (said to be label-free
    when it was), what to ship."""
    from vt_models.promotion import LABEL_FREE, LABEL_FREE_DECISION

    said = f"{LABEL_FREE_DECISION}: " if d.get("basis") == LABEL_FREE else ""
    champ = champion_after(d)
    promoted = str(d.get("promoted")).lower() == "true"
    if promoted:
        state_txt = "promoted to champion"
    else:
        state_txt = "NOT promoted (" + ("no champion" if champ is None else "champion unchanged") + ")"
    head = f"candidate {d['model_name']} v{d['candidate_version']} ({d['candidate_backbone']}): {state_txt}"
    blocked = nothing_to_ship(d)
    if blocked is not None:
        return f"{head}\n  {said}{blocked}\n  ship: nothing (no `champion` alias in the registry)"
    return f"{head}\n  {said}{d['reason']}\n  ship: models:/{d['model_name']}@champion (version {champ})"


def format_promotion(path: Path = Path("reports") / "promotion.json") -> str:
    """The last gate decision for the summary: what to ship, or "nothing to ship yet" and why."""
    if not path.is_file():
        return f"no promotion decision yet ({path} missing)"
    return format_decision(json.loads(path.read_text()))

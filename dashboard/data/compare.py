"""The comparison of backbones: current runs, CV summaries, the backbone table, per-class F1, the Pareto front."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from dashboard.data.store import CMD_CV, CMD_DEMO, CMD_EVALUATE, CMD_PROMOTE, CMD_TRAIN, QUALITY

# --------------------------------------------------------------------------- the comparison


def _num(row: pd.Series, col: str) -> float:
    value = row.get(col, float("nan"))
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def current_runs(runs: pd.DataFrame, preferred: dict[str, str] | None = None) -> pd.DataFrame:
    """One top-level run per backbone: the one DVC tracks (``run.json``) if present, else the newest finished."""
    if runs.empty or "tags.backbone" not in runs:
        return runs.iloc[0:0]
    top = runs[runs["parent_run_id"].isna()] if "parent_run_id" in runs else runs
    top = top[top["tags.backbone"].notna()]
    preferred = preferred or {}
    picked = []
    for backbone, group in top.groupby("tags.backbone", sort=False):
        want = preferred.get(str(backbone))
        hit = group[group["run_id"] == want] if want else group.iloc[0:0]
        if hit.empty:
            finished = group[group["status"] == "FINISHED"]
            hit = (finished if not finished.empty else group).sort_values("start_time", ascending=False)
        picked.append(hit.iloc[0])
    return pd.DataFrame(picked).reset_index(drop=True)


def cv_summary(cv_runs: pd.DataFrame) -> pd.DataFrame:
    """Newest CV parent run per backbone (the one with ``mean_*`` metrics)."""
    if cv_runs.empty or "tags.backbone" not in cv_runs:
        return pd.DataFrame(columns=["backbone"])
    parents = cv_runs[cv_runs["parent_run_id"].isna()] if "parent_run_id" in cv_runs else cv_runs
    mean_cols = [c for c in parents.columns if c.startswith("metrics.mean_")]
    if not mean_cols:
        return pd.DataFrame(columns=["backbone"])
    parents = parents[parents[mean_cols].notna().any(axis=1)].sort_values("start_time", ascending=False)
    latest = parents.drop_duplicates("tags.backbone")
    out = latest.rename(columns={"tags.backbone": "backbone", "run_id": "cv_run_id"})
    keep = [
        "backbone",
        "cv_run_id",
        *[c for c in out.columns if c.startswith(("metrics.mean_", "metrics.std_", "metrics.folds"))],
    ]
    return out[keep].reset_index(drop=True)


def backbone_table(
    runs: pd.DataFrame,
    cv: pd.DataFrame,
    metric: str = "macro_f1",
    champion_run_id: str | None = None,
    preferred: dict[str, str] | None = None,
) -> pd.DataFrame:
    """One row per backbone: test quality, CV mean/std of ``metric``, cost, training time, data version."""
    rows = []
    cv_by = {r["backbone"]: r for _, r in cv.iterrows()} if not cv.empty else {}
    for _, r in current_runs(runs, preferred).iterrows():
        backbone = str(r["tags.backbone"])
        c = cv_by.get(backbone, pd.Series(dtype=object))
        params = _num(r, "metrics.test_params")
        if math.isnan(params):
            params = _num(r, "metrics.best_params_total")
        mean, std = _num(c, f"metrics.mean_{metric}"), _num(c, f"metrics.std_{metric}")
        rows.append(
            {
                "champion": bool(champion_run_id) and r["run_id"] == champion_run_id,
                "backbone": backbone,
                "family": r.get("tags.family", ""),
                **{m: _num(r, f"metrics.test_{m}") for m in QUALITY},
                "cv_mean": mean,
                "cv_std": std,
                "cv": "-" if math.isnan(mean) else f"{mean:.3f} ± {std:.3f}",
                "params_m": params / 1e6,
                "gflops": _num(r, "metrics.test_gflops_per_clip"),
                "latency_ms": _num(r, "metrics.test_latency_ms"),
                "train_s": _num(r, "metrics.best_train_seconds"),
                "val_macro_f1": _num(r, "metrics.best_val_macro_f1"),
                "data_version": r.get("tags.data_version", "") or "",
                "run_id": r["run_id"],
            }
        )
    return pd.DataFrame(rows)


def per_class_f1(runs: pd.DataFrame, preferred: dict[str, str] | None = None) -> pd.DataFrame:
    """Long form backbone, class, f1 from the ``test_f1_<class>`` metrics."""
    rows = []
    for _, r in current_runs(runs, preferred).iterrows():
        for col in r.index:
            if col.startswith("metrics.test_f1_") and not pd.isna(r[col]):
                rows.append(
                    {"backbone": r["tags.backbone"], "class": col.removeprefix("metrics.test_f1_"), "f1": float(r[col])}
                )
    return pd.DataFrame(rows, columns=["backbone", "class", "f1"])


def pareto_mask(cost: Sequence[float], value: Sequence[float]) -> list[bool]:
    """True where no other point is at least as cheap and as good, and strictly better in one."""
    pts = [(float(c), float(v)) for c, v in zip(cost, value, strict=True)]
    out = []
    for i, (ci, vi) in enumerate(pts):
        if math.isnan(ci) or math.isnan(vi):
            out.append(False)
            continue
        dominated = any(
            j != i and cj <= ci and vj >= vi and (cj < ci or vj > vi)
            for j, (cj, vj) in enumerate(pts)
            if not (math.isnan(cj) or math.isnan(vj))
        )
        out.append(not dominated)
    return out


def missing_steps(
    table: pd.DataFrame, cv: pd.DataFrame, champion: dict[str, Any] | None, blocked: str | None = None
) -> list[str]:
    """What the comparison lacks, each with the command that produces it (``blocked``: the gate ran and found
    nothing that qualifies, so "run vt promote" is not what is missing)."""
    gaps = []
    if table.empty:
        return [f"no training runs: run `{CMD_DEMO}` (or `{CMD_TRAIN}`)"]
    no_test = table.loc[table["accuracy"].isna(), "backbone"].tolist()
    if no_test:
        gaps.append(f"no test-split scores for {', '.join(no_test)}: run `{CMD_EVALUATE}`")
    no_cv = table.loc[table["cv_mean"].isna(), "backbone"].tolist()
    if no_cv:
        gaps.append(f"no cross-validation for {', '.join(no_cv)}: run `{CMD_CV}`")
    if champion is None and not blocked:
        gaps.append(f"no champion in the registry yet: run `{CMD_PROMOTE}`")
    return gaps

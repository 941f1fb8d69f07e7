"""Stratified, grouped train/val/test splits and k cross-validation folds.

A *group* is the recording a clip was cut from. Clips of one recording look alike, so a
group never spans two splits or two folds: otherwise test scores measure memory, not skill.
Groups are placed greedily, largest first: first so that every split gets every class, then
each into the split whose per-class quota is the most unfilled. The folds partition train+val;
the test split is never part of cross-validation.

Splits are *stable* across data versions: a group placed once keeps its split and fold in every
later version (read from the previous splits file), and only new groups are placed, into the
parts their classes need most. Otherwise adding two videos re-draws everything, old training
videos land in the new test split, and test scores of two data versions cannot be compared.
Re-drawing all groups happens only on request (``vt split --redraw``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vt_models.config import SplitConfig
from vt_models.io.files import write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class SplitError(ValueError):
    """The data cannot be split as asked; says which class is short and what to change."""


@dataclass(frozen=True)
class Item:
    path: str
    label: str
    group: str


def assign_groups(
    items: list[Item], fractions: dict[str, float], seed: int, fixed: dict[str, str] | None = None
) -> dict[str, str]:
    """Map every group to one part name, stratified by label. Groups in ``fixed`` keep their part;
    the others fill what the parts lack, given the fixed ones."""
    groups: dict[str, Counter[str]] = defaultdict(Counter)
    for it in items:
        groups[it.group][it.label] += 1
    totals: Counter[str] = Counter(it.label for it in items)
    rng = np.random.default_rng(seed)
    kept = {g: p for g, p in (fixed or {}).items() if g in groups and p in fractions}
    names = sorted(g for g in groups if g not in kept)
    shuffled = [names[i] for i in rng.permutation(len(names))]
    # Largest groups first (hardest to place); the shuffle breaks ties reproducibly.
    ordered = sorted(shuffled, key=lambda g: -sum(groups[g].values()))
    # Smallest parts first on ties, so each gets every class before the big one fills up.
    parts = sorted(fractions, key=lambda p: (fractions[p], p))
    filled: dict[str, Counter[str]] = {p: Counter() for p in parts}
    for g, p in kept.items():
        filled[p].update(groups[g])
    assignment: dict[str, str] = dict(kept)
    for g in ordered:

        def priority(p: str, counts: Counter[str] = groups[g]) -> tuple[int, float, int]:
            # First give each part a class it has none of; then fill the largest absolute deficit.
            lacking = sum(n for lab, n in counts.items() if filled[p][lab] == 0)
            deficit = sum(n * (fractions[p] * totals[lab] - filled[p][lab]) for lab, n in counts.items())
            return lacking, deficit, -parts.index(p)

        best = max(parts, key=priority)
        assignment[g] = best
        filled[best].update(groups[g])
    return assignment


def _require_groups(items: list[Item], needed: int, what: str) -> None:
    groups: dict[str, set[str]] = defaultdict(set)
    videos: Counter[str] = Counter()
    for it in items:
        groups[it.label].add(it.group)
        videos[it.label] += 1
    short = {lab: len(g) for lab, g in groups.items() if len(g) < needed}
    if short:
        detail = ", ".join(
            f"'{lab}' has {n} recording group(s) / {videos[lab]} video(s)" for lab, n in sorted(short.items())
        )
        raise SplitError(
            f"too few videos to split: {detail}; {what} needs at least {needed} groups per class. "
            f"Add videos for these classes, or lower split.k_folds / remove a split fraction in params.yaml."
        )


def previous_assignment(
    previous: dict[str, Any] | None, group_of: dict[str, str]
) -> tuple[dict[str, str], dict[str, str]]:
    """(group -> split, group -> fold) of an earlier splits result; files written before groups were
    recorded are read through their video paths (a video's group from the current index)."""
    if not previous:
        return {}, {}
    if "groups" in previous:
        return dict(previous["groups"]), {g: str(k) for g, k in previous.get("group_folds", {}).items()}
    parts: dict[str, str] = {}
    folds: dict[str, str] = {}
    for name, paths in previous.get("splits", {}).items():
        for p in paths:
            if p in group_of:
                parts.setdefault(group_of[p], name)
    for k, paths in enumerate(previous.get("folds", [])):
        for p in paths:
            if p in group_of:
                folds.setdefault(group_of[p], str(k))
    return parts, folds


def make_splits(
    items: list[Item], cfg: SplitConfig, seed: int, previous: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train/val/test lists and k folds over train+val, as written to ``splits.json``.

    With ``previous`` (an earlier result), every group it placed keeps its split and fold; only new
    groups are placed. Folds are re-drawn only when ``k_folds`` changed.
    """
    if not items:
        raise SplitError("no videos to split: the frames index is empty (check quarantine.csv)")
    if not any(it.label for it in items):
        return _unlabelled_splits(items, cfg, seed, previous)
    fractions = {"test": cfg.test_fraction, "val": cfg.val_fraction}
    fractions["train"] = 1.0 - cfg.test_fraction - cfg.val_fraction
    # test_fraction 0: no test split (a data set only pretrained on); its groups go to train and val
    parts = {name: f for name, f in fractions.items() if f > 0}
    _require_groups(items, len(parts), "a " + "/".join(p for p in SPLITS if p in parts) + " split")
    group_of = {it.path: it.group for it in items}
    kept_parts, kept_folds = previous_assignment(previous, group_of)
    if previous and len(previous.get("folds", [])) != cfg.k_folds:
        kept_folds = {}  # another k: the old folds do not fit, so they are drawn anew
    part_of = assign_groups(items, parts, seed, kept_parts)
    splits = {name: sorted(it.path for it in items if part_of[it.group] == name) for name in SPLITS}

    dev = [it for it in items if part_of[it.group] != "test"]
    _require_groups(dev, cfg.k_folds, f"{cfg.k_folds}-fold cross-validation on train+val")
    fold_of = assign_groups(dev, {f"{k}": 1.0 / cfg.k_folds for k in range(cfg.k_folds)}, seed + 1, kept_folds)
    folds = [sorted(it.path for it in dev if fold_of[it.group] == f"{k}") for k in range(cfg.k_folds)]

    label_of = {it.path: it.label for it in items}
    classes = sorted({it.label for it in items})
    counts = {name: dict(sorted(Counter(label_of[p] for p in paths).items())) for name, paths in splits.items()}
    for name, per_class in counts.items():
        missing = [c for c in classes if c not in per_class] if name in parts else []
        if missing:
            raise SplitError(
                f"split '{name}' got no video of class(es) {missing}: too few groups to stratify; "
                f"add videos or change split fractions in params.yaml"
            )
    kept = sum(1 for g in part_of if g in kept_parts)
    result = {
        "seed": seed,
        "fractions": {name: round(fractions[name], 6) for name in SPLITS},
        "classes": classes,
        "splits": splits,
        "folds": folds,
        "counts": counts,
        "fold_counts": [dict(sorted(Counter(label_of[p] for p in f).items())) for f in folds],
        # the record that keeps later data versions' splits stable (see the module docstring)
        "groups": dict(sorted(part_of.items())),
        "group_folds": {g: int(k) for g, k in sorted(fold_of.items())},
        "kept_groups": kept,
        "new_groups": len(part_of) - kept,
    }
    check_no_leakage(result, group_of)
    return result


def _unlabelled_splits(
    items: list[Item], cfg: SplitConfig, seed: int, previous: dict[str, Any] | None
) -> dict[str, Any]:
    """An unlabelled data set (``datasets.<name>.labelled: false``): train and val by groups, no test split and
    no folds (nothing to score or cross-validate without labels). Adaptation reads the train split as its
    target stream; the label-free gate scores the videos the candidate did not adapt on (val)."""
    group_of = {it.path: it.group for it in items}
    kept_parts, _ = previous_assignment(previous, group_of)
    n_groups = len(set(group_of.values()))
    fractions = {"train": 1.0 - cfg.val_fraction, "val": cfg.val_fraction} if n_groups > 1 else {"train": 1.0}
    part_of = assign_groups(items, fractions, seed, kept_parts)
    splits = {name: sorted(it.path for it in items if part_of[it.group] == name) for name in SPLITS}
    kept = sum(1 for g in part_of if g in kept_parts)
    result = {
        "seed": seed,
        "labelled": False,
        "fractions": {name: round(fractions.get(name, 0.0), 6) for name in SPLITS},
        "classes": [],
        "splits": splits,
        "folds": [],
        "counts": {name: {"(unlabelled)": len(paths)} for name, paths in splits.items()},
        "fold_counts": [],
        "groups": dict(sorted(part_of.items())),
        "group_folds": {},
        "kept_groups": kept,
        "new_groups": len(part_of) - kept,
    }
    check_no_leakage(result, group_of)
    return result


def check_no_leakage(result: dict[str, Any], group_of: dict[str, str]) -> None:
    """Raise if a group appears in two splits or two folds, or a video is in two places."""
    for kind, parts in (("split", result["splits"]), ("fold", dict(enumerate(result["folds"])))):
        owner: dict[str, Any] = {}
        seen: set[str] = set()
        for name, paths in parts.items():
            for p in paths:
                if p in seen:
                    raise AssertionError(f"video {p} is in two {kind}s")
                seen.add(p)
                g = group_of[p]
                if owner.setdefault(g, name) != name:
                    raise AssertionError(f"group {g} is in {kind}s {owner[g]} and {name}")


def split_dataset(
    index: dict[str, Any], out_path: Path | str, cfg: SplitConfig, seed: int, redraw: bool = False
) -> dict[str, Any]:
    """Split the videos of a frames index and write the result as JSON.

    An existing ``out_path`` is the previous data version's split: its groups keep their places
    (``redraw=True`` draws every group anew)."""
    out_path = Path(out_path)
    items = [Item(v["path"], v["label"], v["group"]) for v in index["videos"]]
    previous = None
    if out_path.is_file() and not redraw:
        try:
            previous = json.loads(out_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SplitError(
                f"{out_path} cannot be read ({exc}): delete it, or run `vt split --redraw` to draw all splits anew"
            ) from exc
    result = make_splits(items, cfg, seed, previous)
    if previous is not None:
        log.info(
            "split %s: %d recording group(s) keep their split from the previous version, %d new placed "
            "(`vt split --redraw` draws all anew)",
            out_path,
            result["kept_groups"],
            result["new_groups"],
        )
        if previous.get("fractions", result["fractions"]) != result["fractions"]:
            log.warning(
                "split %s: the split fractions changed (%s -> %s); groups already placed keep their split, "
                "new groups fill toward the new fractions (`vt split --redraw` applies them to all)",
                out_path,
                previous["fractions"],
                result["fractions"],
            )
        if len(previous.get("folds", [])) != cfg.k_folds:
            log.warning(
                "split %s: k_folds changed from %d to %d, so the folds were drawn anew",
                out_path,
                len(previous.get("folds", [])),
                cfg.k_folds,
            )
    write_json(out_path, result)
    return result


def format_counts(result: dict[str, Any]) -> str:
    """A small class-by-split table for the terminal."""
    classes = result["classes"] or list(result["counts"]["train"])  # unlabelled: one row, "(unlabelled)"
    width = max(len(c) for c in [*classes, "class"])
    cols = [*SPLITS, *(f"fold{k}" for k in range(len(result["folds"])))]
    data = {**result["counts"], **{f"fold{k}": c for k, c in enumerate(result["fold_counts"])}}
    lines = [f"{'class':<{width}}  " + "  ".join(f"{c:>6}" for c in cols)]
    for cls in classes:
        lines.append(f"{cls:<{width}}  " + "  ".join(f"{data[c].get(cls, 0):>6}" for c in cols))
    lines.append(f"{'total':<{width}}  " + "  ".join(f"{sum(data[c].values()):>6}" for c in cols))
    return "\n".join(lines)


# ----------------------------------------------------------------- what a model has seen

TRAINED_ON = "trained_on.json"  # next to a trained model's checkpoint, and an artifact of its MLflow run


def _hash_by_path(index: dict[str, Any]) -> dict[str, str]:
    """A frames index's ``{video path: md5 of the video file}``."""
    return {v["path"]: v["md5"] for v in index["videos"]}


def videos_digest(index: dict[str, Any], videos: list[str]) -> str:
    """One digest of which videos, with which content (their file md5s): two scorings with the same
    digest saw the same test videos, whatever ``dvc.lock`` says (it lags behind during a flow run)."""
    import hashlib

    md5 = _hash_by_path(index)
    return hashlib.md5("\n".join(f"{p}:{md5.get(p, '')}" for p in sorted(videos)).encode()).hexdigest()


def training_record(
    frames_dir: Path | str, splits_path: Path | str, parts: tuple[str, ...] = ("train", "val")
) -> dict[str, Any]:
    """The content hashes (md5 of the video file) of the videos a model trains and selects on.

    Hashes, not paths: a renamed or re-labelled file is still the same video. The promotion gate
    scores models only on test videos outside every record involved (see :func:`unseen_split`)."""
    from vt_models.data.extract import load_index

    md5 = _hash_by_path(load_index(frames_dir))
    splits = json.loads(Path(splits_path).read_text(encoding="utf-8"))["splits"]
    return {
        "splits_file": str(splits_path),
        **{p: sorted({md5[v] for v in splits.get(p, []) if v in md5}) for p in parts},
    }


def seen_hashes(record: dict[str, Any]) -> set[str]:
    """Every video hash in a training record, including those of the models it started from (``source``)."""
    seen = {h for key, value in record.items() if isinstance(value, list) for h in value}
    for value in record.values():
        if isinstance(value, dict):
            seen |= seen_hashes(value)
    return seen


def unseen_videos(index: dict[str, Any], videos: list[str], seen: set[str]) -> list[str]:
    """Those of ``videos`` whose hash (in the frames ``index``) is not in ``seen``, in their order."""
    md5 = _hash_by_path(index)
    return [p for p in videos if md5.get(p) not in seen]


def unseen_split(
    splits: dict[str, Any], index: dict[str, Any], split: str, seen: set[str]
) -> tuple[dict[str, Any], int]:
    """``splits`` with ``split`` (absent: empty) reduced to the videos whose hash is not in ``seen``; and how
    many were dropped."""
    videos = splits["splits"].get(split, [])
    keep = unseen_videos(index, videos, seen)
    return {**splits, "splits": {**splits["splits"], split: keep}}, len(videos) - len(keep)

from __future__ import annotations

from collections import Counter

import pytest

from vt_models.config import SplitConfig
from vt_models.data.split import Item, SplitError, check_no_leakage, format_counts, make_splits


def _items(classes: int = 3, groups_per_class: int = 6, clips: int = 2, uneven: bool = False) -> list[Item]:
    items = []
    for c in range(classes):
        for g in range(groups_per_class + (c if uneven else 0)):
            for k in range(clips + (g % 3 if uneven else 0)):
                items.append(Item(f"c{c}/c{c}_r{g:02d}_c{k:02d}.mp4", f"c{c}", f"c{c}_r{g:02d}"))
    return items


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("uneven", [False, True])
def test_splits_are_grouped_stratified_and_complete(seed: int, uneven: bool) -> None:
    items = _items(uneven=uneven)
    result = make_splits(items, SplitConfig(test_fraction=0.2, val_fraction=0.2, k_folds=3), seed)
    groups = {it.path: it.group for it in items}
    check_no_leakage(result, groups)
    split_of = {p: s for s, paths in result["splits"].items() for p in paths}
    assert set(split_of) == {it.path for it in items}, "every video in exactly one split"
    for g in {it.group for it in items}:
        assert len({split_of[p] for p in groups if groups[p] == g}) == 1
    for name, counts in result["counts"].items():
        assert set(counts) == {"c0", "c1", "c2"}, name
    # folds partition train+val, never touch test, and each has every class
    fold_paths = [p for f in result["folds"] for p in f]
    assert sorted(fold_paths) == sorted(result["splits"]["train"] + result["splits"]["val"])
    assert all(len(set(c)) == 3 for c in result["fold_counts"])
    # roughly the asked fractions
    n = len(items)
    assert abs(len(result["splits"]["test"]) / n - 0.2) < 0.12


def test_deterministic_for_a_seed_and_different_across_seeds() -> None:
    cfg = SplitConfig()
    a, b, c = (make_splits(_items(groups_per_class=8), cfg, s) for s in (1, 1, 2))
    assert a == b and a["splits"] != c["splits"]


def test_leakage_check_catches_a_shared_group() -> None:
    result = {"splits": {"train": ["x1"], "val": [], "test": ["x2"]}, "folds": [["x1"], []]}
    with pytest.raises(AssertionError, match="group g"):
        check_no_leakage(result, {"x1": "g", "x2": "g"})


def test_too_few_groups_fails_clearly() -> None:
    items = _items(groups_per_class=6)
    items = [it for it in items if not (it.label == "c1" and it.group > "c1_r01")]  # c1 keeps 2 groups
    with pytest.raises(SplitError, match=r"'c1' has 2 recording group\(s\) / 4 video\(s\).*at least 3"):
        make_splits(items, SplitConfig(), 0)
    with pytest.raises(SplitError, match="5-fold cross-validation"):
        make_splits(_items(groups_per_class=5), SplitConfig(k_folds=5), 0)
    with pytest.raises(SplitError, match="no videos"):
        make_splits([], SplitConfig(), 0)


def test_format_counts_table() -> None:
    result = make_splits(_items(), SplitConfig(), 0)
    table = format_counts(result)
    assert table.splitlines()[0].split() == ["class", "train", "val", "test", "fold0", "fold1", "fold2"]
    total = table.splitlines()[-1].split()
    assert total[0] == "total" and sum(map(int, total[1:4])) == len(_items())
    assert Counter(it.label for it in _items())["c0"] == sum(result["counts"][s]["c0"] for s in result["counts"])

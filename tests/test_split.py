from __future__ import annotations

from collections import Counter
from pathlib import Path

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


# ----------------------------------------------------------------- stable across data versions


def _where(result: dict) -> dict[str, str]:
    return {p: s for s, paths in result["splits"].items() for p in paths}


def _fold_where(result: dict) -> dict[str, int]:
    return {p: k for k, paths in enumerate(result["folds"]) for p in paths}


@pytest.mark.parametrize("seed", range(4))
def test_adding_videos_never_moves_an_old_video(seed: int) -> None:
    import random

    rng = random.Random(seed)
    cfg = SplitConfig(test_fraction=0.3, val_fraction=0.2, k_folds=3)
    items = _items(classes=4, groups_per_class=5, uneven=True)
    result = make_splits(items, cfg, 42)
    for version in range(4):  # several data versions, each adds new recordings and clips to old ones
        before, folds_before = _where(result), _fold_where(result)
        new = [
            Item(f"c{c}/c{c}_v{version}_r{g}_c{k}.mp4", f"c{c}", f"c{c}_v{version}_r{g}")
            for c in rng.sample(range(4), 2)
            for g in range(rng.randint(1, 4))
            for k in range(rng.randint(1, 3))
        ]
        old_group = rng.choice(items)  # a new clip of an old recording joins that recording's split
        new.append(Item(old_group.path.replace(".mp4", f"_extra{version}.mp4"), old_group.label, old_group.group))
        items = items + new
        result = make_splits(items, cfg, 42, previous=result)
        after, folds_after = _where(result), _fold_where(result)
        assert {p: after[p] for p in before} == before, "an old video changed split"
        assert {p: folds_after[p] for p in folds_before} == folds_before, "an old video changed fold"
        assert after[new[-1].path] == before[old_group.path]
        assert result["kept_groups"] == len({it.group for it in items}) - result["new_groups"]
        check_no_leakage(result, {it.path: it.group for it in items})
        for counts in result["counts"].values():
            assert len(counts) == 4, "every split keeps every class"


def test_new_groups_are_stratified() -> None:
    cfg = SplitConfig(test_fraction=0.25, val_fraction=0.25, k_folds=2)
    items = _items(classes=2, groups_per_class=8, clips=1)
    result = make_splits(items, cfg, 0)
    # a new class with 12 recordings, and 12 more recordings of c0: they go where those classes are short
    new = [Item(f"{c}/{c}_n{g}.mp4", c, f"{c}_n{g}") for c in ("c0", "c9") for g in range(12)]
    result = make_splits(items + new, cfg, 0, previous=result)
    for cls, total in (("c0", 20), ("c9", 12)):
        share = {s: result["counts"][s][cls] / total for s in ("train", "val", "test")}
        assert abs(share["test"] - 0.25) <= 0.1 and abs(share["val"] - 0.25) <= 0.1, (cls, share)


def test_removing_a_video_moves_no_other() -> None:
    cfg = SplitConfig()
    items = _items(classes=3, groups_per_class=7, clips=3)
    result = make_splits(items, cfg, 3)
    before, folds_before = _where(result), _fold_where(result)
    for gone in (items[0], items[10], items[-1]):
        items = [it for it in items if it != gone]
        result = make_splits(items, cfg, 3, previous=result)
        assert _where(result) == {p: before[p] for p in _where(result)}
        assert _fold_where(result) == {p: folds_before[p] for p in _fold_where(result)}
        assert gone.path not in _where(result) and result["new_groups"] == 0


def test_previous_files_without_group_records_and_a_new_k(tmp_path, caplog) -> None:
    from vt_models.data.split import split_dataset

    items = _items(classes=3, groups_per_class=7, clips=2)
    index = {"videos": [{"path": it.path, "label": it.label, "group": it.group} for it in items]}
    out = tmp_path / "splits.json"
    first = split_dataset(index, out, SplitConfig(), 1)
    # a file written before groups were recorded: read through its video paths
    import json

    old = {k: v for k, v in first.items() if k not in ("groups", "group_folds")}
    out.write_text(json.dumps(old))
    index["videos"].append({"path": "c0/c0_new_c0.mp4", "label": "c0", "group": "c0_new"})
    with caplog.at_level("INFO"):
        second = split_dataset(index, out, SplitConfig(), 1)
    assert "21 recording group(s) keep their split" in caplog.text and "1 new placed" in caplog.text
    assert {p: _where(second)[p] for p in _where(first)} == _where(first)
    assert {p: _fold_where(second)[p] for p in _fold_where(first)} == _fold_where(first)
    # another k: folds are drawn anew (and say so); splits stay
    third = split_dataset(index, out, SplitConfig(k_folds=2), 1)
    assert len(third["folds"]) == 2 and _where(third) == _where(second)
    assert "k_folds changed from 3 to 2" in caplog.text
    # --redraw: every group is drawn anew, as on a first split with that seed
    fresh = split_dataset(index, out, SplitConfig(), 7, redraw=True)
    assert (
        fresh["kept_groups"] == 0
        and fresh["splits"]
        == make_splits([Item(v["path"], v["label"], v["group"]) for v in index["videos"]], SplitConfig(), 7)["splits"]
    )


def test_a_data_set_can_have_its_own_fractions_and_no_test_split() -> None:
    cfg = SplitConfig(test_fraction=0.3, val_fraction=0.2, k_folds=2, datasets={"scenes": {"test_fraction": 0.0}})
    assert cfg.of("target") is cfg
    own = cfg.of("scenes")
    assert (own.test_fraction, own.val_fraction, own.k_folds, own.datasets) == (0.0, 0.2, 2, {})
    items = _items(groups_per_class=2)  # 2 groups a class: enough for train and val, not for a test split too
    with pytest.raises(SplitError, match="train/val/test split needs at least 3 groups"):
        make_splits(items, cfg, 0)
    result = make_splits(items, own, 0)
    assert result["splits"]["test"] == [] and result["counts"]["test"] == {}
    assert sorted(result["splits"]["train"] + result["splits"]["val"]) == sorted(it.path for it in items)
    assert all(set(result["counts"][p]) == {"c0", "c1", "c2"} for p in ("train", "val"))
    check_no_leakage(result, {it.path: it.group for it in items})
    # a data set split before with a test split: its test groups now train or validate
    before = make_splits(_items(groups_per_class=6), cfg, 0)
    after = make_splits(_items(groups_per_class=6), own, 0, previous=before)
    assert before["splits"]["test"] and after["splits"]["test"] == []
    assert set(before["splits"]["train"]) <= set(after["splits"]["train"])


def test_bad_per_data_set_fractions_fail_clearly(tmp_path: Path) -> None:
    from tests.project import write_params
    from vt_models.config import load_config

    with pytest.raises(ValueError, match=r"split.datasets.scenes: test_fraction \+ val_fraction must be < 1"):
        SplitConfig(datasets={"scenes": {"test_fraction": 0.5, "val_fraction": 0.5}})
    with pytest.raises(ValueError, match="val_fraction"):
        SplitConfig(datasets={"scenes": {"val_fraction": 0.0}})
    with pytest.raises(ValueError, match=r"split.datasets \['nope'\] are not data sets"):
        load_config(write_params(tmp_path), ["split.datasets={nope: {test_fraction: 0.0}}"])

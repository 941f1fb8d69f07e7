"""The model registry's promotion gate: ``champion`` only ever goes to a model that is good enough
and better than the one before.

The candidate is the trained backbone with the best *validation* score (choosing on test would
leak it). It is registered with alias ``challenger``, then both it and the current champion are
scored on the *same, current* test split (the champion is re-scored whenever the data or the scored
videos changed since its own decision, else its evidence is read back from that decision's tags),
restricted to the test videos that *neither* model has
seen: every trained model records the content hashes of its train and val videos
(``trained_on.json``, an artifact of its MLflow run), and a test video in either record is left out.
Otherwise a champion trained before a re-split would be scored partly on its own training videos.
With fewer than ``registry.min_unseen_test_videos`` unseen test videos the gate refuses to decide.

Every model must first clear an absolute floor on that split: the lower bound of a bootstrap
confidence interval of its metric over test videos must beat a baseline (classifiers: the majority
class of the train split predicted for every video; detectors: a detector that finds nothing, mAP
0), and its score must reach a configured minimum. A candidate that fails the floor stays a
challenger; a champion that fails it on re-scoring loses its alias. When nothing qualifies the
registry has no champion and the decision says "nothing to ship yet". Among qualifying models the
candidate takes ``champion`` only when it beats the champion by more than the margin. The decision
and its evidence are tags on the new version and a JSON record.

Without a labelled test split the classifier gate decides label-free (:class:`LabelFree`). Every video in
a frames index carries a label (its class folder, labels-CSV row or boxes; the probe quarantines a video
without one), so a test video is a labelled test video, and the target has no labelled test split exactly
when its splits file lists no video under the test split (empty or absent; ``vt split`` always fills it,
so such a file was written for a target with nothing to test on). Candidate and champion are then scored
with a label-free score (``registry.label_free_metric``: IM or SND, :mod:`vt_models.eval.unsupervised`) of
their predictions on the same target videos: those of any split that neither model trained on, or, with
fewer than ``registry.min_unseen_test_videos`` (or two) of those, the target's train split, seen in training
but its labels never read (pytorch-adapt's validators score the target's training data too). Without labels there
is no absolute floor, no baseline to beat: the only guard is that the candidate is not collapsed (its
predicted classes have entropy of at least ``registry.label_free_min_diversity`` x log K, so a model that
answers one class for everything is never shipped), and it must beat the champion by more than the
margin. A label-free decision never removes the champion's alias: no labels, no evidence that it is wrong.
Such a decision is marked: ``basis`` ``label_free`` (tag ``promotion.basis``; else ``labelled``), its
metric is the label-free one, and the log line and summary say "label-free decision (no labelled test
split)".

Every move of ``champion`` (by the gate, or by :func:`rollback_champion`) is recorded in the registry as an
``alias_move.*`` tag on the versions it involves; a rollback undoes the latest move not yet undone.

This module is the gate for any task; what a score is comes from the task
(:mod:`vt_models.classify.promote`, :mod:`vt_models.detect.steps`).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from vt_models.config import Config
from vt_models.eval.bootstrap import Interval
from vt_models.io.files import write_json
from vt_models.io.mlflow import AliasMove

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"
GATE, ROLLBACK = "gate", "rollback"  # what moved an alias, in its recorded history
NOTHING_TO_SHIP = "nothing to ship yet"
FIRST_CHAMPION = "first champion (the registry had none)"  # a promotion with no champion to beat
LABELLED, LABEL_FREE = "labelled", "label_free"  # what a decision rests on (``Decision.basis``)
LABEL_FREE_DECISION = "label-free decision (no labelled test split)"  # how logs and summaries mark one


class PromotionError(RuntimeError):
    """Promotion cannot run (nothing trained or evaluated yet); says what to run first."""


@dataclass(frozen=True)
class Evidence:
    """A model's score on the test split, and what the floor compares it with."""

    score: float
    data_version: str
    ci: Interval  # bootstrap CI of the score over the test videos
    baseline: float  # the same metric for the trivial model (majority class; a detector that finds nothing)
    baseline_rule: str  # what that trivial model is


def _num(x: float) -> str:
    """4 decimals; a tiny non-zero value (a detector's mAP of 2e-05) in scientific notation, so it never reads as 0."""
    return f"{x:.2e}" if x != 0 and abs(x) < 1e-3 else f"{x:.4f}"


@dataclass(frozen=True)
class Floor:
    """The absolute floor every champion must clear (``registry.*``, ``detect.min_map``)."""

    min_score: float
    min_test_videos: int
    min_unseen_videos: int = 1  # fewer test videos unseen by both models: no decision

    def check(self, metric: str, ev: Evidence) -> tuple[bool, str]:
        """(qualifies, why): the CI's lower bound beats the baseline and the score reaches the minimum."""
        ci = (
            f"{metric} {_num(ev.score)}, {ev.ci.confidence:.0%} CI [{_num(ev.ci.low)}, {_num(ev.ci.high)}] "
            f"over {ev.ci.videos} test videos"
        )
        base = f"baseline {_num(ev.baseline)} ({ev.baseline_rule})"
        fails = []
        if not ev.ci.low > ev.baseline:  # NaN fails too
            fails.append(f"CI lower bound {_num(ev.ci.low)} <= {base}")
        if not ev.score >= self.min_score:
            fails.append(f"{metric} {_num(ev.score)} < minimum {self.min_score:g}")
        if fails:
            return False, f"fails the floor ({ci}): {' and '.join(fails)}"
        return True, f"clears the floor ({ci}; lower bound > {base}; {metric} >= minimum {self.min_score:g})"

    def small(self, videos: int) -> bool:
        return videos < self.min_test_videos


@dataclass
class Decision:
    model_name: str
    promoted: bool
    reason: str
    metric: str
    margin: float
    candidate_backbone: str
    candidate_version: str
    candidate_score: float
    candidate_run_id: str
    champion_version: str | None  # the champion before this decision
    champion_score: float | None
    champion_run_id: str | None
    data_version: str
    # the floor
    candidate_qualifies: bool
    candidate_ci_low: float
    candidate_ci_high: float
    champion_qualifies: bool | None
    champion_ci_low: float | None
    champion_ci_high: float | None
    champion_removed: bool  # the old champion failed the floor: its alias was removed
    champion_after: str | None  # the version that is champion after this decision; None: nothing to ship
    baseline: float
    baseline_rule: str
    min_score: float
    confidence: float
    bootstrap_resamples: int
    test_videos: int  # scored: the test videos that neither model trained on
    min_test_videos: int
    small_test_set: bool
    split_videos: int = 0  # in the test split
    seen_excluded: int = 0  # of those, left out: in the candidate's or the champion's training record
    champion_record: bool | None = None  # whether the champion has a training record (older versions may not)
    decided: bool = True  # False: too few unseen test videos, the gate refused to decide
    test_set: str = ""  # digest of the scored videos and their content: a later gate on the same set reuses this
    basis: str = LABELLED  # LABEL_FREE: no labelled test split; ``metric`` is then the label-free score
    # label-free only: which target videos were scored ("unseen": by both models; else the split, seen in
    # training) and the guard that replaces the floor (predicted-class entropy / log K)
    scored_on: str | None = None
    candidate_diversity: float | None = None
    champion_diversity: float | None = None
    min_diversity: float | None = None

    def tags(self) -> dict[str, str]:
        return {f"promotion.{k}": "" if v is None else str(v) for k, v in asdict(self).items()}


def best_on_validation(cfg: Config, stage: str, names: list[str], key: str, missing: str) -> str:
    """The name whose ``models/<stage>/<name>/metrics.json`` has the highest ``key``; ties: the first listed.
    (Choosing on validation, never on test: the gate then scores on test.)"""
    scores = {}
    for name in names:
        path = cfg.run_dir(stage, name) / "metrics.json"
        if path.is_file():
            scores[name] = json.loads(path.read_text()).get(key, float("-inf"))
    if not scores:
        raise PromotionError(missing)
    return max(scores, key=lambda n: (scores[n], -names.index(n)))


def verdict(
    metric: str,
    margin: float,
    split: str,
    candidate: tuple[float, bool, str],
    champion: tuple[str, float, bool, str] | None,
) -> tuple[bool, bool, str]:
    """(promote the candidate, remove the champion alias, reason) from the scores and the floor checks.

    ``candidate``: (score, qualifies, floor text); ``champion``: (version, score, qualifies, floor text) or None.
    """
    score, ok, why = candidate
    if champion is None:
        if not ok:
            return False, False, f"{NOTHING_TO_SHIP}: the candidate {why}"
        return True, False, f"{FIRST_CHAMPION}: the candidate {why}"
    version, champ_score, champ_ok, champ_why = champion
    if not ok and champ_ok:
        return False, False, f"the candidate {why}; champion v{version} stays (it {champ_why})"
    if not ok:
        return (
            False,
            True,
            (
                f"{NOTHING_TO_SHIP}: the candidate {why}; champion v{version} {champ_why} on the current "
                f"{split} split, so its alias was removed"
            ),
        )
    if not champ_ok:
        return (
            True,
            False,
            (f"champion v{version} {champ_why} on the current {split} split; the candidate {why} and replaces it"),
        )
    promoted = score > champ_score + margin
    verb = "beats" if promoted else "does not beat"
    return (
        promoted,
        False,
        (
            f"candidate {metric} {_num(score)} {verb} champion v{version} {_num(champ_score)} "
            f"+ margin {margin:g} on the same {split} split (both clear the floor)"
        ),
    )


@dataclass(frozen=True)
class LabelFree:
    """How the gate decides without a labelled test split: ``metric`` (``im`` or ``snd``) of each model's
    predictions on the same target videos, ``predict(checkpoint, videos) -> (N, K) probabilities`` (labels
    never read); ``fallback``: the split scored when too few target videos are unseen by both models."""

    metric: str
    min_diversity: float
    predict: Callable[[Path, list[str]], Any]
    fallback: str = "train"

    def evidence(self, checkpoint: Path, videos: list[str], data_version: str) -> tuple[Evidence, float]:
        """(the score, without a CI or a baseline: there are no labels to resample or to beat;
        the predicted-class diversity)."""
        from vt_models.eval.unsupervised import label_free_scores, predicted_class_diversity

        probs = self.predict(checkpoint, videos)
        nan = float("nan")
        no_ci = Interval(nan, nan, nan, 0, len(videos))
        score = label_free_scores(probs)[self.metric]
        return Evidence(score, data_version, no_ci, nan, "none without labels"), predicted_class_diversity(probs)

    def check(self, diversity: float) -> tuple[bool, str]:
        """(not collapsed, why): the guard that stands in for the floor."""
        text = f"predicted-class diversity {diversity:.2f}"
        if diversity >= self.min_diversity:
            return True, f"is not collapsed: {text} >= {self.min_diversity:g}"
        return False, (
            f"is collapsed: {text} < registry.label_free_min_diversity {self.min_diversity:g}, "
            "(nearly) one class for every video"
        )


def label_free_verdict(
    metric: str, margin: float, candidate: tuple[float, bool, str], champion: tuple[str, float, str] | None
) -> tuple[bool, str]:
    """(promote the candidate, reason) of a label-free decision. ``candidate``: (score, not collapsed, why);
    ``champion``: (version, score, why) or None. There is no floor to fail, so the champion keeps its alias."""
    score, ok, why = candidate
    if champion is None:
        return ok, (f"{FIRST_CHAMPION}: the candidate {why}" if ok else f"{NOTHING_TO_SHIP}: the candidate {why}")
    version, champ_score, champ_why = champion
    if not ok:
        return False, f"the candidate {why}; champion v{version} stays"
    promoted = score > champ_score + margin
    verb = "beats" if promoted else "does not beat"
    return promoted, (
        f"candidate {metric} {_num(score)} {verb} champion v{version} {_num(champ_score)} + margin {margin:g} "
        f"on the same target videos (the candidate {why}; champion v{version} {champ_why})"
    )


def label_free_videos(
    frames_dir: Path, splits_path: Path, seen: set[str], min_unseen: int, fallback: str
) -> tuple[list[str], str, int]:
    """(videos, what they are, left out as seen) for a label-free decision: the target's videos of any split
    whose hash is not in ``seen`` when there are at least ``min_unseen`` (what: ``unseen``), else the
    ``fallback`` split's (what: its name; seen in training, but only their predictions are read)."""
    from vt_models.data.extract import load_index
    from vt_models.data.split import unseen_videos

    splits = json.loads(Path(splits_path).read_text(encoding="utf-8"))["splits"]
    every = sorted({p for videos in splits.values() for p in videos})
    unseen = unseen_videos(load_index(frames_dir), every, seen)
    if len(unseen) >= min_unseen:
        return unseen, "unseen", len(every) - len(unseen)
    return list(splits.get(fallback, [])), fallback, 0


@contextmanager
def unseen_test_split(
    frames_dir: Path, splits_path: Path, split: str, seen: set[str]
) -> Iterator[tuple[Path, int, int]]:
    """A temporary splits file whose ``split`` holds only the videos not in ``seen``:
    (path, videos in the split, left out)."""
    from vt_models.data.extract import load_index
    from vt_models.data.split import unseen_split

    splits = json.loads(Path(splits_path).read_text(encoding="utf-8"))
    scored, dropped = unseen_split(splits, load_index(frames_dir), split, seen)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(splits_path).name
        path.write_text(json.dumps(scored), encoding="utf-8")
        yield path, len(splits["splits"].get(split, [])), dropped


def _test_set_digest(frames_dir: Path, splits_path: Path, split: str) -> str:
    """Which test videos were scored, with which content (see :func:`vt_models.data.split.videos_digest`)."""
    from vt_models.data.extract import load_index
    from vt_models.data.split import videos_digest

    videos = json.loads(Path(splits_path).read_text(encoding="utf-8"))["splits"][split]
    return videos_digest(load_index(frames_dir), videos)


def recorded_evidence(tags: dict[str, str], metric: str, data_version: str, test_set: str) -> Evidence | None:
    """A registered version's evidence from its own gate decision (its ``promotion.*`` tags), when that
    decision scored it with ``metric`` on exactly these test videos of this data version; else None."""
    t = {k.removeprefix("promotion."): v for k, v in tags.items() if k.startswith("promotion.")}
    if not (
        t.get("decided") == "True"
        and t.get("basis", LABELLED) == LABELLED
        and t.get("metric") == metric
        and t.get("data_version") == data_version
        and t.get("test_set") == test_set
    ):
        return None
    ci = Interval(
        float(t["candidate_ci_low"]),
        float(t["candidate_ci_high"]),
        float(t["confidence"]),
        int(t["bootstrap_resamples"]),
        int(t["test_videos"]),
    )
    return Evidence(float(t["candidate_score"]), data_version, ci, float(t["baseline"]), t["baseline_rule"])


def seen_by_run(run_id: str) -> set[str] | None:
    """The video hashes in a registered model's training record (an artifact of its run); None when it has none."""
    import mlflow

    from vt_models.data.split import TRAINED_ON, seen_hashes

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=TRAINED_ON, dst_path=tmp)
        except Exception:  # noqa: BLE001 - versions registered before training records existed have none
            return None
        return seen_hashes(json.loads(Path(path).read_text(encoding="utf-8")))


def _same_classes_as_champion(champ: Any | None, model_name: str, ckpt_path: Path) -> None:
    """Refuse, before anything is registered, a candidate whose classes are not the champion's: no test split
    scores both (a user's own classes after the demo's, say), so one registered name cannot hold both."""
    from vt_models.models.checkpoint import load_checkpoint
    from vt_models.models.weights import resolve_mlflow_checkpoint

    if champ is None:
        return
    ours = list(load_checkpoint(ckpt_path).get("classes", []))
    theirs = list(
        load_checkpoint(resolve_mlflow_checkpoint(f"models:/{model_name}/{champ.version}")).get("classes", [])
    )
    if ours != theirs:
        raise PromotionError(
            f"{model_name}'s champion v{champ.version} classifies {theirs}, this candidate {ours}: no test split "
            f"scores both. Register it under its own name (`-S registry.model_name={model_name}-<your data set>`), "
            f"or train it on the champion's classes"
        )


def gate(
    model_name: str,
    metric: str,
    margin: float,
    name: str,
    run_dir: Path,
    score: Callable[[Path, Path], Evidence],
    example: Path,
    split: str,
    record: Path,
    hint: str,
    floor: Floor,
    frames_dir: Path,
    splits_path: Path,
    label_free: LabelFree | None = None,
) -> Decision:
    """The promotion gate for any task: ``score(checkpoint, splits_file) -> Evidence`` on the same
    test videos (those that
    neither model trained on), then the floor and the margin. With ``label_free`` and a test split that
    lists no video, a label-free decision instead (see the module docstring)."""
    import mlflow

    from vt_models.data.split import TRAINED_ON, seen_hashes
    from vt_models.io import mlflow as tracking
    from vt_models.io.dvc import data_version
    from vt_models.models.weights import resolve_mlflow_checkpoint
    from vt_models.serving.package import log_video_model

    tracking.configure()
    client = mlflow.MlflowClient()
    ckpt_path = run_dir / "best.pt"
    run_file = run_dir / "run.json"
    if not ckpt_path.is_file() or not run_file.is_file():
        raise PromotionError(f"{ckpt_path} or {run_file} missing: run `{hint}` first")
    run_id = json.loads(run_file.read_text())["run_id"]
    trained_on = run_dir / TRAINED_ON
    if not trained_on.is_file():
        raise PromotionError(f"{trained_on} missing: the model predates training records; run `{hint}` again")
    seen = seen_hashes(json.loads(trained_on.read_text(encoding="utf-8")))
    # read once, before the candidate is registered; a move by another gate meanwhile is caught by move_alias's
    # compare-and-set against this version
    try:
        champ = client.get_model_version_by_alias(model_name, CHAMPION)
    except mlflow.exceptions.MlflowException:
        champ = None
    _same_classes_as_champion(champ, model_name, ckpt_path)

    with mlflow.start_run(run_id=run_id):
        info = log_video_model(ckpt_path, example, registered_model_name=model_name)
        mlflow.log_artifact(str(trained_on))  # what this version trained on, for later gates
    version = str(info.registered_model_version)
    # under the aliases' lock: MLflow inserts a new alias row unless one exists, so two gates setting challenger
    # at once could both insert, and one died on the UNIQUE constraint (seen in tests/test_drills.py on 2 cores)
    with tracking.alias_lock(model_name):
        client.set_registered_model_alias(model_name, CHALLENGER, version)

    # the compare-and-set below reads the alias as a string; MLflow's local (sqlite / file) store gives the version
    # as an int, a server as a string, and 1 != "1" refused every move of an existing champion on the local store
    champ_version = str(champ.version) if champ is not None else None
    champ_seen = seen_by_run(champ.run_id) if champ is not None else None
    if champ_seen:
        seen |= champ_seen
    with unseen_test_split(frames_dir, splits_path, split, seen) as (scored_path, total, dropped):
        unseen = total - dropped
        who = "the candidate" + (f" and champion v{champ.version}" if champ is not None else "")
        coverage = f"{unseen} of {total} {split} videos unseen by {who}" + (
            f" ({dropped} left out: seen in training)" if dropped else ""
        )
        if champ is not None and champ_seen is None:
            coverage += (
                f"; champion v{champ.version} has no training record, so its overlap with the {split} split is unknown"
            )
        nan = float("nan")
        basis = LABEL_FREE if label_free is not None and total == 0 else LABELLED
        free: dict[str, Any] = {}  # the label-free decision's own fields
        if basis == LABEL_FREE:
            need = max(2, floor.min_unseen_videos)  # a label-free score of one video says nothing (SND needs two)
            videos, scored_on, dropped = label_free_videos(frames_dir, splits_path, seen, need, label_free.fallback)
            unseen = len(videos)
            if scored_on == "unseen":
                left = f" ({dropped} left out: seen in training)" if dropped else ""
                coverage = f"{unseen} target videos unseen by {who}{left}"
            else:
                coverage = (
                    f"the {unseen} videos of the target's {scored_on} split, seen in training (fewer than {need} "
                    f"target videos unseen by {who}; only their predictions are read)"
                )
            if champ is not None and champ_seen is None:
                coverage += f"; champion v{champ.version} has no training record, so its overlap is unknown"
            cand = champ_ev = None
            cand_ok, champ_ok, promoted, remove = False, None, False, False
            free = {"basis": basis, "scored_on": scored_on, "min_diversity": label_free.min_diversity}
            if unseen < need:
                reason = (
                    f"no decision: only {coverage}; the aliases stay. Add target videos, or a labelled {split} split"
                )
            else:
                from vt_models.data.extract import load_index
                from vt_models.data.split import videos_digest

                test_set = videos_digest(load_index(frames_dir), videos)
                version_now = data_version(frames_dir, splits_path)
                cand, free["candidate_diversity"] = label_free.evidence(ckpt_path, videos, version_now)
                cand_ok, cand_why = label_free.check(free["candidate_diversity"])
                if champ is not None:  # re-scored every time: one clip per video, and no labels to go stale
                    champ_ckpt = resolve_mlflow_checkpoint(f"models:/{model_name}/{champ.version}")
                    champ_ev, free["champion_diversity"] = label_free.evidence(champ_ckpt, videos, version_now)
                    champ_ok, champ_why = label_free.check(free["champion_diversity"])
                promoted, reason = label_free_verdict(
                    label_free.metric,
                    margin,
                    (cand.score, cand_ok, cand_why),
                    None if champ_ev is None else (champ.version, champ_ev.score, champ_why),
                )
                reason += (
                    f"; scored on {coverage}; no absolute floor without labels (no baseline to beat): "
                    "the only guard is that the candidate's predictions are not collapsed"
                )
        elif unseen < floor.min_unseen_videos:
            cand = champ_ev = None
            cand_ok, champ_ok, promoted, remove = False, None, False, False
            reason = (
                f"no decision: only {coverage}, fewer than registry.min_unseen_test_videos={floor.min_unseen_videos}; "
                f"the aliases stay. Add {split} videos, or run `vt split --redraw` and retrain both"
            )
        else:
            test_set = _test_set_digest(frames_dir, scored_path, split)
            cand = score(ckpt_path, scored_path)
            champ_ev = None
            if champ is not None:
                # the champion is re-scored only when the data (or the scored videos) changed since its decision
                champ_ev = recorded_evidence(champ.tags, metric, cand.data_version, test_set)
                if champ_ev is None:
                    champ_ev = score(resolve_mlflow_checkpoint(f"models:/{model_name}/{champ.version}"), scored_path)
                else:
                    log.info(
                        "gate: champion v%s's evidence from its own decision (same data and test videos)", champ.version
                    )
            cand_ok, cand_why = floor.check(metric, cand)
            champ_ok, champ_why = floor.check(metric, champ_ev) if champ_ev is not None else (None, "")
            promoted, remove, reason = verdict(
                metric,
                margin,
                split,
                (cand.score, cand_ok, cand_why),
                None if champ is None else (champ.version, champ_ev.score, champ_ok, champ_why),
            )
            reason += f"; scored on {coverage}"
            if floor.small(unseen):
                reason += f"; small test set ({unseen} videos): scores move in steps of 1/{unseen}"
    after = version if promoted else (None if champ is None or remove else champ_version)
    decision = Decision(
        model_name=model_name,
        promoted=promoted,
        reason=reason,
        metric=label_free.metric if basis == LABEL_FREE else metric,
        margin=margin,
        candidate_backbone=name,
        candidate_version=version,
        candidate_score=cand.score if cand else nan,
        candidate_run_id=run_id,
        champion_version=champ_version,
        champion_score=champ_ev.score if champ_ev is not None else None,
        champion_run_id=champ.run_id if champ is not None else None,
        data_version=cand.data_version if cand else data_version(frames_dir, splits_path),
        candidate_qualifies=cand_ok,
        candidate_ci_low=cand.ci.low if cand else nan,
        candidate_ci_high=cand.ci.high if cand else nan,
        champion_qualifies=champ_ok,
        champion_ci_low=champ_ev.ci.low if champ_ev is not None else None,
        champion_ci_high=champ_ev.ci.high if champ_ev is not None else None,
        champion_removed=remove,
        champion_after=after,
        baseline=cand.baseline if cand else nan,
        baseline_rule=cand.baseline_rule if cand else "",
        min_score=nan if basis == LABEL_FREE else floor.min_score,
        confidence=cand.ci.confidence if cand else nan,
        bootstrap_resamples=cand.ci.resamples if cand else 0,
        test_videos=unseen,
        min_test_videos=floor.min_test_videos,
        small_test_set=basis == LABELLED and floor.small(unseen),
        split_videos=total,
        seen_excluded=dropped,
        champion_record=None if champ is None else champ_seen is not None,
        decided=cand is not None,
        test_set=test_set if cand is not None else "",
        **free,
    )
    said = f"{LABEL_FREE_DECISION}: {reason}" if basis == LABEL_FREE else reason  # the log and the alias history
    # compare-and-set: the alias moves only if champion is still the one this decision compared against;
    # a concurrent gate that moved it first wins, and this decision is recorded as not applied
    try:
        if promoted:
            tracking.move_alias(model_name, CHAMPION, version, said, by=GATE, expected=decision.champion_version)
        if remove:
            tracking.move_alias(
                model_name,
                CHAMPION,
                None,
                f"the gate on v{version}: champion {champ_why}",
                by=GATE,
                expected=decision.champion_version,
            )
    except tracking.AliasConflict as exc:
        reason = f"{reason}; not applied: {exc}; run `vt promote` again to decide against the new champion"
        decision = replace(decision, promoted=False, champion_removed=False, champion_after=exc.current, reason=reason)
        said = f"{LABEL_FREE_DECISION}: {reason}" if basis == LABEL_FREE else reason
        promoted = remove = False
        log.warning("%s v%s: %s", model_name, version, reason)
    for key, value in decision.tags().items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_model_version_tag(model_name, version, "backbone", name)
    if remove:
        client.set_model_version_tag(model_name, champ.version, "demoted.reason", champ_why)
        client.set_model_version_tag(model_name, champ.version, "demoted.by_decision_on", version)
        log.warning("%s v%s is no longer champion: it %s", model_name, champ.version, champ_why)
    log.info("promotion of %s v%s: %s", model_name, version, said)
    write_json(record, asdict(decision))
    return decision


def previous_champion(history: list[AliasMove]) -> AliasMove | None:
    """The move a rollback undoes: the latest one not already undone (each rollback undoes one, so
    rolling back twice goes two champions back, never to and fro); None when there is none."""
    undoable: list[AliasMove] = []
    for move in history:
        if move.by == ROLLBACK:
            if undoable:
                undoable.pop()
        else:
            undoable.append(move)
    return undoable[-1] if undoable else None


def rollback_champion(model_name: str, reason: str) -> AliasMove:
    """Move ``champion`` back to the version that was champion before the latest (not yet undone) move,
    recording ``reason``; the history is the registry's own (:func:`vt_models.io.mlflow.alias_history`)."""
    import mlflow

    from vt_models.io import mlflow as tracking

    tracking.configure()
    undo = previous_champion(tracking.alias_history(model_name, CHAMPION))
    if undo is None or undo.from_version is None:
        since = "" if undo is None else f" (v{undo.to_version} became the first champion on {undo.time})"
        raise PromotionError(
            f"{model_name}: no previous champion to roll back to{since}; the registry's alias history "
            f"(alias_move.* version tags) records only moves made by `vt promote` and `vt promote --rollback`"
        )
    current = tracking.current_alias(model_name, CHAMPION)
    if current is not None and current != undo.to_version:
        log.warning(
            "%s: champion is v%s but its recorded history ends at v%s (moved outside vt?); rolling back to v%s",
            model_name,
            current,
            undo.to_version,
            undo.from_version,
        )
    try:
        move = tracking.move_alias(model_name, CHAMPION, undo.from_version, reason, by=ROLLBACK)
    except mlflow.exceptions.MlflowException as exc:
        raise PromotionError(
            f"{model_name}: cannot roll back champion to v{undo.from_version} (deleted from the registry?): {exc}"
        ) from None
    log.info("%s: champion rolled back from v%s to v%s: %s", model_name, move.from_version, move.to_version, reason)
    return move

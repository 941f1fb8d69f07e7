"""Domain adaptation and fine-tuning regularisers inside the generic loop, on every backbone family and
modality, and on the tiny test videos: one run per method, what it logs, and the errors of bad settings."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.test_train import CFG, Crash, TinyNet, _clips, _loaders, _trainer, crash_after
from vt_models.classify.data import load_split_data
from vt_models.classify.runner import make_target_stream, prepare_fit, train_backbone
from vt_models.classify.task import ClassificationTask
from vt_models.config import ConfigError, load_config
from vt_models.eval.unsupervised import information_maximisation
from vt_models.models.builder import build_backbone
from vt_models.models.checkpoint import load_checkpoint
from vt_models.train.engine import TargetStream, predict
from vt_models.train.loaders import TrainingError
from vt_models.train.objective import FeatureObjective
from vt_models.train.optim import param_groups
from vt_models.train.runtime import cpu_has_bf16_units, seed_everything

CHANNELS = {"rgb": 3, "rgb_diff": 3, "flow": 2}


@pytest.mark.parametrize(
    ("backbone", "modality", "method"),
    [
        ("mini_resnet_tsm", "flow", "dann"),  # 2D + temporal shift
        ("mini_resnet", "rgb", "coral"),  # 2D + temporal average (TSN)
        ("resnet18_gru", "rgb_diff", "mmd"),  # CNN + RNN
        ("r3d_18", "rgb", "dann"),  # 3D
    ],
)
def test_every_family_and_modality_takes_an_adaptation_step(backbone: str, modality: str, method: str) -> None:
    seed_everything(0)
    model, _ = build_backbone(backbone, "none", 3, modality=modality, rnn_hidden=16)
    objective = FeatureObjective(model.head[-1].in_features, method, bss=0.001)
    task = ClassificationTask(3)
    clips = torch.randn(4, CHANNELS[modality], 4, 32, 32)
    target = (torch.randn(4, CHANNELS[modality], 4, 32, 32) + 1.0, torch.full((4,), -1))
    loss, n, parts = objective(model, task, (clips, torch.tensor([0, 1, 2, 0])), target, torch.device("cpu"), 0.5)
    assert n == 4 and torch.isfinite(loss)
    assert {"task_loss", "align_loss", "adapt_coeff", "bss"} <= set(parts)
    assert parts["align_loss"] > 0 and parts["adapt_coeff"] == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    loss.backward()
    encoder_grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert encoder_grads and any(g.abs().sum() > 0 for g in encoder_grads)
    if method == "dann":
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.parameters())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "backbone", "modality"),
    [("dann", "mini_resnet_tsm", "flow"), ("mmd", "resnet18_gru", "rgb"), ("coral", "r3d_18", "rgb_diff")],
)
def test_one_adaptation_epoch_per_method_on_tiny_videos(
    tiny_project: Path, method: str, backbone: str, modality: str
) -> None:
    cfg = load_config(
        "params.yaml",
        [
            f"train.adapt={method}",
            "train.weights=none",
            f"train.backbones=[{backbone}]",
            f"train.modality={modality}",
            "train.epochs=1",
            "train.rnn_hidden=16",
        ],
    )
    data = load_split_data(cfg.frames_dir("target"), cfg.splits_path("target"))
    fit = prepare_fit(cfg, "train", backbone, data)
    source = load_split_data(cfg.frames_dir("source"), cfg.splits_path("source"))
    # labelled from the source data set, the target's training videos unlabelled, nothing else of the target
    assert fit.train_loader.dataset.records == source.records["train"]
    assert fit.val_loader.dataset.records == source.records["val"]
    assert fit.target.train.dataset.clips.records == data.records["train"]
    hidden = fit.target.train.dataset
    assert {hidden[i][1] for i in range(len(hidden))} == {-1}  # (ClipDataset wraps indices: no iteration)
    head = [p.detach().clone() for p in fit.objective.parameters()]
    encoder = [p.detach().clone() for p in fit.model.encoder.parameters()]
    result = fit.run(tiny_project / "out", cfg.seed, progress=False)
    row = result.history[0]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["train_align_loss"]) and row["train_align_loss"] > 0
    assert 0 <= row["target_im"] <= math.log(len(data.classes)) + 1e-9 and math.isfinite(row["target_snd"])
    assert any(not torch.equal(a, b) for a, b in zip(encoder, fit.model.encoder.parameters(), strict=True))
    if method == "dann":
        assert head and all(not torch.equal(a, b) for a, b in zip(head, fit.objective.parameters(), strict=True))
        assert 0 <= row["train_domain_accuracy"] <= 1
    else:
        assert not head  # MMD and CORAL have no parameters of their own
    best, last = load_checkpoint(result.best_path), load_checkpoint(result.last_path)
    # the domain classifier is training state: resumable from last.pt, never part of the served model
    assert not any("domain" in k for k in best["model"]) and "objective" not in best
    assert ("objective" in last) and best["adapt"]["method"] == method and best["config"]["adapt"] == method


@pytest.mark.slow
def test_tracked_adaptation_run_records_the_method_and_the_label_free_score(
    tiny_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # from a source model: L2-SP holds a start worth holding (a random one it leaves off)
    pre = load_config("params.yaml", ["pretrain.epochs=1"])
    start = train_backbone(
        pre, "pretrain", "mini_resnet_tsm", progress=False, track=False, out_dir=tiny_project / "src"
    )
    cfg = load_config(
        "params.yaml",
        [
            "train.adapt=dann",
            f"train.weights={start.best_path}",
            "train.backbones=[mini_resnet_tsm]",
            "train.epochs=1",
            "train.l2sp=0.01",
        ],
    )
    summary = train_backbone(cfg, "train", "mini_resnet_tsm", progress=False, out_dir=tiny_project / "run")
    run = mlflow.MlflowClient().get_run(summary.run_id)
    assert run.data.params["adapt"] == "dann" and run.data.params["adapt_weight"] == "1.0"
    assert run.data.params["adapt_ramp"] == "10.0" and run.data.params["l2sp"] == "0.01"
    assert run.data.tags["adapt"] == "dann"
    # amp: auto trained in what this machine resolved it to, and the run and the checkpoint say which
    assert run.data.params["precision"] == load_checkpoint(summary.best_path)["precision"]
    if not torch.cuda.is_available():
        assert run.data.params["precision"] == ("bf16" if cpu_has_bf16_units() else "fp32")
    for key in ("target_im", "target_snd", "best_target_im", "train_align_loss", "train_l2sp", "step/adapt_coeff"):
        assert key in run.data.metrics, key
    assert int(run.data.params["target_videos"]) == len(
        load_split_data(cfg.frames_dir("target"), cfg.splits_path("target")).records["train"]
    )


def test_bad_adaptation_settings_are_clear_errors(tmp_path: Path) -> None:
    from tests.project import write_params

    params = write_params(tmp_path)
    with pytest.raises(ConfigError, match=r"train.adapt.*'none', 'dann', 'mmd' or 'coral'"):
        load_config(params, ["train.adapt=adda"])
    with pytest.raises(ConfigError, match="needs target videos from another data set"):
        load_config(params, ["train.adapt=dann", "train.adapt_source=target"])
    with pytest.raises(ConfigError, match=r"adaptation.dataset 'elsewhere' is not under datasets \(allowed: "):
        load_config(params, ["adaptation.dataset=elsewhere"])
    with pytest.raises(ConfigError, match="adaptation.dataset and train.adapt_source are both 'source'"):
        load_config(params, ["adaptation.dataset=source"])
    with pytest.raises(ConfigError, match="labelled is false but labels_csv is labels.csv: drop labels_csv"):
        load_config(params, ["datasets.target.labelled=false", "datasets.target.labels_csv=labels.csv"])
    with pytest.raises(ConfigError, match="train.adapt_source 'elsewhere' is not under datasets"):
        load_config(params, ["train.adapt=mmd", "train.adapt_source=elsewhere"])
    with pytest.raises(ConfigError, match="pretrain.adapt must be none"):
        load_config(params, ["pretrain.adapt=coral", "pretrain.adapt_source=target"])
    cfg = load_config(params, ["train.adapt=dann"])
    # the score that picks an adaptation run's epoch is its labelled source's: the target's labels stay hidden
    assert (cfg.train.val_dataset, cfg.train.monitor) == ("source", "macro_f1")
    assert load_config(params, []).train.val_dataset == "target"
    ae = load_config(params, ["pretrain.objective=autoencoder"]).pretrain
    assert ae.monitor == "recon_r2"
    # the config's names (read without torch) are the ones the training tasks monitor and MLflow logs
    from vt_models.classify.task import ClassificationTask
    from vt_models.train.reconstruction import ReconstructionTask

    assert (cfg.train.monitor, ae.monitor) == (ClassificationTask.monitor, ReconstructionTask.monitor)
    with pytest.raises(TrainingError, match="needs unlabelled target videos, but the train split of 'target' is empty"):
        make_target_stream([], cfg.train, None, 4, 0, "target")


def test_adaptation_to_a_single_target_video_trains_and_logs_what_one_video_can_score(tmp_path: Path) -> None:
    """One unlabelled target video (one new recording): the run adapts and logs IM (0 on one video); SND,
    which needs two videos, is left out instead of stopping the run after its training."""
    one = TensorDataset(_clips(1, seed=5).tensors[0] * 1.5 + 0.3, torch.full((1,), -1))
    stream = TargetStream(DataLoader(one, batch_size=4, shuffle=True), DataLoader(one, batch_size=4))
    seed_everything(0)
    result = _trainer(tmp_path, model=TinyFeatureNet(), objective=FeatureObjective(32, "dann")).fit(
        *_loaders(), target=stream
    )
    last = result.history[-1]
    assert last["target_im"] == 0.0 and "target_snd" not in last and math.isfinite(last["train_align_loss"])
    assert result.best_path.is_file()


def test_adapting_trainer_refuses_to_run_without_a_target_stream(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, objective=FeatureObjective(32, "coral"))
    with pytest.raises(ValueError, match="no target stream"):
        trainer.fit(*_loaders())


class TinyFeatureNet(TinyNet):
    """The test loop's tiny 3D net with the pooled features the objective aligns."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


def _target_stream(seed: int = 5) -> TargetStream:
    clips = _clips(12, seed=seed).tensors[0] * 1.5 + 0.3  # another "domain": scaled and shifted
    hidden = TensorDataset(clips, torch.full((12,), -1))
    train = DataLoader(hidden, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(seed))
    return TargetStream(train, DataLoader(hidden, batch_size=4))


@pytest.mark.parametrize("method", ["dann", "mmd"])
def test_adaptation_resumes_exactly_after_a_crash(tmp_path: Path, method: str) -> None:
    """The cycled target stream and the domain classifier come back as they were: a resumed run equals an
    uninterrupted one."""
    cfg = CFG.model_copy(update={"l2sp": 0.1})

    def trainer(out: Path, **kw) -> Any:
        seed_everything(0)
        model = TinyFeatureNet()
        return _trainer(out, cfg, model=model, objective=FeatureObjective(32, method, bss=0.01), **kw)

    full = trainer(tmp_path / "a").fit(*_loaders(), target=_target_stream())
    assert {"train_align_loss", "train_bss", "train_l2sp", "target_im", "target_snd"} <= set(full.history[-1])
    with pytest.raises(Crash):
        trainer(tmp_path / "b", on_epoch_end=crash_after(1)).fit(*_loaders(), target=_target_stream())
    torch.manual_seed(999)  # a fresh process would start from any RNG state; resume restores it
    trainer(tmp_path / "b").fit(*_loaders(), resume=True, target=_target_stream())
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for key in a["objective"]:
        assert torch.equal(a["objective"][key], b["objective"][key]), key
    assert [r["train_align_loss"] for r in a["history"]] == [r["train_align_loss"] for r in b["history"]]
    assert [r["target_im"] for r in a["history"]] == [r["target_im"] for r in b["history"]]


def test_l2sp_in_the_loop_keeps_the_encoder_near_its_start_without_decay_toward_zero(tmp_path: Path) -> None:
    cfg = CFG.model_copy(update={"epochs": 3, "lr": 1e-2, "weight_decay": 0.05})
    distances = {}
    for alpha in (0.0, 5.0):
        trainer = _trainer(tmp_path / str(alpha), cfg.model_copy(update={"l2sp": alpha}))
        start = [p.detach().clone() for p in trainer.model.encoder.parameters()]
        result = trainer.fit(*_loaders())
        now = list(trainer.model.encoder.parameters())
        distances[alpha] = sum((a - b).pow(2).sum() for a, b in zip(start, now, strict=True)).sqrt().item()
        assert ("train_l2sp" in result.history[0]) == (alpha > 0)
    assert distances[5.0] < 0.5 * distances[0.0], distances
    groups = {g["name"]: g for g in param_groups(TinyNet(), cfg.model_copy(update={"l2sp": 0.01}))}
    assert groups["encoder"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 0.05


def test_label_free_score_ranks_a_trained_model_above_a_random_one(tmp_path: Path) -> None:
    trainer = _trainer(tmp_path, CFG.model_copy(update={"epochs": 10, "lr": 1e-2}))
    trainer.fit(*_loaders())
    unlabelled = torch.utils.data.DataLoader(_clips(24, seed=7), batch_size=8)
    task, cpu = ClassificationTask(2), torch.device("cpu")
    trained = information_maximisation(predict(trainer.model, task, unlabelled, cpu)["probs"])
    seed_everything(1)
    untrained = information_maximisation(predict(TinyNet(), task, unlabelled, cpu)["probs"])
    assert trained > untrained + 0.2, (trained, untrained)


def test_adaptation_summary_measures_the_gap_closed_and_the_label_free_pick() -> None:
    from vt_models.classify.adaptation import summarise

    rows = [
        {"setting": "source_only", "target_labels": "none", "test_macro_f1": 0.4, "target_im": 0.2, "target_dev": 0.1},
        {"setting": "dann", "target_labels": "hidden", "test_macro_f1": 0.7, "target_im": 0.5, "target_dev": 0.6},
        {"setting": "mmd", "target_labels": "hidden", "test_macro_f1": 0.65, "target_im": 0.9, "target_dev": 0.9},
        {"setting": "coral", "target_labels": "hidden", "test_macro_f1": 0.5, "target_im": 0.3, "target_dev": 0.7},
        {"setting": "supervised", "target_labels": "train", "test_macro_f1": 0.9, "target_im": 1.0, "target_dev": None},
        {"setting": "autoencoder", "target_labels": "train", "test_macro_f1": 0.8, "target_im": 1.2},
        {"setting": "scratch", "target_labels": "train", "test_macro_f1": 0.55, "target_im": 0.1},
    ]
    s = summarise(rows)
    assert s["autoencoder_gain"] == 0.25 and s["scratch_macro_f1"] == 0.55
    assert s["gap"] == 0.5 and s["best_method"] == "dann" and s["gap_closed"] == 0.6
    # the supervised model's IM is higher still, but it saw target labels: only hidden-label runs are picked
    assert s["im_pick"] == "mmd" and s["im_pick_shortfall"] == 0.05
    # DEV is a risk: the lowest picks, again among the hidden-label runs only (source-only's is lower still)
    assert s["dev_pick"] == "dann" and s["dev_pick_shortfall"] == 0.0
    # without DEV scores (a report of older rows) there is no DEV pick, and IM's still stands
    plain = summarise([{k: v for k, v in r.items() if k != "target_dev"} for r in rows])
    assert plain["dev_pick"] is None and plain["im_pick"] == "mmd"


def test_adaptation_summary_differences_get_paired_intervals(tmp_path: Path) -> None:
    """gap (supervised - source-only) and autoencoder_gain (autoencoder - scratch) each get a bootstrap interval
    of the difference over the same test videos; a difference whose rows did not run gets none."""
    from tests.project import write_params
    from vt_models.classify.adaptation import paired_intervals
    from vt_models.eval.bootstrap import paired_difference

    cfg = load_config(write_params(tmp_path), [])
    labels = np.arange(30) % 3
    right = labels.copy()
    wrong = np.where(np.arange(30) < 15, (labels + 1) % 3, labels)  # half the videos missed
    predictions = {"supervised": (labels, right), "source_only": (labels, wrong), "scratch": (labels, wrong)}
    out = paired_intervals(cfg, predictions, 3)
    assert set(out) == {"gap_ci_low", "gap_ci_high"}  # no autoencoder row: no autoencoder_gain interval
    rc = cfg.registry
    ci = paired_difference(
        labels, right, wrong, 3, "macro_f1", resamples=rc.bootstrap_resamples, confidence=rc.confidence, seed=cfg.seed
    )
    assert (out["gap_ci_low"], out["gap_ci_high"]) == (round(ci.low, 4), round(ci.high, 4))
    assert 0 < out["gap_ci_low"] < out["gap_ci_high"] <= 1
    both = paired_intervals(cfg, {**predictions, "autoencoder": (labels, wrong)}, 3)
    assert (both["autoencoder_gain_ci_low"], both["autoencoder_gain_ci_high"]) == (0.0, 0.0)  # same predictions


def test_adaptation_summary_over_seeds_is_that_of_the_means_with_each_difference_s_range() -> None:
    from vt_models.classify.adaptation import over_seeds, setting_spread, summarise

    def row(setting: str, seed: int | None, f1: float, im: float) -> dict[str, Any]:
        labels = {"source_only": "none", "supervised": "train"}.get(setting, "hidden")
        return {"setting": setting, "seed": seed, "target_labels": labels, "test_macro_f1": f1, "target_im": im}

    source = row("source_only", None, 0.3, 0.1)
    seeds = {  # seed: (dann, mmd, supervised) as (test macro-F1, IM)
        1: ((0.6, 0.5), (0.5, 0.9), (0.8, 1.0)),
        2: ((0.4, 0.5), (0.62, 0.4), (0.9, 1.0)),
    }
    rows, per_seed = [source], []
    for seed, (dann, mmd, supervised) in seeds.items():
        these = [row("dann", seed, *dann), row("mmd", seed, *mmd), row("supervised", seed, *supervised)]
        rows += these
        per_seed.append(summarise([source, *these]))
    s = over_seeds(rows, per_seed)
    # the means: dann 0.5, mmd 0.56, supervised 0.85; IM's mean: dann 0.5, mmd 0.65
    assert s["seeds"] == 2 and s["supervised_macro_f1"] == 0.85 and s["gap"] == 0.55
    assert s["best_method"] == "mmd" and s["best_method_macro_f1"] == 0.56 and s["gap_closed"] == round(0.26 / 0.55, 4)
    assert s["im_pick"] == "mmd" and s["im_pick_shortfall"] == 0.0
    # each seed's own summary: seed 1 closes 0.3 / 0.5 with dann (IM picks mmd, 0.1 short), seed 2 0.32 / 0.6
    assert (s["gap_min"], s["gap_max"]) == (0.5, 0.6)
    assert (s["gap_closed_min"], s["gap_closed_max"]) == (round(0.32 / 0.6, 4), 0.6)
    assert s["best_methods"] == "dann,mmd" and s["im_picks"] == "mmd,dann" and s["im_pick_good"] == 0
    assert (s["im_pick_shortfall_min"], s["im_pick_shortfall_max"]) == (0.1, 0.22)
    spread = {r["setting"]: r for r in setting_spread(rows)}
    assert set(spread) == {"dann", "mmd", "supervised"}  # source-only is one model, trained at no seed
    assert (spread["dann"]["mean_macro_f1"], spread["dann"]["min"], spread["dann"]["max"]) == (0.5, 0.4, 0.6)
    assert spread["dann"]["std"] == pytest.approx(np.std([0.6, 0.4], ddof=1), abs=1e-4)


@pytest.mark.slow
def test_adaptation_report_over_seeds_trains_every_row_once_a_seed(tiny_project: Path) -> None:
    from vt_models.classify.adaptation import REPORT_DIR, adaptation_report

    overrides = ["pretrain.epochs=1", "adaptation.methods=[dann]", "adaptation.autoencoder=false"]
    cfg = load_config("params.yaml", [*overrides, "adaptation.epochs=1", "adaptation.seeds=[3, 4]"])
    train_backbone(cfg, "pretrain", "resnet18", progress=False, track=False)
    done = adaptation_report(cfg, progress=False, track=False)
    assert [(r["setting"], r["seed"]) for r in done["rows"]] == [
        ("source_only", None),
        ("dann", 3),
        ("supervised", 3),
        ("dann", 4),
        ("supervised", 4),
    ]
    runs = REPORT_DIR / "runs"
    assert {load_checkpoint(runs / f"dann-seed{n}" / "best.pt")["seed"] for n in (3, 4)} == {3, 4}
    s = done["summary"]
    assert s["seeds"] == 2 and s["gap_min"] <= s["gap"] <= s["gap_max"] and len(s["im_picks"].split(",")) == 2
    dann = [r["test_macro_f1"] for r in done["rows"] if r["setting"] == "dann"]
    assert s["best_method"] == "dann" and s["best_method_macro_f1"] == pytest.approx(np.mean(dann), abs=1e-4)
    assert "gap_ci_low" not in s  # an interval of one seed's test videos is not the spread over seeds
    md = (REPORT_DIR / "adaptation.md").read_text()
    assert "## Over seeds 3, 4" in md and "| setting | seeds | mean_macro_f1 | std | min | max |" in md
    assert json.loads((REPORT_DIR / "metrics.json").read_text()) == s


@pytest.mark.slow
def test_adaptation_report_through_the_cli(tiny_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json
    import subprocess
    import sys

    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config("params.yaml", ["pretrain.epochs=1"])
    train_backbone(cfg, "pretrain", "resnet18", progress=False, track=False)
    vt = Path(sys.executable).parent / "vt"
    done = subprocess.run(
        [str(vt), "-S", "adaptation.methods=[dann, coral]", "report", "adaptation"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "| setting | seed | target_labels |" in done.stdout and "gap_closed" in done.stdout
    rows = Path("reports/adaptation/adaptation.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == [
        "source_only",
        "dann",
        "coral",
        "supervised",
        "autoencoder",
        "scratch",
    ]
    summary = json.loads(Path("reports/adaptation/metrics.json").read_text())
    assert summary["im_pick"] in ("dann", "coral") and summary["best_method"] in ("dann", "coral")
    # IM picks on every slow video outside the test split, its labels hidden
    slow = json.loads(Path("data/splits/slow.json").read_text())["splits"]
    assert summary["label_free_videos"] == len(slow["train"]) + len(slow["val"]) > len(slow["train"])
    # DEV scores the runs that never read a target label (and source-only), and picks among the methods
    import csv

    with open("reports/adaptation/adaptation.csv", newline="") as f:
        dev = {r["setting"]: r["target_dev"] for r in csv.DictReader(f)}
    assert all(math.isfinite(float(dev[r])) for r in ("source_only", "dann", "coral"))
    assert not any(dev[r] for r in ("supervised", "autoencoder", "scratch"))
    assert summary["dev_pick"] in ("dann", "coral")
    # the adapted runs never saw a target label; the supervised one trained on them
    runs = Path("reports/adaptation/runs")
    assert load_checkpoint(runs / "dann" / "best.pt")["adapt"]["method"] == "dann"
    assert load_checkpoint(runs / "supervised" / "best.pt")["config"]["adapt"] == "none"
    # every row trains toward adaptation.dataset, the slow domain (not train.dataset)
    assert {load_checkpoint(runs / r / "best.pt")["dataset"] for r in ("dann", "coral", "supervised")} == {"slow"}
    assert "# Domain adaptation source -> slow with resnet18" in Path("reports/adaptation/adaptation.md").read_text()
    # the autoencoder row fine-tunes the report's own autoencoder, which never read a label
    ae = load_checkpoint(runs / "autoencoder_pretrain" / "best.pt")
    assert ae["training_objective"] == "autoencoder" and ae["dataset"] == "source"
    assert load_checkpoint(runs / "autoencoder" / "best.pt")["weights_source"].endswith("autoencoder_pretrain/best.pt")
    assert load_checkpoint(runs / "scratch" / "best.pt")["weights_source"] == "none"
    assert {"autoencoder_gain", "scratch_macro_f1"} <= set(summary)
    # each difference with its paired interval, beside it in the summary
    keys = list(summary)
    for name in ("gap", "autoencoder_gain"):
        assert summary[f"{name}_ci_low"] <= summary[f"{name}_ci_high"], summary
        assert keys.index(f"{name}_ci_low") == keys.index(name) + 1
    assert "gap_ci_low" in Path("reports/adaptation/adaptation.md").read_text()
    mlflow.set_tracking_uri(f"sqlite:///{tiny_project / 'mlflow.db'}")
    found = mlflow.search_runs(experiment_names=["vt-adaptation"])
    assert len(found) == 1 and "metrics.dann_target_im" in found.columns and "metrics.gap" in found.columns


@pytest.mark.slow
def test_a_folder_of_unlabelled_videos_is_adapted_to_and_promoted_label_free(
    tiny_project: Path, use_mlflow: str
) -> None:
    """The user's case: real clips in one folder, no class folders, no labels. Probe, extract and split take
    them; the source model's classes are adapted to them; the gate decides label-free on the videos the
    adaptation never read; what needs labels says so."""
    import shutil
    import subprocess

    import yaml
    from typer.testing import CliRunner

    from tests.project import BIN, env
    from vt_models.classify.adaptation import adaptation_report
    from vt_models.classify.cv import cross_validate
    from vt_models.classify.data import UnlabelledError
    from vt_models.classify.promote import promote
    from vt_models.classify.steps import evaluate
    from vt_models.cli import app
    from vt_models.data.split import TRAINED_ON
    from vt_models.promotion import LABEL_FREE

    wild = tiny_project / "wild"
    wild.mkdir()
    for i, video in enumerate(sorted((tiny_project / "data" / "raw").rglob("*.mp4"))):
        shutil.copy(video, wild / f"clip{i:02d}.mp4")  # flat: no class folder to read a label from
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["datasets"]["wild"] = {"raw": "wild", "labelled": False}
    Path("params.yaml").write_text(yaml.safe_dump(params))

    def vt(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "vt"), *args], cwd=tiny_project, env=env(), capture_output=True, text=True)

    probed = vt("probe", "-d", "wild")
    assert probed.returncode == 0, probed.stderr
    assert "18 usable" in probed.stdout and "0 quarantined" in probed.stdout
    assert vt("extract", "-d", "wild").returncode == 0
    split = vt("split", "-d", "wild")
    assert split.returncode == 0 and "(unlabelled)" in split.stdout
    splits = json.loads(load_config("params.yaml").splits_path("wild").read_text())
    assert splits["labelled"] is False and splits["classes"] == [] and splits["folds"] == []
    assert splits["splits"]["test"] == [] and splits["splits"]["train"] and splits["splits"]["val"]

    # nothing to fit unlabelled videos to without a labelled source
    refused = vt("-S", "train.dataset=wild", "-S", "train.weights=none", "train", "-b", "mini_resnet")
    assert refused.returncode != 0 and "has no labels (datasets.wild.labelled: false)" in refused.stderr
    assert "train.adapt (dann | mmd | coral)" in refused.stderr
    # adapted, its validation score is the labelled source's, and the summary line says so (wild has no labels);
    # --out keeps it beside the train stage's model, and `vt promote --run` registers that folder (README)
    stage_model = tiny_project / "models" / "train" / "mini_resnet" / "best.pt"
    before = stage_model.read_bytes() if stage_model.is_file() else None
    adapted = vt(
        "-S", "train.dataset=wild", "-S", "train.adapt=coral", "-S", "train.weights=none", "-S", "train.epochs=1",
        "train", "-b", "mini_resnet", "--out", "models/wild_coral",
    )  # fmt: skip
    assert adapted.returncode == 0, adapted.stderr
    assert "val macro-F1 " in adapted.stdout
    assert "on source's val videos (the labelled adaptation source, not wild) at epoch 1" in adapted.stdout
    assert (stage_model.read_bytes() if stage_model.is_file() else None) == before
    gate = [
        "-S",
        "train.dataset=wild",
        "-S",
        "registry.model_name=vt-wild-cli",
        "-S",
        "registry.min_unseen_test_videos=2",
    ]
    promoted = vt(*gate, "promote", "--run", "models/wild_coral")
    assert promoted.returncode == 0, promoted.stderr
    assert "vt-wild-cli v1 (mini_resnet)" in promoted.stdout
    assert "label-free decision (no labelled test split): " in promoted.stdout
    run_id = json.loads((tiny_project / "models" / "wild_coral" / "run.json").read_text())["run_id"]
    registered = json.loads((tiny_project / "reports" / "promotion.json").read_text())
    assert registered["candidate_run_id"] == run_id, registered
    for args, says in [
        (["--run", "models/nowhere"], "models/nowhere/best.pt missing: --run takes the folder"),
        (["--run", "models/wild_coral", "-b", "resnet18"], "holds a mini_resnet, not a resnet18"),
        (["--run", "models/wild_coral", "--rollback"], "--rollback moves the alias back; it takes no candidate"),
    ]:
        refused = CliRunner().invoke(app, [*gate, "promote", *args])  # in this process: refused before MLflow
        assert refused.exit_code != 0 and says in refused.output, refused.output

    cfg = load_config(
        "params.yaml",
        [
            "train.dataset=wild",
            "adaptation.dataset=wild",
            "train.adapt=coral",
            "train.weights=none",
            "train.epochs=1",
            "registry.model_name=vt-unlabelled-test",
            "registry.min_unseen_test_videos=2",
        ],
    )
    summary = train_backbone(cfg, "train", "mini_resnet", progress=False)
    best = load_checkpoint(summary.best_path)
    source = load_split_data(cfg.frames_dir("source"), cfg.splits_path("source"))
    assert best["classes"] == source.classes and best["adapt"]["target_videos"] == len(splits["splits"]["train"])
    record = json.loads((cfg.run_dir("train", "mini_resnet") / TRAINED_ON).read_text())
    assert "val" not in record and len(record["train"]) == len(splits["splits"]["train"])  # val never read

    # what scores or fits labels stops and says what to do instead
    with pytest.raises(UnlabelledError, match=r"'wild' has no labels .*`vt promote` decides on it label-free"):
        evaluate(cfg, "mini_resnet")
    with pytest.raises(UnlabelledError, match="'wild' has no labels .* adapt to it with"):
        adaptation_report(cfg, progress=False, track=False)
    with pytest.raises(UnlabelledError, match="'wild' has no labels .*: cross-validation scores folds"):
        cross_validate(cfg, "mini_resnet", progress=False, track=False)
    report = vt("-S", "train.dataset=wild", "report", "transfer")
    assert report.returncode != 0 and "transfer: 'wild' has no labels" in report.stderr
    # autoencoder pretraining reads no label: any folder feeds it; --out keeps it beside the source model
    source_model = cfg.run_dir("pretrain", "mini_resnet") / "best.pt"
    before = source_model.read_bytes() if source_model.is_file() else None
    pretrained = vt(
        "-S", "pretrain.dataset=wild", "-S", "pretrain.objective=autoencoder", "-S", "pretrain.epochs=1",
        "pretrain", "-b", "mini_resnet", "--out", "ae_wild",
    )  # fmt: skip
    assert pretrained.returncode == 0, pretrained.stderr
    assert "ae_wild/metrics.json" in pretrained.stdout
    assert load_checkpoint(tiny_project / "ae_wild" / "best.pt")["training_objective"] == "autoencoder"
    assert (source_model.read_bytes() if source_model.is_file() else None) == before
    encoder_only = CliRunner().invoke(app, [*gate, "promote", "--run", "ae_wild"])
    assert encoder_only.exit_code != 0 and "is an autoencoder's encoder, which predicts no class" in encoder_only.output
    both = vt("-S", "pretrain.backbones=[mini_resnet, resnet18]", "pretrain", "--out", "ae_wild")
    assert (
        both.returncode != 0
        and "--out is one run's folder" in both.stderr
        and "name one with --backbone" in both.stderr
    )
    decision = promote(cfg, "mini_resnet")
    assert decision.basis == LABEL_FREE, decision.reason
    assert f"{len(splits['splits']['val'])} target videos unseen by the candidate" in decision.reason

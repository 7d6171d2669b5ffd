"""BitFit and LoRA from a start point, and the gains table (paper Tables 2 and 3)."""

import copy

import pandas as pd
import pytest
import torch

from helpers import ROOT
from weightspace import paper
from weightspace.centroid import plan as centroid_plan
from weightspace.centroid import report, train
from weightspace.checkpoints import encoder_key_map
from weightspace.config import validated_config
from weightspace.errors import WeightspaceError
from weightspace.io import load_tensors
from weightspace.seeding import seed_everything

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def run(tiny_run):
    workdir, config = tiny_run
    config = validated_config(config, SCHEMA)
    return workdir, config


def _train(run, start_dir, **settings):
    workdir, config = run
    merged = {**config["centroid"], **settings}
    return train.train_from_start(workdir / "results/data/tiny_topic", start_dir,
                                      workdir / "results/models/pretrained/tiny", "tiny_topic", "full", 1, merged,
                                      config["finetune"], CPU)


def _encoder_changes(model, start_file):
    """Names of the start's encoder tensors that differ after training, and of those that do not."""
    start = load_tensors(start_file)
    state = {k: v for k, v in model.state_dict().items()}
    key_map = encoder_key_map(state.keys(), start.keys())
    changed = {n for n, k in key_map.items() if k is not None and not torch.equal(state[k], start[n])}
    same = {n for n, k in key_map.items() if k is not None} - changed
    return changed, same


@pytest.mark.slow
def test_bitfit_leaves_every_non_bias_encoder_weight_bit_identical(run):
    workdir, _ = run
    start = workdir / "results/models/centroid/tiny_topic"
    model, row = _train(run, start)
    changed, same = _encoder_changes(model, start / "model.safetensors")
    assert changed and all(n.endswith(".bias") for n in changed)
    biases = {n for n in changed | same if n.endswith(".bias")}
    assert len(changed) >= 0.9 * len(biases), sorted(biases - changed)
    assert row["test_accuracy"] > row["majority_test_accuracy"]
    head = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("roberta."))
    assert row["trainable_params"] == head + sum(model.state_dict()[f"roberta.{n}"].numel() for n in biases)


@pytest.mark.slow
def test_both_starts_get_the_same_new_head(run):
    workdir, config = run
    heads = []
    for start in ("results/models/pretrained/tiny", "results/models/centroid/tiny_topic"):
        seed_everything(123)
        model, _ = train.efficient_model(workdir / start, 3, config["centroid"])
        heads.append({n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("classifier.")})
    assert heads[0].keys() and all(torch.equal(heads[0][n], heads[1][n]) for n in heads[0])


@pytest.mark.slow
def test_lora_trains_adapters_and_head_only(run):
    workdir, config = run
    start = workdir / "results/models/pretrained/tiny"
    lora = {**config["centroid"]["lora"], "r": 4}
    model, row = _train(run, start, method="lora", lora=lora)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in n or "classifier" in n for n in trained)
    assert any(float(p.abs().sum()) > 0 for n, p in model.named_parameters() if "lora_B" in n)
    merged = model.merge_and_unload()
    changed, _ = _encoder_changes(merged, start / "model.safetensors")
    assert changed and all(n.endswith(("query.weight", "value.weight")) for n in changed)
    assert row["method"] == "lora" and row["trainable_params"] < 0.2 * row["total_params"]


def test_training_config_overrides_and_min_steps():
    base = {"lr": 5e-5, "batch_size": 16, "epochs": 2, "max_steps": None}
    cfg = train.training_config(base, {"lr": 1e-3, "epochs": None, "min_steps": 20}, n_examples=40)
    assert cfg["lr"] == 1e-3 and cfg["batch_size"] == 16 and "min_steps" not in cfg
    assert cfg["epochs"] == pytest.approx(20 / 3)  # 3 steps per epoch
    assert train.training_config(base, {"min_steps": 2}, n_examples=400)["epochs"] == 2


def test_shots_cap():
    assert train.shots_cap("full") is None and train.shots_cap("1000") == 1000
    with pytest.raises(WeightspaceError, match="shots 'all'"):
        train.shots_cap("all")


def _paper_runs(kind):
    reported = paper.CENTROID_START[kind]
    # majority 0: every start counts as learning, so the paper's own counting applies
    rows = [{"shots": "full" if kind == "full" else "1000", "target": d, "start": s, "seed": 1, "train_size": 1,
             "test_size": 1000, "majority_test_accuracy": 0.0, "method": "bitfit",
             "test_accuracy": reported[s][d] / 100} for d in reported["pretrained"] for s in ("pretrained", "centroid")]
    return pd.DataFrame(rows)


@pytest.mark.parametrize("kind", ["full", "few"])
def test_gains_reproduce_the_papers_tables(kind):
    table = report.gains(_paper_runs(kind), tolerance=paper.CENTROID_TIE)
    shots = table.shots.iloc[0]
    assert report.outcome_counts(table, shots, "centroid") == (*paper.CENTROID_START[kind]["wins_ties_losses"], 0)
    assert round(table[table.start == "centroid"].gain.mean(), 2) == paper.CENTROID_START[kind]["mean_gain"]
    md = report.markdown(table, _paper_runs(kind), paper.CENTROID_TIE)
    assert "9 wins, 2 ties, 1 loss, 0 both at chance of 12 targets" in md and "paper gain (centroid)" in md


def test_a_gain_between_two_starts_at_chance_is_not_counted():
    """The paper's WNLI: 54.08 from the pretrained model, 52.68 from the centroid, on 71 validation
    examples whose majority class is 56.34% - neither start learned, so its "loss" is no loss."""
    runs = _paper_runs("full")
    wnli = runs.target == "wnli"
    runs.loc[wnli, "majority_test_accuracy"], runs.loc[wnli, "test_size"] = 40 / 71, 71
    table = report.gains(runs, tolerance=paper.CENTROID_TIE)
    row = table[(table.target == "wnli") & (table.start == "centroid")].iloc[0]
    assert row.outcome == "both at chance" and not row.above_majority
    assert report.outcome_counts(table, "full", "centroid") == (9, 2, 0, 1)
    assert "54.08 (chance)" in report.markdown(table, runs, paper.CENTROID_TIE)
    # one start above the majority is enough for the gain to count
    runs.loc[wnli & (runs.start == "centroid"), "test_accuracy"] = 0.70
    row = report.gains(runs, tolerance=0.1).set_index(["target", "start"]).loc[("wnli", "centroid")]
    assert row.outcome == "win"


def test_beats_majority_needs_more_than_test_noise():
    # 2 classes, 300 examples: the binomial SE at 50% is 2.89 points, the margin 4.75
    assert list(report.beats_majority([52.0, 54.0, 55.0], [50.0] * 3, [300] * 3)) == [False, False, True]


def test_gains_are_paired_by_seed_and_need_the_pretrained_start():
    runs = pd.DataFrame([
        {"shots": "full", "target": "t", "start": s, "seed": seed, "train_size": 1, "test_size": 1000,
         "majority_test_accuracy": 0.0, "method": "bitfit", "test_accuracy": acc} for s, seed, acc in
        [("pretrained", 1, 0.50), ("pretrained", 2, 0.70), ("centroid", 1, 0.60), ("centroid", 2, 0.70)]
    ])
    row = report.gains(runs, tolerance=0.5).set_index("start").loc["centroid"]
    assert row.gain == pytest.approx(5.0) and row.gain_std == pytest.approx(50 ** 0.5)
    # gains of +10 and 0 points: the t interval over the two seeds holds 0, so it is a tie
    assert row.gain_lo < 0 < row.gain_hi and row.outcome == "tie"
    steady = pd.DataFrame([
        {"shots": "full", "target": "t", "start": s, "seed": seed, "train_size": 1, "test_size": 1000,
         "majority_test_accuracy": 0.0, "method": "bitfit",
         "test_accuracy": 0.5 + seed / 100 + (gain if s == "centroid" else 0)}
        for seed, gain in [(1, 0.09), (2, 0.10), (3, 0.11)] for s in ("pretrained", "centroid")
    ])
    row = report.gains(steady, tolerance=0.5).set_index("start").loc["centroid"]
    assert row.seeds == 3 and row.gain == pytest.approx(10.0) and row.gain_lo > 0 and row.outcome == "win"
    assert report.gains(steady, tolerance=20.0).set_index("start").loc["centroid"].outcome == "tie"
    with pytest.raises(WeightspaceError, match="no pretrained-start run"):
        report.gains(runs[runs.start == "centroid"], tolerance=0.5)


def test_grid_and_its_errors():
    config = {"datasets": {"a": {}, "b": {}, "c": {}}, "families": {"g": ["a", "b", "c"]}, "finetune": {"seeds": [1, 2]},
              "centroid": {"group": "g", "targets": ["b"], "starts": ["pretrained", "centroid"], "shots": ["full", 10],
                           "seeds": None}}
    assert centroid_plan.grid(config) == [("b", s, n, seed) for s in ("pretrained", "centroid") for n in ("full", "10")
                                      for seed in (1, 2)]
    for key, value, message in [("group", "nope", "key 'centroid.group' is 'nope'"),
                                ("targets", ["z"], "key 'centroid.targets' names 'z'"),
                                ("starts", ["centroid", "ties"], "must include 'pretrained'")]:
        bad = copy.deepcopy(config)
        bad["centroid"][key] = value
        with pytest.raises(WeightspaceError, match=message):
            centroid_plan.grid(bad)

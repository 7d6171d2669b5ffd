"""The leave-one-dataset-out centres and the centroid experiment, end to end on the tiny run."""

import json
import subprocess
import sys

import pandas as pd
import pytest
import torch

from helpers import ROOT, shipped_workdir
from weightspace.centroid.centres import centroid, task_arithmetic, ties_merge
from weightspace.centroid.plan import leave_one_out
from weightspace.checkpoints import encoder_key_map
from weightspace.errors import WeightspaceError
from weightspace.io import load_tensors, save_tensors

PRETRAINED = "results/models/pretrained/tiny"


def _members(workdir, datasets, seeds=(1, 2)):
    return {d: [workdir / f"results/models/finetuned/{d}/seed{s}/model.safetensors" for s in seeds] for d in datasets}


@pytest.mark.slow
def test_centroid_is_the_mean_of_the_other_datasets_models(tiny_run):
    workdir, _ = tiny_run
    pretrained = load_tensors(workdir / PRETRAINED / "model.safetensors")
    got = load_tensors(workdir / "results/models/centroid/tiny_topic/model.safetensors")
    # a start to finetune from holds what RoBERTa's classifier reads: every encoder tensor but the pooler
    assert set(got) == {n for n in pretrained if not n.startswith("pooler.")}
    models = [load_tensors(p) for ps in _members(workdir, ["tiny_pair", "tiny_sent"]).values() for p in ps]
    moved = 0
    for name in got:
        tensors = [m[k] if k else pretrained[name] for m in models
                   for k in [encoder_key_map(m.keys(), pretrained.keys())[name]]]
        torch.testing.assert_close(got[name], torch.stack(tensors).mean(0), rtol=0, atol=1e-6)
        moved += not torch.equal(got[name], pretrained[name])
    assert moved > len(got) // 2
    assert json.loads((workdir / "results/models/centroid/tiny_topic/config.json").read_text())["model_type"] == "roberta"


@pytest.mark.slow
def test_task_arithmetic_at_one_over_n_is_the_centroid(tiny_run, tmp_path):
    workdir, _ = tiny_run
    members = _members(workdir, ["tiny_pair", "tiny_sent"])
    task_arithmetic(members, workdir / PRETRAINED, tmp_path / "ta", scale=0.5)
    centroid(members, workdir / PRETRAINED, tmp_path / "c")
    ta, c = load_tensors(tmp_path / "ta/model.safetensors"), load_tensors(tmp_path / "c/model.safetensors")
    for name in c:
        torch.testing.assert_close(ta[name], c[name], rtol=0, atol=1e-6)
    task_arithmetic(members, workdir / PRETRAINED, tmp_path / "ta2", scale=1.0)
    far = load_tensors(tmp_path / "ta2/model.safetensors")
    pretrained = load_tensors(workdir / PRETRAINED / "model.safetensors")
    name = "encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(far[name] - pretrained[name], 2 * (c[name] - pretrained[name]), rtol=0, atol=1e-5)


def test_ties_trims_elects_and_averages_by_hand(tmp_path):
    """Three datasets' task vectors of four entries, density 0.5; a tensor one model lacks did not move."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    save_tensors({"w": torch.zeros(4), "pooler.b": torch.ones(2)}, base / "model.safetensors")
    vectors = {"a": [1.0, -2.0, 0.1, 3.0], "b": [2.0, 1.0, -0.2, -1.0], "c": [-1.0, -3.0, 0.3, 2.0]}
    members = {}
    spread = torch.tensor([0.5, -0.25, 1.0, 0.125])
    for name, v in vectors.items():  # two seeds per dataset whose mean is v (exact in binary)
        members[name] = []
        for seed, sign in ((1, 1), (2, -1)):
            path = tmp_path / f"{name}{seed}.safetensors"
            save_tensors({"model.w": torch.tensor(v) + sign * spread, "head.z": torch.zeros(1)}, path)
            members[name].append(path)
    ties_merge(members, base, tmp_path / "out", density=0.5, scale=2.0)
    out = load_tensors(tmp_path / "out/model.safetensors")
    # kept: a [0, -2, 0, 3], b [2, 1, 0, 0], c [0, -3, 0, 2]; signs of the sums +, -, +, +;
    # agreeing means 2, -2.5, 0, 2.5; times the scale 2.
    assert out["w"].tolist() == [4.0, -5.0, 0.0, 5.0]
    assert out["pooler.b"].tolist() == [1.0, 1.0]


def test_leave_one_out():
    assert leave_one_out(["a", "b", "c"], "b") == ["a", "c"]
    with pytest.raises(WeightspaceError, match="not in the group"):
        leave_one_out(["a", "b"], "z")
    with pytest.raises(WeightspaceError, match="no other dataset"):
        leave_one_out(["a"], "a")


@pytest.mark.slow
def test_centroid_experiment_end_to_end(tiny_run):
    workdir, config = tiny_run
    runs = pd.concat([pd.read_parquet(p) for p in (workdir / "results/metrics/bitfit").rglob("seed*.parquet")])
    assert len(runs) == 3 * 2  # starts x shots: one target, one seed
    # shots: the number of examples, <NA> for the full training set (its folder is still full/)
    assert set(runs.start) == {"pretrained", "centroid", "ties"} and runs.shots.dtype == "Int64"
    assert runs.shots.isna().sum() == 3 and set(runs.shots.dropna()) == {40}
    assert (runs[runs.shots.eq(40).fillna(False)].train_size == 40).all()
    assert (runs[runs.shots.isna()].train_size > 100).all()
    # BitFit trains a sliver: biases and the head (a large share of this 22K-parameter model)
    assert (runs.trainable_params < 0.1 * runs.total_params).all()
    log = (workdir / "logs/bitfit/tiny_topic/centroid/full/seed1.log").read_text()
    assert "ETA" in log and "examples/s" in log
    # both starts train under one rule: scored on the validation split, the curves kept with each run
    every = config["finetune"].get("validate_every", 50)
    assert all(len(steps) and steps[-1] == n and (steps[:-1] % every == 0).all()
               for steps, n in zip(runs.log_validation_step, runs.steps))
    assert (runs.kept_step <= runs.steps).all() and runs.validation_loss.notna().all()
    table_runs = pd.read_parquet(workdir / "results/tables/centroid_runs.parquet")
    assert {"kept_step", "validation_loss", "gain"} <= set(table_runs.columns)
    assert not any(c.startswith("log_") for c in table_runs.columns)
    curves = pd.read_parquet(workdir / "results/tables/centroid_curves.parquet")
    assert set(zip(curves.split, curves.metric)) == {("train", "loss"), ("validation", "loss"), ("validation", "accuracy")}
    per_run = curves.groupby(["target", "start", "shots", "seed", "split", "metric"], dropna=False).size()
    assert len(per_run) == 6 * 3
    # a run's validation curve is its metrics file's, point for point
    one = runs[(runs.start == "centroid") & runs.shots.isna()].iloc[0]
    got = curves[(curves.start == "centroid") & curves.shots.isna() & (curves.split == "validation")
                 & (curves.metric == "loss")]
    assert list(got.step) == list(one.log_validation_step) and list(got.value) == list(one.log_validation_loss)
    table = pd.read_parquet(workdir / "results/tables/centroid.parquet")
    assert len(table) == 6 and set(table.outcome.dropna()) <= {"win", "tie", "loss", "both at chance"}
    assert {"majority", "above_majority"} <= set(table.columns)
    assert table[table.start == "pretrained"].gain.eq(0).all()
    # the paper's effect at toy scale: a random 2-layer encoder cannot route topic words to the first
    # token by its biases alone; the centroid of the sentiment and topic-pair models can.
    full = table[table.shots.isna()].set_index("start")
    assert full.loc["centroid", "gain"] > 5 and full.loc["centroid", "outcome"] == "win"
    md = (workdir / "results/tables/centroid.md").read_text()
    assert "## full training set" in md and "## at most 40 training examples" in md
    assert "centroid vs pretrained:" in md and "Paper (Table 2" in md
    png = workdir / "results/plots/centroid_gain.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert (workdir / "results/models/centre/ties/tiny_topic/model.safetensors").exists()


@pytest.mark.slow
def test_the_workflows_model_folders_load_with_plain_transformers(tiny_run):
    """A finetuned model and the centres: tokenizer, label names, card and the command that made each."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    workdir, _ = tiny_run
    vocabulary = AutoTokenizer.from_pretrained(workdir / PRETRAINED).get_vocab()
    finetuned = "results/models/finetuned/tiny_sent/seed1"
    assert AutoConfig.from_pretrained(workdir / finetuned).id2label == {0: "neg", 1: "pos"}
    for folder in (finetuned, "results/models/centroid/tiny_topic", "results/models/centre/ties/tiny_topic"):
        assert AutoTokenizer.from_pretrained(workdir / folder).get_vocab() == vocabulary
        card = (workdir / folder / "README.md").read_text()
        assert card.startswith("---\nlibrary_name: transformers\nbase_model: tiny\n")
        assert f"```\nsnakemake --cores 1 {folder}/model.safetensors\n```\n" in card
    _, info = AutoModelForSequenceClassification.from_pretrained(
        workdir / "results/models/centroid/tiny_topic", num_labels=3, output_loading_info=True)
    # the classifier reads every tensor: only its new head is missing
    assert not info["unexpected_keys"] and all(k.startswith("classifier.") for k in info["missing_keys"])


@pytest.mark.parametrize("configfile, jobs", [
    pytest.param("config/config.yaml", {"centroid": 12, "efficient_finetune": 12 * 2 * 2 * 5}, marks=pytest.mark.slow),
    ("config/demo.yaml", {"centroid": 3, "efficient_finetune": 3 * 2 * 1 * 1}),
])
def test_shipped_configs_dry_run_the_grid(tmp_path, configfile, jobs):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(shipped_workdir(tmp_path)), "--configfile", str(ROOT / configfile),
                           "--until", "centroid_plot"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = {line.split()[0]: int(line.split()[1]) for line in proc.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[0] in jobs and line.split()[1].isdigit()}
    assert counts == jobs

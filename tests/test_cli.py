"""The `weightspace` commands on checkpoints made here: tiny RoBERTa classifiers moved from a base
in two directions, a LoRA adapter, and folders that must be refused."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, RobertaConfig,
                          RobertaForSequenceClassification, RobertaModel)

from helpers import ROOT, make_tiny_datasets, make_tiny_roberta
from weightspace.cli import main
from weightspace.data import prepare_dataset
from weightspace.io import load_tensors

GROUPS = {"A_1": "A", "A_2": "A", "B_1": "B", "B_2": "B"}
PATTERN = r"([AB])_\d$"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """base: the pretrained encoder; A_1, A_2, B_1, B_2: classifiers whose encoders moved along a
    direction of their group plus noise of their own; lora: a LoRA adapter of the base; and folders
    the commands must refuse."""
    tmp = tmp_path_factory.mktemp("cli")
    base = make_tiny_roberta(tmp / "base")
    shapes = {n: p.shape for n, p in RobertaModel.from_pretrained(base, add_pooling_layer=False).named_parameters()}
    directions = {g: {n: torch.randn(s, generator=torch.Generator().manual_seed(i)) for n, s in shapes.items()}
                  for i, g in enumerate("AB")}
    folders = {"base": base}
    for seed, (name, group) in enumerate(GROUPS.items()):
        torch.manual_seed(seed)
        model = RobertaForSequenceClassification.from_pretrained(base, num_labels=2)
        with torch.no_grad():
            for n, p in model.roberta.named_parameters():
                p.add_(0.02 * directions[group][n] + 0.01 * torch.randn(p.shape))
        model.save_pretrained(tmp / name)
        folders[name] = tmp / name
    model.save_pretrained(tmp / "B_2_sharded", max_shard_size="100KB")
    folders["B_2_sharded"] = tmp / "B_2_sharded"

    from peft import LoraConfig, TaskType, get_peft_model

    torch.manual_seed(10)
    lora = get_peft_model(RobertaForSequenceClassification.from_pretrained(base, num_labels=2),
                          LoraConfig(task_type=TaskType.SEQ_CLS, r=4, target_modules=["query", "value"],
                                     init_lora_weights=False))
    lora.save_pretrained(tmp / "lora")
    folders["lora"] = tmp / "lora"

    pickled = tmp / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((folders["A_1"] / "config.json").read_text())
    torch.save(load_tensors(folders["A_1"] / "model.safetensors"), pickled / "pytorch_model.bin")
    folders["pickled"] = pickled
    RobertaModel(RobertaConfig.from_pretrained(base, intermediate_size=96)).save_pretrained(tmp / "other")
    folders["other"] = tmp / "other"

    specs = make_tiny_datasets(tmp / "raw")
    data_cfg = {"max_train": None, "max_validation": 1000, "max_test": None, "validation_fraction": 0.1,
                "test_fraction": 0.2, "split_seed": 0}
    prepare_dataset("tiny_sent", specs["tiny_sent"], data_cfg, tmp / "data/tiny_sent")
    folders["data"] = tmp / "data/tiny_sent"
    folders["tmp"] = tmp
    return {k: str(v) for k, v in folders.items()}


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def ok_json(capsys, *args):
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def encoder_tensors(folder) -> dict[str, torch.Tensor]:
    """A model's floating encoder tensors under the bare encoder's names (the head's prefix dropped)."""
    tensors = load_tensors(Path(folder) / "model.safetensors")
    return {k.removeprefix("roberta."): v.double() for k, v in tensors.items()
            if v.is_floating_point() and not k.startswith("classifier.")}


def hand_task_vector(folder, base) -> torch.Tensor:
    """weights - base over every floating tensor of the base; one the model lacks (the pooler) did not move."""
    w0, w = encoder_tensors(base), encoder_tensors(folder)
    return torch.cat([(w.get(n, t) - t).reshape(-1) for n, t in w0.items()])


def lora_delta_norm(adapter) -> float:
    """The norm of the merged adapter's task vector: of scale * B A over its factor pairs."""
    config = json.loads((Path(adapter) / "adapter_config.json").read_text())
    factors = load_tensors(Path(adapter) / "adapter_model.safetensors")
    scale = config["lora_alpha"] / config["r"]
    deltas = [factors[key.replace("lora_A", "lora_B")].double() @ a.double() * scale
              for key, a in factors.items() if "lora_A" in key]
    assert len(deltas) == 4  # query and value of 2 layers
    return float(torch.sqrt(sum((d**2).sum() for d in deltas)))


def cosine(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v / (u.norm() * v.norm()))


def test_similarity_is_the_cosine_of_the_flattened_task_vectors(zoo, capsys, tmp_path):
    names = [*GROUPS, "lora"]
    rows = ok_json(capsys, "similarity", *(zoo[n] for n in names), "--base", zoo["base"],
                   "--parquet", tmp_path / "sim.parquet")
    long = pd.DataFrame(rows)
    assert len(long) == 25 and list(long.columns) == ["model_a", "model_b", "cosine", "dot", "euclidean",
                                                       "norm_a", "norm_b"]
    got = long.set_index(["model_a", "model_b"])
    vectors = {n: hand_task_vector(zoo[n], zoo["base"]) for n in GROUPS}
    for a in GROUPS:
        for b in GROUPS:
            assert got.loc[(zoo[a], zoo[b]), "cosine"] == pytest.approx(cosine(vectors[a], vectors[b]), abs=1e-5)
    assert got.loc[(zoo["A_1"], zoo["A_2"]), "cosine"] > 0.5 > got.loc[(zoo["A_1"], zoo["B_1"]), "cosine"]
    # the adapter is merged into the base: its task vector is scale * B A on query and value, nothing else
    assert got.loc[(zoo["lora"], zoo["lora"]), "norm_a"] == pytest.approx(lora_delta_norm(zoo["lora"]), rel=1e-4)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "sim.parquet"), long, check_dtype=False)

    rows = ok_json(capsys, "similarity", zoo["B_2"], zoo["B_2_sharded"], "--base", zoo["base"],
                   "--names", "one", "shards")
    assert len(list(Path(zoo["B_2_sharded"]).glob("model-*.safetensors"))) > 1
    assert rows[1]["cosine"] == pytest.approx(1, abs=1e-12) and rows[1]["euclidean"] == 0

    code, out, err = run(capsys, "similarity", zoo["A_1"], zoo["B_1"], "--base", zoo["base"], "--names", "a1", "b1")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["a1", "b1"] and lines[1].split()[:2] == ["a1", "1.0000"]


def test_similarity_without_a_base_is_of_the_raw_weights(zoo, capsys, tmp_path):
    plot = tmp_path / "heatmap.png"
    rows = ok_json(capsys, "similarity", zoo["A_1"], zoo["A_2"], zoo["base"], "--names", "a1", "a2", "base",
                   "--plot", plot)
    got = pd.DataFrame(rows).set_index(["model_a", "model_b"])["cosine"]
    layout = list(encoder_tensors(zoo["A_1"]))  # the first model's encoder: the base's pooler is left out
    raw = {n: torch.cat([encoder_tensors(zoo[f])[t].reshape(-1) for t in layout])
           for n, f in (("a1", "A_1"), ("a2", "A_2"), ("base", "base"))}
    for a in raw:
        for b in raw:
            assert got[(a, b)] == pytest.approx(cosine(raw[a], raw[b]), abs=1e-5)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    rows = ok_json(capsys, "similarity", zoo["A_1"], zoo["B_1"], "--names", "a1", "b1", "--include-head")
    with_head = {n: torch.cat([raw_tensor.reshape(-1).double() for raw_tensor in load_tensors(
        Path(zoo[f]) / "model.safetensors").values() if raw_tensor.is_floating_point()]) for n, f in
        (("a1", "A_1"), ("b1", "B_1"))}
    got = pd.DataFrame(rows).set_index(["model_a", "model_b"])["cosine"]
    assert got[("a1", "b1")] == pytest.approx(cosine(with_head["a1"], with_head["b1"]), abs=1e-5)


def test_cluster_finds_the_two_directions(zoo, capsys, tmp_path):
    models = [zoo[n] for n in ("A_1", "B_1", "A_2", "B_2")]
    summary = ok_json(capsys, "cluster", *models, "--base", zoo["base"], "--k", "2", "--label-pattern", PATTERN,
                      "--parquet", tmp_path / "clusters.parquet")
    assert summary["models"] == 4 and summary["k"] == 2 and summary["accuracy"] == 1.0 and summary["purity"] == 1.0
    clusters = summary["assignments"]
    assert clusters[zoo["A_1"]] == clusters[zoo["A_2"]] != clusters[zoo["B_1"]] == clusters[zoo["B_2"]]
    table = pd.read_parquet(tmp_path / "clusters.parquet")
    assert list(table.columns) == ["model", "group", "cluster", "cluster_group"]
    assert (table.group == table.cluster_group).all() and sorted(table.group) == ["A", "A", "B", "B"]

    code, out, err = run(capsys, "cluster", *models, "--base", zoo["base"], "--k", "2", "--label-pattern", PATTERN)
    # the header, 4 models, a blank line and the summary
    assert code == 0 and "accuracy 1.000" in out and len(out.strip().splitlines()) == 7

    code, out, err = run(capsys, "cluster", *models, "--similarity", tmp_path / "x.csv", "--k", "2",
                         "--label-pattern", PATTERN)
    assert code == 1 and "either model folders" in err and len(err.strip().splitlines()) == 1


def test_cluster_of_a_similarity_csv_writes_its_assignments(capsys, tmp_path):
    authors = ROOT / "resources/reference/roberta_base_glue_superglue_cosine_70.csv"
    code, out, err = run(capsys, "cluster", "--similarity", authors, "--k", "14", "--label-pattern", r"data_(\d+)",
                         "--parquet", tmp_path / "authors.parquet")
    table = pd.read_parquet(tmp_path / "authors.parquet")
    assert code == 0 and json.loads(out)["accuracy"] == pytest.approx((table.group == table.cluster_group).mean())
    assert len(table) == 70 and table.group.nunique() == 14


def test_centroid_is_the_mean_of_the_models_and_loads_with_a_new_head(zoo, capsys, tmp_path):
    members = ["A_1", "A_2", "B_1"]
    out_dir = tmp_path / "mean"
    rows = ok_json(capsys, "centroid", *(zoo[m] for m in members), "--base", zoo["base"], "--out", out_dir)
    assert rows == [{"out": str(out_dir), "method": "mean", "models": 3,
                     "members": ", ".join(zoo[m] for m in members)}]
    merged, w0 = load_tensors(out_dir / "model.safetensors"), encoder_tensors(zoo["base"])
    models = [encoder_tensors(zoo[m]) for m in members]
    # a start to finetune from: every tensor of the base but the pooler, which RoBERTa's classifier lacks
    assert set(merged) == {n for n in load_tensors(Path(zoo["base"]) / "model.safetensors") if "pooler" not in n}
    for name in merged:
        start = w0[name]
        mean = torch.stack([m.get(name, start) for m in models]).mean(0)
        torch.testing.assert_close(merged[name].double(), mean, atol=1e-6, rtol=0)
    model, info = AutoModelForSequenceClassification.from_pretrained(out_dir, num_labels=2, output_loading_info=True)
    assert not info["unexpected_keys"] and all(k.startswith("classifier.") for k in info["missing_keys"])
    tokenizer = AutoTokenizer.from_pretrained(out_dir)  # the base's
    assert tokenizer("good team")["input_ids"] == AutoTokenizer.from_pretrained(zoo["base"])("good team")["input_ids"]
    assert f"weightspace centroid {zoo['A_1']}" in (out_dir / "README.md").read_text()
    torch.testing.assert_close(model.roberta.embeddings.word_embeddings.weight.double(),
                               merged["embeddings.word_embeddings.weight"].double())

    out_dir = tmp_path / "arithmetic"
    code, out, err = run(capsys, "centroid", zoo["A_1"], zoo["B_1"], "--base", zoo["base"], "--out", out_dir,
                         "--method", "task_arithmetic", "--scale", "0.5")
    assert code == 0, err
    assert out.splitlines()[1].split()[:4] == [str(out_dir), "task_arithmetic", "2", "0.5000"]
    merged, a, b = load_tensors(out_dir / "model.safetensors"), encoder_tensors(zoo["A_1"]), encoder_tensors(zoo["B_1"])
    name = "encoder.layer.0.attention.self.query.weight"
    expected = w0[name] + 0.5 * ((a[name] - w0[name]) + (b[name] - w0[name]))
    torch.testing.assert_close(merged[name].double(), expected, atol=1e-6, rtol=0)

    code, out, err = run(capsys, "centroid", zoo["A_1"], zoo["lora"], "--base", zoo["base"], "--out",
                         tmp_path / "ties", "--method", "ties", "--density", "0.5")
    assert code == 0 and "ties" in out, err
    assert (tmp_path / "ties/model.safetensors").exists()


def test_probe_is_no_worse_than_the_prior_on_a_learnable_dataset(zoo, capsys, tmp_path):
    (row,) = ok_json(capsys, "probe", zoo["A_1"], "--data", zoo["data"], "--base", zoo["base"], "--max-train", "100",
                     "--parquet", tmp_path / "probe.parquet")
    assert row["model"] == zoo["A_1"] and row["target"] == zoo["data"]
    assert 0 < row["loss"] <= row["prior_loss"] + 0.05 and row["prior_loss"] == pytest.approx(np.log(2), abs=0.01)
    assert row["train_size"] == 100 and row["majority_test_accuracy"] == 0.5 and 0 <= row["accuracy"] <= 1
    assert row["accuracy"] >= row["majority_test_accuracy"] and row["loss_se"] > 0 and row["accuracy_se"] >= 0
    assert pd.read_parquet(tmp_path / "probe.parquet").loss.item() == row["loss"]

    code, out, err = run(capsys, "probe", zoo["lora"], "--data", zoo["data"], "--base", zoo["base"],
                         "--max-train", "60", "--max-test", "20")
    header, line = out.splitlines()
    assert code == 0 and header.split()[:4] == ["model", "target", "loss", "loss_se"] and line.split()[0] == zoo["lora"]

    code, out, err = run(capsys, "probe", zoo["A_1"], "--data", zoo["data"])
    assert code == 1 and "has no tokenizer; give --base" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, messages", [
    (["similarity", "{pickled}", "--base", "{base}"], ["no .safetensors weights", "pytorch_model.bin", "convert"]),
    (["similarity", "{A_1}", "{other}", "--base", "{base}"], ["intermediate.dense", "[96", "{other}", "{base}"]),
    (["similarity", "{base}", "{other}"], ["intermediate.dense", "[96", "{other}", "{base}"]),
    (["similarity", "{A_1}", "{lora}"], ["{lora}", "give --base"]),
    (["probe", "{lora}", "--data", "{data}"], ["{lora}", "give --base"]),
    (["centroid", "{A_1}", "{pickled}", "--base", "{base}", "--out", "{tmp}/bad"], ["no .safetensors weights"]),
    (["similarity", "{A_1}", "{tmp}/missing"], ["missing: no such folder"]),
    (["similarity", "{A_1}", "{A_2}", "--names", "x"], ["--names: 1 names for 2 folders"]),
    (["similarity", "{A_1}", "{A_1}"], ["is given twice"]),
    (["similarity"], ["similarity: the following arguments are required: DIR"]),
    (["similarity", "{A_1}", "--memory-mb", "-1"], ["expected a positive number"]),
    (["centroid", "{A_1}", "--base", "{base}", "--out", "{tmp}/x", "--scale", "2"], ["--scale: applies to"]),
    (["centroid", "{A_1}", "--base", "{base}", "--out", "{base}"], ["is one of the input folders"]),
    (["centroid", "{A_1}", "--base", "{lora}", "--out", "{tmp}/x"], ["--base", "a peft adapter"]),
    (["probe", "{A_1}", "--base", "{base}", "--data", "{tmp}/nodata"], ["nodata: no meta.json"]),
])
def test_bad_folders_and_arguments_are_one_line_errors(zoo, capsys, args, messages):
    code, out, err = run(capsys, *(a.format(**zoo) for a in args))
    assert code == 1 and out == "" and err.startswith("weightspace: error: ") and len(err.strip().splitlines()) == 1
    for message in messages:
        assert message.format(**zoo) in err


def test_each_command_explains_itself(capsys):
    for command, options in {"similarity": ["--base", "--plot", "--memory-mb", "--include-head", "--json"],
                             "cluster": ["--k", "--label-pattern", "--similarity", "--base", "--parquet"],
                             "centroid": ["--out", "--method", "--scale", "--density"],
                             "probe": ["--data", "--max-train", "--max-test", "--base"]}.items():
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        text = capsys.readouterr().out
        assert exit_.value.code == 0 and all(o in text for o in options), command
    main_help = subprocess.run([sys.executable, "-m", "weightspace.cli", "--help"], capture_output=True,
                               text=True).stdout
    for command in ("similarity", "cluster", "centroid", "probe"):
        assert command in main_help


def test_the_installed_executable(zoo):
    executable = Path(sys.executable).parent / "weightspace"
    proc = subprocess.run([executable, "similarity", zoo["A_1"], zoo["B_1"], "--base", zoo["base"], "--json"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)) == 4
    proc = subprocess.run([executable, "similarity", zoo["pickled"]], capture_output=True, text=True)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("weightspace: error: ")

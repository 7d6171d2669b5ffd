"""The benchmarks under bench/, run end to end at a tiny size (no timing asserted)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from helpers import NEGATIVE, POSITIVE, ROOT, make_tiny_roberta


def _prepared_sentiment(folder: Path, n_train: int, n_test: int) -> Path:
    """A prepared dataset folder (train/test parquet, meta.json) in the tiny tokenizer's words."""
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = [{"text_a": " ".join([(POSITIVE if i % 2 else NEGATIVE)[i % 6]] + ["the", "film", "was"] * (1 + i % 4)),
                 "text_b": None, "label": i % 2} for i in range(n)]
        pd.DataFrame(rows).astype({"text_a": "string", "text_b": "string"}).to_parquet(folder / f"{split}.parquet")
    (folder / "meta.json").write_text(json.dumps({"num_labels": 2, "majority_test_accuracy": 0.5}))
    return folder


def test_train_bench_runs_both_loops_and_feature_passes_alike(tmp_path, monkeypatch):
    import torch

    import bench.train
    from bench.train import Sizes, benchmark, write_result

    monkeypatch.setitem(bench.train.TRAIN_CFG, "lr", 1e-2)  # the tiny model learns in a few steps

    sizes = Sizes(steps=16, batch_size=8, max_length=32, rounds=1, features=20, feature_batch=8)
    model_dir = make_tiny_roberta(tmp_path / "model")
    # one epoch exactly: both loops see every example once, whatever their order
    data_dir = _prepared_sentiment(tmp_path / "data", sizes.steps * sizes.batch_size, sizes.features)
    result = benchmark(model_dir, data_dir, sizes, threads=1, device=torch.device("cpu"))
    written = json.loads(write_result(result, tmp_path / "out").read_text())

    ours, trainer = written["training"]["best"]["ours"], written["training"]["best"]["trainer"]
    assert ours["steps"] == trainer["steps"] == sizes.steps
    assert ours["examples"] == trainer["examples"] == sizes.steps * sizes.batch_size
    assert ours["tokens"] == trainer["tokens"] > 0
    assert math.isfinite(written["training"]["ours_over_trainer"]) and written["training"]["ours_over_trainer"] > 0
    losses = written["training"]["train_loss"]
    # both learned (from ln 2), to about the same loss: the order of the examples and dropout differ
    assert losses["ours"] < 0.4 and losses["trainer"] < 0.4, losses
    assert abs(losses["ours"] - losses["trainer"]) < 0.1, losses
    features = written["features"]
    assert features["shape"] == [sizes.features, 64]
    assert features["max_abs_difference"] < 1e-4
    assert math.isfinite(features["ours_over_pipeline"]) and features["ours_over_pipeline"] > 0


def test_train_bench_gives_the_trainer_our_optimizer(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from bench.train import CountingTrainer, Sizes, train_cfg, trainer_args

    model = AutoModelForSequenceClassification.from_pretrained(make_tiny_roberta(tmp_path / "model"), num_labels=2)
    cfg = train_cfg(Sizes(steps=10), 320)
    trainer = CountingTrainer(model=model, args=trainer_args(cfg, str(tmp_path / "trainer"), torch.device("cpu")),
                              train_dataset=[])
    optimizer = trainer.create_optimizer()
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    # weightspace.finetuning.train's rule: no decay on biases and LayerNorm weights
    ours = {n for n in names.values() if not n.endswith(("bias", "LayerNorm.weight", "layer_norm.weight"))}
    assert decayed == ours
    group = optimizer.param_groups[0]
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"], group["fused"]) == (
        cfg["lr"], tuple(cfg["adam_betas"]), cfg["adam_eps"], cfg["weight_decay"], True)


def test_train_bench_rejects_a_bad_knob(monkeypatch):
    from bench.train import sizes_from_env

    monkeypatch.setenv("BENCH_STEPS", "many")
    with pytest.raises(SystemExit, match="BENCH_STEPS='many' is not a positive integer"):
        sizes_from_env()


def test_gpu_bench_skips_without_cuda(tmp_path):
    import os
    import subprocess

    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here: the benchmark would run")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_GPU")}
    proc = subprocess.run([sys.executable, "-m", "bench", "gpu", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if not line.startswith("== ")]  # bench's own header
    assert lines == ["gpu: skipped, no CUDA device"]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "gpu.json").exists()


def test_gpu_bench_parts_run_on_cpu(tmp_path, monkeypatch):
    import numpy as np
    import torch
    from sklearn.metrics.pairwise import cosine_similarity

    from bench.gpu import TINY, main, similarity_part
    from weightspace.similarity import flattened_matrix
    from weightspace.taskvectors import task_vector

    monkeypatch.setenv("BENCH_GPU_DEVICE", "cpu")
    monkeypatch.setenv("BENCH_GPU_SIZE", "tiny")
    main(tmp_path / "out")
    written = json.loads((tmp_path / "out/gpu.json").read_text())
    assert written["size"] == "tiny" and written["skipped"] == []
    finetune, probe = written["parts"]["finetune"], written["parts"]["probe"]
    assert finetune["steps"] == TINY.steps
    assert finetune["examples"] == TINY.steps * TINY.batch_size
    assert finetune["tokens"] == finetune["examples"] * TINY.max_length  # every example full length
    assert math.isfinite(finetune["examples_per_second"]) and finetune["examples_per_second"] > 0
    assert finetune["mfu"] is None  # no peak for a CPU
    assert probe["examples"] == TINY.probe_examples and probe["tokens"] == TINY.probe_examples * TINY.max_length
    assert probe["finite"] and probe["hidden"] == TINY.encoder["hidden_size"]
    assert math.isfinite(probe["tokens_per_second"]) and probe["tokens_per_second"] > 0
    assert written["parts"]["similarity"]["models"] == TINY.checkpoints
    assert written["suggested_examples_per_second"] >= 1

    part = similarity_part(TINY, torch.device("cpu"), tmp_path / "models", memory_mb=1)
    base = tmp_path / "models/base.safetensors"
    vectors = [task_vector(tmp_path / f"models/{name}.safetensors", base, name=name) for name in part["names"]]
    expected = cosine_similarity(flattened_matrix(vectors))
    assert np.abs(np.array(part["cosine"]) - expected).max() < 1e-6
    assert 0.2 < expected[0, 1] < 0.8  # the models share a direction: not a trivial 0
    assert part["bytes_read"] == (TINY.checkpoints + 1) * vectors[0].numel * 4
    for key in ("gb_per_second", "host_to_device_gb_per_second", "device_to_host_gb_per_second"):
        assert math.isfinite(part[key]) and part[key] > 0


def test_plan_bench_scales_every_seed_list_of_a_valid_config(tmp_path):
    import yaml

    from bench.plan import seed_lists, write_override
    from helpers import SCHEMA, tiny_config
    from weightspace.config import validated_config

    config = tiny_config(tmp_path)
    before = seed_lists(config)
    assert before[("finetune", "seeds")] == [1, 2] and ("region", "granularities", "same_dataset", "ex_seeds") in before
    override = yaml.safe_load(write_override(config, 3, tmp_path).read_text())
    merged = validated_config(_merged(config, override), SCHEMA)
    after = seed_lists(merged)
    for path, seeds in before.items():
        assert after[path][: len(seeds)] == seeds and len(after[path]) == 3 * len(seeds)
        assert len(set(after[path])) == len(after[path])
    # a list that was a subset of the finetune seeds still is
    assert set(after[("region", "granularities", "same_task", "seeds")]) <= set(after[("finetune", "seeds")])
    assert merged["finetune"]["lr"] == config["finetune"]["lr"]  # nothing but seeds changes


def _merged(config: dict, override: dict) -> dict:
    """`override` merged into `config` key by key, as Snakemake merges a second --configfile."""
    merged = dict(config)
    for key, value in override.items():
        merged[key] = _merged(config[key], value) if isinstance(value, dict) else value
    return merged


def test_plan_bench_counts_the_jobs_of_a_dry_run(tmp_path):
    import os

    import yaml

    from bench.plan import OFFLINE, dry_run, growth_exponent, path_without_slurm, planned_jobs
    from helpers import tiny_config

    assert planned_jobs("Job stats:\njob      count\n-----  -----\nprobe      3\nall        1\ntotal      4\n") == 4
    assert planned_jobs("Building DAG of jobs...\nNothing to be done (all requested files are present).") == 0
    with pytest.raises(ValueError):
        planned_jobs("no stats here")

    configfile = tmp_path / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(tiny_config(tmp_path / "inputs")))  # its paths absolute
    env = {**os.environ, **OFFLINE, "PATH": path_without_slurm(tmp_path / "bin")}
    one, two = (dry_run(configfile, factor, tmp_path / "runs", env) for factor in (1, 2))
    assert one["finetune_seeds"] == 2 and two["finetune_seeds"] == 4
    assert two["jobs"] > one["jobs"] > 0
    assert not (ROOT / "results/models/tiny_sent").exists()  # nothing planned into the repository
    assert growth_exponent(one, two) is not None and growth_exponent(one, one) is None


TINY_ENCODER = {"vocab_size": 300, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 64, "max_position_embeddings": 40}


def test_similarity_bench_methods_run_and_agree_on_tiny_models(tmp_path):
    import numpy as np

    from bench import similarity
    from bench.weights import make_models

    base, models = make_models(tmp_path, 4, TINY_ENCODER)
    spec = {"base": str(base), "models": [str(m) for m in models], "memory_mb": 0.01, "threads": 1}
    runs = {m: similarity.run_method(spec | {"method": m})
            for m in ("floor", "product", "streaming", "naive", "reference")}
    assert all(r["seconds"] > 0 and r["peak_mb"] >= 0 for r in runs.values())
    reference = np.array(runs["reference"]["cosine"])
    np.testing.assert_allclose(runs["streaming"]["cosine"], reference, atol=1e-6)
    np.testing.assert_allclose(np.diag(reference), 1.0)
    assert np.abs(reference[~np.eye(4, dtype=bool)]).max() < 0.2  # each model its own random move


def test_merging_bench_builds_a_centroid_and_every_leave_one_out_centre(tmp_path):
    from bench import merging
    from bench.weights import make_models

    base, models = make_models(tmp_path / "models", 4, TINY_ENCODER)
    assert merging.groups([str(m) for m in models]) == {"dataset0": [str(models[0]), str(models[1])],
                                                        "dataset1": [str(models[2]), str(models[3])]}
    spec = {"base": str(base), "models": [str(m) for m in models], "threads": 1, "out": str(tmp_path / "out")}
    for method in ("centroid_floor", "centroid", "loo_floor", "loo"):
        run = merging.run_method(spec | {"method": method})
        assert run["seconds"] > 0 and run["peak_mb"] >= 0
    assert not (tmp_path / "out").exists()  # outputs removed: at roberta-base size they would fill /dev/shm


def test_probe_bench_runs_at_a_small_size(tmp_path):
    import os
    import subprocess

    env = {**os.environ, "BENCH_TRAIN": "60", "BENCH_TEST": "40", "BENCH_EPOCHS": "1", "BENCH_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "bench", "probe", "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "probe.json").read_text())
    assert result["train"] == 60 and result["test"] == 40
    assert math.isfinite(result["naive_over_probe_time"]) and result["probe_loss"] < math.log(2)

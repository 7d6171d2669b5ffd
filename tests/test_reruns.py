"""Partial runs and reruns, as README "Partial runs and reruns" documents them (local executor).

Asking for one target runs only what it needs; `--forcerun finetune` redoes the finetuning and
everything downstream of it, and `--until` stops it where the user says.
"""

from __future__ import annotations

import re
import shutil

import pytest

from helpers import ROOT, run_snakemake
from weightspace.config import validated_config
from weightspace.region.plan import region_plan

REGION = {"granularities": {"same_dataset": {"in": ["tiny_sent"], "ex": ["tiny_topic"],
                                             "pairs": [["tiny_sent", "tiny_sent"]]}}}


def planned(workdir, config, *args) -> dict[str, int]:
    """The jobs a dry run would run, by rule (without the `all` rule)."""
    proc = run_snakemake(workdir, config, "-n", *args)
    out = proc.stdout + proc.stderr
    if "Nothing to be done" in out:
        return {}
    stats = out.split("Job stats:")[1].split("\n\n")[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}
    return {rule: n for rule, n in counts.items() if rule not in ("total", "all")}


def test_one_finetuned_model_needs_its_data_and_the_base(tiny_workspace, tmp_path):
    _, config = tiny_workspace
    target = "results/models/finetuned/tiny_sent/seed1/model.safetensors"
    assert planned(tmp_path, config, target) == {"prepare_data": 1, "pretrained": 1, "finetune": 1}


def test_one_point_of_one_line_needs_two_models_and_one_probe(tiny_workspace, tmp_path):
    _, config = tiny_workspace
    config = {**config, "region": REGION}
    plan = region_plan(validated_config(config, ROOT / "workflow/schemas/config.schema.yaml"))
    line = plan.granularities["same_dataset"]
    (pair,) = line.pairs
    target = f"results/metrics/probe/merged/same_dataset/{pair}/alpha0.5.parquet"
    datasets = set(line.pair_targets[pair]) | {"tiny_sent"}
    assert planned(tmp_path, config, target) == {
        "prepare_data": len(datasets), "pretrained": 1, "finetune": 2, "probe_line": 1,
    }


@pytest.mark.slow
def test_forcerun_finetune_with_until(tiny_run, tmp_path):
    done, config = tiny_run
    workdir = tmp_path / "run"
    shutil.copytree(done, workdir, symlinks=True)  # keeps the times, so nothing is outdated
    n_models = len(config["datasets"]) * len(config["finetune"]["seeds"])
    everything = planned(workdir, config, "--forcerun", "finetune")
    assert everything["finetune"] == n_models and everything["finetune_table"] == 1
    assert "prepare_data" not in everything and "pretrained" not in everything
    assert planned(workdir, config, "--forcerun", "finetune", "--until", "finetune_table") == {
        "finetune": n_models, "finetune_table": 1}

    # Redo the models only: the same seeds give the same weights. Snakemake 9 skips a job whose
    # newer input has the checksum it had last time, for files up to --max-checksum-file-size
    # (1 MB): the tiny models are that small, so only the table of their (new) metrics is due.
    weights = workdir / "results/models/finetuned/tiny_sent/seed1/model.safetensors"
    before = weights.read_bytes()
    run_snakemake(workdir, config, "--forcerun", "finetune", "--until", "finetune")
    assert weights.read_bytes() == before
    assert planned(workdir, config) == {"finetune_table": 1}
    # Real models are hundreds of MB: then a newer model outdates everything downstream of it,
    # and a plain run redoes the experiments (not the data, not the base).
    after = planned(workdir, config, "--max-checksum-file-size", "0")
    assert set(after) == set(everything) - {"finetune"}

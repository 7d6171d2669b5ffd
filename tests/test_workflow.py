"""The real workflow, end to end, on the tiny config; and dry runs of the shipped configs."""

import re
import subprocess
import sys

import pandas as pd
import pytest

from helpers import ROOT, run_snakemake, shipped_workdir


@pytest.mark.slow
def test_finetune_grid_end_to_end(tiny_run):
    workdir, config = tiny_run
    for dataset in config["datasets"]:
        for seed in config["finetune"]["seeds"]:
            folder = workdir / f"results/models/finetuned/{dataset}/seed{seed}"
            assert (folder / "model.safetensors").stat().st_size > 0 and (folder / "config.json").exists()
            log = (workdir / f"logs/finetune/{dataset}/seed{seed}.log").read_text()
            assert "examples/s" in log and "ETA" in log
    runs = pd.read_parquet(workdir / "results/tables/finetune.parquet")
    assert len(runs) == 6 and set(runs.dataset) == set(config["datasets"])
    by_dataset = runs.groupby("dataset").test_accuracy.mean()
    assert by_dataset["tiny_sent"] > 0.9 and by_dataset["tiny_topic"] > 0.9
    table = (workdir / "results/tables/finetune.md").read_text()
    assert "| tiny_sent" in table and "majority" in table


@pytest.mark.slow
def test_rerun_is_a_no_op(tiny_run):
    workdir, config = tiny_run
    proc = run_snakemake(workdir, config, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_bad_dataset_fails_with_one_line(tiny_workspace, tmp_path):
    _, config = tiny_workspace
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"sentence": ["a b", "c d"], "polarity": ["pos", "meh"]}).to_csv(bad, index=False)
    config = {key: value for key, value in config.items() if key not in ("centroid", "geometry", "region")}
    config |= {"datasets": {"tiny_sent": {**config["datasets"]["tiny_sent"], "files": {"train": str(bad)}}},
               "families": {}}
    proc = run_snakemake(tmp_path, config, "--until", "prepare_data", check=False)
    assert proc.returncode != 0
    log = (tmp_path / "logs/prepare_data/tiny_sent.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and re.search(r"dataset 'tiny_sent': unknown label 'meh' in split '\w+' "
                                          r"\(expected one of: neg, pos\)$", errors[0])
    assert "Traceback" not in log
    assert not (tmp_path / "results/data/tiny_sent/train.parquet").exists()


@pytest.mark.parametrize("configfile, rule_counts", [
    pytest.param("config/config.yaml", {"finetune": 345, "prepare_data": 33}, marks=pytest.mark.slow),
    ("config/demo.yaml", {"finetune": 30, "prepare_data": 10}),
])
def test_dry_run_lists_the_grid(tmp_path, configfile, rule_counts):
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(shipped_workdir(tmp_path)), "--configfile", str(ROOT / configfile)],
                          capture_output=True, text=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""} | _env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    counts = dict(line.split()[:2] for line in proc.stdout.splitlines() if line.split()[:1] and
                  line.split()[0] in rule_counts and len(line.split()) == 2)
    assert {k: int(v) for k, v in counts.items()} == rule_counts


def test_lint_is_clean():
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(ROOT), "--configfile", str(ROOT / "config/demo.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "Lints for" not in proc.stdout, proc.stdout[-3000:]


def _env():
    import os
    return {k: v for k, v in os.environ.items() if k != "PATH"} | {"PATH": os.environ["PATH"]}


def test_planning_the_workflow_imports_no_torch():
    """Every cluster job parses the Snakefile again: its planning code must not import torch,
    transformers or peft (seconds of CPU per job)."""
    code = ("import sys; import weightspace.config, weightspace.paths, weightspace.geometry.plan, "
            "weightspace.region.plan, weightspace.centroid.plan, weightspace.slurm_runtime; "
            "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"

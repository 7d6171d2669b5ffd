"""profiles/slurm without a cluster: the paper's dry run, the rules it names, the time estimates.

The profile against a real SLURM is tests/slurm (make test-slurm).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT, paper_workdir, tiny_config
from weightspace.slurm_runtime import runtime_minutes

PROFILE = ROOT / "profiles/slurm/config.yaml"
SLURM_COMMANDS = {"sbatch", "srun", "squeue", "sacct", "sinfo", "scontrol", "scancel", "sacctmgr", "sshare"}
CLUSTER = {"examples_per_second": 100, "startup_minutes": 10, "margin": 1.5, "max_minutes": 2880}


def path_without_slurm(folder) -> str:
    """A PATH of links to this machine's commands, less SLURM's: a machine with no SLURM."""
    folder.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            link = folder / name
            if name not in SLURM_COMMANDS and not link.exists() and os.access(os.path.join(directory, name), os.X_OK):
                link.symlink_to(os.path.join(directory, name))
    return str(folder)


@pytest.mark.slow
def test_paper_dry_run_with_the_profile_needs_no_slurm(tmp_path):
    env = {**os.environ, "PATH": path_without_slurm(tmp_path / "bin")}
    assert not any(os.path.exists(os.path.join(env["PATH"], c)) for c in SLURM_COMMANDS)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", str(PROFILE.parent),
                           "--directory", str(paper_workdir(tmp_path / "run"))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "config/config.yaml" in out  # the profile's configfile: the paper's setup
    total = int(re.search(r"^total\s+(\d+)$", out, re.M).group(1))
    finetunes = int(re.search(r"^finetune\s+(\d+)$", out, re.M).group(1))
    assert finetunes >= 165 and total > finetunes
    # GPU jobs: one GPU and the partition of the profile; the time limit waits for the data.
    finetune = out[out.index("rule finetune:"):]
    resources = re.search(r"resources: (.*)", finetune).group(1)
    assert "gpu=1" in resources and "slurm_partition=gpu" in resources and "runtime=<TBD>" in resources


def test_profile_names_rules_and_groups_of_the_workflow(tmp_path):
    profile = yaml.safe_load(PROFILE.read_text())
    named = set(profile["set-resources"]) | set(profile["set-threads"])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path)))  # every experiment on
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(config)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = set(proc.stdout.split())
    assert named <= rules, f"the profile names rules the workflow does not have: {named - rules}"
    rule_files = "".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk"))
    for group in profile.get("group-components", {}):
        assert f'"{group}"' in rule_files, f"group-components: no rule is in group {group}"
    for rule, resources in profile["set-resources"].items():
        if resources.get("gpu"):
            assert resources["cpus_per_gpu"] == "threads" and rule in profile["set-threads"], rule


def test_conda_env_has_the_dependencies_of_pyproject():
    import tomllib

    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs/weightspace.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(p for p in pip if not p.startswith("-e")) == sorted(pins)


def _meta(folder, train, validation=0, test=0):
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"sizes": {"train": train, "validation": validation, "test": test}}))
    return folder / "meta.json"


def test_runtime_grows_with_the_data_and_the_attempt(tmp_path):
    small = _meta(tmp_path / "small", 6_000, 300, 600)
    big = _meta(tmp_path / "big", 600_000, 3_000, 9_000)
    assert runtime_minutes([], 10, CLUSTER) == 15  # startup x margin
    # 6,000 x 10 epochs + 900 / 3 evaluated = 60,300 examples at 100/s = 10.05 min, + 10, x 1.5
    assert runtime_minutes([small], 10, CLUSTER) == 31
    assert runtime_minutes([small], 10, CLUSTER, attempt=2) == 61
    assert runtime_minutes([small, small], 10, CLUSTER) == runtime_minutes([_meta(tmp_path / "s2", 12_000, 600, 1200)],
                                                                           10, CLUSTER)
    assert runtime_minutes([big], 10, CLUSTER) == 1516
    assert runtime_minutes([big], 10, CLUSTER, attempt=2) == 2880  # the cap
    assert runtime_minutes([big], 10, {**CLUSTER, "max_minutes": None}, attempt=2) == 3032


def test_runtime_waits_for_the_data(tmp_path):
    # A plain FileNotFoundError naming the file: snakemake then shows <TBD> and asks again later.
    with pytest.raises(FileNotFoundError) as err:
        runtime_minutes([tmp_path / "meta.json"], 1, CLUSTER)
    assert err.value.filename == str(tmp_path / "meta.json")

"""profiles/slurm against a real SLURM: the one-node cluster of scripts/slurm/start.sh.

Run by `make test-slurm` (which starts the cluster and sets WEIGHTSPACE_SLURM_TESTS=1); skipped
by `make test`. One module-scoped scenario runs the tiny workflow with
`--profile profiles/slurm --profile tests/slurm/profile`:

1. the data is prepared (localrules), then one prepared split is truncated;
2. the whole workflow runs: the jobs that read the broken file fail, the others complete;
3. the file is restored and the workflow runs again: only what failed (or never ran) runs.

The two runs together are the whole workflow, each SLURM job checked against sacct.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, tiny_config

pytestmark = pytest.mark.skipif(
    not os.environ.get("WEIGHTSPACE_SLURM_TESTS"), reason="needs the local SLURM cluster: make test-slurm"
)

PROFILES = [ROOT / "profiles/slurm", ROOT / "tests/slurm/profile"]
RUN_TIMEOUT = 1200  # seconds for one snakemake run; `timeout -k` ends it, whatever it is waiting for
BROKEN = "results/data/tiny_pair/train.parquet"


def profile_settings() -> dict:
    """The effective profile: later profiles replace the keys they name."""
    settings = {}
    for profile in PROFILES:
        settings.update(yaml.safe_load((profile / "config.yaml").read_text()))
    return settings


GPU_RULES = {rule for rule, res in profile_settings()["set-resources"].items() if res.get("gpu")}


@dataclass
class Run:
    proc: subprocess.CompletedProcess
    run_id: str

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr


def run_on_slurm(workdir: Path, config: dict, *args: str) -> Run:
    """The real workflow through the slurm executor, bounded by `timeout -k` (sacct trouble can hang it)."""
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    profiles = [a for p in PROFILES for a in ("--profile", str(p))]
    cmd = ["timeout", "-k", "30", str(RUN_TIMEOUT), sys.executable, "-m", "snakemake", "--snakefile",
           str(ROOT / "Snakefile"), "--directory", str(workdir), *profiles, "--configfile", str(cfg), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT + 60)
    assert proc.returncode != 124, f"snakemake timed out after {RUN_TIMEOUT} s:\n{proc.stderr[-6000:]}"
    match = re.search(r"SLURM run ID: (\S+)", proc.stdout + proc.stderr)
    return Run(proc, match.group(1) if match else "")


def sacct(run_id: str, since: str) -> list[dict]:
    """The run's SLURM jobs (allocations, not steps) as accounting recorded them."""
    fields = ["JobIDRaw", "State", "AllocTRES", "Timelimit", "Comment"]
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-S", since, "--name", run_id, "-o", ",".join(fields)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


def job_blocks(output: str) -> list[dict]:
    """Each job snakemake announced: {'rule', 'local', 'grouped', and fields such as 'log'}."""
    jobs, current = [], None
    for line in output.splitlines():
        head = re.match(r"^(\s*)(localrule|rule) (\w+):$", line)
        if head:  # the members of a group job are listed indented under it
            current = {"rule": head.group(3), "local": head.group(2) == "localrule", "grouped": bool(head.group(1))}
            jobs.append(current)
            continue
        field = re.match(r"^\s+(\w+): (.*)$", line)
        if current is not None and field:
            current.setdefault(field.group(1), field.group(2))
        else:
            current = None
    return jobs


def minutes(timelimit: str) -> int:
    days, _, clock = timelimit.rpartition("-")
    h, m, s = map(int, clock.split(":"))
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)


def slurm_sized(config: dict) -> dict:
    """The tiny config with every rule still in it, but fewer jobs: each costs two snakemake
    start-ups besides its script, on 2 cores."""
    config = dict(config)
    if "centroid" in config:  # one target, one training-set size
        centroid = config["centroid"]
        config["centroid"] = {**centroid, "targets": centroid["targets"][:1], "shots": centroid["shots"][:1]}
    if "region" in config:  # one granularity with a line, a hull, a random exterior and a way out
        config["region"] = {
            **config["region"], "interpolation": [0, 0.5], "extrapolation": {"steps": 0}, "radii": [1],
            "random_directions": 0,
            "granularities": {"one": {"in": ["tiny_sent"], "ex": "random", "ex_random": 1, "hull_samples": 1,
                                      "pairs": [["tiny_sent", "tiny_sent"]]}},
        }
    return config


@dataclass
class Scenario:
    workdir: Path
    planned: dict[str, int]
    prepared: Run
    failed: Run
    fixed: Run
    since: str


@pytest.fixture(scope="module")
def scenario(tmp_path_factory) -> Scenario:
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 120))
    tmp = tmp_path_factory.mktemp("slurm")
    config = slurm_sized(tiny_config(tmp))
    workdir = tmp / "run"
    workdir.mkdir()
    plan = run_on_slurm(workdir, config, "-n")
    assert plan.proc.returncode == 0, plan.output[-4000:]
    stats = plan.proc.stdout.split("Job stats:")[1].split("\n\n")[0]
    planned = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}

    prepared = run_on_slurm(workdir, config, "--until", "prepare_data")
    assert prepared.proc.returncode == 0, prepared.output[-4000:]
    broken = workdir / BROKEN
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 2])  # a truncated file, as a full disk leaves it
    failed = run_on_slurm(workdir, config)
    broken.write_bytes(good)
    fixed = run_on_slurm(workdir, config)
    return Scenario(workdir, planned, prepared, failed, fixed, since)


def test_failed_job_is_reported_failed(scenario):
    failed = scenario.failed
    assert failed.proc.returncode != 0 and failed.run_id
    assert "Error in rule finetune" in failed.output and "SLURM status is: 'FAILED'" in failed.output
    jobs = sacct(failed.run_id, scenario.since)
    states = {}
    for job in jobs:
        states.setdefault(job["Comment"], []).append(job["State"])
    retries = profile_settings()["retries"]
    for seed in (1, 2):
        assert states[f"rule_finetune_wildcards_tiny_pair_{seed}"] == ["FAILED"] * (retries + 1)
        for dataset in ("tiny_sent", "tiny_topic"):
            assert states[f"rule_finetune_wildcards_{dataset}_{seed}"] == ["COMPLETED"]
    # The cause reaches the user: the SLURM log that snakemake names says which file is broken.
    logs = re.findall(r"(\S+/rule_finetune/tiny_pair_1/\d+\.log)", failed.output)
    assert logs and BROKEN in Path(logs[-1]).read_text()


def test_a_retry_asks_for_more_time(scenario):
    attempts = [j for j in sacct(scenario.failed.run_id, scenario.since)
                if j["Comment"] == "rule_finetune_wildcards_tiny_pair_1"]
    limits = [minutes(j["Timelimit"]) for j in sorted(attempts, key=lambda j: int(j["JobIDRaw"]))]
    assert len(limits) >= 2 and limits[1] == pytest.approx(2 * limits[0], abs=1), limits


def test_rerun_after_the_fix_runs_only_what_failed(scenario):
    fixed = scenario.fixed
    assert fixed.proc.returncode == 0, fixed.output[-6000:]
    done_before = {j["Comment"] for j in sacct(scenario.failed.run_id, scenario.since) if j["State"] == "COMPLETED"}
    ran_now = [j["Comment"] for j in sacct(fixed.run_id, scenario.since)]
    assert {"rule_finetune_wildcards_tiny_pair_1", "rule_finetune_wildcards_tiny_pair_2"} <= set(ran_now)
    assert not done_before & set(ran_now), "a job that had completed ran again"
    assert not [c for c in ran_now if re.match(r"rule_finetune_wildcards_tiny_(sent|topic)", c)]
    again = run_on_slurm(scenario.workdir, yaml.safe_load((scenario.workdir / "config.yaml").read_text()), "-n")
    assert "Nothing to be done" in again.output


def test_every_job_ran_as_a_slurm_job_and_gpu_rules_got_a_gpu(scenario):
    jobs = {j["JobIDRaw"]: j for run in (scenario.failed, scenario.fixed) for j in sacct(run.run_id, scenario.since)}
    announced = [b for run in (scenario.prepared, scenario.failed, scenario.fixed) for b in job_blocks(run.output)]
    local = {b["rule"] for b in announced if b["local"]}
    remote = {b["rule"] for b in announced if not b["local"]}
    assert not local & remote
    assert set(scenario.planned) == local | remote
    assert {"finetune"} <= remote and "prepare_data" not in remote and "finetune_table" in local

    ran = {block["log"].split(",")[0]: block for block in announced if "log" in block}  # not `all`
    per_rule = {}
    for log, block in ran.items():
        first = (scenario.workdir / log).read_text().splitlines()[0] if (scenario.workdir / log).stat().st_size else ""
        where = re.search(r"SLURM job (\d+) on \S+, CUDA_VISIBLE_DEVICES=(\S+),", first)
        if block["local"]:
            assert where is None, f"{log}: a localrule ran inside a SLURM job"
            continue
        assert where, f"{log}: no SLURM job recorded: {first!r}"
        job = jobs[where.group(1)]
        assert job["State"] == "COMPLETED", (log, job)
        per_rule[block["rule"]] = per_rule.get(block["rule"], 0) + 1
        if block["rule"] in GPU_RULES:
            assert "gres/gpu=1" in job["AllocTRES"] and where.group(2) in ("0", "1"), (log, job, first)
        elif not block["grouped"]:  # a group job holds the GPU of its GPU members
            assert "gres/gpu" not in job["AllocTRES"] and where.group(2) == "unset", (log, job, first)
    assert per_rule == {r: n for r, n in scenario.planned.items() if r in remote}


def test_sacct_listing(scenario, capsys):
    """Not a check: prints the accounting of the two runs (make test-slurm shows it with -s)."""
    with capsys.disabled():
        for name, run in (("failed run", scenario.failed), ("rerun after the fix", scenario.fixed)):
            print(f"\n== sacct, {name} ({run.run_id})")
            print(subprocess.run(["sacct", "-X", "-S", scenario.since, "--name", run.run_id, "-o",
                                  "JobID,State,ExitCode,Partition,AllocTRES%45,Elapsed,Timelimit,Comment%60"],
                                 capture_output=True, text=True).stdout)

"""How planning scales: `snakemake -n` on the paper config (config/config.yaml) at 1x, 2x and 4x its seeds.

The grid grows by seeds: every seed list of the config (finetune.seeds, centroid.seeds,
geometry.experiments.*.seeds, region seeds where set; lists that are absent follow finetune.seeds)
gets `factor` times as many seeds, the new ones numbered on from the list's largest, so a list
that was part of another (finetune's 1-5 of geometry per_dataset's 1-20) still is. The override
goes after config/config.yaml in `--configfile` (Snakemake merges it in). The jobs grow faster
than the seeds: the region's lines pair every two seeds.

Reported per size: planned jobs (the dry run's `total`), wall seconds of the whole command
(Python and Snakemake's start included, a few seconds), seconds per job, and the growth exponent
log(time ratio) / log(jobs ratio), against the first size and against the size before (that one
is not flattered by the fixed start): 1.0 is linear in the jobs.

Each dry run works in a fresh temporary directory (`--directory`; the repository's results/ and
.snakemake/ are not touched), offline (HF_*_OFFLINE), with placeholders for the config's local
dataset files that users export themselves (ISEAR), and with a PATH without SLURM's commands: a
dry run needs no cluster, and the SLURM executor plugin, loaded by every Snakemake command, runs
`scontrol show config` at import, which waits out a 10 s timeout where SLURM is installed but no
controller answers.

    python -m bench plan                            # 1x, 2x, 4x (4x takes minutes)
    BENCH_PLAN_SCALES=1,2 python -m bench plan
    BENCH_PLAN_PROFILE=1 python -m bench plan       # also cProfile the first size: the top costs
"""

from __future__ import annotations

import json
import math
import os
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = ROOT / "config/config.yaml"
SEED_KEYS = ("seeds", "ex_seeds")
SLURM_COMMANDS = {"sbatch", "srun", "squeue", "sacct", "sinfo", "scontrol", "scancel", "sacctmgr", "sshare"}
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def seed_lists(config, path: tuple = ()) -> dict[tuple, list]:
    """Every list of seeds in `config`, by its key path."""
    found = {}
    if isinstance(config, dict):
        for key, value in config.items():
            if key in SEED_KEYS and isinstance(value, list):
                found[path + (key,)] = value
            else:
                found |= seed_lists(value, path + (key,))
    return found


def scaled_seeds(seeds: list[int], factor: int) -> list[int]:
    """`seeds` and (factor - 1) x as many new ones after the largest."""
    start = max(seeds) + 1
    return list(seeds) + list(range(start, start + (factor - 1) * len(seeds)))


def seed_override(config: dict, factor: int) -> dict:
    """A config holding only the seed lists of `config`, each scaled by `factor` (to merge over it)."""
    override = {}
    for path, seeds in seed_lists(config).items():
        node = override
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = scaled_seeds(seeds, factor)
    return override


def write_override(config: dict, factor: int, folder: Path) -> Path:
    path = folder / f"seeds_x{factor}.yaml"
    path.write_text(yaml.safe_dump(seed_override(config, factor), default_flow_style=None))
    return path


def planned_jobs(output: str) -> int:
    """The number of jobs a dry run's output plans (0 when there is nothing to do)."""
    match = re.search(r"^total\s+(\d+)\s*$", output, re.M)
    if match:
        return int(match.group(1))
    if "Nothing to be done" in output:
        return 0
    raise ValueError("no job count in the dry run's output")


def prepare_workdir(folder: Path, config: dict) -> Path:
    """A working directory for the config: empty csv files (the header only) for its local datasets'
    files, which users export themselves."""
    folder.mkdir(parents=True, exist_ok=True)
    for spec in config.get("datasets", {}).values():
        if spec.get("source") != "local":
            continue
        columns = [c for role in ("text_a", "text_b", "label") for c in _as_list(spec.get(role))]
        for name in spec.get("files", {}).values():
            path = folder / name
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(",".join(columns) + "\n")
    return folder


def _as_list(value) -> list:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def path_without_slurm(folder: Path) -> str:
    """A PATH of links to this machine's commands, less SLURM's."""
    folder.mkdir(parents=True, exist_ok=True)
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for name in os.listdir(directory):
            link, target = folder / name, os.path.join(directory, name)
            if name not in SLURM_COMMANDS and not link.exists() and os.access(target, os.X_OK):
                link.symlink_to(target)
    return str(folder)


def dry_run_command(configfile: Path, workdir: Path, override: Path, profile: Path | None = None) -> list[str]:
    # --configfile takes several values: it comes last
    python = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    return [*python, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(configfile), str(override)]


def dry_run(configfile: Path, factor: int, folder: Path, env: dict, profile: Path | None = None) -> dict:
    """One timed dry run of `configfile` at `factor` x its seeds, in a fresh working directory under `folder`."""
    config = yaml.safe_load(Path(configfile).read_text())
    workdir = prepare_workdir(folder / f"x{factor}{'_profile' if profile else ''}", config)
    override = write_override(config, factor, folder)
    start = time.perf_counter()
    proc = subprocess.run(dry_run_command(configfile, workdir, override, profile), cwd=workdir, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"bench plan: the dry run at {factor}x failed: {last}")
    jobs = planned_jobs(proc.stdout)
    seeds = seed_override(config, factor).get("finetune", {}).get("seeds")
    return {"factor": factor, "finetune_seeds": None if seeds is None else len(seeds),
            "jobs": jobs, "seconds": seconds, "seconds_per_job": seconds / max(jobs, 1)}


def growth_exponent(first: dict, row: dict) -> float | None:
    """log(time ratio) / log(jobs ratio) between two sizes; None when the jobs did not grow."""
    if row["jobs"] <= first["jobs"] or first["jobs"] == 0:
        return None
    return math.log(row["seconds"] / first["seconds"]) / math.log(row["jobs"] / first["jobs"])


def _exponent(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def top_costs(profile: Path, count: int = 12) -> list[dict]:
    """The functions of this repository (src/, workflow/, the Snakefile) with the most cumulative time."""
    stats = pstats.Stats(str(profile)).stats
    ours = [(func, entry) for func, entry in stats.items() if func[0].startswith(str(ROOT))
            and "/.venv/" not in func[0]]
    ours.sort(key=lambda item: -item[1][3])
    return [{"function": f"{Path(f[0]).relative_to(ROOT)}:{f[1]}({f[2]})", "calls": e[1],
             "cumulative_seconds": e[3]} for f, e in ours[:count]]


def total_seconds(profile: Path) -> float:
    return pstats.Stats(str(profile)).total_tt


def scales() -> list[int]:
    text = os.environ.get("BENCH_PLAN_SCALES", "1,2,4")
    try:
        factors = [int(x) for x in text.split(",")]
    except ValueError:
        raise SystemExit(f"bench plan: BENCH_PLAN_SCALES is '{text}', expected whole numbers like 1,2,4") from None
    if not factors or min(factors) < 1:
        raise SystemExit(f"bench plan: BENCH_PLAN_SCALES is '{text}', expected numbers of at least 1")
    return factors


def main(out_dir) -> None:
    factors = scales()
    config = yaml.safe_load(PAPER_CONFIG.read_text())
    rows = []
    print(f"snakemake -n on {PAPER_CONFIG.relative_to(ROOT)} with {len(seed_lists(config))} seed lists scaled "
          f"{', '.join(f'{f}x' for f in factors)}; growth exponents against {factors[0]}x and the size before")
    print(f"{'scale':>5} {'finetune seeds':>14} {'jobs':>7} {'seconds':>8} {'ms/job':>7} {'jobs ratio':>10} "
          f"{'time ratio':>10} {'exponent':>8} {'from prev':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, **OFFLINE, "PATH": path_without_slurm(Path(tmp) / "bin")}
        for factor in factors:
            row = dry_run(PAPER_CONFIG, factor, Path(tmp), env)
            first, previous = (rows[0], rows[-1]) if rows else (row, row)
            row["exponent"] = growth_exponent(first, row)
            row["exponent_from_previous"] = growth_exponent(previous, row)
            rows.append(row)
            print(f"{factor:>4}x {row['finetune_seeds'] or '':>14} {row['jobs']:>7} {row['seconds']:>8.1f} "
                  f"{1000 * row['seconds_per_job']:>7.2f} {row['jobs'] / first['jobs']:>10.2f} "
                  f"{row['seconds'] / first['seconds']:>10.2f} {_exponent(row['exponent']):>8} "
                  f"{_exponent(row['exponent_from_previous']):>9}", flush=True)
        result = {"config": str(PAPER_CONFIG.relative_to(ROOT)), "sizes": rows}
        if os.environ.get("BENCH_PLAN_PROFILE") == "1":
            profile = Path(tmp) / "plan.prof"
            dry_run(PAPER_CONFIG, factors[0], Path(tmp), env, profile)
            costs = top_costs(profile)
            result["profile"] = {"factor": factors[0], "seconds": total_seconds(profile), "top_costs": costs}
            print(f"cProfile of the {factors[0]}x dry run ({total_seconds(profile):.1f} s profiled), this "
                  "repository's code by cumulative time (the rest is Snakemake's):")
            for cost in costs:
                print(f"   {cost['cumulative_seconds']:>7.2f} s {cost['calls']:>7} calls  {cost['function']}")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "plan.json").write_text(json.dumps(result, indent=2) + "\n")

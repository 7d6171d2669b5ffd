"""Run a workflow config from scratch and say where its time went.

Runs Snakemake in a fresh working directory, samples the CPU time of Snakemake's own process
(its scheduling and DAG work, not the jobs), and after the run reads the cost line that every
job writes last in its log (weightspace.job.run: wall, start-up CPU, work CPU). Prints the
run's wall time and a table by stage; `--json` writes the numbers too.

    .venv/bin/python scripts/profile_demo.py                         # config/demo.yaml in a temp dir
    .venv/bin/python scripts/profile_demo.py --workdir /tmp/demo --json profile.json -- --scheduler greedy
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COST = re.compile(r"job cost: wall ([\d.]+) s, CPU ([\d.]+) s \(start-up ([\d.]+) s, work ([\d.]+) s\)")
# first folder under logs/ -> stage
STAGES = {"finetune": "training", "bitfit": "training", "lora": "training", "probe": "probes",
          "merge": "weight arithmetic", "region": "weight arithmetic", "centroid": "weight arithmetic",
          "centre": "weight arithmetic", "similarity": "geometry", "cluster": "geometry",
          "prepare_data": "data and base model", "pretrained": "data and base model",
          "tables": "tables and plots", "plots": "tables and plots"}


def own_cpu_seconds(pid: int) -> float:
    """utime + stime of one process alone (its children not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(workdir: Path, configfile: Path, cores: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(configfile), "--cores", str(cores), *extra]
    start = time.perf_counter()
    before = os.times()
    own = [0.0]
    with open(workdir / "snakemake.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)

        def sample():
            while proc.poll() is None:
                try:
                    own[0] = own_cpu_seconds(proc.pid)
                except (FileNotFoundError, ProcessLookupError):
                    break
                time.sleep(1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        rc = proc.wait()
        sampler.join()
    after = os.times()
    return {"returncode": rc, "wall_seconds": time.perf_counter() - start, "snakemake_cpu_seconds": own[0],
            "all_cpu_seconds": (after.children_user + after.children_system)
            - (before.children_user + before.children_system)}


def job_costs(workdir: Path) -> list[dict]:
    jobs = []
    for log in sorted((workdir / "logs").rglob("*.log")):
        lines = COST.findall(log.read_text(errors="replace"))
        if lines:
            wall, cpu, startup, work = map(float, lines[-1])
            stage = STAGES.get(log.relative_to(workdir / "logs").parts[0], "other")
            jobs.append({"log": str(log.relative_to(workdir)), "stage": stage, "wall": wall, "cpu": cpu,
                         "startup": startup, "work": work})
    return jobs


def report(result: dict, jobs: list[dict]) -> str:
    stages = {}
    for job in jobs:
        s = stages.setdefault(job["stage"], {"jobs": 0, "startup": 0.0, "work": 0.0})
        s["jobs"] += 1
        s["startup"] += job["startup"]
        s["work"] += job["work"]
    lines = [f"wall {result['wall_seconds'] / 60:.1f} min, exit {result['returncode']}; CPU of all processes "
             f"{result['all_cpu_seconds'] / 60:.1f} min, of which Snakemake's own process "
             f"{result['snakemake_cpu_seconds'] / 60:.1f} min", "",
             "| stage | jobs | work CPU (min) | start-up CPU (min) | start-up per job (s) |", "|---|---|---|---|---|"]
    for name, s in sorted(stages.items(), key=lambda kv: -kv[1]["work"]):
        lines.append(f"| {name} | {s['jobs']} | {s['work'] / 60:.1f} | {s['startup'] / 60:.1f} | "
                     f"{s['startup'] / s['jobs']:.1f} |")
    total = {k: sum(s[k] for s in stages.values()) for k in ("jobs", "startup", "work")}
    lines.append(f"| all jobs | {total['jobs']} | {total['work'] / 60:.1f} | {total['startup'] / 60:.1f} | "
                 f"{total['startup'] / max(total['jobs'], 1):.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configfile", default=str(ROOT / "config/demo.yaml"))
    parser.add_argument("--workdir", help="an empty folder to run in (default: a temporary one)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("snakemake_args", nargs="*", help="after --: passed to snakemake")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        result = run(workdir, Path(args.configfile).resolve(), args.cores, args.snakemake_args)
        jobs = job_costs(workdir)
        print(report(result, jobs))
        if args.json:
            Path(args.json).write_text(json.dumps({**result, "jobs": jobs}, indent=2))
    return result["returncode"]


if __name__ == "__main__":
    sys.exit(main())

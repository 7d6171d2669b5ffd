"""Merges at roberta-base size against the I/O floor: one centroid, and the leave-one-out centres.

- centroid: weightspace.merging.combine, the mean of N models written as a model folder (the
  centroid experiment's start: classifier_start), against the floor of reading the N models and
  writing one model's bytes (bench/weights.py);
- leave-one-out: the centroid experiment's centres for every target of a group, N models as N/2
  datasets x 2 seeds, each target's centre the mean of the other datasets' models
  (weightspace.centroid.centres.build_centre, one after the other as the workflow's jobs run),
  against the floor of the same reads and writes.

Outputs are written to BENCH_OUTPUTS (default: /dev/shm, memory, where there is one): on a disk
the kernel's writeback of earlier runs' dirty pages makes one write take 0.2 s or 2 s, and the
ratio would measure that, not the merge. Each centre is removed once written (floor and merge
alike): a job's output goes to disk, and eight of them kept in memory would push the models out
of the page cache.

Each runs in its own process with 1 and then 2 torch threads; transformers' model classes, which
a centre's first save imports (a job's start-up, not the merge), are imported before the clock
starts. Peak memory is anonymous memory above the level after imports: a merge holds the output
model and a slice per member, so it should not grow with the number of models.

    python -m bench merging                        # 4, 8, 16 models; 1 and 2 threads
    BENCH_MODELS=8 BENCH_THREADS=1 python -m bench merging
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

from bench.weights import (PeakMemory, best_of, child, counts, make_models, models_dir, read_floor, thread_counts,
                           warm, weights, write_floor)

MODULE = "bench.merging"


def outputs_dir(out_dir) -> Path:
    shm = Path("/dev/shm")
    default = shm / "weightspace-bench" if shm.is_dir() else Path(out_dir) / "merge_outputs"
    return Path(os.environ.get("BENCH_OUTPUTS", default))


def groups(models: list[str]) -> dict[str, list[str]]:
    """N models as N/2 datasets of 2 seeds."""
    return {f"dataset{j}": models[2 * j: 2 * j + 2] for j in range(len(models) // 2)}


def run_method(spec: dict) -> dict:
    from weightspace.centroid.centres import build_centre
    from weightspace.merging import combine
    from weightspace.models import classifier_encoder_names

    base, models, method, out = spec["base"], spec["models"], spec["method"], Path(spec["out"])
    classifier_encoder_names(base)
    output_bytes = os.path.getsize(weights(Path(base)))
    datasets = groups(models)
    with PeakMemory() as memory:
        start = time.perf_counter()
        if method == "centroid_floor":
            read_floor([weights(Path(m)) for m in models])
            write_floor(out / "centroid" / "floor.bin", output_bytes)
        elif method == "centroid":
            combine(models, [1 / len(models)] * len(models), base, out / "centroid", classifier_start=True)
        elif method == "loo_floor":
            for target in datasets:
                read_floor([weights(Path(m)) for d, seeds in datasets.items() if d != target for m in seeds])
                write_floor(out / target / "floor.bin", output_bytes)
                shutil.rmtree(out / target)
        else:
            for target in datasets:
                others = {d: seeds for d, seeds in datasets.items() if d != target}
                build_centre("centroid", others, base, out / target, {})
                shutil.rmtree(out / target)
        seconds = time.perf_counter() - start
    shutil.rmtree(out, ignore_errors=True)
    return {"method": method, "seconds": seconds, "peak_mb": memory.mb}


def main(out_dir) -> None:
    sizes, threads = counts(), thread_counts()
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    out_dir = Path(out_dir)
    base, models = make_models(models_dir(out_dir), max(sizes))
    print(f"roberta-base-shaped models (499 MB each), best of {repeats}; ratios against the floor of the same run")
    print(f"{'threads':>7} {'models':>6} {'floor s':>8} {'centroid s':>10} {'centroid/floor':>14} {'centroid MB':>11} "
          f"{'centres':>7} {'LOO floor s':>11} {'LOO s':>7} {'LOO/floor':>9} {'LOO MB':>7}")
    rows = []
    for t in threads:
        for n in sizes:
            subset = models[:n]
            warm([weights(p) for p in [base, *subset]])
            spec = {"base": str(base), "models": [str(m) for m in subset], "threads": t,
                    "out": str(outputs_dir(out_dir))}
            best = {m: best_of(MODULE, spec | {"method": m}, repeats)
                    for m in ("centroid_floor", "centroid", "loo_floor", "loo")}
            row = {"threads": t, "models": n, "centres": len(groups(subset)),
                   **{f"{m}_seconds": r["seconds"] for m, r in best.items()},
                   **{f"{m}_peak_mb": r["peak_mb"] for m, r in best.items()}}
            row["centroid_over_floor"] = row["centroid_seconds"] / row["centroid_floor_seconds"]
            row["loo_over_floor"] = row["loo_seconds"] / row["loo_floor_seconds"]
            rows.append(row)
            print(f"{t:>7} {n:>6} {row['centroid_floor_seconds']:>8.2f} {row['centroid_seconds']:>10.2f} "
                  f"{row['centroid_over_floor']:>14.2f} {row['centroid_peak_mb']:>11.0f} {row['centres']:>7} "
                  f"{row['loo_floor_seconds']:>11.2f} {row['loo_seconds']:>7.2f} {row['loo_over_floor']:>9.2f} "
                  f"{row['loo_peak_mb']:>7.0f}")
    for t in threads:
        mine = [r for r in rows if r["threads"] == t]
        print(f"{t} thread(s): centroid peak memory x{mine[-1]['centroid_peak_mb'] / max(mine[0]['centroid_peak_mb'], 1):.2f}"
              f" from {mine[0]['models']} to {mine[-1]['models']} models")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "merging.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(run_method)

"""Streaming task-vector similarity at roberta-base size, against the I/O floor and the naive way.

- floor: every byte of the base and the models once out of the page cache (bench/weights.py);
- product: the pass's arithmetic alone, the float64-summed Gram product (similarity.add_gram) of
  random blocks of the pass's width over as many columns: the compute the pass cannot avoid;
- streaming: weightspace.similarity.stream_similarity (one pass, float64 Gram matrix);
- naive: every task vector flattened into one float32 matrix (models x parameters), then
  sklearn's cosine_similarity; at the smallest size only (its memory grows with the models).

Each runs in its own process with 1 and then 2 torch threads. The streaming pass is reported as
a ratio to the floor, and to floor + product: reading and multiplying run one after the other
in one thread, so floor + product is the least a pass can take. Its cosines are checked against
float64 flatten + sklearn at the smallest size. Peak memory: anonymous memory above the level
after imports (bench/weights.py).

    python -m bench similarity                     # 4, 8, 16 models; 1 and 2 threads
    BENCH_MODELS=4,8 BENCH_THREADS=2 python -m bench similarity
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from bench.weights import (PeakMemory, best_of, child, counts, make_models, measure, models_dir, read_floor,
                           thread_counts, warm, weights)

MODULE = "bench.similarity"


def run_method(spec: dict) -> dict:
    import numpy as np
    import torch
    from sklearn.metrics.pairwise import cosine_similarity

    from weightspace.similarity import add_gram, block_width, flattened_matrix, stream_similarity
    from weightspace.taskvectors import task_vector

    base, models, method = spec["base"], spec["models"], spec["method"]
    vectors = [task_vector(m, base, name=Path(m).name) for m in models]
    if method == "product":
        width = block_width(len(models), spec["memory_mb"], torch.device("cpu"))
        block, gram = torch.randn(len(models), width), torch.zeros(len(models), len(models), dtype=torch.float64)
    result = None
    with PeakMemory() as memory:
        start = time.perf_counter()
        if method == "floor":
            read_floor([weights(Path(p)) for p in [base, *models]])
        elif method == "product":
            for _ in range(-(-vectors[0].numel // width)):
                add_gram(gram, block)
        elif method == "streaming":
            result = stream_similarity(vectors, memory_mb=spec["memory_mb"]).cosine
        else:
            matrix = flattened_matrix(vectors, torch.float64 if method == "reference" else torch.float32)
            result = cosine_similarity(matrix)
        seconds = time.perf_counter() - start
    return {"method": method, "seconds": seconds, "peak_mb": memory.mb,
            "cosine": None if result is None else np.asarray(result, dtype=float).tolist()}


def main(out_dir) -> None:
    import numpy as np

    sizes, threads = counts(), thread_counts()
    memory_mb = float(os.environ.get("BENCH_MEMORY_MB", "512"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    out_dir = Path(out_dir)
    base, models = make_models(models_dir(out_dir), max(sizes))
    print(f"roberta-base-shaped models (124.6M parameters, 499 MB each), budget {memory_mb:g} MB, best of {repeats}; "
          "ratios against the floor of the same run")
    print(f"{'threads':>7} {'models':>6} {'floor s':>8} {'product s':>9} {'stream s':>9} {'stream/floor':>12} "
          f"{'stream/(floor+product)':>22} {'stream MB':>9} {'naive/floor':>11} {'naive MB':>8} {'stream err':>10} "
          f"{'naive err':>9}")
    rows = []
    for t in threads:
        for n in sizes:
            subset = models[:n]
            warm([weights(p) for p in [base, *subset]])
            spec = {"base": str(base), "models": [str(m) for m in subset], "memory_mb": memory_mb, "threads": t}
            best = {m: best_of(MODULE, spec | {"method": m}, repeats) for m in ("floor", "product", "streaming")}
            row = {"threads": t, "models": n, **{f"{m}_seconds": r["seconds"] for m, r in best.items()},
                   **{f"{m}_peak_mb": r["peak_mb"] for m, r in best.items()}, "memory_mb": memory_mb}
            row["streaming_over_floor"] = row["streaming_seconds"] / row["floor_seconds"]
            row["streaming_over_floor_plus_product"] = row["streaming_seconds"] / (row["floor_seconds"] +
                                                                                   row["product_seconds"])
            naive = ""
            if n == sizes[0]:  # memory-hungry: the smallest size only
                best["naive"] = measure(MODULE, spec | {"method": "naive"})
                reference = np.array(measure(MODULE, spec | {"method": "reference"})["cosine"])
                for m in ("streaming", "naive"):
                    row[f"{m}_max_cosine_error"] = float(np.abs(np.array(best[m]["cosine"]) - reference).max())
                row |= {"naive_seconds": best["naive"]["seconds"], "naive_peak_mb": best["naive"]["peak_mb"],
                        "naive_over_floor": best["naive"]["seconds"] / row["floor_seconds"]}
                naive = (f"{row['naive_over_floor']:>11.2f} {row['naive_peak_mb']:>8.0f} "
                         f"{row['streaming_max_cosine_error']:>10.1e} {row['naive_max_cosine_error']:>9.1e}")
            rows.append(row)
            print(f"{t:>7} {n:>6} {row['floor_seconds']:>8.2f} {row['product_seconds']:>9.2f} "
                  f"{row['streaming_seconds']:>9.2f} {row['streaming_over_floor']:>12.2f} "
                  f"{row['streaming_over_floor_plus_product']:>22.2f} {row['streaming_peak_mb']:>9.0f} {naive}")
    for t in threads:
        mine = [r for r in rows if r["threads"] == t]
        print(f"{t} thread(s): streaming peak memory {mine[0]['streaming_peak_mb']:.0f} MB at {mine[0]['models']} models, "
              f"{mine[-1]['streaming_peak_mb']:.0f} MB at {mine[-1]['models']} (two blocks: at most the budget)")
    print("err: max |cosine - float64 flatten + sklearn|, smallest size (naive: float32)")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "similarity.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(run_method)

"""Streaming task-vector similarity vs the naive way vs the I/O floor, for growing numbers of models.

- floor: read every weight of every model (and of the base) once into memory, nothing else;
- streaming: weightspace.similarity.stream_similarity (one pass, chunked, float64 Gram matrix);
- naive: flatten every task vector into one float32 matrix (models x parameters), then
  sklearn's cosine_similarity.

Both are checked against float64 flatten + sklearn (at the smallest size): float32 sums over
22.7M terms are visibly off, the streaming pass's float64 sum of short float32 blocks is not.

Models are MiniLM-L6-shaped (22.7M parameters, 91 MB of float32): the base's tensor shapes with
random values, each "finetuned" model the base plus its own small perturbation. Files are read
from the page cache (a warm-up pass reads them first), so the floor is memory bandwidth, not disk.
Each method runs in its own process; peak memory is that process's peak anonymous memory (file
pages mapped by safetensors are not counted) above its level after imports.

    python -m bench similarity                     # 4, 8, 16 models
    BENCH_MODELS=4,8 BENCH_THREADS=2 python -m bench similarity
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

# MiniLM-L6 (bert, 6 layers, hidden 384, intermediate 1536, vocab 30522), as AutoModel names them
HIDDEN, INTERMEDIATE, VOCAB, LAYERS = 384, 1536, 30522, 6


def minilm_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {"embeddings.word_embeddings.weight": (VOCAB, HIDDEN),
              "embeddings.position_embeddings.weight": (512, HIDDEN),
              "embeddings.token_type_embeddings.weight": (2, HIDDEN),
              "embeddings.LayerNorm.weight": (HIDDEN,), "embeddings.LayerNorm.bias": (HIDDEN,)}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (HIDDEN, HIDDEN), (HIDDEN,)
        shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (INTERMEDIATE, HIDDEN), (INTERMEDIATE,)
        shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (HIDDEN, INTERMEDIATE), (HIDDEN,)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            shapes[p + ln + ".weight"], shapes[p + ln + ".bias"] = (HIDDEN,), (HIDDEN,)
    shapes["pooler.dense.weight"], shapes["pooler.dense.bias"] = (HIDDEN, HIDDEN), (HIDDEN,)
    return shapes


def make_models(folder: Path, n: int) -> tuple[Path, list[Path]]:
    import torch
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    base_path = folder / "base.safetensors"
    shapes = minilm_shapes()
    if not base_path.exists():
        g = torch.Generator().manual_seed(0)
        save_file({k: 0.05 * torch.randn(s, generator=g) for k, s in shapes.items()}, str(base_path))
    base = None
    paths = []
    for i in range(n):
        path = folder / f"model{i}.safetensors"
        if not path.exists():
            if base is None:
                from safetensors.torch import load_file

                base = load_file(str(base_path))
            g = torch.Generator().manual_seed(1000 + i)
            save_file({k: v + 1e-3 * torch.randn(v.shape, generator=g) for k, v in base.items()}, str(path))
        paths.append(path)
    return base_path, paths


# -- one method, in a child process ----------------------------------------------------------------

def _anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Samples the process's anonymous resident memory every millisecond in a thread."""

    def __enter__(self):
        self.start = self.peak = _anon_kb()
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, _anon_kb())
            time.sleep(0.001)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, _anon_kb())

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / 1024


def run_method(method: str, base: str, models: list[str], memory_mb: float) -> dict:
    import numpy as np
    import torch
    from safetensors import safe_open
    from sklearn.metrics.pairwise import cosine_similarity

    from weightspace.similarity import flattened_matrix, stream_similarity
    from weightspace.taskvectors import task_vector

    vectors = [task_vector(m, base, name=Path(m).stem) for m in models]
    with PeakMemory() as memory:
        start = time.perf_counter()
        if method == "floor":
            largest = max(e.numel for e in vectors[0].entries)
            buffer = torch.empty(largest)
            for path in [base, *models]:
                with safe_open(path, framework="pt") as f:
                    for key in f.keys():
                        t = f.get_tensor(key)
                        buffer[: t.numel()].copy_(t.reshape(-1))
            result = None
        elif method == "streaming":
            result = stream_similarity(vectors, memory_mb=memory_mb).cosine
        else:
            matrix = flattened_matrix(vectors, torch.float64 if method == "reference" else torch.float32)
            result = cosine_similarity(matrix)
        seconds = time.perf_counter() - start
    return {"method": method, "seconds": seconds, "peak_mb": memory.mb,
            "cosine": None if result is None else np.asarray(result, dtype=float).tolist()}


def _child() -> None:
    import torch

    spec = json.loads(sys.argv[2])
    torch.set_num_threads(spec["threads"])
    print(json.dumps(run_method(spec["method"], spec["base"], spec["models"], spec["memory_mb"])))


def measure(method: str, base: Path, models: list[Path], memory_mb: float, threads: int) -> dict:
    spec = {"method": method, "base": str(base), "models": [str(m) for m in models], "memory_mb": memory_mb,
            "threads": threads}
    proc = subprocess.run([sys.executable, "-m", "bench.similarity", "--child", json.dumps(spec)],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    if proc.returncode != 0:
        raise RuntimeError(f"{method} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def warm(paths) -> None:
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def main(out_dir) -> None:
    import numpy as np

    counts = [int(x) for x in os.environ.get("BENCH_MODELS", "4,8,16").split(",")]
    threads = int(os.environ.get("BENCH_THREADS", "1"))
    memory_mb = float(os.environ.get("BENCH_MEMORY_MB", "256"))
    repeats = int(os.environ.get("BENCH_REPEATS", "3"))
    out_dir = Path(out_dir)
    base, models = make_models(out_dir / "similarity_models", max(counts))
    print(f"MiniLM-shaped models (22.7M parameters, 91 MB each), {threads} thread(s), streaming budget "
          f"{memory_mb:g} MB, best of {repeats}; ratios against the I/O floor of the same run")
    print(f"{'models':>6} {'floor s':>8} {'stream s':>9} {'naive s':>8} {'stream/floor':>13} {'naive/floor':>12} "
          f"{'floor MB':>9} {'stream MB':>10} {'naive MB':>9} {'stream err':>11} {'naive err':>10}")
    rows = []
    for n in counts:
        subset = models[:n]
        warm([base, *subset])
        best = {}
        # the naive way is the slow baseline: once; the floor and the streaming pass: best of `repeats`
        for method, times in (("floor", repeats), ("streaming", repeats), ("naive", 1)):
            runs = [measure(method, base, subset, memory_mb, threads) for _ in range(times)]
            best[method] = min(runs, key=lambda r: r["seconds"]) | {"peak_mb": max(r["peak_mb"] for r in runs)}
        errors = {}
        if n == counts[0]:  # against float64 flatten + sklearn (memory-hungry: smallest size only)
            reference = np.array(measure("reference", base, subset, memory_mb, threads)["cosine"])
            errors = {m: float(np.abs(np.array(best[m]["cosine"]) - reference).max()) for m in ("streaming", "naive")}
        row = {"models": n, **{f"{m}_seconds": best[m]["seconds"] for m in best},
               **{f"{m}_peak_mb": best[m]["peak_mb"] for m in best},
               "streaming_over_floor": best["streaming"]["seconds"] / best["floor"]["seconds"],
               "naive_over_floor": best["naive"]["seconds"] / best["floor"]["seconds"],
               **{f"{m}_max_cosine_error": e for m, e in errors.items()}, "threads": threads, "memory_mb": memory_mb}
        rows.append(row)
        err = (f"{errors['streaming']:>11.1e} {errors['naive']:>10.1e}" if errors else f"{'':>11} {'':>10}")
        print(f"{n:>6} {row['floor_seconds']:>8.2f} {row['streaming_seconds']:>9.2f} {row['naive_seconds']:>8.2f} "
              f"{row['streaming_over_floor']:>13.2f} {row['naive_over_floor']:>12.2f} {row['floor_peak_mb']:>9.0f} "
              f"{row['streaming_peak_mb']:>10.0f} {row['naive_peak_mb']:>9.0f} {err}")
    first, last = rows[0], rows[-1]
    print(f"peak memory from {first['models']} to {last['models']} models: streaming x"
          f"{last['streaming_peak_mb'] / max(first['streaming_peak_mb'], 1):.2f} (bounded by the budget), naive x"
          f"{last['naive_peak_mb'] / max(first['naive_peak_mb'], 1):.2f}")
    print("err: max |cosine - float64 flatten + sklearn| at the smallest size (naive runs in float32)")
    (out_dir / "similarity.json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        _child()

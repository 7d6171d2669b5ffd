"""What the weight-space benchmarks share: roberta-base-shaped checkpoints, the I/O floor, peak
memory, and one process per measurement.

Checkpoints have the shapes of `transformers.RobertaConfig()` (roberta-base: 124.6M parameters,
499 MB of float32) and random values: the base is a bare encoder with its pooler; each
"finetuned" model is a sequence classifier as the workflow stores one (the encoder under
`roberta.`, a 2-label head, no pooler), the base plus its own small perturbation. They are made
once into BENCH_MODELS_DIR (default bench/out/roberta_models) and reused.

Files are read from the page cache (a warm-up pass reads them first), so the floor is memory
bandwidth, not the disk: the time to copy every byte once out of the page cache with pread into
a 1 MB buffer that stays in the CPU's cache, and, for merges, to write one model's bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAD = "classifier."


def models_dir(out_dir) -> Path:
    return Path(os.environ.get("BENCH_MODELS_DIR", Path(out_dir) / "roberta_models"))


def make_models(folder: Path, n: int, encoder: dict | None = None) -> tuple[Path, list[Path]]:
    """(the base's folder, n classifier folders), roberta-base-shaped (or of RobertaConfig(**encoder)),
    made where missing."""
    import torch
    from transformers import RobertaConfig, RobertaForSequenceClassification, RobertaModel

    from weightspace.io import load_tensors, save_tensors

    config = RobertaConfig(**(encoder or {}))
    base_dir = folder / "base"
    if not (base_dir / "model.safetensors").exists():
        with torch.device("meta"):
            shapes = {k: (v.shape, v.dtype) for k, v in RobertaModel(config).state_dict().items()}
        g = torch.Generator().manual_seed(0)
        save_tensors({k: 0.02 * torch.randn(s, generator=g) if d.is_floating_point else torch.zeros(s, dtype=d)
                      for k, (s, d) in shapes.items()}, base_dir / "model.safetensors")
        config.save_pretrained(base_dir)
    with torch.device("meta"):
        head = {k: v.shape for k, v in RobertaForSequenceClassification(config).state_dict().items()
                if k.startswith(HEAD)}
    base, paths = None, []
    for i in range(n):
        path = folder / f"model{i}"
        if not (path / "model.safetensors").exists():
            base = base if base is not None else load_tensors(base_dir / "model.safetensors")
            g = torch.Generator().manual_seed(1000 + i)
            tensors = {f"roberta.{k}": v + 1e-3 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
                       for k, v in base.items() if not k.startswith("pooler.")}
            tensors |= {k: 0.02 * torch.randn(s, generator=g) for k, s in head.items()}
            save_tensors(tensors, path / "model.safetensors")
            RobertaConfig(**(encoder or {}), architectures=["RobertaForSequenceClassification"]).save_pretrained(path)
        paths.append(path)
    return base_dir, paths


def weights(folder: Path) -> Path:
    return folder / "model.safetensors"


def warm(paths) -> None:
    """Read files once, so that every measurement finds them in the page cache."""
    for path in paths:
        with open(path, "rb") as f:
            while f.read(1 << 24):
                pass


def read_floor(paths) -> None:
    """Every byte of `paths` once out of the page cache, into one 1 MB buffer."""
    buffer = memoryview(bytearray(1 << 20))
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            offset = 0
            while got := os.preadv(fd, [buffer], offset):
                offset += got
        finally:
            os.close(fd)


def write_floor(path: Path, size: int) -> None:
    """`size` bytes written to a new file where an output would go: a model's write."""
    block = memoryview(bytearray(1 << 20))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for _ in range(size >> 20):
            f.write(block)


# -- measurements, each in a process of its own ---------------------------------------------------

def _anon_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


class PeakMemory:
    """Samples the process's anonymous resident memory every millisecond in a thread (file pages,
    the page cache, are not counted)."""

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


def measure(module: str, spec: dict) -> dict:
    """Run `module`'s run_method(spec) in a fresh process with spec["threads"] torch threads."""
    proc = subprocess.run([sys.executable, "-m", module, "--child", json.dumps(spec)],
                          capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{module} {spec.get('method')} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def child(run_method) -> None:
    """The child's side of measure(): set the threads, run, print the result as JSON."""
    import torch

    spec = json.loads(sys.argv[2])
    torch.set_num_threads(spec["threads"])
    print(json.dumps(run_method(spec)))


def best_of(module: str, spec: dict, repeats: int) -> dict:
    """The fastest of `repeats` runs, with the largest peak memory among them."""
    runs = [measure(module, spec) for _ in range(repeats)]
    return min(runs, key=lambda r: r["seconds"]) | {"peak_mb": max(r["peak_mb"] for r in runs)}


def counts() -> list[int]:
    return [int(x) for x in os.environ.get("BENCH_MODELS", "4,8,16").split(",")]


def thread_counts() -> list[int]:
    return [int(x) for x in os.environ.get("BENCH_THREADS", "1,2").split(",")]

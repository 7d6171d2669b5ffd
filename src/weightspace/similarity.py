"""Pairwise similarities of task vectors, computed in one streaming pass over the weights.

Every cosine similarity, dot product and Euclidean distance between M task vectors follows from
their Gram matrix G = V V^T (V: models x parameters) and its diagonal, the squared norms. G is
accumulated block by block: the parameters are laid out flat (the common layout's tensors in
order), and a block is the same columns of every model, as D (models x block width; each row the
model's weights minus its reference, see taskvectors), then G += D D^T. Each weight is read once,
a reference shared by several models once per block, and memory holds one block, whatever the
number of parameters.

Speed: the block is narrow on the CPU (_CPU_COLUMNS), so D stays in the CPU's cache from the
read to the product, and the values are read with pread (io.TensorReader) straight into D: one
copy out of the page cache, no page faults of a memory map. What is left is the product, M^2
multiply-adds per parameter: beyond a few models it, not the reading, sets the pace. On a GPU the
block is wider (_GPU_COLUMNS), to make each transfer to the device large; there the products are
quick and the next block is read while the device works on this one.

Precision: D holds the differences in float32 (exact to half an ulp of the difference), and
D D^T is summed in float64 over column blocks of _BLOCK, each block's product taken in float32
(TF32 off). The error of a block is that of a float32 dot product of _BLOCK terms, far below the
1e-5 the tests ask of a cosine; full float64 would double the memory traffic and, on a CPU, the
time.
"""

from __future__ import annotations

import bisect
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .io import DTYPES, TensorReader, intra_op_threads
from .taskvectors import Entry, TaskVector, common_layout, dropped_head_tensors

log = logging.getLogger(__name__)

_BYTES = 4  # D is float32
_BLOCK = 1 << 15  # columns per float32 product summed into the float64 Gram matrix
_CPU_COLUMNS = 1 << 17  # columns per block on the CPU: D of 16 models is 8 MB
_GPU_COLUMNS = 1 << 22  # on a GPU: 16 MB per model and copy, a few dozen blocks per roberta-base


@dataclass(frozen=True)
class Segment:
    """Columns start:stop of the flat layout, stored as `dtype` from byte `offset` of `path`
    (path None: zeros)."""

    start: int
    stop: int
    path: Path | None = None
    dtype: str = "F32"
    offset: int = 0


class Source:
    """Where each column of one flat row is stored: weights, or a reference, over the layout."""

    def __init__(self, segments: list[Segment]):
        self.segments = _coalesced(segments)
        self.starts = [seg.start for seg in self.segments]
        self.key = tuple(self.segments)

    def fill(self, reader: TensorReader, start: int, stop: int, out: torch.Tensor) -> None:
        """out = columns start:stop."""
        j = bisect.bisect_right(self.starts, start) - 1
        while j < len(self.segments) and self.segments[j].start < stop:
            seg = self.segments[j]
            a, b = max(seg.start, start), min(seg.stop, stop)
            target = out[a - start : b - start]
            if seg.path is None:
                target.zero_()
            else:
                reader.read(seg.path, seg.dtype, seg.offset + (a - seg.start) * DTYPES[seg.dtype].itemsize, target)
            j += 1


def _coalesced(segments: list[Segment]) -> list[Segment]:
    """Neighbouring segments that are also neighbours in one file (or both zeros) as one."""
    merged = []
    for seg in segments:
        if seg.stop == seg.start:
            continue
        last = merged[-1] if merged else None
        if last and last.path == seg.path and last.dtype == seg.dtype and (
                seg.path is None or last.offset + (last.stop - last.start) * DTYPES[last.dtype].itemsize == seg.offset):
            merged[-1] = Segment(last.start, seg.stop, last.path, last.dtype, last.offset)
        else:
            merged.append(seg)
    return merged


def row_sources(vector: TaskVector, layout: Sequence[Entry], reader: TensorReader) -> tuple[Source, Source | None]:
    """The sources of one model's weights and of its reference (None: zero) over the layout.

    A tensor the checkpoint lacks is the pretrained one (it did not move); a head tensor, or any
    tensor of a vector without reference, has a zero reference.
    """
    own = {e.name: e for e in vector.entries}
    weights, reference, column = [], [], 0
    for entry in layout:
        e = own[entry.name]
        stop = column + entry.numel
        if e.finetuned_key is not None:
            weights.append(Segment(column, stop, vector.finetuned, *reader.location(vector.finetuned, e.finetuned_key)))
        else:
            weights.append(Segment(column, stop, vector.pretrained, *reader.location(vector.pretrained, e.pretrained_key)))
        if vector.reference is None or e.pretrained_key is None:
            reference.append(Segment(column, stop))
        else:
            reference.append(Segment(column, stop, vector.reference, *reader.location(vector.reference, e.pretrained_key)))
        column = stop
    reference = Source(reference)
    return Source(weights), None if all(seg.path is None for seg in reference.segments) else reference


def reference_groups(sources) -> list[tuple[Source, list[int]]]:
    """Each distinct reference and the rows that subtract it: a base shared by models is read once."""
    groups = {}
    for i, (_, reference) in enumerate(sources):
        if reference is not None:
            groups.setdefault(reference.key, (reference, []))[1].append(i)
    return list(groups.values())


class _Slot:
    """Host buffers for one block: the models' rows and the distinct references' rows."""

    def __init__(self, models: int, references: int, width: int, pinned: bool):
        self.rows = torch.empty(models, width, dtype=torch.float32, pin_memory=pinned)
        self.references = torch.empty(references, width, dtype=torch.float32, pin_memory=pinned)


def block_width(n_models: int, memory_mb: float, device: torch.device) -> int:
    """Columns per block: D (models x width, float32) and a reference block, twice (one read while
    the other is multiplied), fit in `memory_mb`; at most _CPU_COLUMNS on the CPU, so that D stays
    in cache, and _GPU_COLUMNS on a GPU."""
    width = max(1, int(memory_mb * 2**20) // (_BYTES * 2 * (n_models + 1)))
    return min(width, _CPU_COLUMNS if device.type == "cpu" else _GPU_COLUMNS)


@dataclass
class Similarity:
    """The Gram matrix of a set of task vectors, and everything that follows from it."""

    names: list[str]
    gram: np.ndarray  # float64, models x models

    @property
    def norms(self) -> np.ndarray:
        return np.sqrt(np.clip(np.diag(self.gram), 0, None))

    @property
    def dot(self) -> np.ndarray:
        return self.gram

    @property
    def cosine(self) -> np.ndarray:
        """Cosine similarities; a model that did not move (norm 0) is 0 to every other."""
        outer = np.outer(self.norms, self.norms)
        cos = np.divide(self.gram, outer, out=np.zeros_like(self.gram), where=outer > 0)
        np.fill_diagonal(cos, 1.0)
        return np.clip(cos, -1.0, 1.0)

    @property
    def euclidean(self) -> np.ndarray:
        sq = np.diag(self.gram)
        dist = np.sqrt(np.clip(sq[:, None] + sq[None, :] - 2 * self.gram, 0, None))
        np.fill_diagonal(dist, 0.0)
        return dist

    def long_form(self) -> pd.DataFrame:
        """One row per ordered pair (model_a, model_b), the diagonal included."""
        n = len(self.names)
        a, b = np.divmod(np.arange(n * n), n)
        names = np.asarray(self.names, dtype=object)
        return pd.DataFrame({
            "model_a": names[a], "model_b": names[b],
            "cosine": self.cosine.ravel(), "dot": self.dot.ravel(), "euclidean": self.euclidean.ravel(),
            "norm_a": self.norms[a], "norm_b": self.norms[b],
        })

    @classmethod
    def from_long_form(cls, df: pd.DataFrame) -> "Similarity":
        names = list(pd.unique(df["model_a"]))
        gram = df.pivot(index="model_a", columns="model_b", values="dot").loc[names, names]
        return cls(names, gram.to_numpy(dtype=np.float64))


def stream_similarity(vectors: Sequence[TaskVector], memory_mb: float = 512,
                      device: torch.device | str = "cpu") -> Similarity:
    """All pairwise similarities of `vectors` in one pass over their weights (see the module doc)."""
    device = torch.device(device)
    layout = common_layout(vectors)
    dropped = dropped_head_tensors(vectors)
    if dropped:
        log.info("head tensors not shared by all models (left out): %s", ", ".join(dropped))
    m = len(vectors)
    total = sum(e.numel for e in layout)
    width = block_width(m, memory_mb, device)
    blocks = -(-total // width)
    log.info("similarity of %d models, %d parameters each, in %d blocks (%.1f MB each, device %s)",
             m, total, blocks, m * width * _BYTES / 2**20, device)
    gram = torch.zeros(m, m, dtype=torch.float64, device=device)
    spans = [(start, min(total, start + width)) for start in range(0, total, width)]
    # With a second core (or a GPU doing the products) the next block is read while this one is
    # multiplied; on the CPU the products then leave that core to the reading (more threads than
    # cores make the BLAS threads wait on each other: slower than not reading ahead at all), and
    # the reading thread also subtracts the references, which balances the two threads' work. On
    # a GPU the device subtracts: the host's thread is the slower one there.
    threads = torch.get_num_threads()
    ahead = device.type == "cuda" or threads > 1
    product_threads = threads - 1 if device.type == "cpu" and ahead else threads
    subtract_on_host = device.type != "cuda"
    with TensorReader() as reader, ThreadPoolExecutor(1) as pool, intra_op_threads(product_threads):
        sources = [row_sources(v, layout, reader) for v in vectors]
        groups = reference_groups(sources)
        slots = [_Slot(m, len(groups), width, device.type == "cuda") for _ in range(2 if ahead else 1)]

        def read(k: int) -> _Slot:
            slot, (start, stop) = slots[k % len(slots)], spans[k]
            for i, (weights, _) in enumerate(sources):
                weights.fill(reader, start, stop, slot.rows[i, : stop - start])
            for j, (reference, _) in enumerate(groups):
                reference.fill(reader, start, stop, slot.references[j, : stop - start])
            if subtract_on_host:
                subtract_references(slot.rows[:, : stop - start], slot.references[:, : stop - start], groups)
            return slot

        progress = _Progress(total, len(spans))
        pending = pool.submit(read, 0) if ahead else None
        for k, (start, stop) in enumerate(spans):
            if ahead:
                slot = pending.result()
                pending = pool.submit(read, k + 1) if k + 1 < len(spans) else None
            else:
                slot = read(k)
            d = slot.rows[:, : stop - start].to(device)
            if not subtract_on_host:
                subtract_references(d, slot.references[:, : stop - start].to(device), groups)
            add_gram(gram, d)
            progress.report(k + 1, stop - start)
    gram = gram.cpu().numpy()
    return Similarity([v.name for v in vectors], (gram + gram.T) / 2)  # blocks' products are not bitwise symmetric


def subtract_references(rows: torch.Tensor, references: torch.Tensor, groups) -> None:
    """rows[i] -= references[j] for each group j's rows i, in place."""
    for j, (_, members) in enumerate(groups):
        for i in members:
            rows[i].sub_(references[j])


def add_gram(gram: torch.Tensor, d: torch.Tensor) -> None:
    """gram (float64) += d d^T, as float32 products over column blocks of _BLOCK."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for start in range(0, d.shape[1], _BLOCK):
            block = d[:, start:start + _BLOCK]
            gram += (block @ block.T).double()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


class _Progress:
    def __init__(self, total: int, blocks: int, every_s: float = 10.0):
        self.total, self.blocks, self.every_s = total, blocks, every_s
        self.done, self.start, self.last = 0, time.perf_counter(), 0.0

    def report(self, number: int, width: int) -> None:
        self.done += width
        elapsed = time.perf_counter() - self.start
        if number == self.blocks or elapsed - self.last >= self.every_s:
            self.last = elapsed
            rate = self.done / max(elapsed, 1e-9)
            log.info("block %d/%d  %.1f M parameters per model/s  elapsed %.1f s  ETA %.1f s",
                     number, self.blocks, rate / 1e6, elapsed, (self.total - self.done) / max(rate, 1e-9))


def flattened_matrix(vectors: Sequence[TaskVector], dtype=torch.float64) -> np.ndarray:
    """The naive way: every task vector flattened into one in-memory matrix (models x parameters).

    Memory grows with models x parameters; kept for checks and as the benchmark's baseline.
    """
    names = [e.name for e in common_layout(vectors)]
    return np.stack([v.flatten(dtype, names).numpy() for v in vectors])

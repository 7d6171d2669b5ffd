"""Pairwise similarities of task vectors, computed in one streaming pass over the weights.

Every cosine similarity, dot product and Euclidean distance between M task vectors follows from
their Gram matrix G = V V^T (V: models x parameters) and its diagonal, the squared norms. G is
accumulated chunk by chunk: a chunk holds the same rows of the same tensors from every model as
D (models x chunk width; each row the model's weights minus its reference, see taskvectors), and
G += D D^T. Each finetuned weight is read once, each base's weight once per chunk however many
models it serves as reference, and memory holds one chunk: D fits in `memory_mb` whatever the
number of parameters, and its width shrinks as models are added.

Precision: D holds the differences in float32 (exact to half an ulp of the difference), and
D D^T is summed in float64 over column blocks of _BLOCK, each block's product taken in float32
(TF32 off). The error of a block is that of a float32 dot product of _BLOCK terms, far below the
1e-5 the tests ask of a cosine; full float64 would double the memory traffic and, on a CPU, the
time (the products dominate once there are more than a few models).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from .io import open_weights
from .taskvectors import Entry, TaskVector, common_layout, dropped_head_tensors

log = logging.getLogger(__name__)

_BYTES = 4  # D is float32
_BLOCK = 1 << 15  # columns per float32 product summed into the float64 Gram matrix


@dataclass(frozen=True)
class Piece:
    """Rows start:stop of layout tensor `index` (start None: a 0-d tensor, read whole)."""

    index: int
    start: int | None
    stop: int | None
    numel: int


def plan_chunks(layout: Sequence[Entry], capacity: int) -> list[list[Piece]]:
    """Pack the layout's tensors, split into row slices where needed, into chunks of at most
    `capacity` elements per model (a single row larger than that gets a chunk of its own)."""
    chunks, current, used = [], [], 0
    for index, entry in enumerate(layout):
        rows = entry.shape[0] if entry.shape else 1
        row_numel = entry.numel // rows if rows else 0
        start = 0
        while start < rows and row_numel:
            free = (capacity - used) // row_numel
            if free <= 0 and current:
                chunks.append(current)
                current, used = [], 0
                continue
            stop = min(rows, start + max(free, 1))
            numel = (stop - start) * row_numel
            current.append(Piece(index, start, stop, numel) if entry.shape else Piece(index, None, None, 1))
            used += numel
            start = stop
    if current:
        chunks.append(current)
    return chunks


def chunk_capacity(n_models: int, memory_mb: float) -> int:
    """Elements per model in a chunk: D (models x width, float32) plus one pretrained slice and
    one transfer buffer of the same width fit in `memory_mb`."""
    return max(1, int(memory_mb * 2**20) // (_BYTES * (n_models + 2)))


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
    by_name = [{e.name: e for e in v.entries} for v in vectors]
    m = len(vectors)
    chunks = plan_chunks(layout, chunk_capacity(m, memory_mb))
    widest = max(sum(p.numel for p in c) for c in chunks)
    buffer = torch.empty(m * widest, dtype=torch.float32, device=device)
    gram = torch.zeros(m, m, dtype=torch.float64, device=device)
    total = sum(e.numel for e in layout)
    log.info("similarity of %d models, %d parameters each, in %d chunks (%.1f MB each, device %s)",
             m, total, len(chunks), m * widest * _BYTES / 2**20, device)
    paths = [p for v in vectors for p in v.files]
    progress = _Progress(total, len(chunks))
    for number, chunk in enumerate(chunks, 1):
        width = sum(p.numel for p in chunk)
        d = buffer[: m * width].view(m, width)
        # files are opened per chunk: their memory maps, and the pages read through them, go with it
        with open_weights(paths) as files:
            column = 0
            for piece in chunk:
                name = layout[piece.index].name
                columns = slice(column, column + piece.numel)
                bases = {}
                for i, vector in enumerate(vectors):
                    _fill_row(d[i, columns], vector, by_name[i][name], files, piece, bases, device)
                column += piece.numel
        add_gram(gram, d)
        progress.report(number, width)
    gram = gram.cpu().numpy()
    return Similarity([v.name for v in vectors], (gram + gram.T) / 2)  # blocks' products are not bitwise symmetric


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


def _fill_row(row, vector: TaskVector, entry: Entry, files, piece: Piece, bases: dict, device) -> None:
    """row = weights - reference for one piece; a base's slice (as reference, or standing in for a
    tensor the checkpoint lacks) is read once per base file."""
    finetuned = vector.finetuned_rows(files, entry, piece.start, piece.stop)
    if finetuned is None:
        weights = _base_slice(vector.pretrained, vector.pretrained_rows, entry, files, piece, bases, device)
    else:
        weights = finetuned.reshape(-1).to(device, torch.float32)
    reference = _base_slice(vector.reference, vector.reference_rows, entry, files, piece, bases, device)
    if reference is None:
        row.copy_(weights)
    else:
        torch.sub(weights, reference, out=row)


def _base_slice(path, read, entry: Entry, files, piece: Piece, bases: dict, device) -> torch.Tensor | None:
    """The piece of a base file, flat on `device`, read by `read` once and kept in `bases`."""
    key = (path, entry.pretrained_key)
    if key not in bases:
        rows = read(files, entry, piece.start, piece.stop)
        bases[key] = None if rows is None else rows.reshape(-1).to(device, torch.float32)
    return bases[key]


class _Progress:
    def __init__(self, total: int, chunks: int, every_s: float = 10.0):
        self.total, self.chunks, self.every_s = total, chunks, every_s
        self.done, self.start, self.last = 0, time.perf_counter(), 0.0

    def report(self, number: int, width: int) -> None:
        self.done += width
        elapsed = time.perf_counter() - self.start
        if number == self.chunks or elapsed - self.last >= self.every_s:
            self.last = elapsed
            rate = self.done / max(elapsed, 1e-9)
            log.info("chunk %d/%d  %.1f M parameters per model/s  elapsed %.1f s  ETA %.1f s",
                     number, self.chunks, rate / 1e6, elapsed, (self.total - self.done) / max(rate, 1e-9))


def flattened_matrix(vectors: Sequence[TaskVector], dtype=torch.float64) -> np.ndarray:
    """The naive way: every task vector flattened into one in-memory matrix (models x parameters).

    Memory grows with models x parameters; kept for checks and as the benchmark's baseline.
    """
    names = [e.name for e in common_layout(vectors)]
    return np.stack([v.flatten(dtype, names).numpy() for v in vectors])

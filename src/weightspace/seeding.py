"""Seeds: one derived seed per (dataset, seed) run, and deterministic torch."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np


def run_seed(dataset: str, seed: int, mode: str = "derived", base: str | None = None) -> int:
    """The torch/data seed of one run.

    `derived` hashes (dataset, seed) so that seed 1 of two datasets shares neither head
    initialisation nor data order; `plain` uses the seed itself. `base` names the model a run
    starts from when it is not the config's base_model (App. B): it enters the hash, so that the
    two bases' runs of one (dataset, seed) do not share a head initialisation and data order that
    would pull them together by dataset. Runs from base_model pass None and keep their seeds.
    """
    if mode == "plain":
        return int(seed)
    key = f"{dataset}:{seed}" if base is None else f"{dataset}:{seed}:base-{base}"
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def seed_everything(seed: int) -> None:
    import torch  # here, not at the top: run_seed is used while the Snakefile is parsed

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)

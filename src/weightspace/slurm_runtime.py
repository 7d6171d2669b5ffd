"""Wall-time requests for cluster jobs: SLURM needs a job's time limit before the job starts.

A GPU job's time is dominated by the examples it pushes through the model, so the estimate is
(examples / throughput + startup) x margin, from the sizes in the datasets' meta.json. Each
retry asks for more (attempt 2 gets twice the time), so a job killed at its limit (TIMEOUT)
succeeds on a later attempt instead of failing the same way.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

# Evaluation is a forward pass only: about a third of the cost of a training step per example.
EVAL_COST = 1 / 3


def examples_processed(meta_paths, passes: float) -> float:
    """Training examples x `passes`, plus one evaluation pass over validation and test."""
    total = 0.0
    for path in meta_paths:
        # A plain FileNotFoundError (not a WeightspaceError): Snakemake then defers the estimate
        # until the job's inputs exist, as in a dry run before the data is prepared.
        sizes = json.loads(Path(path).read_text())["sizes"]
        total += sizes["train"] * passes + (sizes.get("validation", 0) + sizes.get("test", 0)) * EVAL_COST
    return total


def runtime_minutes(meta_paths, passes: float, cluster_cfg: dict, attempt: int = 1) -> int:
    """Minutes to request for a job that trains `passes` epochs over the datasets of `meta_paths`."""
    seconds = examples_processed(meta_paths, passes) / cluster_cfg["examples_per_second"]
    minutes = (seconds / 60 + cluster_cfg["startup_minutes"]) * cluster_cfg["margin"] * attempt
    cap = cluster_cfg["max_minutes"]
    return math.ceil(minutes) if cap is None else min(math.ceil(minutes), cap)

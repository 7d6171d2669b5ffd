"""What every workflow script does around the library call: logging, threads, one-line errors."""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import Callable

import torch

from .errors import WeightspaceError


def run(snakemake, main: Callable[[], object]) -> None:
    """Log to the rule's log file, use the rule's threads, and turn user errors into one line."""
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(str(snakemake.log[0]), mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)
    torch.set_num_threads(max(1, int(snakemake.threads)))
    if "SLURM_JOB_ID" in os.environ:
        # On a cluster: the job to look up in sacct, and the GPUs SLURM gave it.
        logging.getLogger("weightspace").info(
            "SLURM job %s on %s, CUDA_VISIBLE_DEVICES=%s, %d threads", os.environ["SLURM_JOB_ID"],
            socket.gethostname(), os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), int(snakemake.threads),
        )
    try:
        main()
    except WeightspaceError as err:
        logging.getLogger("weightspace").error("%s", err)
        sys.exit(1)

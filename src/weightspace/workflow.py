"""What every workflow script does around the library call: logging, threads, one-line errors."""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from typing import Callable

import torch

from .errors import WeightspaceError


def run(snakemake, main: Callable[[], object]) -> None:
    """Log to the rule's log file, use the rule's threads, and turn user errors into one line.

    The last line of every log is the job's cost: wall time, and CPU split into start-up (the
    imports before the job's own work) and work, for the profile of a run (scripts/profile_demo.py).
    """
    startup_cpu, start = time.process_time(), time.perf_counter()
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
    except Exception:  # not a user's mistake: the traceback goes to the log too, not only to the console
        logging.getLogger("weightspace").exception("the job failed")
        sys.exit(1)
    cpu = time.process_time()
    logging.getLogger("weightspace").info("job cost: wall %.1f s, CPU %.1f s (start-up %.1f s, work %.1f s)",
                                          time.perf_counter() - start, cpu, startup_cpu, cpu - startup_cpu)

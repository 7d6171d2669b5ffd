"""What every workflow script does around the library call: logging, threads, one-line errors."""

from __future__ import annotations

import faulthandler
import logging
import os
import socket
import sys
import time
from typing import Callable

from .errors import WeightspaceError


def run(snakemake, main: Callable[[], object]) -> None:
    """Run `main`, the job, with the rule's threads: its log goes to the rule's log file, a user's
    mistake becomes one ERROR line, any other error its traceback.

    The log is opened before anything that can fail: torch is imported after it, and each script's
    `main` imports the library modules it needs, so an error at import is logged too; a crash of the
    interpreter itself (a segfault) leaves Python's traceback there. The last line of every log is
    the job's cost: wall time, and CPU split into start-up (Python, Snakemake's preamble and torch:
    what every job pays before its own code) and work, for the profile of a run (scripts/profile_demo.py).
    """
    start = time.perf_counter()
    log = logging.getLogger("weightspace")
    handlers = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        stream = open(str(snakemake.log[0]), "w")
        faulthandler.enable(stream)
        handlers.append(logging.StreamHandler(stream))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", handlers=handlers, force=True)
    try:
        import torch

        torch.set_num_threads(max(1, int(snakemake.threads)))
        if "SLURM_JOB_ID" in os.environ:
            # On a cluster: the job to look up in sacct, and the GPUs SLURM gave it.
            log.info("SLURM job %s on %s, CUDA_VISIBLE_DEVICES=%s, %d threads", os.environ["SLURM_JOB_ID"],
                     socket.gethostname(), os.environ.get("CUDA_VISIBLE_DEVICES", "unset"), int(snakemake.threads))
        startup_cpu = time.process_time()
        main()
    except WeightspaceError as err:
        log.error("%s", err)
        sys.exit(1)
    except Exception:  # not a user's mistake: the traceback goes to the log too, not only to the console
        log.exception("the job failed")
        sys.exit(1)
    cpu = time.process_time()
    log.info("job cost: wall %.1f s, CPU %.1f s (start-up %.1f s, work %.1f s)",
             time.perf_counter() - start, cpu, startup_cpu, cpu - startup_cpu)

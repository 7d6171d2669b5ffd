"""The session's fixtures: the tiny config's inputs, and the whole tiny workflow run once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers import path_without_slurm, run_snakemake, tiny_config


@pytest.fixture(scope="session", autouse=True)
def no_slurm_client(tmp_path_factory):
    """The suite runs as on a machine without SLURM, but for tests/slurm (make test-slurm).

    Snakemake's SLURM plugin runs `scontrol show config` whenever Snakemake starts; where SLURM's
    client is installed but no controller answers (as before make test-slurm starts one), each
    Snakemake run the tests start would wait ~9 s for it.
    """
    if os.environ.get("WEIGHTSPACE_SLURM_TESTS"):
        yield
        return
    patch = pytest.MonkeyPatch()
    patch.setenv("PATH", path_without_slurm(tmp_path_factory.mktemp("bin")))
    yield
    patch.undo()


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Compute in the test process on one thread, as the tiny config's jobs do: on two cores a second
    thread only contends with the Snakemake runs the tests start (and small tensor ops slow tenfold)."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("tiny")
    return tmp, tiny_config(tmp)


@pytest.fixture(scope="session")
def tiny_run(tiny_workspace) -> tuple[Path, dict]:
    """The whole workflow (every experiment the tiny config enables) run once for the session."""
    tmp, config = tiny_workspace
    workdir = tmp / "run"
    workdir.mkdir(exist_ok=True)
    run_snakemake(workdir, config)
    return workdir, config

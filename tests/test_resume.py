"""After a crash (README "After a crash"): the same command finishes a run killed with kill -9,
with the same results; another spelling of the checkout reruns nothing; every job's error is in
its log."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from helpers import ROOT, run_snakemake
from weightspace import resume
from weightspace.config import validated_config
from weightspace.region.plan import region_plan

TIMING = ("feature_seconds", "fit_seconds", "examples_per_second")


def resumable_config(config: dict) -> dict:
    """The tiny config less what the kills do not need: finetuning, the region's same-dataset lines
    (their centroid is a merge, `temp`) and one centroid merge whose weights stay on disk."""
    config = copy.deepcopy({key: value for key, value in config.items() if key != "geometry"})
    config["centroid"] |= {"starts": ["pretrained", "centroid"], "shots": [40]}
    config["region"]["granularities"] = {"same_dataset": config["region"]["granularities"]["same_dataset"]}
    return config


def snakemake_command(workdir, config) -> list[str]:
    """The command a user would type (helpers.run_snakemake's), to start and kill."""
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(workdir / "config.yaml"), "--cores", "2"]


def incomplete_mark(workdir, output: str):
    """Where Snakemake marks `output` as the output of a job it has started and not yet finished."""
    return workdir / ".snakemake/incomplete" / base64.urlsafe_b64encode(output.encode()).decode()


def kill_once_written(command, workdir, outputs: list[str], console) -> str:
    """Start `command` in a process group of its own; kill -9 the group as soon as one of `outputs`
    is on disk while its job is still marked as running (the job may have more to write, Snakemake
    has not recorded it done). Returns that output."""
    with open(console, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 1200
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            hit = [o for o in outputs if (workdir / o).exists() and incomplete_mark(workdir, o).exists()]
            if hit:
                return hit[0]
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    raise AssertionError(f"the run ended ({proc.returncode}) before any of {outputs} was caught: "
                         f"{console.read_text()[-3000:]}")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_a_killed_run_is_finished_by_the_same_command(tiny_run, tmp_path):
    done, full_config = tiny_run
    config = resumable_config(full_config)
    workdir = tmp_path / "run"
    workdir.mkdir()
    command = snakemake_command(workdir, config)
    models = [f"results/models/finetuned/{d}/seed{s}/model.safetensors"
              for d in config["datasets"] for s in config["finetune"]["seeds"]]

    # Killed while finetuning: a stale lock and a job's outputs marked incomplete (before, the same
    # command stopped with IncompleteFilesException, and with --rerun-incomplete with LockException).
    kill_once_written(command, workdir, models, tmp_path / "first.log")
    # The same command again goes past them to the region; killed in its merge (the centroid) or a probe.
    plan = region_plan(validated_config(config, ROOT / "workflow/schemas/config.schema.yaml"))
    region_jobs = ["results/models/region/same_dataset/centroid/in/model.safetensors",
                   *(f"results/metrics/probe/{model}.parquet" for model in plan.probe_ids())]
    caught = kill_once_written(command, workdir, region_jobs, tmp_path / "second.log")
    assert (workdir / ".snakemake/locks").exists() and any((workdir / ".snakemake/incomplete").iterdir())

    proc = subprocess.run(command, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-5000:]
    assert "weightspace: removed the lock of a run that ended without releasing it" in proc.stderr
    assert "killed jobs, to be made again: " in proc.stderr and caught in proc.stderr
    dry_run = subprocess.run([*command, "-n"], capture_output=True, text=True)
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr

    # The same bytes as the session's uninterrupted run of the full tiny config.
    for weights in [*models, "results/models/centroid/tiny_topic/model.safetensors"]:
        assert sha256(workdir / weights) == sha256(done / weights), weights
    stats = "results/metrics/region/same_dataset/centroid/in.json"
    assert (workdir / stats).read_text() == (done / stats).read_text()
    probes = sorted((workdir / "results/metrics/probe").rglob("*.parquet"))
    assert len(probes) > 10
    for probe in probes:
        resumed = pd.read_parquet(probe).drop(columns=list(TIMING)).set_index("target")
        uninterrupted = pd.read_parquet(done / probe.relative_to(workdir)).drop(columns=list(TIMING))
        pd.testing.assert_frame_equal(resumed, uninterrupted.set_index("target").loc[resumed.index])


@pytest.mark.slow
def test_another_spelling_of_the_checkout_reruns_nothing(tiny_run, tmp_path):
    workdir, _ = tiny_run
    checkout = tmp_path / "checkout"
    checkout.symlink_to(ROOT)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--snakefile", str(checkout / "Snakefile"),
                           "--directory", str(workdir), "--configfile", str(workdir / "config.yaml")],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stderr[-3000:]
    # No job's record holds the checkout's path, so a checkout moved elsewhere reruns nothing either.
    records = list((workdir / ".snakemake/metadata").rglob("*"))
    assert len(records) > 50
    assert not [r for r in records if r.is_file() and str(ROOT) in r.read_text()]


@pytest.fixture
def finished(tiny_run, tmp_path):
    """A copy of the session's finished run (with its times: nothing is due)."""
    done, config = tiny_run
    workdir = tmp_path / "run"
    shutil.copytree(done, workdir, symlinks=True)
    return workdir, config


@pytest.mark.slow
def test_a_user_error_in_a_job_is_one_error_line_in_its_log(finished):
    workdir, config = finished
    metrics = workdir / "results/metrics/finetune/tiny_sent/seed1.parquet"
    metrics.write_bytes(metrics.read_bytes()[:100])
    proc = run_snakemake(workdir, config, "results/tables/finetune.md", check=False)
    assert proc.returncode != 0
    log = (workdir / "logs/tables/finetune.log").read_text()
    errors = [line for line in log.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "results/metrics/finetune/tiny_sent/seed1.parquet: not a readable parquet file" in errors[0]
    assert "Traceback" not in log


@pytest.mark.slow
@pytest.mark.parametrize("broken, expected", [
    ('raise RuntimeError("a broken matplotlib install")', "RuntimeError: a broken matplotlib install"),
    ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "Fatal Python error: Segmentation fault"),
], ids=["exception", "segfault"])
def test_any_other_error_in_a_job_is_in_its_log_with_its_traceback(finished, tmp_path, monkeypatch, broken, expected):
    """A failure before the job's own code (importing its modules), even a crash of Python."""
    workdir, config = finished
    (tmp_path / "broken/matplotlib").mkdir(parents=True)
    (tmp_path / "broken/matplotlib/__init__.py").write_text(broken + "\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "broken"))  # only the plot jobs import matplotlib
    proc = run_snakemake(workdir, config, "results/plots/interpolation.png", "--forcerun", "interpolation_plot",
                         check=False)
    assert proc.returncode != 0 and "Error in rule interpolation_plot" in proc.stderr, proc.stderr[-3000:]
    log = (workdir / "logs/plots/interpolation.log").read_text()
    assert expected in log and "weightspace/plots.py" in log, log


def test_a_lock_is_kept_while_its_holder_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marked = killed_job_output(tmp_path)
    (tmp_path / ".snakemake/locks/0.input.lock").write_text("results/a\n")
    resume.record_lock_holder()
    assert resume.clear_crashed_run() == [
        f"the working directory is locked by Snakemake pid {os.getpid()} on {socket.gethostname()}, which is still running"]
    assert (tmp_path / ".snakemake/locks/0.input.lock").exists() and marked.exists()


def test_a_lock_no_host_can_check_names_the_command_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marked = killed_job_output(tmp_path)
    (tmp_path / ".snakemake/locks/0.input.lock").write_text("results/a\n")
    (tmp_path / ".snakemake/locks/login2.7.holder.json").write_text(json.dumps({"host": "login2", "pid": 7}))
    monkeypatch.setattr(sys, "argv", ["snakemake", "--cores", "2"])
    (message,) = resume.clear_crashed_run()
    assert "locked by pid 7 on login2, which this host cannot check" in message
    assert message.endswith("run `snakemake --cores 2 --unlock` and then your command again")
    assert (tmp_path / ".snakemake/locks/0.input.lock").exists() and marked.exists()


def test_a_dead_run_s_lock_goes_and_so_do_its_killed_jobs_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    marked = killed_job_output(tmp_path)
    on_cluster = killed_job_output(tmp_path, "results/b", external_jobid="4242")
    (tmp_path / "results/c").write_text("finished")
    (tmp_path / ".snakemake/locks/0.input.lock").write_text("results/a\n")
    subprocess.run([sys.executable, "-c", "from weightspace.resume import record_lock_holder; record_lock_holder()"],
                   check=True)  # a process that has ended
    done = resume.clear_crashed_run()
    assert done[0].startswith("removed the lock of a run that ended without releasing it (pid ")
    assert done[1:] == ["removed 1 output(s) of killed jobs, to be made again: results/a"]
    assert not list((tmp_path / ".snakemake/locks").iterdir())
    assert not marked.exists() and not incomplete_mark(tmp_path, "results/a").exists()
    assert on_cluster.exists() and (tmp_path / "results/c").exists()  # a cluster job may still be writing it


def killed_job_output(workdir, output="results/a", external_jobid=None):
    """An output on disk that Snakemake marks as its job's, which has not finished."""
    (workdir / output).parent.mkdir(parents=True, exist_ok=True)
    (workdir / output).write_text("partial")
    incomplete_mark(workdir, output).parent.mkdir(parents=True, exist_ok=True)
    incomplete_mark(workdir, output).write_text(json.dumps({"external_jobid": external_jobid}))
    (workdir / ".snakemake/locks").mkdir(parents=True, exist_ok=True)
    return workdir / output

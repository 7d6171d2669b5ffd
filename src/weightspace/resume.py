"""After a crash: the next plain run clears what a killed Snakemake left behind, when that is safe.

Snakemake locks the working directory while it runs (.snakemake/locks/) and marks the outputs of
each job it starts as incomplete (.snakemake/incomplete/). A run killed outright (kill -9, a lost
login session, a power cut) leaves both, and the next run stops with a LockException or an
IncompleteFilesException. Snakemake's lock files do not say who holds them, so the workflow
records the holder itself (`record_lock_holder`, from its onstart handler: the main process, after
it has taken the lock). The next run removes the lock only when every recorded holder is a process
of this host (and container) that no longer runs, and once no run holds the lock it removes the
killed jobs' outputs and their marks, which is what --rerun-incomplete would redo. (A workflow
profile setting rerun-incomplete would make Snakemake print a line on every command, the one-line
error of a bad config included.)
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import shlex
import shutil
import socket
import sys
from pathlib import Path

STATE = Path(".snakemake")


def record_lock_holder(state: Path = STATE) -> None:
    """Record this process as the holder of the working directory's lock (none without a lock: a
    run with --nolock). The record goes with the lock: Snakemake removes the whole lock folder."""
    if not any((state / "locks").glob("*.lock")):
        return
    holder = {"host": socket.gethostname(), "pids": _pid_namespace(), "boot": _boot_id(), "pid": os.getpid(),
              "start": _process_start(os.getpid())}
    path = state / "locks" / f"{holder['host']}.{holder['pid']}.holder.json"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(holder))
    os.replace(tmp, path)


def clear_crashed_run(state: Path = STATE) -> list[str]:
    """Remove a lock left by a run that no longer runs, then the outputs its killed jobs left.

    Returns what it did for the user to read, or why it left a lock: its holder still runs, or
    this host cannot tell (then with the one command to run). Does nothing under --unlock.
    """
    if "--unlock" in sys.argv:
        return []
    locks = sorted((state / "locks").glob("*.lock"))
    done = []
    if locks:
        holders = _holders(state / "locks")
        states = [_is_running(h) for h in holders]
        if True in states:
            running = [h for h, alive in zip(holders, states) if alive]
            return [f"the working directory is locked by Snakemake {_who(running)}, which is still running"]
        if not holders or None in states:
            return [f"the working directory is locked by {_who(holders) or 'a run that left no record'}, which "
                    f"this host cannot check; if no other Snakemake run uses it, run `{_unlock_command()}` "
                    "and then your command again"]
        for path in [*locks, *(state / "locks").glob("*.holder.json")]:
            path.unlink()
        done.append(f"removed the lock of a run that ended without releasing it ({_who(holders)})")
    removed = _remove_incomplete_outputs(state / "incomplete")
    if removed:
        done.append(f"removed {len(removed)} output(s) of killed jobs, to be made again: {', '.join(removed)}")
    return done


def _holders(folder: Path) -> list[dict]:
    holders = []
    for path in folder.glob("*.holder.json"):
        try:
            holders.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            return []  # unreadable: its holder cannot be checked
    return holders


def _is_running(holder: dict) -> bool | None:
    """Whether the recorded process still runs; None where this host cannot tell."""
    if holder.get("host") != socket.gethostname() or holder.get("pids") != _pid_namespace():
        return None  # another machine, or another container's process ids
    if holder.get("boot") and holder["boot"] != _boot_id():
        return False  # the host has rebooted since
    if holder.get("start") is not None:
        return _process_start(holder["pid"]) == holder["start"]  # the same pid and start: the same process
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _process_start(pid: int) -> str | None:
    """When the process started (clock ticks after boot, from /proc); None if it does not run or has
    exited (a zombie), or without /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return None if fields[0] in ("Z", "X") else fields[19]


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _remove_incomplete_outputs(folder: Path) -> list[str]:
    """Delete each local output marked incomplete by a local job, and its mark; returns the outputs
    deleted. A job on a cluster (with a job id) may still run there: its marks are left to Snakemake."""
    removed = []
    for mark in sorted(p for p in folder.rglob("*") if p.is_file()):
        output = _marked_output(mark.relative_to(folder))
        if output is None or _external_jobid(mark) is not None:
            continue
        if output.is_dir() and not output.is_symlink():
            shutil.rmtree(output)
            removed.append(str(output))
        elif output.exists() or output.is_symlink():
            output.unlink()
            removed.append(str(output))
        mark.unlink()
    return removed


def _marked_output(mark: Path) -> Path | None:
    """The output a mark stands for: its name is the path in URL-safe base64, split into folders
    ('@' before each but the last) where it is longer than a file name may be."""
    try:
        output = Path(base64.urlsafe_b64decode("".join(p.removeprefix("@") for p in mark.parts)).decode())
    except (binascii.Error, UnicodeDecodeError):
        return None  # not a mark (Snakemake's own files there)
    if output.is_absolute() or ".." in output.parts or "://" in str(output):
        return None  # outside the working directory or in remote storage: Snakemake decides
    return output


def _external_jobid(mark: Path) -> str | None:
    try:
        return json.loads(mark.read_text()).get("external_jobid")
    except (OSError, ValueError, AttributeError):
        return "unknown"


def _who(holders: list[dict]) -> str:
    return ", ".join(f"pid {h.get('pid')} on {h.get('host')}" for h in holders)


def _unlock_command() -> str:
    """This command with --unlock: the same Snakefile, folder and config."""
    program = [sys.executable, "-m", "snakemake"] if sys.argv[0].endswith("__main__.py") else sys.argv[:1]
    return shlex.join([*program, *sys.argv[1:], "--unlock"])

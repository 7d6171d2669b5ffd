"""Bad input is refused before any job runs, in one line: every case of tests/bad_input/*.yaml.

A config or model case runs through `weightspace validate` and `snakemake -n`: each must exit
non-zero with exactly one line that holds the case's `expect`, no traceback, and create nothing.
A data case (`dataset:`) runs the real prepare_data job: it fails with one ERROR line in its log
and leaves none of its outputs (or, with `warn: true`, succeeds with the line as a WARNING).
The case format is described in tests/bad_input/README.md.
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import string
import sys
from pathlib import Path

import pytest
import yaml

from helpers import ROOT

pytestmark = pytest.mark.slow

CASES_DIR = ROOT / "tests/bad_input"
DELETE = "__delete__"


class Case:
    def __init__(self, area: str, name: str, spec: dict):
        self.id, self.area, self.spec = f"{area}/{name}", area, spec
        unknown = set(spec) - {"expect", "config", "text", "hex", "model", "dataset", "warn", "snakemake_says"}
        if unknown or "expect" not in spec:
            raise ValueError(f"{CASES_DIR / area}.yaml: case '{name}' has keys {sorted(unknown)} or no 'expect'")

    @property
    def is_data(self) -> bool:
        return "dataset" in self.spec


def load_cases() -> list[Case]:
    cases = []
    for path in sorted(CASES_DIR.glob("*.yaml")):
        cases += [Case(path.stem, name, spec) for name, spec in (yaml.safe_load(path.read_text()) or {}).items()]
    return cases


CASES = load_cases()


def merged(base, patch):
    """`patch` deep-merged onto `base`: mappings merge, everything else replaces, DELETE removes."""
    if not isinstance(patch, dict) or not isinstance(base, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value == DELETE:
            out.pop(key, None)
        else:
            out[key] = merged(out.get(key), value)
    return out


def model_edits() -> dict:
    path = CASES_DIR / "model_edits.py"
    spec = importlib.util.spec_from_file_location("bad_input_model_edits", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EDITS


def write_case(case: Case, folder: Path, base: dict, model_dir: Path, data_dir: Path) -> Path:
    """The case's config file in `folder` (with its damaged model or data files beside it)."""
    folder.mkdir(parents=True)
    config = copy.deepcopy(base)
    if "model" in case.spec:
        damaged = folder / "model"
        shutil.copytree(model_dir, damaged)
        model_edits()[case.spec["model"]](damaged)
        config["models"][config["base_model"]]["path"] = str(damaged)
    if case.is_data:
        files = folder / "files"
        files.mkdir()
        for name, text in case.spec["dataset"].get("files", {}).items():
            (files / name).write_text(text)
        spec = copy.deepcopy(case.spec["dataset"]["spec"])
        spec["files"] = {split: str(files / name) for split, name in spec.get("files", {}).items()}
        config["datasets"]["bad"] = spec
    path = folder / "config.yaml"
    if "hex" in case.spec:
        path.write_bytes(bytes.fromhex(case.spec["hex"]))
    elif "text" in case.spec:
        path.write_text(string.Template(case.spec["text"]).substitute(model=model_dir, data=data_dir))
    else:
        path.write_text(yaml.safe_dump(merged(config, case.spec.get("config", {})), sort_keys=False))
    return path


def created(workdir: Path) -> list[str]:
    """What a refused run left in its working directory (Snakemake's own .snakemake/ aside)."""
    return sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*")
                  if p.is_file() and ".snakemake" not in p.relative_to(workdir).parts)


def case_commands(case: Case, folder: Path, base: dict, model_dir: Path, data_dir: Path) -> dict:
    """The case's commands, each {command name: (argv, working directory)}, once its files are written."""
    config = write_case(case, folder, base, model_dir, data_dir)
    workdir = folder / "work"
    workdir.mkdir()
    snakemake = ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), "--configfile", str(config)]
    if case.is_data:
        return {"prepare_data": ("snakemake", snakemake + ["--cores", "1", "results/data/bad/meta.json"], workdir)}
    return {"validate": ("weightspace", ["validate", str(config)], workdir),
            "snakemake -n": ("snakemake", snakemake + ["-n"], workdir)}


def _child(program: str, argv: list[str], workdir: Path, output: Path) -> None:
    """In a forked child: run the command's own entry point with stdout and stderr to `output`."""
    code = 1
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)
        os.chdir(workdir)
        sys.argv = [program, *argv]
        if program == "snakemake":
            from snakemake.cli import main
        else:
            from weightspace.cli import main
        code = main(argv) or 0
    except SystemExit as exit:  # as the interpreter ends: a message is printed, with status 1
        if exit.code is None or isinstance(exit.code, int):
            code = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def run_commands(commands: dict, parallel: int) -> dict:
    """Run {key: (program, argv, workdir)}, `parallel` at a time, each in a child forked from this
    process: the child is the command as a user runs it, started without paying for its imports
    again (Snakemake's and the library's are loaded here first)."""
    import snakemake.cli  # noqa: F401  (loaded once, shared by every child)

    import weightspace.cli  # noqa: F401

    pending, running, results = list(commands.items()), {}, {}
    while pending or running:
        while pending and len(running) < parallel:
            key, (program, argv, workdir) = pending.pop(0)
            output = workdir.parent / f"{key[1].replace(' ', '_')}.out"
            pid = os.fork()
            if pid == 0:
                _child(program, argv, workdir, output)
            running[pid] = (key, workdir, output)
        pid, status = os.wait()
        key, workdir, output = running.pop(pid)
        log = workdir / "logs/prepare_data/bad.log"
        results[key] = {"rc": os.waitstatus_to_exitcode(status), "output": output.read_text(),
                        "log": log.read_text() if log.exists() else None, "created": created(workdir)}
    return results


@pytest.fixture(scope="session")
def outcomes(request, tiny_workspace, tmp_path_factory) -> dict:
    """Every selected case run once: {case id: {command name: its exit code, output, log, files}}."""
    tmp, base = tiny_workspace
    selected = {item.callspec.params["case"].id for item in request.session.items
                if getattr(item, "originalname", None) == "test_bad_input_is_refused_in_one_line"}
    root = tmp_path_factory.mktemp("bad_input")
    commands = {}
    for case in (c for c in CASES if c.id in selected):
        folder = root / case.id.replace("/", "__")
        for through, command in case_commands(case, folder, base, tmp / "tiny-roberta", tmp / "data").items():
            commands[(case.id, through)] = command
    results = run_commands(commands, parallel=max(2, os.cpu_count() or 2))
    runs = {}
    for (case_id, through), result in results.items():
        runs.setdefault(case_id, {})[through] = result
    return runs


def one_line(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.strip()]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line(case, outcomes):
    expect = case.spec["expect"]
    for through, run in outcomes[case.id].items():
        where = f"{through}:\n{run['output'][-3000:]}\n{run['log'] or ''}"
        if through == "prepare_data":
            lines = run["log"].splitlines() if run["log"] else []
            level = "WARNING" if case.spec.get("warn") else "ERROR"
            hits = [line for line in lines if f" {level} " in line]
            assert len(hits) == 1 and expect in hits[0], where
            assert "Traceback" not in run["log"], where
            if case.spec.get("warn"):
                assert run["rc"] == 0, where
            else:
                assert run["rc"] != 0, where
                assert not [f for f in run["created"] if f.startswith("results/")], where
            continue
        assert run["rc"] != 0, where
        assert run["created"] == [], where
        if through == "snakemake -n" and "snakemake_says" in case.spec:
            # Snakemake reads a --configfile before the Snakefile runs: its own message
            assert case.spec["snakemake_says"] in run["output"], where
            continue
        assert len(one_line(run["output"])) == 1, where
        assert expect in run["output"], where
        assert "Traceback" not in run["output"], where


def test_the_suite_covers_every_area():
    areas = {c.area for c in CASES}
    assert len(CASES) >= 100, len(CASES)
    assert {"config", "data", "models"} <= areas, areas

"""`weightspace cluster` on the paper's authors' own similarity matrix (70 roberta-base task vectors)."""

import json
import subprocess
import sys

import pytest

from helpers import ROOT
from weightspace.cli import main

AUTHORS = ROOT / "resources/reference/roberta_base_glue_superglue_cosine_70.csv"
GENERAL = [str(d) for d in range(14) if d not in (10, 13)]  # the paper's 12: copa (10) and wsc (13) left out


def cluster(capsys, *args):
    code = main(["cluster", "--similarity", str(AUTHORS), "--label-pattern", r"data_(\d+)", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_all_14_datasets(capsys):
    code, out, _ = cluster(capsys, "--k", "14")
    summary = json.loads(out)
    assert code == 0 and summary["models"] == 70 and summary["k"] == 14
    assert summary["accuracy"] == 0.8857142857142857  # 62 of 70
    # every dataset but wnli (7), copa (10) and wsc (13) is a cluster of its own
    assert {g for g, f1 in summary["f1"].items() if f1 < 1} == {"7", "10", "13"}
    assert len(summary["assignments"]) == 70 and set(summary["assignments"].values()) == set(range(14))


def test_the_papers_12_datasets(capsys):
    code, out, _ = cluster(capsys, "--k", "12", "--exclude", "10", "13")
    summary = json.loads(out)
    assert code == 0 and summary["models"] == 60 and sorted(summary["f1"], key=int) == GENERAL
    assert summary["accuracy"] == 0.95  # 57 of 60; the paper: 98% with 20 seeds per dataset
    assert {g for g, f1 in summary["f1"].items() if f1 < 1} == {"7", "11"}  # wnli, multirc
    assert summary["f1"]["7"] == 0.5714285714285714 and summary["f1"]["11"] == 0.7692307692307693


def test_the_installed_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "weightspace.cli", "cluster", "--similarity", str(AUTHORS),
                           "--k", "12", "--label-pattern", r"data_(\d+)", "--exclude", "10", "--exclude", "13"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accuracy"] == 0.95


@pytest.mark.parametrize("args, message", [
    (["--k", "14", "--label-pattern", "data_"], "has no capture group"),
    (["--k", "14", "--label-pattern", "data_(("], "is not a regular expression"),
    (["--k", "14", "--label-pattern", r"run_(\d+)"], "does not match model 'seed_1_data_9'"),
    (["--k", "12", "--label-pattern", r"data_(\d+)", "--exclude", "99"], "--exclude 99: no model has that group"),
    (["--k", "70", "--label-pattern", r"data_(\d+)"], "k = 70: expected 2 <= k < the number of models (70)"),
])
def test_bad_arguments_are_one_line_errors(capsys, args, message):
    code = main(["cluster", "--similarity", str(AUTHORS), *args])
    out, err = capsys.readouterr()
    assert code == 1 and out == "" and message in err and len(err.strip().splitlines()) == 1


def test_bad_files_are_one_line_errors(capsys, tmp_path):
    cases = {
        "missing.csv": (None, "file not found"),
        "rect.csv": ("a, b\n1, 0.5\n", "expected a square matrix"),
        "asym.csv": ("a, b\n1, 0.5\n0.2, 1\n", "not symmetric"),
        "text.csv": ("a, b\n1, x\nx, 1\n", "expected numbers"),
        "big.csv": ("a, b\n1, 3\n3, 1\n", "outside [-1, 1]"),
    }
    for name, (text, message) in cases.items():
        if text is not None:
            (tmp_path / name).write_text(text)
        code = main(["cluster", "--similarity", str(tmp_path / name), "--k", "2", "--label-pattern", "(.)"])
        err = capsys.readouterr().err
        assert code == 1 and message in err and len(err.strip().splitlines()) == 1, (name, err)

"""tests/config/tiny.yaml run by hand, as its header says: the working directory of
`python tests/helpers.py tiny-workdir DIR`, then snakemake from the repository root."""

import re
import subprocess
import sys

import pytest

from helpers import ROOT, TINY_CONFIG

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-by-hand")
    subprocess.run([sys.executable, str(ROOT / "tests/helpers.py"), "tiny-workdir", str(folder)], check=True,
                   capture_output=True, text=True, cwd=ROOT)
    return folder


def snakemake(workdir, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "--directory", str(workdir), "--configfile",
                           str(workdir / "config.yaml"), "--snakefile", "Snakefile", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)


def test_the_workdir_holds_the_config_unchanged_and_its_inputs(workdir):
    assert (workdir / "config.yaml").read_text() == TINY_CONFIG.read_text()
    assert (workdir / "tiny-roberta/model.safetensors").exists() and (workdir / "data/sent_train.csv").exists()


def test_lint_is_clean_on_the_tiny_config(workdir):
    proc = snakemake(workdir, "--lint")
    assert proc.returncode == 0 and "Congratulations" in proc.stdout + proc.stderr, proc.stdout[-3000:]


def test_dry_run_of_the_tiny_config_plans_every_section(workdir):
    proc = snakemake(workdir, "-n", "--cores", "2")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", out[out.index("Job stats:"):], re.M))
    assert int(counts["total"]) > int(counts["finetune"]) == 6
    assert {"prepare_data", "efficient_finetune", "similarity", "probe", "claims", "all"} <= set(counts)
    assert not list(workdir.glob("results"))

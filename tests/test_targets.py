"""The Snakefile's paper items: each plans its own figure or table and only the jobs it needs, and
an item whose experiment the config does not run says which section to add."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from helpers import MINIMAL, ROOT, shipped_workdir

pytestmark = pytest.mark.slow  # dry runs of the demo config: seconds each

# one item of each experiment, by the section it needs
ITEMS = {"fig2_tsne": "geometry", "table1_f1": "geometry", "fig5_extrapolation": "region",
         "table2_3_centroid": "centroid"}


def dry_run(workdir, configfile, *targets) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", *targets, "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(shipped_workdir(workdir)), "--configfile", str(configfile)],
                          capture_output=True, text=True)


def planned(proc) -> dict[str, int]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = proc.stdout.split("Job stats:")[1].split("\n\n")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M) if m.group(1) != "total"}


def test_each_region_figure_plans_only_the_probes_of_its_table(tmp_path):
    everything = planned(dry_run(tmp_path, ROOT / "config/demo.yaml"))
    lines = planned(dry_run(tmp_path, ROOT / "config/demo.yaml", "fig5_extrapolation"))
    assert {"region_lines", "extrapolation_plot", "probe_line"} <= set(lines)
    assert not {"region_tables", "region_pb", "region_leave", "interpolation_plot", "region_centroid"} & set(lines)
    assert lines["probe_line"] == everything["probe_line"] and lines["probe"] < everything["probe"]
    leave = planned(dry_run(tmp_path, ROOT / "config/demo.yaml", "appF_leave_centroid"))
    assert "probe_line" not in leave and {"region_leave", "leave_centroid_plot", "region_centroid"} <= set(leave)
    assert not {"finetune_table", "similarity", "efficient_finetune"} & set(leave)


def test_a_config_without_experiments_builds_the_finetuning_scores(tmp_path):
    configfile = tmp_path / "config.yaml"
    configfile.write_text(repr(MINIMAL).replace("'", '"'))  # JSON is YAML
    jobs = planned(dry_run(tmp_path, configfile))
    assert {"finetune", "finetune_table", "all"} <= set(jobs) and "claims" not in jobs


@pytest.mark.parametrize("item", sorted(ITEMS))
def test_an_item_of_an_experiment_the_config_does_not_run_names_the_section(tmp_path, item):
    configfile = tmp_path / "config.yaml"
    configfile.write_text(repr(MINIMAL).replace("'", '"'))  # JSON is YAML
    proc = dry_run(tmp_path, configfile, item)
    section = ITEMS[item]
    if item == "fig2_tsne":
        assert planned(proc) == {item: 1}  # no geometry experiment: no figure to draw
    else:
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0
        assert f"the config does not run '{section}': add a '{section}:' section" in out, out[-2000:]

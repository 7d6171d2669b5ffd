import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from weightspace.config import validated_config
from weightspace.errors import WeightspaceError

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
MINIMAL = {"base_model": "m", "models": {"m": {"source": "local", "path": "x"}}, "datasets": {"d": {"source": "demo"}}}


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name):
    config = validated_config(yaml.safe_load((ROOT / "config" / name).read_text()), SCHEMA)
    assert config["finetune"]["seeds"]
    assert set(sum(config["families"].values(), [])) <= set(config["datasets"])


def test_defaults_are_filled_in():
    config = validated_config(MINIMAL, SCHEMA)
    assert config["finetune"]["lr"] == 5e-5
    assert config["finetune"]["seed_mode"] == "derived"
    assert config["trust_remote_code"] is False
    assert config["data"]["validation_fraction"] == 0.1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"finetune": {"lr": "fast"}}, "key 'finetune.lr': expected number, got 'fast'"),
        ({"finetune": {"epochz": 3}}, "unknown key 'finetune.epochz'"),
        ({"datasets": {"d": {"source": "ftp"}}}, "key 'datasets.d.source': expected one of"),
        ({"base_model": "other"}, "key 'base_model' is 'other'"),
        ({"families": {"f": ["d", "nope"]}}, "key 'families.f' names dataset 'nope'"),
        ({"datasets": {"d": {"source": "local", "text_a": "t", "label": "l"}}}, "needs key 'datasets.d.files.train'"),
        ({"datasets": {"d": {"source": "hf", "path": "p", "label": "l"}}}, "needs key 'datasets.d.text_a'"),
    ],
)
def test_bad_config_gives_one_line_naming_the_key(change, message):
    config = {**MINIMAL, **change}
    with pytest.raises(WeightspaceError) as err:
        validated_config(config, SCHEMA, source="my.yaml")
    assert message in str(err.value)
    assert str(err.value).startswith("my.yaml: ")
    assert "\n" not in str(err.value)


def test_snakemake_reports_a_bad_config_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**MINIMAL, "finetune": {"seeds": "one"}}))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path),
         "--configfile", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert lines == [f"error: {bad}: key 'finetune.seeds': expected array, got 'one'"]
    assert "Traceback" not in proc.stderr


def test_cli_validate(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base_model: [")
    proc = subprocess.run([sys.executable, "-m", "weightspace.cli", "validate", str(bad), "--schema", str(SCHEMA)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith(f"weightspace: error: {bad}: not valid YAML")

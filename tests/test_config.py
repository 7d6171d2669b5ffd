import re
import subprocess
import sys

import pytest
import yaml

from helpers import MINIMAL, ROOT, SCHEMA, shipped_workdir
from weightspace.config import load_yaml, validated_config
from weightspace.errors import WeightspaceError


@pytest.mark.parametrize("name", ["config.yaml", "demo.yaml"])
def test_shipped_configs_are_valid(name, tmp_path, monkeypatch):
    monkeypatch.chdir(shipped_workdir(tmp_path))
    config = validated_config(load_yaml(ROOT / "config" / name), SCHEMA)
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


def test_no_allowed_name_leaves_results(tmp_path):
    """Every name the pattern allows is one plain path part: no '/', not '.' or '..', so a path
    built from it stays under results/ (checked for every string of up to 4 of these characters)."""
    from itertools import product

    from weightspace.config import NAME_PATTERN

    alphabet, allowed = "a./-_ {", []
    for n in range(1, 5):
        allowed += ["".join(chars) for chars in product(alphabet, repeat=n) if re.match(NAME_PATTERN, "".join(chars))]
    assert "a..a" in allowed and "a.-" in allowed and ".." not in allowed and "a/b" not in allowed
    results = (tmp_path / "results").resolve()
    for name in allowed:
        for path in (f"results/models/finetuned/{name}/seed1", f"results/data/{name}/meta.json",
                     f"results/models/region/{name}/centroid/in", f"results/models/pretrained/{name}"):
            assert (tmp_path / path).resolve().is_relative_to(results), name

"""profiles/slurm without a cluster: the paper's dry run, the rules it names, the time estimates;
`snakemake --profile slurm` after `make slurm-profile`; envs/weightspace.yaml created the way
Snakemake creates it (`--sdm conda`, with a stand-in for conda).

The profile against a real SLURM is tests/slurm (make test-slurm).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest
import yaml

from helpers import ROOT, SLURM_COMMANDS, path_without_slurm, shipped_workdir, tiny_config
from weightspace import paths
from weightspace.slurm_runtime import runtime_minutes

PROFILE = ROOT / "profiles/slurm/config.yaml"
CLUSTER = {"examples_per_second": 100, "startup_minutes": 10, "margin": 1.5, "max_minutes": 2880}


@pytest.mark.slow
def test_paper_dry_run_with_the_profile_needs_no_slurm(tmp_path):
    env = {**os.environ, "PATH": path_without_slurm(tmp_path / "bin")}
    (tmp_path / "run").mkdir()
    assert not any(os.path.exists(os.path.join(env["PATH"], c)) for c in SLURM_COMMANDS)
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--profile", str(PROFILE.parent),
                           "--directory", str(shipped_workdir(tmp_path / "run"))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "config/config.yaml" in out  # the profile's configfile: the paper's setup
    total = int(re.search(r"^total\s+(\d+)$", out, re.M).group(1))
    finetunes = int(re.search(r"^finetune\s+(\d+)$", out, re.M).group(1))
    assert finetunes >= 165 and total > finetunes
    # GPU jobs: one GPU and the partition of the profile; the time limit waits for the data.
    finetune = out[out.index("rule finetune:"):]
    resources = re.search(r"resources: (.*)", finetune).group(1)
    assert "gpu=1" in resources and "slurm_partition=gpu" in resources and "runtime=<TBD>" in resources


def test_profile_names_rules_and_groups_of_the_workflow(tmp_path):
    profile = yaml.safe_load(PROFILE.read_text())
    named = set(profile["set-resources"]) | set(profile["set-threads"])
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(tmp_path)))  # every experiment on
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--list-rules", "--snakefile", str(ROOT / "Snakefile"),
                           "--directory", str(tmp_path), "--configfile", str(config)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = set(proc.stdout.split())
    assert named <= rules, f"the profile names rules the workflow does not have: {named - rules}"
    rule_files = "".join(p.read_text() for p in (ROOT / "workflow/rules").glob("*.smk"))
    for group in profile.get("group-components", {}):
        assert f'"{group}"' in rule_files, f"group-components: no rule is in group {group}"
    for rule, resources in profile["set-resources"].items():
        if resources.get("gpu"):
            assert resources["cpus_per_gpu"] == "threads" and rule in profile["set-threads"], rule


def test_profile_by_name_after_make_slurm_profile(tmp_path):
    """`snakemake --profile slurm` from the repository root, as a cluster user types it: Snakemake
    looks for a named profile in its user config folder, which `make slurm-profile` fills."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
           "XDG_CONFIG_DIRS": str(tmp_path / "etc-xdg"),  # the site folder: none here
           # with SLURM's client but no controller, the plugin's `scontrol show config` waits ~10 s
           "PATH": path_without_slurm(tmp_path / "bin")}
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(workdir)))
    dry_run = [sys.executable, "-m", "snakemake", "finetune_scores", "--profile", "slurm", "-n",
               "--directory", str(workdir), "--configfile", str(config)]

    def snakemake():
        return subprocess.run(dry_run, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)

    before = snakemake()
    assert before.returncode != 0 and "no profile.yaml (or config.yaml) found" in before.stderr

    make = ["make", "--no-print-directory", "slurm-profile", f"SNAKEMAKE_PYTHON={sys.executable}"]
    for _ in range(2):  # a second time finds its own link and leaves it
        proc = subprocess.run(make, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
    link = home / ".config/snakemake/slurm"
    assert link.is_symlink() and link.resolve() == PROFILE.parent

    proc = snakemake()
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Using profile slurm" in out
    # the profile's settings: its partitions and account, the GPU rules' GPU and memory
    finetune = re.search(r"resources: (.*)", out[out.index("rule finetune:"):]).group(1)
    assert {"slurm_partition=gpu", "slurm_account=weightspace", "gpu=1", "mem_mb=32000"} <= set(finetune.split(", "))
    prepare = re.search(r"resources: (.*)", out[out.index("rule prepare_data:"):]).group(1)
    assert "slurm_partition=cpu" in prepare.split(", ")

    # someone's own profile of that name is not replaced
    link.unlink()
    link.mkdir()
    proc = subprocess.run(make, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "exists and is not this profile" in proc.stderr and not link.is_symlink()


def test_conda_env_has_the_dependencies_of_pyproject():
    import tomllib

    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs/weightspace.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert sorted(pip) == sorted(pins)


# A stand-in for conda, for Snakemake's --sdm conda offline: what Snakemake asks of conda (info,
# version, channel priority, env create, clean, activate), and of `env create` what conda does
# with the pip section: a requirements file beside the env file, pip run from that folder. The env
# is a venv; the packages conda and pip would download are this venv's, through a .pth file (which
# does not process this venv's own .pth files, so weightspace's editable install stays out).
FAKE_CONDA = r"""#!{python}
import json, os, subprocess, sys, tempfile
from pathlib import Path
import yaml

args = sys.argv[1:]
if args == ["--version"]:
    print("conda 25.1.1")
elif args[:2] == ["info", "--json"]:
    print(json.dumps({{"conda_prefix": {base!r}, "platform": "linux-64"}}))
elif args[:3] == ["config", "--get", "channel_priority"]:
    print(json.dumps({{"get": {{"channel_priority": "strict"}}}}))
elif args[:1] == ["clean"]:
    pass  # no package cache
elif args[:2] == ["env", "create"]:
    file, prefix = Path(args[args.index("--file") + 1]), Path(args[args.index("--prefix") + 1])
    spec = yaml.safe_load(file.read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(prefix)], check=True)
    site = subprocess.run([str(prefix / "bin/python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "_conda_packages.pth").write_text({packages!r} + "\n")
    workdir = Path(os.path.abspath(file)).parent  # conda's folder for pip: the env file's
    with tempfile.NamedTemporaryFile("w", prefix="condaenv.", suffix=".requirements.txt", dir=workdir,
                                     delete=False) as req:
        req.write("\n".join(pip))
    try:
        rc = subprocess.run([sys.executable, "-m", "pip", "--python", str(prefix / "bin/python"), "install", "-U",
                             "-r", req.name, "--exists-action=b", "--no-index", "--no-build-isolation",
                             "--disable-pip-version-check"], cwd=workdir).returncode
    finally:
        os.unlink(req.name)
    # from here on, every start of the env's python is recorded
    Path(site, "_record.pth").write_text("import sys; open(%r, 'a').write(sys.prefix + '\\n')\n" % {record!r})
    sys.exit(rc)
else:
    sys.exit(f"fake conda: {{args}} is not emulated")
"""


def fake_conda(folder) -> dict:
    """A conda base at `folder` (bin/conda, bin/activate); the environment to find it in."""
    (folder / "bin").mkdir(parents=True)
    conda = folder / "bin/conda"
    conda.write_text(FAKE_CONDA.format(python=sys.executable, base=str(folder), record=str(folder / "started"),
                                       packages=sysconfig.get_path("purelib")))
    conda.chmod(0o755)
    (folder / "bin/activate").write_text('PATH="$1/bin:$PATH"; export PATH\n')  # sourced: `source activate ENV`
    return {**os.environ, "PATH": f"{folder / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def create_env_like_snakemake(env_file, workdir, env) -> subprocess.CompletedProcess:
    """What Snakemake does for a `conda:` file: copy it to .snakemake/conda/<hash>.yaml, create there."""
    prefix = workdir / ".snakemake/conda/0123abcd"
    prefix.parent.mkdir(parents=True)
    shutil.copyfile(env_file, f"{prefix}.yaml")
    return subprocess.run(["conda", "env", "create", "--quiet", "--no-default-packages", "--file", f"{prefix}.yaml",
                           "--prefix", str(prefix)], cwd=workdir, env=env, capture_output=True, text=True, timeout=300)


def test_conda_env_installs_from_where_snakemake_copies_it(tmp_path):
    env = fake_conda(tmp_path / "conda")
    proc = create_env_like_snakemake(ROOT / "envs/weightspace.yaml", tmp_path / "ok", env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # A path to the repository in the file breaks there, as it does with conda: `..` is .snakemake/.
    relative = tmp_path / "relative.yaml"
    relative.write_text((ROOT / "envs/weightspace.yaml").read_text() + "      - -e ..\n")
    proc = create_env_like_snakemake(relative, tmp_path / "broken", env)
    assert proc.returncode != 0 and "does not appear to be a Python project" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_rules_run_with_sdm_conda(tmp_path):
    """`snakemake --sdm conda`: Snakemake creates the env from its copy of envs/weightspace.yaml and
    runs a rule's script with the env's python, which finds weightspace through the preamble."""
    env = fake_conda(tmp_path / "conda")
    workdir = tmp_path / "run"
    workdir.mkdir()
    config = workdir / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config(workdir)))
    target = paths.data_files("tiny_sent")["meta"]
    proc = subprocess.run([sys.executable, "-m", "snakemake", target, "--sdm", "conda", "--cores", "1",
                           "--directory", str(workdir), "--configfile", str(config)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert (workdir / target).exists() and "Activating conda environment" in out
    (prefix,) = [p for p in glob.glob(str(workdir / ".snakemake/conda/*")) if os.path.isdir(p)]
    assert prefix in (tmp_path / "conda/started").read_text().split()  # the env's python ran
    alone = subprocess.run([f"{prefix}/bin/python", "-c", "import weightspace"], capture_output=True, timeout=60)
    assert alone.returncode != 0  # not in the env itself: the rule found it where Snakemake did


def _meta(folder, train, validation=0, test=0):
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"sizes": {"train": train, "validation": validation, "test": test}}))
    return folder / "meta.json"


def test_runtime_grows_with_the_data_and_the_attempt(tmp_path):
    small = _meta(tmp_path / "small", 6_000, 300, 600)
    big = _meta(tmp_path / "big", 600_000, 3_000, 9_000)
    assert runtime_minutes([], 10, CLUSTER) == 15  # startup x margin
    # 6,000 x 10 epochs + 900 / 3 evaluated = 60,300 examples at 100/s = 10.05 min, + 10, x 1.5
    assert runtime_minutes([small], 10, CLUSTER) == 31
    assert runtime_minutes([small], 10, CLUSTER, attempt=2) == 61
    assert runtime_minutes([small, small], 10, CLUSTER) == runtime_minutes([_meta(tmp_path / "s2", 12_000, 600, 1200)],
                                                                           10, CLUSTER)
    assert runtime_minutes([big], 10, CLUSTER) == 1516
    assert runtime_minutes([big], 10, CLUSTER, attempt=2) == 2880  # the cap
    assert runtime_minutes([big], 10, {**CLUSTER, "max_minutes": None}, attempt=2) == 3032


def test_runtime_waits_for_the_data(tmp_path):
    # A plain FileNotFoundError naming the file: snakemake then shows <TBD> and asks again later.
    with pytest.raises(FileNotFoundError) as err:
        runtime_minutes([tmp_path / "meta.json"], 1, CLUSTER)
    assert err.value.filename == str(tmp_path / "meta.json")

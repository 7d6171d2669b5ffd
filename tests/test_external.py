"""Checkpoints the workflow did not train: imported (adapters merged by peft), refused in one line when they
do not fit, and members of every experiment beside the workflow's own models."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import SCHEMA, make_tiny_adapter, make_tiny_classifier, make_tiny_roberta, run_snakemake
from weightspace.config import validated_config
from weightspace.errors import WeightspaceError
from weightspace.external import check_folder, import_external, import_folder, loadable_checkpoints
from weightspace.io import load_tensors
from weightspace.taskvectors import task_vector


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_tiny_roberta(tmp_path_factory.mktemp("external") / "base")


def refusal(call, *args) -> str:
    with pytest.raises(WeightspaceError) as err:
        call(*args)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_an_adapter_s_task_vector_is_the_dense_difference_of_the_peft_merged_model(base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    adapter = make_tiny_adapter(base, tmp_path / "adapter", num_labels=3, seed=1)
    assert check_folder(adapter, base) == "adapter"
    import_folder(adapter, base, tmp_path / "imported")

    merged = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(base, num_labels=3),
                                       adapter).merge_and_unload().state_dict()
    pretrained = load_tensors(base / "model.safetensors")
    vector = task_vector(tmp_path / "imported", base, include_head=False)
    # a tensor the classifier lacks (the pooler) did not move
    expected = torch.cat([(merged.get(f"roberta.{e.name}", pretrained[e.name]).double() - pretrained[e.name].double())
                          .ravel() for e in vector.entries])
    assert torch.equal(vector.flatten(torch.float64), expected)

    # and that difference is B A scale (lora_alpha / r = 2) on the adapted weights, zero elsewhere
    factors = load_tensors(adapter / "adapter_model.safetensors")
    imported = load_tensors(tmp_path / "imported/model.safetensors")
    prefix = "base_model.model.roberta.encoder.layer.1.attention.self.value"
    update = factors[f"{prefix}.lora_B.weight"] @ factors[f"{prefix}.lora_A.weight"] * 2
    name = "encoder.layer.1.attention.self.value.weight"
    assert torch.allclose(imported[f"roberta.{name}"] - pretrained[name], update, atol=1e-6)
    assert float(update.abs().max()) > 1e-3
    name = "encoder.layer.1.attention.self.key.weight"
    assert torch.equal(imported[f"roberta.{name}"], pretrained[name])
    # the head the adapter saved (modules_to_save) comes with it
    assert torch.equal(imported["classifier.out_proj.weight"], factors["base_model.model.classifier.out_proj.weight"])


def test_a_model_folder_is_imported_tensor_for_tensor_with_its_shards_joined(base, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = make_tiny_classifier(base, tmp_path / "model", num_labels=2, seed=3)
    sharded = tmp_path / "sharded"
    AutoModelForSequenceClassification.from_pretrained(model).save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").exists()
    with loadable_checkpoints([model, sharded], base) as (plain, joined):
        assert plain == model  # one weights file already: read where it is
        original, copied = load_tensors(model / "model.safetensors"), load_tensors(joined / "model.safetensors")
        assert original.keys() == copied.keys()
        assert all(torch.equal(original[k], copied[k]) for k in original)
        loaded = AutoModelForSequenceClassification.from_pretrained(joined)
        assert loaded.num_labels == 2
        assert (joined / "tokenizer.json").exists()  # the base's tokenizer, as the checkpoint has none
    assert not joined.exists()


def test_checkpoints_that_do_not_fit_are_refused_in_one_line(base, tmp_path):
    from transformers import RobertaConfig, RobertaModel

    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((base / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    message = refusal(check_folder, pickled, base)
    assert "pytorch_model.bin" in message and "save_pretrained" in message  # the one-line conversion

    other = tmp_path / "other"
    config = RobertaConfig.from_pretrained(base)
    config.intermediate_size = 96
    RobertaModel(config).save_pretrained(other)
    message = refusal(check_folder, other, base)
    assert str(other) in message and str(base) in message and "[96]" in message

    wide_base = tmp_path / "wide_base"
    config = RobertaConfig.from_pretrained(base)
    config.hidden_size, config.intermediate_size = 32, 64
    RobertaModel(config).save_pretrained(wide_base)
    adapter = make_tiny_adapter(base, tmp_path / "adapter", num_labels=2, seed=2)
    message = refusal(check_folder, adapter, wide_base)
    assert str(adapter) in message and str(wide_base) in message and "lora_" in message

    pickled_adapter = tmp_path / "pickled_adapter"
    pickled_adapter.mkdir()
    shutil.copyfile(adapter / "adapter_config.json", pickled_adapter / "adapter_config.json")
    (pickled_adapter / "adapter_model.bin").write_bytes(b"\x80\x02pickle")
    message = refusal(check_folder, pickled_adapter, base)
    assert "adapter_model.bin" in message and "save_pretrained" in message

    assert "neither a model folder" in refusal(check_folder, tmp_path, base)
    with pytest.raises(WeightspaceError, match="give --base"):
        with loadable_checkpoints([adapter]):
            pass


def test_a_hub_checkpoint_is_imported_from_the_hub_cache_the_login_node_fills(base, tmp_path, monkeypatch):
    """The fetch is huggingface_hub's snapshot download: offline, as here, it resolves the cached snapshot."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    repo = tmp_path / "cache/models--org--tiny-sent"
    commit = "0123456789abcdef0123456789abcdef01234567"
    make_tiny_classifier(base, repo / "snapshots" / commit, num_labels=2, seed=4)
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text(commit)

    assert import_external("hubbed", {"hub": "org/tiny-sent"}, "tiny", base, tmp_path / "out") == "model"
    fetched = load_tensors(repo / "snapshots" / commit / "model.safetensors")
    imported = load_tensors(tmp_path / "out/model.safetensors")
    assert fetched.keys() == imported.keys() and all(torch.equal(fetched[k], imported[k]) for k in fetched)
    assert "- source: org/tiny-sent (revision main)" in (tmp_path / "out/README.md").read_text()

    message = refusal(import_external, "gone", {"hub": "org/none", "revision": "v1"}, "tiny", base, tmp_path / "o")
    assert message.startswith("hub checkpoint 'org/none' (revision v1) could not be fetched: ")


def external_config(base: Path, entries: dict) -> dict:
    return {"base_model": "tiny", "models": {"tiny": {"source": "local", "path": str(base)}},
            "datasets": {"d": {"source": "demo"}}, "finetune": {"max_length": 32}, "external": entries}


@pytest.mark.parametrize("entry, expected", [
    ({"path": "{adapter}", "base": "nope"}, "key 'external.x.base' is 'nope', expected one of the names under 'models'"),
    ({"path": "{adapter}", "hub": "org/x"}, "key 'external.x': give 'path' (a folder) or 'hub' (a hub id), one of them"),
    ({"dataset": "d"}, "key 'external.x': give 'path' (a folder) or 'hub' (a hub id), one of them"),
    ({"path": "{missing}"}, "external 'x': {missing}: no such folder"),
    ({"path": "{pickled}"}, "external 'x': {pickled}: no .safetensors weights (pickled checkpoints are not loaded"),
])
def test_a_bad_external_entry_is_refused_in_one_line_naming_its_key(base, tmp_path, entry, expected):
    folders = {"adapter": str(make_tiny_adapter(base, tmp_path / "adapter", 2, 0)), "missing": str(tmp_path / "gone"),
               "pickled": str(tmp_path / "pickled")}
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled/config.json").write_text((base / "config.json").read_text())
    (tmp_path / "pickled/model.bin").write_bytes(b"")
    entry = {k: v.format(**folders) for k, v in entry.items()}
    message = refusal(validated_config, external_config(base, {"x": entry}), SCHEMA)
    assert expected.format(**folders) in message


def test_an_external_named_like_a_dataset_or_from_another_base_is_refused_where_it_is_used(base, tmp_path):
    adapter = str(make_tiny_adapter(base, tmp_path / "adapter", 2, 0))
    config = external_config(base, {"d": {"path": adapter}})
    assert "key 'external.d': the name is also a dataset's" in refusal(validated_config, config, SCHEMA)

    config = external_config(base, {"x": {"path": adapter, "base": "other"}})
    config["models"]["other"] = {"source": "local", "path": str(base)}
    config["region"] = {"granularities": {"g": {"in": ["d", "x"], "ex": "random"}}}
    assert "external 'x' was finetuned from 'other', but the region is of base_model 'tiny'" in refusal(
        validated_config, config, SCHEMA)

    config = external_config(base, {"x": {"path": adapter}})
    config["geometry"] = {"experiments": {"e": {"datasets": ["d"], "external": ["y"]}}}
    assert "key 'geometry.experiments.e.external' names 'y', which is neither under 'datasets' nor under 'external'" in \
        refusal(validated_config, config, SCHEMA)

    config = external_config(base, {"x": {"path": adapter, "dataset": "elsewhere"}})
    config["region"] = {"granularities": {"g": {"in": ["x"], "ex": "random"}}}
    assert "external 'x' has no dataset of the config to be probed on" in refusal(validated_config, config, SCHEMA)


@pytest.mark.slow
def test_external_checkpoints_are_members_of_every_experiment(tiny_run, tmp_path):
    """Checkpoints made in an earlier run, declared as external: their vectors, probes, lines and centres."""
    from transformers import AutoModelForSequenceClassification

    done, config = tiny_run
    workdir = tmp_path / "run"
    shutil.copytree(done, workdir, symlinks=True)
    base = Path(config["models"]["tiny"]["path"])
    checkpoints = tmp_path / "checkpoints"
    shutil.copytree(done / "results/models/finetuned/tiny_sent/seed1", checkpoints / "sent_copy")
    make_tiny_adapter(base, checkpoints / "sent_lora", num_labels=2, seed=5)
    make_tiny_classifier(base, checkpoints / "topic_moved", num_labels=3, seed=6)

    config = copy.deepcopy(config)
    config["external"] = {
        "sent_copy": {"path": str(checkpoints / "sent_copy"), "dataset": "tiny_sent"},
        "sent_lora": {"path": str(checkpoints / "sent_lora"), "dataset": "tiny_sent"},
        "topic_moved": {"path": str(checkpoints / "topic_moved"), "dataset": "tiny_topic", "family": "topic"},
    }
    config["geometry"]["experiments"]["ext"] = {"families": ["sentiment", "topic"], "group_by": ["dataset", "family"],
                                                "external": ["sent_copy", "sent_lora", "topic_moved"]}
    config["region"]["granularities"] = {"ext": {"in": ["tiny_sent", "sent_copy"], "ex": ["topic_moved"], "seeds": [1],
                                                 "pairs": [["tiny_sent", "sent_lora"]], "extrapolate": False,
                                                 "leave": False, "hull": False}}
    config["centroid"]["external"] = ["sent_copy", "topic_moved"]
    targets = ["results/metrics/clustering/ext.parquet", "results/tables/pb.parquet",
               "results/metrics/probe/merged/ext/tiny_sent.seed1--sent_lora/alpha0.5.parquet",
               "results/models/centroid/tiny_topic/model.safetensors"]
    run_snakemake(workdir, config, *targets)

    similarity = pd.read_parquet(workdir / "results/metrics/similarity/ext.parquet").set_index(["model_a", "model_b"])
    assert similarity.loc[("external/sent_copy", "tiny_sent/seed1"), "cosine"] == pytest.approx(1.0, abs=1e-6)
    assert len(similarity) == 9 ** 2  # 3 datasets x 2 seeds and 3 external checkpoints
    assigned = pd.read_parquet(workdir / "results/metrics/clustering/ext.assignments.parquet")
    groups = assigned[(assigned.granularity == "family") & (assigned.metric == "cosine")].set_index("model").group
    assert groups["external/sent_copy"] == "sentiment" and groups["external/topic_moved"] == "topic"

    probes = pd.concat(pd.read_parquet(p) for p in (workdir / "results/metrics/probe").rglob("*.parquet"))
    probes = probes.set_index(["model", "target"])
    # the copy is the same encoder as the model it was copied from: the same probe, to the bit
    assert probes.loc[("external/sent_copy", "tiny_sent"), "loss"] == probes.loc[("finetuned/tiny_sent/seed1",
                                                                                  "tiny_sent"), "loss"]
    assert ("external/topic_moved", "tiny_sent") in probes.index  # Ex, probed on In's dataset
    pb = pd.read_parquet(workdir / "results/tables/pb.parquet")
    assert set(pb.granularity) == {"ext"}

    # tiny_topic's centres: the other datasets' models and sent_copy; topic_moved was finetuned on the target
    members = [done / f"results/models/finetuned/{d}/seed{s}/model.safetensors" for d in ("tiny_sent", "tiny_pair")
               for s in (1, 2)] + [workdir / "results/models/external/sent_copy/model.safetensors"]
    assert "- datasets: tiny_pair,tiny_sent,sent_copy\n" in (workdir / "results/models/centroid/tiny_topic/README.md"
                                                             ).read_text()
    centroid = load_tensors(workdir / "results/models/centroid/tiny_topic/model.safetensors")
    name = "encoder.layer.0.attention.self.query.weight"
    mean = torch.stack([load_tensors(m)[f"roberta.{name}"] for m in members]).mean(0)
    assert torch.allclose(centroid[name], mean, atol=1e-6)

    for name in ("sent_copy", "sent_lora", "topic_moved"):
        model = AutoModelForSequenceClassification.from_pretrained(workdir / f"results/models/external/{name}")
        assert model.num_labels == (3 if name == "topic_moved" else 2)
    assert np.isfinite(probes.loss).all()

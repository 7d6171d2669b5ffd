import shutil

import pandas as pd
import pytest
import torch

from helpers import MINIMAL, SCHEMA, make_tiny_datasets, make_tiny_roberta
from weightspace.checkpoints import encoder_key_map
from weightspace.config import validated_config
from weightspace.data import prepare_dataset
from weightspace.errors import WeightspaceError
from weightspace.finetuning import finetune
from weightspace.io import load_tensors, save_tensors, tensor_names
from weightspace.models import load_encoder, save_base_model
from weightspace.seeding import run_seed


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ft")
    base = tmp / "base"
    save_base_model("tiny", {"source": "local", "path": str(make_tiny_roberta(tmp / "src"))}, base)
    specs = make_tiny_datasets(tmp / "raw")
    cfg = validated_config(MINIMAL, SCHEMA)
    prepare_dataset("tiny_sent", specs["tiny_sent"], cfg["data"], tmp / "data")
    ft = {**cfg["finetune"], "lr": 3e-3, "batch_size": 16, "epochs": 4, "max_length": 32, "log_every": 3}
    return tmp, base, ft


def _run(setup, name, seed=1, command=None, **override):
    tmp, base, ft = setup
    out = tmp / name
    row = finetune(tmp / "data", base, out, out / "metrics.parquet", "tiny_sent", seed, {**ft, **override},
                   torch.device("cpu"), command=command)
    return out, row


def test_same_seed_gives_bit_identical_weights(setup):
    a, row = _run(setup, "a")
    b, _ = _run(setup, "b")
    wa, wb = load_tensors(a / "model.safetensors"), load_tensors(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # the card, the config and the tokenizer files are the same bytes too
    others = sorted(p.name for p in a.iterdir() if p.suffix in (".json", ".md"))
    assert {"README.md", "config.json", "tokenizer.json"} <= set(others)
    assert all((a / name).read_bytes() == (b / name).read_bytes() for name in others)
    c, _ = _run(setup, "c", seed=2)
    wc = load_tensors(c / "model.safetensors")
    assert not torch.equal(wa["classifier.out_proj.weight"], wc["classifier.out_proj.weight"])


def test_finetune_learns_and_records_metrics(setup):
    out, row = _run(setup, "m", epochs=10)
    assert row["test_accuracy"] > 0.9 > row["majority_test_accuracy"]
    metrics = pd.read_parquet(out / "metrics.parquet").iloc[0]
    assert metrics["torch_seed"] == run_seed("tiny_sent", 1) != 1
    assert metrics["steps"] == 90 and list(metrics["log_step"])[:2] == [3, 6]
    assert metrics["examples_per_second"] > 0 and metrics["device"].startswith("cpu")
    assert not list(out.glob(".*")), "no temporary files left behind"


def test_plain_seed_mode(setup):
    _, row = _run(setup, "p", seed=7, seed_mode="plain", max_steps=2)
    assert row["torch_seed"] == 7 and row["steps"] == 2


def test_encoder_moves_and_maps_onto_the_base(setup):
    tmp, base, _ = setup
    out, _ = _run(setup, "a")
    pre_names = tensor_names(base / "model.safetensors")
    key_map = encoder_key_map(tensor_names(out / "model.safetensors"), pre_names)
    assert key_map["embeddings.word_embeddings.weight"] == "roberta.embeddings.word_embeddings.weight"
    assert key_map["pooler.dense.weight"] is None  # RoBERTa's classifier does not use the pooler
    assert not any(v and v.startswith("classifier") for v in key_map.values())
    pre = load_tensors(base / "model.safetensors", ["encoder.layer.0.attention.self.query.weight"])
    ft = load_tensors(out / "model.safetensors", ["roberta.encoder.layer.0.attention.self.query.weight"])
    assert not torch.equal(*pre.values(), *ft.values())
    encoder = load_encoder(out)  # the head is dropped, the finetuned encoder is read
    assert torch.equal(encoder.encoder.layer[0].attention.self.query.weight, *ft.values())


def test_safetensors_round_trip(tmp_path):
    tensors = {"a": torch.randn(3, 4), "b": torch.arange(5, dtype=torch.int64), "c": torch.randn(2).to(torch.bfloat16)}
    save_tensors(tensors, tmp_path / "x.safetensors", metadata={"k": "v"})
    back = load_tensors(tmp_path / "x.safetensors")
    assert all(torch.equal(tensors[k], back[k]) and tensors[k].dtype == back[k].dtype for k in tensors)
    assert load_tensors(tmp_path / "x.safetensors", ["b"]).keys() == {"b"}
    assert [p.name for p in tmp_path.iterdir()] == ["x.safetensors"]


def test_pickled_weights_are_refused(tmp_path):
    torch.save({"a": torch.zeros(1)}, tmp_path / "model.bin")
    with pytest.raises(WeightspaceError, match="only read from .safetensors"):
        load_tensors(tmp_path / "model.bin")
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightspaceError, match="no .safetensors weights"):
        save_base_model("m", {"source": "local", "path": str(tmp_path)}, tmp_path / "out")


def _validation_loss(out, setup):
    """The saved model's loss on the validation split, scored afresh."""
    from transformers import AutoModelForSequenceClassification

    from weightspace.data import read_split
    from weightspace.finetuning import encode, evaluate
    from weightspace.models import load_tokenizer

    tmp, base, ft = setup
    tokenizer = load_tokenizer(base)
    model = AutoModelForSequenceClassification.from_pretrained(out)
    features = encode(read_split(tmp / "data", "validation"), tokenizer, ft["max_length"])
    return evaluate(model, features, tokenizer, 64, torch.device("cpu"))["loss"]


def test_early_stopping_keeps_the_best_validation_weights(setup):
    # a rate far too high: the validation loss gets worse after its first scores, and training stops
    out, row = _run(setup, "es", lr=0.05, epochs=20, validate_every=3, patience=2, warmup_ratio=0.0)
    steps, losses = list(row["log_validation_step"]), list(row["log_validation_loss"])
    assert row["stopped_early"] and row["steps"] < 20 * 9 and steps[-1] == row["steps"]
    best = losses.index(min(losses))
    assert row["kept_step"] == steps[best] < row["steps"] and len(steps) == best + 1 + 2
    assert row["validation_loss"] == min(losses)
    assert _validation_loss(out, setup) == pytest.approx(min(losses), rel=1e-5)
    # the same run again: the same stop and the same weights
    again, row2 = _run(setup, "es_again", lr=0.05, epochs=20, validate_every=3, patience=2, warmup_ratio=0.0)
    assert row2["kept_step"] == row["kept_step"]
    wa, wb = load_tensors(out / "model.safetensors"), load_tensors(again / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_without_patience_the_curve_is_recorded_and_the_last_weights_kept(setup):
    out, row = _run(setup, "curve", epochs=2, validate_every=5, patience=None)
    assert list(row["log_validation_step"]) == [5, 10, 15, 18] and row["kept_step"] == row["steps"] == 18
    assert not row["stopped_early"] and row["validation_loss"] == list(row["log_validation_loss"])[-1]
    assert _validation_loss(out, setup) == pytest.approx(row["validation_loss"], rel=1e-5)


def test_the_finetuned_folder_loads_with_plain_transformers(setup):
    """Tokenizer, label names and card in the folder: transformers' pipeline predicts what the library scores."""
    import yaml
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from weightspace.data import read_split
    from weightspace.finetuning import encode
    from weightspace.models import load_tokenizer

    tmp, base, ft = setup
    out, row = _run(setup, "hf", command="snakemake --cores 1 results/models/finetuned/tiny_sent/seed1/model.safetensors")
    assert AutoTokenizer.from_pretrained(out).get_vocab() == load_tokenizer(base).get_vocab()
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.label2id == {"neg": 0, "pos": 1}

    test = read_split(tmp / "data", "test").head(12)
    features = encode(test, load_tokenizer(base), ft["max_length"])
    with torch.no_grad():
        ours = [int(model(input_ids=torch.tensor([f["input_ids"]])).logits.argmax(-1)) for f in features]
    classify = pipeline("text-classification", model=str(out), device="cpu")
    assert [p["label"] for p in classify(test["text_a"].tolist())] == [model.config.id2label[i] for i in ours]

    card = (out / "README.md").read_text()
    _, front, body = card.split("---\n", 2)
    assert yaml.safe_load(front) == {"library_name": "transformers", "base_model": "base",
                                     "pipeline_tag": "text-classification", "tags": ["weightspace"]}
    assert f"- test accuracy: {row['test_accuracy']:.4g}\n" in body and "- dataset: tiny_sent\n" in body
    assert f"- majority baseline (test accuracy): {row['majority_test_accuracy']:.4g}\n" in body
    assert "- seed: 1\n" in body and f"- train size: {row['train_size']}\n" in body
    assert "snakemake --cores 1 results/models/finetuned/tiny_sent/seed1/model.safetensors" in body


def test_a_new_head_loads_quietly_and_a_checkpoint_that_does_not_fit_is_a_warning(tmp_path, caplog, capfd):
    """transformers' load report of an expected new head stays out of the job's output; an encoder
    tensor the checkpoint lacks is still said, in the log."""
    import logging

    from helpers import make_tiny_roberta
    from weightspace.io import load_tensors, save_tensors
    from weightspace.models import load_classifier

    base = make_tiny_roberta(tmp_path / "base")
    capfd.readouterr()
    with caplog.at_level(logging.INFO):
        load_classifier(base, 3)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "MISSING" not in capfd.readouterr().err and "LOAD REPORT" not in caplog.text

    cut = tmp_path / "cut"
    shutil.copytree(base, cut)
    tensors = load_tensors(cut / "model.safetensors")
    save_tensors({k: v for k, v in tensors.items() if "layer.1.output.dense" not in k}, cut / "model.safetensors")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        load_classifier(cut, 3)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(cut) in warning and "2 encoder tensors missing" in warning and "layer.1.output.dense" in warning

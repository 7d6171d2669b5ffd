"""Lines between models: exact ends, exact symmetry, stable alpha names, the paper's alpha grids;
merges that refuse a checkpoint which does not fit the base."""

from __future__ import annotations

import io
import logging
import shutil
import warnings

import pytest
import torch
import yaml
from safetensors import safe_open
from transformers import (AutoModel, AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertModel,
                          RobertaConfig, RobertaForSequenceClassification)

from weightspace.centroid.centres import centroid, task_arithmetic, ties_merge
from weightspace.checkpoints import encoder_key_map
from weightspace.errors import WeightspaceError
from weightspace.io import load_tensors, save_tensors
from weightspace.merging import combine, combined_tensors, interpolate, line_coefficients
from weightspace.models import load_encoder
from weightspace.paths import format_alpha
from weightspace.region.plan import extrapolation_alphas, line_alphas
from weightspace.region.points import group_stats, hull_sample

from helpers import make_tiny_classifier, make_tiny_roberta


@pytest.fixture(scope="module")
def endpoints(tmp_path_factory):
    """A tiny pretrained encoder and two "finetuned" classifiers moved away from it (one holds a -0.0)."""
    tmp = tmp_path_factory.mktemp("merging")
    base = make_tiny_roberta(tmp / "base")
    ends = []
    for i in (1, 2):
        torch.manual_seed(i)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
        with torch.no_grad():
            for p in model.roberta.parameters():
                p.add_(0.01 * torch.randn_like(p))
            model.roberta.embeddings.LayerNorm.bias[0] = -0.0
        model.save_pretrained(tmp / f"ft{i}")
        ends.append(tmp / f"ft{i}")
    return tmp, base, ends


def encoder_tensors(checkpoint, base) -> dict[str, torch.Tensor]:
    """A checkpoint's encoder in the bare encoder's names (a missing pooler = the pretrained one)."""
    pretrained = load_tensors(base / "model.safetensors")
    with safe_open(str(checkpoint / "model.safetensors"), framework="pt") as f:
        key_map = encoder_key_map(f.keys(), list(pretrained))
        return {n: (f.get_tensor(k) if k else pretrained[n]) for n, k in key_map.items()}


def bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("alpha, end", [(1, 0), (0, 1), (1.0, 0), (0.0, 1)])
def test_alpha_one_and_zero_give_the_endpoints_bit_for_bit(endpoints, alpha, end):
    tmp, base, ends = endpoints
    out = tmp / f"line_{alpha}"
    interpolate(ends[0], ends[1], alpha, base, out)
    merged = load_tensors(out / "model.safetensors")
    expected = encoder_tensors(ends[end], base)
    assert merged.keys() == expected.keys()
    assert all(bitwise_equal(merged[n], expected[n]) for n in merged)
    # -0.0 survives (0 * w + w would have made it +0.0)
    assert torch.signbit(merged["embeddings.LayerNorm.bias"][0])
    assert load_encoder(out).config.hidden_size == 64


@pytest.mark.parametrize("alpha", [0.1, 0.3, 0.7, 0.25, -0.47, -31, 3.17, 32, 0.5])
def test_swapping_the_ends_with_one_minus_alpha_is_exact(endpoints, alpha):
    tmp, base, ends = endpoints
    interpolate(ends[0], ends[1], alpha, base, tmp / "ab")
    interpolate(ends[1], ends[0], 1 - alpha, base, tmp / "ba")
    ab, ba = load_tensors(tmp / "ab/model.safetensors"), load_tensors(tmp / "ba/model.safetensors")
    assert all(bitwise_equal(ab[n], ba[n]) for n in ab)


def test_a_line_point_is_the_weighted_sum(endpoints):
    tmp, base, ends = endpoints
    interpolate(ends[0], ends[1], 0.3, base, tmp / "p")
    merged = load_tensors(tmp / "p/model.safetensors")
    w1, w2 = encoder_tensors(ends[0], base), encoder_tensors(ends[1], base)
    for name in merged:
        torch.testing.assert_close(merged[name], 0.3 * w1[name] + 0.7 * w2[name], rtol=0, atol=1e-6)


def test_line_coefficients_are_exact_decimals_and_reverse_under_one_minus_alpha():
    for alpha in [0.1, 0.2, 0.3, 0.7, 0.9, -0.47, 3.17, -20.77, 21.77]:
        c1, c2 = line_coefficients(alpha)
        assert (c1, c2) == tuple(reversed(line_coefficients(1 - alpha)))
        assert format_alpha(c1 + c2) == "1"
    assert line_coefficients(0.1) == (0.1, 0.9)


def test_format_alpha_names_each_coefficient_one_way():
    assert [format_alpha(a) for a in (0, -0.0, 1, 0.1, 0.30000000000000004, 3.17, -31.0, 32, 0.25)] == [
        "0", "0", "1", "0.1", "0.3", "3.17", "-31", "32", "0.25"]
    assert format_alpha(1 - 0.7) == format_alpha(0.3)


def test_the_paper_alpha_grids():
    # "10 steps from 1 to 32": ten points per side beyond the ends, each 32 ** 0.1 times the last
    up = [1.41, 2.0, 2.83, 4.0, 5.66, 8.0, 11.31, 16.0, 22.63, 32.0]
    alphas = extrapolation_alphas(10, 32)
    assert alphas == sorted(up + [round(1 - a, 2) for a in up])
    assert min(alphas) == -31 and max(alphas) == 32
    assert extrapolation_alphas(2, 4) == [-3, -1, 2, 4]
    cfg = {"interpolation": [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1], "extrapolation": {"steps": 10, "max": 32}}
    grid = line_alphas(cfg, extrapolate=True)
    assert len(grid) == 11 + 20 and grid[0] == -31 and grid[-1] == 32
    assert len({format_alpha(a) for a in grid}) == len(grid)


def test_combine_still_averages_models_for_centroids(endpoints):
    tmp, base, ends = endpoints
    combine(ends, [0.5, 0.5], base, tmp / "mean")
    merged = load_tensors(tmp / "mean/model.safetensors")
    w1, w2 = encoder_tensors(ends[0], base), encoder_tensors(ends[1], base)
    name = "encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(merged[name], (w1[name] + w2[name]) / 2)


def test_merges_copy_integer_buffers_from_the_pretrained_model(endpoints, tmp_path):
    """A weighted sum of integer tensors would truncate them (0.3 * 7 + 0.7 * 7 = 6.999... -> 6)."""
    _, base, ends = endpoints
    pretrained = load_tensors(base / "model.safetensors")
    ids = torch.arange(40, dtype=torch.int64).unsqueeze(0)
    with_buffer = tmp_path / "base"
    with_buffer.mkdir()
    for f in ("config.json",):
        (with_buffer / f).write_bytes((base / f).read_bytes())
    save_tensors({**pretrained, "embeddings.position_ids": ids}, with_buffer / "model.safetensors")
    merged = combined_tensors(ends, [0.3, 0.7], with_buffer)
    assert merged["embeddings.position_ids"].dtype == torch.int64
    assert torch.equal(merged["embeddings.position_ids"], ids)


@pytest.fixture(scope="module")
def misfits(endpoints):
    """Checkpoints that do not fit the base: one with a tensor of another shape, one missing an
    encoder tensor, and a deeper model of the same width; each with the tensor its refusal names."""
    tmp, base, ends = endpoints
    query, dense = "encoder.layer.0.attention.self.query.weight", "encoder.layer.1.output.dense.weight"
    tensors = load_tensors(ends[0] / "model.safetensors")
    save_tensors({**tensors, f"roberta.{query}": torch.zeros(64, 32)}, tmp / "wide/model.safetensors")
    save_tensors({k: v for k, v in tensors.items() if k != f"roberta.{dense}"}, tmp / "lacking/model.safetensors")
    config = RobertaConfig.from_pretrained(base, num_labels=2, num_hidden_layers=3)
    RobertaForSequenceClassification(config).save_pretrained(tmp / "deeper")
    return {"wide": (tmp / "wide", f"roberta.{query}' has shape [64, 32], but '{query}' in "),
            "lacking": (tmp / "lacking", f"lacks tensor 'roberta.{dense}', which is '{dense}' with shape [64, 128]"),
            "deeper": (tmp / "deeper", "tensor 'roberta.encoder.layer.2.")}


MERGES = {
    "interpolate": lambda good, bad, base, out: interpolate(good, bad, 0.5, base, out),
    "interpolate at alpha 1": lambda good, bad, base, out: interpolate(good, bad, 1, base, out),
    "combine": lambda good, bad, base, out: combine([good, bad], [0.5, 0.5], base, out),
    "centroid": lambda good, bad, base, out: centroid({"a": [good], "b": [bad]}, base, out),
    "task_arithmetic": lambda good, bad, base, out: task_arithmetic({"a": [good], "b": [bad]}, base, out, 0.5),
    "ties": lambda good, bad, base, out: ties_merge({"a": [good], "b": [bad]}, base, out, 0.5, 1.0),
    "region centroid": lambda good, bad, base, out: group_stats([good, bad], base, out, out / "stats.json"),
}


@pytest.mark.parametrize("merge", sorted(MERGES))
@pytest.mark.parametrize("misfit", ["wide", "lacking", "deeper"])
def test_merges_refuse_a_checkpoint_that_does_not_fit_the_base(endpoints, misfits, tmp_path, merge, misfit):
    _, base, ends = endpoints
    bad, fragment = misfits[misfit]
    with pytest.raises(WeightspaceError) as err:
        MERGES[merge](ends[0], bad, base, tmp_path / "out")
    message = str(err.value)
    assert len(message.splitlines()) == 1 and fragment in message, message
    assert message.startswith(str(bad / "model.safetensors")) and str(base / "model.safetensors") in message
    assert not (tmp_path / "out").exists()


def loaded(cls, folder, **kwargs):
    """cls.from_pretrained(folder, **kwargs), the keys transformers found missing and unexpected, and
    what it logged (its load report) or warned while loading."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
    finally:
        logger.removeHandler(handler)
    return model, info, stream.getvalue() + "".join(str(w.message) for w in caught)


def reported_unexpected(said: str) -> set[str]:
    """The keys a transformers load report marks UNEXPECTED."""
    return {line.split("|")[0].strip() for line in said.splitlines() if "| UNEXPECTED" in line}


COMMAND = "snakemake --cores 1 results/models/centroid/t/model.safetensors"
WRITERS = {
    "centroid": lambda ends, base, out: centroid({"a": [ends[0]], "b": [ends[1]]}, base, out, command=COMMAND),
    "task_arithmetic": lambda ends, base, out: task_arithmetic({"a": [ends[0]], "b": [ends[1]]}, base, out, 0.5),
    "ties": lambda ends, base, out: ties_merge({"a": [ends[0]], "b": [ends[1]]}, base, out, 0.5, 1.0),
    "interpolate": lambda ends, base, out: interpolate(ends[0], ends[1], 0.3, base, out),
    "hull": lambda ends, base, out: hull_sample(ends, [0.25, 0.75], base, out),
}


def test_a_region_centroid_is_its_config_and_weights_alone(endpoints, tmp_path):
    """The workflow deletes it (temp) once its probes are done: nothing of it may stay behind."""
    _, base, ends = endpoints
    group_stats(ends, base, tmp_path / "out", tmp_path / "stats.json")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["config.json", "model.safetensors"]


CENTRES = ("centroid", "task_arithmetic", "ties")


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_a_merged_folder_loads_with_plain_transformers(endpoints, tmp_path, writer):
    """The folder holds the base's tokenizer and a card. A centre (a start to finetune from) loads into
    a classifier with only its new head missing; any other merge loads into AutoModel with every tensor
    read (a classifier, RoBERTa's not using it, leaves its pooler unread)."""
    _, base, ends = endpoints
    out = tmp_path / "out"
    WRITERS[writer](ends, base, out)
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    assert AutoTokenizer.from_pretrained(out).get_vocab() == AutoTokenizer.from_pretrained(base).get_vocab()
    pooler = {"pooler.dense.weight", "pooler.dense.bias"}
    head = {f"classifier.{m}.{p}" for m in ("dense", "out_proj") for p in ("weight", "bias")}
    start = writer in CENTRES  # a start to finetune from: only what the classifier reads
    _, info, said = loaded(AutoModel, out)
    assert info["missing_keys"] == (pooler if start else set()) and not info["unexpected_keys"]
    assert bool(said) == start, said
    _, info, said = loaded(AutoModelForSequenceClassification, out, num_labels=3)
    assert info["missing_keys"] == head
    # RobertaForSequenceClassification has no pooler: transformers 5 reports an encoder's as unexpected
    assert info["unexpected_keys"] == reported_unexpected(said) == (set() if start else pooler)
    _, front, body = (out / "README.md").read_text().split("---\n", 2)
    assert yaml.safe_load(front) == {"library_name": "transformers", "base_model": "base", "tags": ["weightspace"]}
    assert "- base model: base\n" in body


def test_a_centroid_card_says_what_it_is_and_what_made_it(endpoints, tmp_path):
    _, base, ends = endpoints
    WRITERS["centroid"](ends, base, tmp_path / "c")
    card = (tmp_path / "c/README.md").read_text()
    assert "# Centroid of 2 finetuned models\n" in card
    assert "- centre: centroid\n- datasets: a,b\n- models: 2\n" in card and f"```\n{COMMAND}\n```\n" in card
    WRITERS["centroid"](ends, base, tmp_path / "again")
    assert (tmp_path / "again/README.md").read_text() == card
    WRITERS["ties"](ends, base, tmp_path / "t")
    card = (tmp_path / "t/README.md").read_text()
    assert "# TIES merge of 2 datasets' finetuned models (2 models)\n" in card
    assert "- centre: ties\n- density: 0.5\n- scale: 1\n" in card and "```" not in card


def test_a_bert_centroid_loads_into_a_classifier_without_unexpected_keys(endpoints, tmp_path):
    """BERT's classifier uses the pooler, so a bare BERT encoder loads with only the new head missing."""
    _, roberta, _ = endpoints
    base = tmp_path / "bert"
    config = BertConfig(vocab_size=RobertaConfig.from_pretrained(roberta).vocab_size, hidden_size=64,
                        num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=72)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(base)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(roberta / name, base / name)
    ends = [make_tiny_classifier(base, tmp_path / f"ft{i}", num_labels=2, seed=i, scale=0.01) for i in (1, 2)]
    centroid({"a": [ends[0]], "b": [ends[1]]}, base, tmp_path / "c")
    _, info, said = loaded(AutoModelForSequenceClassification, tmp_path / "c", num_labels=3)
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"}
    assert not info["unexpected_keys"] and "UNEXPECTED" not in said
    _, info, said = loaded(AutoModel, tmp_path / "c")
    assert not info["missing_keys"] and not info["unexpected_keys"] and not said, said


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_streamed_merge_file_holds_the_in_memory_tensors_bit_for_bit(endpoints, tmp_path, monkeypatch, dtype):
    """Combination.write streams slices into the file: with slices smaller than a tensor, and a
    base in bfloat16 with an integer buffer, the file is the in-memory merge, and safetensors reads it."""
    import weightspace.merging as merging
    _, base, ends = endpoints
    pretrained = {k: v.to(dtype) for k, v in load_tensors(base / "model.safetensors").items()}
    other = tmp_path / "base"
    other.mkdir()
    shutil.copy(base / "config.json", other / "config.json")
    save_tensors({**pretrained, "embeddings.position_ids": torch.arange(40).unsqueeze(0)}, other / "model.safetensors")
    monkeypatch.setattr(merging, "_SLICE", 1000)
    point = merging.Combination(ends, [0.3, 0.7], other)
    point.write(tmp_path / "streamed.safetensors", metadata={"b": "2", "a": "1"})
    expected = point.tensors()
    with safe_open(str(tmp_path / "streamed.safetensors"), framework="pt") as f:
        assert f.metadata() == {"a": "1", "b": "2"}
        streamed = {k: f.get_tensor(k) for k in f.keys()}
    assert streamed.keys() == expected.keys()
    assert all(streamed[k].dtype == expected[k].dtype and torch.equal(streamed[k], expected[k]) for k in expected)
    assert streamed["embeddings.word_embeddings.weight"].dtype == dtype
    assert torch.equal(streamed["embeddings.position_ids"], torch.arange(40).unsqueeze(0))
    monkeypatch.setattr(merging, "_SLICE", 1 << 20)
    assert all(torch.equal(v, expected[k]) for k, v in merging.Combination(ends, [0.3, 0.7], other).tensors().items())


def test_a_merge_cut_short_leaves_no_weights_file(endpoints, tmp_path, monkeypatch):
    import weightspace.io as wio
    _, base, ends = endpoints
    calls = {"n": 0}
    real = wio.TensorWriter.write

    def dies_midway(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        real(self, *args)

    monkeypatch.setattr(wio.TensorWriter, "write", dies_midway)
    with pytest.raises(KeyboardInterrupt):
        combine(ends, [0.5, 0.5], base, tmp_path / "mean")
    assert not (tmp_path / "mean" / "model.safetensors").exists()
    assert [p.name for p in (tmp_path / "mean").iterdir() if p.name.startswith(".")] == []


def test_a_writer_that_misses_a_tensor_refuses_to_finish(tmp_path):
    from weightspace.io import tensor_writer
    with pytest.raises(WeightspaceError, match="8 of 16 tensor bytes"):
        with tensor_writer(tmp_path / "w.safetensors", [("a", "F32", (2,)), ("b", "F32", (2,))]) as out:
            out.write("a", 0, torch.ones(2))
    assert not (tmp_path / "w.safetensors").exists()

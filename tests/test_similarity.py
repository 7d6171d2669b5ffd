"""Task vectors and the one-pass similarity: against the naive flatten-then-sklearn way."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity, euclidean_distances
from transformers import AutoConfig, AutoModelForSequenceClassification

from helpers import make_tiny_roberta
from weightspace.errors import WeightspaceError
from weightspace.io import load_tensors
from weightspace.models import save_model_dir
from weightspace.io import TensorReader, save_tensors
from weightspace.similarity import Similarity, block_width, row_sources, stream_similarity
from weightspace.taskvectors import task_vector


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A tiny pretrained RoBERTa (bare, with pooler) and 4 'finetuned' classifiers made from it.

    Each classifier moves every encoder weight by its own random direction plus a shared one
    (so cosines differ from 0), and has a head for 2 or 3 labels.
    """
    tmp = tmp_path_factory.mktemp("tv")
    base = make_tiny_roberta(tmp / "base")
    shared = torch.Generator().manual_seed(99)
    directions = {}
    models = []
    for i, labels in enumerate([2, 2, 3, 3]):
        torch.manual_seed(i)
        config = AutoConfig.from_pretrained(base, num_labels=labels)
        model = AutoModelForSequenceClassification.from_pretrained(base, config=config)
        gen = torch.Generator().manual_seed(100 + i)
        with torch.no_grad():
            for name, p in model.roberta.named_parameters():
                if name not in directions:
                    directions[name] = torch.randn(p.shape, generator=shared)
                p.add_(0.01 * (directions[name] + torch.randn(p.shape, generator=gen)))
        save_model_dir(model, tmp / f"ft{i}")
        models.append(tmp / f"ft{i}")
    return base, models


def naive_vectors(base, models, with_dense_head=False) -> np.ndarray:
    """Independently of the library: strip the checkpoint prefix, subtract, flatten, concatenate."""
    pretrained = load_tensors(base / "model.safetensors")
    rows = []
    for model in models:
        tuned = load_tensors(model / "model.safetensors")
        parts = []
        for name, w0 in pretrained.items():
            if not w0.is_floating_point():
                continue  # position_ids: a buffer, not a weight
            w = tuned.get(f"roberta.{name}", w0)  # the unused pooler is not in the classifier
            parts.append((w.double() - w0.double()).reshape(-1))
        if with_dense_head:
            parts += [tuned[k].double().reshape(-1) for k in ("classifier.dense.weight", "classifier.dense.bias")]
        rows.append(torch.cat(parts).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("memory_mb", [64, 0.002])  # one block; and ~90 columns a block, across tensor ends
def test_streaming_matches_flatten_and_sklearn(checkpoints, memory_mb):
    base, models = checkpoints
    vectors = [task_vector(m, base, name=m.name) for m in models]
    streamed = stream_similarity(vectors, memory_mb=memory_mb)
    flat = naive_vectors(base, models)
    assert vectors[0].numel == flat.shape[1]
    np.testing.assert_allclose(streamed.cosine, cosine_similarity(flat), atol=1e-5, rtol=0)
    np.testing.assert_allclose(streamed.euclidean, euclidean_distances(flat), atol=1e-5, rtol=1e-6)
    np.testing.assert_allclose(streamed.dot, flat @ flat.T, rtol=1e-5)
    np.testing.assert_allclose(streamed.norms, np.linalg.norm(flat, axis=1), rtol=1e-5)
    off = streamed.cosine[~np.eye(4, dtype=bool)]
    assert 0.2 < off.min() and off.max() < 0.9  # the shared direction: real, non-trivial cosines


def test_sources_read_any_columns_as_the_flat_vector(checkpoints, tmp_path):
    """Any column range of a model's weights minus its reference, read by pread from the files,
    is that range of the flattened task vector: across tensor ends, for the pooler the classifier
    lacks, and for a checkpoint stored in bfloat16."""
    base, models = checkpoints
    half = tmp_path / "bf16" / "model.safetensors"
    save_tensors({k: v.to(torch.bfloat16) if v.is_floating_point() else v
                  for k, v in load_tensors(models[1] / "model.safetensors").items()}, half)
    rng = np.random.default_rng(0)
    for finetuned in (models[0], half):
        vector = task_vector(finetuned, base)
        flat = vector.flatten()
        with TensorReader() as reader:
            weights, reference = row_sources(vector, vector.entries, reader)
            assert len(weights.segments) < len(vector.entries)  # neighbouring tensors read as one
            for start, stop in [(0, len(flat)), *sorted(rng.integers(0, len(flat), (20, 2)).tolist())]:
                stop = max(start + 1, stop)
                row, ref = torch.empty(stop - start), torch.empty(stop - start)
                weights.fill(reader, start, stop, row)
                reference.fill(reader, start, stop, ref)
                torch.testing.assert_close(row - ref, flat[start:stop], rtol=0, atol=0)


def test_reading_ahead_in_a_thread_gives_the_same_gram(checkpoints):
    """With a second thread the next block is read while one is multiplied: the same sums, bit for bit."""
    base, models = checkpoints
    vectors = [task_vector(m, base) for m in models]
    threads = torch.get_num_threads()
    try:
        grams = []
        for n in (1, 2):
            torch.set_num_threads(n)
            grams.append(stream_similarity(vectors, memory_mb=0.01).gram)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(grams[0], grams[1])


def test_block_width_stays_within_the_budget():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert block_width(4, 0.002, cpu) * 2 * 5 * 4 <= 0.002 * 2**20  # D and a reference block, twice
    assert block_width(40, 64, gpu) * 41 <= block_width(4, 64, gpu) * 5  # memory does not grow with models
    assert block_width(4, 4096, cpu) == 1 << 17 < block_width(4, 4096, gpu)  # narrow on the CPU: D stays in cache
    assert block_width(4, 1 << 20, gpu) == 1 << 22  # a few dozen transfers per roberta-base


def test_task_vector_leaves_out_head_and_counts_unused_pooler_as_zero(checkpoints):
    base, models = checkpoints
    vector = task_vector(models[0], base)
    names = [e.name for e in vector.entries]
    assert "embeddings.position_ids" not in names and not any(n.startswith("classifier") for n in names)
    pooler = vector.entry("pooler.dense.weight")
    assert pooler.finetuned_key is None
    tensors = dict(vector.tensors())
    assert torch.count_nonzero(tensors["pooler.dense.weight"]) == 0
    assert torch.count_nonzero(tensors["encoder.layer.0.attention.self.query.weight"]) > 0
    assert vector.entry("encoder.layer.0.attention.self.query.weight").finetuned_key == \
        "roberta.encoder.layer.0.attention.self.query.weight"


def test_include_head_keeps_only_heads_of_one_shape(checkpoints):
    base, models = checkpoints
    vectors = [task_vector(m, base, include_head=True) for m in models]
    streamed = stream_similarity(vectors, memory_mb=1)
    flat = naive_vectors(base, models, with_dense_head=True)  # out_proj: 2 vs 3 labels, left out
    np.testing.assert_allclose(streamed.cosine, cosine_similarity(flat), atol=1e-5)
    # models 0 and 1 share out_proj's shape: for them alone it is compared too
    pair = stream_similarity(vectors[:2], memory_mb=1)
    assert pair.gram[0, 0] > streamed.gram[0, 0]


def test_other_architecture_is_one_line_error(checkpoints, tmp_path):
    base, models = checkpoints
    from transformers import RobertaConfig, RobertaModel

    other = RobertaModel(RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32, max_position_embeddings=40))
    save_model_dir(other, tmp_path / "other")
    with pytest.raises(WeightspaceError, match="has shape"):
        task_vector(models[0], tmp_path / "other")
    vectors = [task_vector(models[0], base), task_vector(tmp_path / "other", tmp_path / "other")]
    with pytest.raises(WeightspaceError, match="different tensors"):
        stream_similarity(vectors)
    with pytest.raises(WeightspaceError, match="file not found"):
        task_vector(tmp_path / "missing", base)
    with pytest.raises(WeightspaceError, match="reference must be a base of the same architecture"):
        task_vector(models[0], base).against(tmp_path / "other")


@pytest.fixture(scope="module")
def two_bases(tmp_path_factory):
    """Two tiny bases of one architecture (different random weights, as App. B's two roberta-bases)
    and two classifiers moved a little from each: [(model, its base)], bases a, b, a, b."""
    tmp = tmp_path_factory.mktemp("bases")
    bases = [make_tiny_roberta(tmp / name, seed=seed) for seed, name in enumerate("ab")]
    models = []
    for i, base in enumerate(bases * 2):
        torch.manual_seed(i)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
        gen = torch.Generator().manual_seed(200 + i)
        with torch.no_grad():
            for p in model.roberta.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=gen))
        save_model_dir(model, tmp / f"ft{i}")
        models.append((tmp / f"ft{i}", base))
    return models


def raw_weights(model, base) -> torch.Tensor:
    """Independently of the library: the classifier's encoder tensors by the base's names (the
    base's value where the classifier lacks one: the unused pooler), flattened in name order."""
    pretrained = load_tensors(base / "model.safetensors")
    tuned = load_tensors(model / "model.safetensors")
    return torch.cat([tuned.get(f"roberta.{n}", w0).double().reshape(-1)
                      for n, w0 in sorted(pretrained.items()) if w0.is_floating_point()])


@pytest.mark.parametrize("mode", ["own_base", "first_base", "none"])
def test_each_reference_matches_torch(two_bases, mode, tmp_path):
    from weightspace.geometry.steps import similarity_step

    first = two_bases[0][1]
    references = {"own_base": [b for _, b in two_bases], "first_base": [first] * 4, "none": [None] * 4}[mode]
    out = tmp_path / "similarity.parquet"
    similarity_step([{"model": m.name} for m, _ in two_bases], [m for m, _ in two_bases],
                    [b for _, b in two_bases], references, out, False, 0.002, "cpu")  # narrow blocks
    sim = Similarity.from_long_form(pd.read_parquet(out))
    vectors = torch.stack([raw_weights(m, b) - (0 if r is None else raw_weights(r, r))
                           for (m, b), r in zip(two_bases, references)])
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(sim.cosine, (unit @ unit.T).numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(sim.euclidean, torch.cdist(vectors, vectors).numpy(), rtol=1e-5, atol=1e-6)
    off = np.abs(sim.cosine[~np.eye(4, dtype=bool)])
    if mode == "own_base":  # the moves alone, independent random directions
        assert off.max() < 0.1
    elif mode == "first_base":  # the second base's models share b - a; the first's hold their moves alone
        assert sim.cosine[1, 3] > 0.5 and abs(sim.cosine[0, 2]) < 0.1
    else:  # raw weights: nearer the model of the same base than the other base's
        assert sim.cosine[0, 2] > sim.cosine[0, 1] and sim.cosine[1, 3] > sim.cosine[1, 2]


def test_long_form_round_trip(checkpoints):
    base, models = checkpoints
    similarity = stream_similarity([task_vector(m, base, name=m.name) for m in models])
    df = similarity.long_form()
    assert len(df) == 16 and list(df.columns) == ["model_a", "model_b", "cosine", "dot", "euclidean",
                                                  "norm_a", "norm_b"]
    back = Similarity.from_long_form(df.sample(frac=1, random_state=0))
    assert back.names == [m.name for m in models]
    np.testing.assert_array_equal(back.gram, similarity.gram)


@pytest.mark.slow
def test_similarity_rule_on_the_tiny_grid(tiny_run):
    workdir, config = tiny_run
    df = pd.read_parquet(workdir / "results/metrics/similarity/tiny.parquet")
    models = [f"{d}/seed{s}" for d in ("tiny_sent", "tiny_topic", "tiny_pair") for s in (1, 2)]
    assert sorted(df.model_a.unique()) == sorted(models) and len(df) == 36
    sim = Similarity.from_long_form(df)
    np.testing.assert_allclose(sim.cosine, sim.cosine.T)
    # the rule's task vectors are those of the library on the same files
    base = workdir / "results/models/pretrained/tiny"
    flat = naive_vectors(base, [workdir / "results/models/finetuned" / m for m in sim.names])
    np.testing.assert_allclose(sim.cosine, cosine_similarity(flat), atol=1e-5)
    # same dataset, different seeds: more similar than models of different datasets
    dataset = [n.split("/")[0] for n in sim.names]
    same = [sim.cosine[i, j] for i in range(6) for j in range(6) if i != j and dataset[i] == dataset[j]]
    other = [sim.cosine[i, j] for i in range(6) for j in range(6) if dataset[i] != dataset[j]]
    assert np.mean(same) > 2 * np.mean(other)
    log = (workdir / "logs/similarity/tiny.log").read_text()
    assert "block 1/1" in log and "parameters per model/s" in log and "ETA" in log

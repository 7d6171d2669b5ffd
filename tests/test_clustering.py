"""Spectral clustering and its scores; the cluster/plot/table rules; App. B and C on tiny models."""

import numpy as np
import pandas as pd
import pytest

from helpers import make_tiny_roberta, run_snakemake
from weightspace.clustering import (cluster_and_score, cluster_euclidean, cosine_affinity, euclidean_affinity,
                                    gaussian_affinity, matched_groups, score)
from weightspace.errors import WeightspaceError
from weightspace.geometry.plan import experiment_members, reference_bases
from weightspace.geometry.report import clustering_table
from weightspace.geometry.steps import cluster_step
from weightspace.seeding import run_seed
from weightspace.similarity import Similarity


def blocks(sizes, within=0.6, between=0.05, noise=0.02, seed=0):
    """A cosine matrix with one block per group."""
    rng = np.random.default_rng(seed)
    groups = [f"g{i}" for i, n in enumerate(sizes) for _ in range(n)]
    same = np.equal.outer(groups, groups)
    m = np.where(same, within, between) + rng.normal(0, noise, (len(groups),) * 2)
    m = (m + m.T) / 2
    np.fill_diagonal(m, 1.0)
    return m, groups


def test_clear_blocks_are_recovered():
    m, groups = blocks([4, 5, 3])
    clusters, result = cluster_and_score(m, groups)
    assert result["k"] == 3 and result["accuracy"] == 1.0 and result["purity"] == 1.0
    assert result["f1"] == {"g0": 1.0, "g1": 1.0, "g2": 1.0}
    assert result["silhouette_groups"] > 0.5
    for transform in ("clip", "exp"):
        assert cluster_and_score(m, groups, transform=transform)[1]["accuracy"] == 1.0


def test_hungarian_and_majority_differ_as_in_table_1():
    # cluster 0 holds all of a and most of b; cluster 1 the rest of b and all of c
    groups = ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    clusters = np.array([0] * 4 + [0] * 3 + [1] + [1] * 2)
    result = score(groups, clusters)
    assert matched_groups(groups, clusters) == {0: "a", 1: "c"}  # b is left without a cluster
    assert result["accuracy"] == pytest.approx(0.6)  # 4 a + 2 c
    assert result["f1"]["b"] == 0.0 and result["f1"]["a"] == pytest.approx(2 * 4 / (4 + 7))
    assert result["purity"] == pytest.approx(0.6)  # cluster 0 is mostly a (4 vs 3 b), cluster 1 mostly c
    assert result["f1_majority"]["c"] == pytest.approx(2 * 2 / (2 + 3))


def test_affinities():
    m = np.array([[1.0, -0.2], [-0.2, 1.0]])
    np.testing.assert_allclose(cosine_affinity(m, "shift"), [[1.0, 0.4], [0.4, 1.0]])
    np.testing.assert_allclose(cosine_affinity(m, "clip"), [[1.0, 0.0], [0.0, 1.0]])
    d = np.array([[0.0, 2.0, 4.0], [2.0, 0.0, 2.0], [4.0, 2.0, 0.0]])
    np.testing.assert_allclose(gaussian_affinity(d)[0], np.exp(-np.array([0.0, 4.0, 16.0]) / 8))
    with pytest.raises(WeightspaceError, match="affinity 'cube'"):
        cosine_affinity(m, "cube")


def test_euclidean_kernels():
    d = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]])
    np.testing.assert_allclose(euclidean_affinity(d, "authors"), np.exp(-d**2 / 2))
    np.testing.assert_allclose(euclidean_affinity(d, "authors")[1], [np.exp(-0.5), 1.0, np.exp(-4.5)])
    np.testing.assert_allclose(euclidean_affinity(d, "median"), gaussian_affinity(d))  # sigma = 2
    with pytest.raises(WeightspaceError, match="euclidean_kernel 'cube': expected one of authors, median"):
        euclidean_affinity(d, "cube")


@pytest.mark.parametrize("kernel", ["authors", "median"])
def test_clustering_table_names_the_kernel(tmp_path, kernel):
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(2, 50))
    vectors = np.stack([directions[i % 2] + rng.normal(0, 0.5, 50) for i in range(6)])
    names = [f"d{i % 2}/seed{i // 2}" for i in range(6)]
    members = [{"model": n, "dataset": n.split("/")[0], "seed": i // 2, "family": None, "size": None, "base": "tiny"}
               for i, n in enumerate(names)]
    similarity = tmp_path / "exp.parquet"
    Similarity(names, vectors @ vectors.T).long_form().to_parquet(similarity)
    summary = tmp_path / "exp.summary.parquet"
    f1 = tmp_path / "exp.f1.parquet"
    cluster_step(similarity, members, ["dataset"], "shift", kernel, "first_base", 0, 2, summary,
                 tmp_path / "exp.assignments.parquet", tmp_path / "exp.states.parquet", f1)
    rows = clustering_table([summary], [f1], tmp_path / "table.parquet", tmp_path / "f1.parquet", tmp_path / "table.md")
    assert rows.set_index("metric").loc["euclidean", "affinity"] == kernel
    md = (tmp_path / "table.md").read_text()
    named = {"authors": "Euclidean: affinity from the distance d (authors: exp(-d^2 / 2), the authors' exp(-D / 2)",
             "median": "Euclidean: affinity from the distance d (median: exp(-d^2 / (2 sigma^2)), sigma the median"}
    assert named[kernel] in md
    assert "| reference   |" in md and "| exp          | dataset       | first_base  |" in md


def test_euclidean_contrast_sees_norms_not_directions():
    # three directions; each model's norm scaled by its own factor (1 to 8), as norm growth in training
    rng = np.random.default_rng(2)
    directions = rng.normal(size=(3, 500))
    scales = np.geomspace(1, 8, 12)
    rng.shuffle(scales)
    vectors = np.stack([(directions[j % 3] + rng.normal(0, 0.8, 500)) * scales[j] for j in range(12)])
    groups = [f"d{j % 3}" for j in range(12)]
    sim = Similarity([str(i) for i in range(12)], vectors @ vectors.T)
    assert cluster_and_score(sim.cosine, groups)[1]["accuracy"] == 1.0
    assert cluster_euclidean(sim.euclidean, groups)[1]["accuracy"] <= 0.75


@pytest.mark.slow
def test_cluster_rule_table_and_plots(tiny_run):
    workdir, config = tiny_run
    rows = pd.read_parquet(workdir / "results/tables/clustering.parquet")
    assert set(zip(rows.granularity, rows.metric)) == {(g, m) for g in ("dataset", "family")
                                                       for m in ("cosine", "euclidean")}
    by = rows.set_index(["granularity", "metric"])
    assert by.loc[("dataset", "cosine"), "k"] == 3 and by.loc[("family", "cosine"), "k"] == 2
    assert by.loc[("dataset", "cosine"), "accuracy"] == 1.0  # 2 seeds x 3 datasets, cleanly apart
    f1 = pd.read_parquet(workdir / "results/tables/clustering_f1.parquet")
    assert set(f1[(f1.granularity == "family") & (f1.metric == "cosine")].group) == {"sentiment", "topic"}
    assert len(f1) == 2 * (3 + 2) and f1[["f1", "f1_majority"]].apply(lambda c: c.between(0, 1)).all().all()
    assigned = pd.read_parquet(workdir / "results/metrics/clustering/tiny.assignments.parquet")
    fam = assigned[(assigned.granularity == "family") & (assigned.metric == "cosine")].set_index("model")
    assert fam.loc["tiny_pair/seed1", "group"] == "topic" and fam.loc["tiny_sent/seed2", "group"] == "sentiment"
    md = (workdir / "results/tables/clustering.md").read_text()
    assert "| tiny " in md and "accuracy % (euclidean)" in md and "Paper (roberta-base)" in md
    for png in ("tsne_tiny.png", "similarity_tiny.png"):
        assert (workdir / "results/plots" / png).read_bytes()[:4] == b"\x89PNG"
    assert "accuracy 1.000" in (workdir / "logs/cluster/tiny.log").read_text()


def test_experiment_config_errors(tiny_workspace):
    _, config = tiny_workspace

    def members(spec):
        return experiment_members({**config, "geometry": {"experiments": {"x": {"group_by": ["dataset"], **spec}}}}, "x")

    assert len(members({"datasets": ["tiny_sent", "tiny_topic"], "seeds": [1, 2, 3]})) == 6
    paths = [m.path for m in members({"datasets": ["tiny_sent", "tiny_topic"], "sizes": [40, None], "seeds": [1]})]
    assert paths == ["tiny_sent/n40/seed1", "tiny_sent/seed1", "tiny_topic/n40/seed1", "tiny_topic/seed1"]
    with pytest.raises(WeightspaceError, match="'geometry.experiments.x.datasets' names dataset 'nope'"):
        members({"datasets": ["tiny_sent", "nope"]})
    with pytest.raises(WeightspaceError, match="family 'nope'"):
        members({"families": ["sentiment", "nope"]})
    with pytest.raises(WeightspaceError, match="'tiny_sent' is in both"):
        members({"families": {"a": ["tiny_sent"], "b": ["tiny_sent", "tiny_topic"]}})
    with pytest.raises(WeightspaceError, match="needs more models than groups"):
        members({"datasets": ["tiny_sent", "tiny_topic"], "seeds": [1]})
    with pytest.raises(WeightspaceError, match="'size' gives 1 group"):
        members({"datasets": ["tiny_sent", "tiny_topic"], "group_by": ["size"]})
    with pytest.raises(WeightspaceError, match="model 'other'"):
        members({"datasets": ["tiny_sent", "tiny_topic"], "bases": ["tiny", "other"]})


def test_reference_bases_per_mode(tiny_workspace):
    _, config = tiny_workspace
    config = {**config, "models": {**config["models"], "tiny_b": {"source": "local", "path": "unused"}}}

    def references(spec):
        config["geometry"] = {"experiments": {"x": {"datasets": ["tiny_sent", "tiny_topic"], "seeds": [1],
                                                    "group_by": ["base"], **spec}}}
        return reference_bases(config, "x")

    two = {"bases": ["tiny_b", "tiny"]}  # models: per dataset, tiny_b then tiny
    assert references({**two, "reference": "own_base"}) == ["tiny_b", "tiny", "tiny_b", "tiny"]
    assert references({**two, "reference": "first_base"}) == ["tiny_b"] * 4
    assert references(two) == ["tiny_b"] * 4  # first_base: the default
    assert references({**two, "reference": "none"}) == [None] * 4
    assert references({"seeds": [1, 2], "group_by": ["dataset"]}) == ["tiny"] * 4
    with pytest.raises(WeightspaceError, match="key 'geometry.experiments.x.reference': expected one of "
                                               "own_base, first_base, none, got 'zero'"):
        references({**two, "reference": "zero"})


def test_other_base_runs_get_their_own_torch_seed():
    import hashlib

    main = run_seed("tiny_sent", 1)
    assert main == int.from_bytes(hashlib.sha256(b"tiny_sent:1").digest()[:4], "little") & 0x7FFFFFFF  # unchanged
    other = run_seed("tiny_sent", 1, base="tiny_b")
    assert other != main and other == run_seed("tiny_sent", 1, base="tiny_b") != run_seed("tiny_sent", 1, base="x")
    assert run_seed("tiny_sent", 1, "plain", base="tiny_b") == 1  # plain: the seed itself, as asked


def test_bad_experiment_fails_before_running(tiny_workspace, tmp_path):
    _, config = tiny_workspace
    config = {**config, "geometry": {"experiments": {"x": {"families": ["sentiment", "nope"]}}}}
    proc = run_snakemake(tmp_path, config, "-n", check=False)
    assert proc.returncode != 0
    assert "key 'geometry.experiments.x.families' names family 'nope'" in proc.stderr + proc.stdout


@pytest.fixture(scope="module")
def appendix_run(tiny_workspace, tmp_path_factory):
    """App. C (two subsample sizes) and App. B (a second, differently initialised base) on tiny models."""
    tmp, config = tiny_workspace
    workdir = tmp_path_factory.mktemp("appendix")
    config = {k: v for k, v in config.items() if k not in ("centroid", "region")}
    config["models"] = {**config["models"], "tiny_b": {"source": "local",
                                                       "path": str(make_tiny_roberta(workdir / "tiny-b", seed=1))}}
    config["finetune"] = {**config["finetune"], "seeds": [1]}
    config["geometry"] = {"experiments": {
        "sizes": {"datasets": ["tiny_sent", "tiny_topic"], "sizes": [48, 96], "seeds": [1, 2],
                  "group_by": ["dataset", "size"]},
        "bases": {"datasets": ["tiny_sent", "tiny_topic"], "bases": ["tiny", "tiny_b"], "seeds": [1],
                  "group_by": ["base", "dataset"]},
        "bases_own": {"datasets": ["tiny_sent", "tiny_topic"], "bases": ["tiny", "tiny_b"], "seeds": [1],
                      "group_by": ["base", "dataset"], "reference": "own_base"},
        "bases_raw": {"datasets": ["tiny_sent", "tiny_topic"], "bases": ["tiny", "tiny_b"], "seeds": [1],
                      "group_by": ["base", "dataset"], "reference": "none"},
    }}
    run_snakemake(workdir, config, "results/tables/clustering.md", "results/plots/tsne_sizes.png",
                  "results/plots/tsne_bases.png")
    return workdir


def test_nested_subsample():
    from weightspace.data import nested_subsample

    df = pd.DataFrame({"text_a": [f"t{i}" for i in range(100)], "label": np.arange(100) % 2})
    small, large = nested_subsample(df, 20), nested_subsample(df, 50)
    assert len(small) == 20 and set(small.text_a) < set(large.text_a)
    assert list(small.index) == list(range(20)) and small.text_a.tolist() == sorted(small.text_a, key=lambda t: int(t[1:]))
    assert nested_subsample(df, 500).equals(df)


@pytest.mark.slow
def test_data_size_runs_use_nested_subsamples(appendix_run):
    workdir = appendix_run
    for dataset in ("tiny_sent", "tiny_topic"):
        for size in (48, 96):
            row = pd.read_parquet(workdir / f"results/metrics/finetune/{dataset}/n{size}/seed1.parquet").iloc[0]
            assert row.train_size == size
    rows = pd.read_parquet(workdir / "results/tables/clustering.parquet").set_index(["experiment", "granularity",
                                                                                      "metric"])
    assert rows.loc[("sizes", "dataset", "cosine"), "k"] == 2 and rows.loc[("sizes", "size", "cosine"), "k"] == 2
    # the paper's App. C: models group by the data they saw, not by how much of it
    assert rows.loc[("sizes", "dataset", "cosine"), "accuracy"] == 1.0
    assert rows.loc[("sizes", "size", "cosine"), "accuracy"] < 1.0


@pytest.mark.slow
def test_two_bases_vectors_by_reference(appendix_run):
    workdir = appendix_run
    finetuned, pretrained = workdir / "results/models/finetuned", workdir / "results/models/pretrained"
    assert (finetuned / "tiny_sent/base-tiny_b/seed1/model.safetensors").exists()
    assert (pretrained / "tiny_b/model.safetensors").exists()
    from weightspace.taskvectors import task_vector

    other = task_vector(finetuned / "tiny_sent/base-tiny_b/seed1", pretrained / "tiny_b")
    expected = {"bases": other.against(pretrained / "tiny"), "bases_own": other, "bases_raw": other.against(None)}
    norms = {}
    for experiment, vector in expected.items():
        sim = Similarity.from_long_form(pd.read_parquet(workdir / f"results/metrics/similarity/{experiment}.parquet"))
        assert sorted(sim.names) == sorted(["tiny_sent/seed1", "tiny_topic/seed1", "tiny_sent/base-tiny_b/seed1",
                                            "tiny_topic/base-tiny_b/seed1"])
        norms[experiment] = sim.norms[sim.names.index("tiny_sent/base-tiny_b/seed1")]
        assert norms[experiment] == pytest.approx(float(vector.flatten().norm()), rel=1e-5)
    # against the first base, the second base's models also hold the distance between the two
    # random initialisations; their own-base vectors hold finetuning's move alone
    assert norms["bases"] > 1.1 * norms["bases_own"]
    rows = pd.read_parquet(workdir / "results/tables/clustering.parquet")
    cosine = rows[rows.metric == "cosine"].set_index(["experiment", "granularity"])
    assert set(cosine.loc["bases"].index) == {"base", "dataset"}
    assert cosine.loc[("bases", "base"), "reference"] == "first_base"
    assert cosine.loc[("bases_own", "base"), "reference"] == "own_base"
    assert cosine.loc[("bases", "base"), "accuracy"] == 1.0  # App. B: the models cluster by the base they started from
    # the two bases' runs of one (dataset, seed) start from different head initialisations and data orders
    seeds = {path: pd.read_parquet(workdir / f"results/metrics/finetune/tiny_sent/{path}.parquet").torch_seed.iloc[0]
             for path in ("seed1", "base-tiny_b/seed1")}
    assert seeds == {"seed1": run_seed("tiny_sent", 1), "base-tiny_b/seed1": run_seed("tiny_sent", 1, base="tiny_b")}
    assert seeds["seed1"] != seeds["base-tiny_b/seed1"]

"""The region: PB, hull samples, exterior perturbations, leaving the centroid, the plan, the tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification

from helpers import MINIMAL, SCHEMA, make_tiny_roberta
from weightspace.config import validated_config
from weightspace.errors import WeightspaceError
from weightspace.io import load_tensors, read_json
from weightspace.merging import interpolate
from weightspace.models import encoder_with_tensors, load_encoder
from weightspace.region.plan import dirichlet_coefficients, region_plan
from weightspace.region.points import (group_stats, hull_sample, leave_centroid, perturbed_pretrained, recipe_tensors,
                                       xavier_direction)
from weightspace.region.report import PB_COMPARISONS, paper_pb, pb


def test_pb_on_hand_made_losses():
    assert pb([1.0, 2.0], [2.0, 3.0]) == 1.0  # ties count as "no higher"
    assert pb([3.0], [1.0, 2.0, 3.0]) == pytest.approx(1 / 3)
    assert pb([5.0, 0.5], [1.0]) == 0.5
    assert pb([2.0], [1.0]) == 0.0
    with pytest.raises(WeightspaceError):
        pb([], [1.0])


def test_dirichlet_coefficients_are_seeded_points_of_the_simplex():
    a = dirichlet_coefficients(5, 7, seed=3)
    assert a.shape == (7, 5)
    np.testing.assert_allclose(a.sum(1), 1.0)
    assert (a >= 0).all()
    np.testing.assert_array_equal(a, dirichlet_coefficients(5, 7, seed=3))
    assert not np.array_equal(a, dirichlet_coefficients(5, 7, seed=4))
    # Dirichlet(1, ..., 1): each coefficient has mean 1/n
    np.testing.assert_allclose(dirichlet_coefficients(4, 4000, seed=0).mean(0), 0.25, atol=0.01)


def test_xavier_direction_is_a_seeded_unit_vector_with_glorot_spread():
    shapes = {"wide.weight": (64, 1024), "square.weight": (64, 64), "bias": (64,)}
    d = xavier_direction(shapes, seed=1)
    assert math.isclose(math.sqrt(sum(float(t.double().square().sum()) for t in d.values())), 1.0, rel_tol=1e-6)
    assert all(torch.equal(d[n], xavier_direction(shapes, seed=1)[n]) for n in shapes)
    # the std ratio of two layers is the ratio of their Glorot stds
    ratio = float(d["square.weight"].std() / d["wide.weight"].std())
    assert ratio == pytest.approx(math.sqrt((64 + 1024) / (64 + 64)), rel=0.05)


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """A tiny pretrained encoder and three classifiers moved from it by different amounts."""
    tmp = tmp_path_factory.mktemp("region")
    base = make_tiny_roberta(tmp / "base")
    members = []
    for i in (1, 2, 3):
        torch.manual_seed(i)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
        with torch.no_grad():
            for p in model.roberta.parameters():
                p.add_(0.01 * i * torch.randn_like(p))
        model.save_pretrained(tmp / f"m{i}")
        members.append(tmp / f"m{i}")
    stats = group_stats(members, base, tmp / "centroid", tmp / "stats.json")
    return tmp, base, members, stats


def flat(tensors: dict, names=None) -> torch.Tensor:
    return torch.cat([tensors[n].double().reshape(-1) for n in sorted(names or tensors)])


def test_group_stats_match_a_direct_computation(group):
    tmp, base, members, stats = group
    pretrained = load_tensors(base / "model.safetensors")
    encoders = []
    for m in members:
        sd = load_tensors(m / "model.safetensors")
        encoders.append({n: sd.get(f"roberta.{n}", pretrained[n]) for n in pretrained})
    vectors = [flat(e) for e in encoders]
    centroid = sum(vectors) / 3
    np.testing.assert_allclose(flat(load_tensors(tmp / "centroid/model.safetensors")), centroid, atol=1e-6)
    np.testing.assert_allclose(stats["task_vector_norms"], [float((v - flat(pretrained)).norm()) for v in vectors], rtol=1e-5)
    np.testing.assert_allclose(stats["centroid_distances"], [float((v - centroid).norm()) for v in vectors], rtol=1e-4)
    assert stats["mean_centroid_distance"] == pytest.approx(np.mean(stats["centroid_distances"]))
    # the classifier does not use RoBERTa's pooler, so finetuning did not move it
    assert stats["moved_tensors"] and not any("pooler" in n for n in stats["moved_tensors"])
    assert read_json(tmp / "stats.json") == stats


def test_the_exterior_is_as_far_from_pretrained_as_the_mean_finetuned_model(group):
    tmp, base, members, stats = group
    radius = perturbed_pretrained(base, tmp / "stats.json", seed=5, out_dir=tmp / "ex")
    assert radius == pytest.approx(stats["mean_task_vector_norm"])
    pretrained, moved = load_tensors(base / "model.safetensors"), load_tensors(tmp / "ex/model.safetensors")
    step = flat(moved) - flat(pretrained)
    assert float(step.norm()) == pytest.approx(radius, rel=1e-4)
    unmoved = [n for n in pretrained if n not in stats["moved_tensors"]]
    assert unmoved and all(torch.equal(moved[n], pretrained[n]) for n in unmoved)
    perturbed_pretrained(base, tmp / "stats.json", seed=5, out_dir=tmp / "ex_again")
    assert torch.equal(flat(moved), flat(load_tensors(tmp / "ex_again/model.safetensors")))


def test_leaving_the_centroid_moves_the_asked_distance(group):
    tmp, base, members, stats = group
    centroid = flat(load_tensors(tmp / "centroid/model.safetensors"))
    pretrained = flat(load_tensors(base / "model.safetensors"))
    for direction, seed in (("toward_origin", None), ("random1", 11)):
        distance = leave_centroid(tmp / "centroid", base, tmp / "stats.json", direction, 2.0, seed, tmp / direction)
        assert distance == pytest.approx(2 * stats["mean_centroid_distance"])
        moved = flat(load_tensors(tmp / direction / "model.safetensors"))
        assert float((moved - centroid).norm()) == pytest.approx(distance, rel=1e-3)
    # toward the origin is a scaling of the centroid: every weight shrinks by one factor
    shrunk = flat(load_tensors(tmp / "toward_origin/model.safetensors"))
    factor = 1 - 2 * stats["mean_centroid_distance"] / float(centroid.norm())
    torch.testing.assert_close(shrunk, factor * centroid, atol=1e-5, rtol=1e-5)


def test_toward_pretrained_follows_the_segment_and_stops_at_the_pretrained_model(group):
    tmp, base, members, stats = group
    centroid = flat(load_tensors(tmp / "centroid/model.safetensors"))
    pretrained = flat(load_tensors(base / "model.safetensors"))
    half = leave_centroid(tmp / "centroid", base, tmp / "stats.json", "toward_pretrained", 0.5, None, tmp / "half")
    assert half == pytest.approx(0.5 * stats["centroid_pretrained_distance"], rel=1e-4)
    torch.testing.assert_close(flat(load_tensors(tmp / "half/model.safetensors")), (centroid + pretrained) / 2,
                               atol=1e-6, rtol=1e-5)
    leave_centroid(tmp / "centroid", base, tmp / "stats.json", "toward_pretrained", 1.0, None, tmp / "end")
    landed = flat(load_tensors(tmp / "end/model.safetensors"))
    assert float((landed - pretrained).norm()) < 1e-4 * float((centroid - pretrained).norm())
    with pytest.raises(WeightspaceError, match="outside \\(0, 1\\]"):
        leave_centroid(tmp / "centroid", base, tmp / "stats.json", "toward_pretrained", 1.5, None, tmp / "beyond")


def test_the_schema_refuses_a_step_beyond_the_pretrained_model():
    with pytest.raises(WeightspaceError, match="toward_pretrained"):
        validated_config({**MINIMAL, "region": {"toward_pretrained": [0.5, 1.5]}}, SCHEMA)


def test_the_leave_plan_names_each_direction():
    cfg = region_config(same_dataset={"in": ["a"], "ex": ["b"], "pairs": []})
    cfg["region"]["toward_pretrained"] = [0.5, 1]
    rows = pd.DataFrame(region_plan(cfg).rows)
    leave = rows[rows.role == "leave"]
    assert set(leave.direction) == {"centroid", "toward_origin", "toward_pretrained", "random1", "random2"}
    toward = leave[leave.direction == "toward_pretrained"]
    assert sorted(toward.fraction) == [0.5, 1] and toward.radius.isna().all()
    assert sorted(toward.model) == ["region/same_dataset/leave/toward_pretrained/f0.5",
                                    "region/same_dataset/leave/toward_pretrained/f1"]
    assert sorted(leave[leave.direction == "toward_origin"].radius) == [1, 2]


def test_hull_samples_are_convex_combinations(group):
    tmp, base, members, stats = group
    with pytest.raises(WeightspaceError, match="sum to 1"):
        hull_sample(members, [0.5, 0.6, -0.1], base, tmp / "bad")
    hull_sample(members, [1.0, 0.0, 0.0], base, tmp / "vertex")
    sd = load_tensors(members[0] / "model.safetensors")
    vertex = load_tensors(tmp / "vertex/model.safetensors")
    name = "encoder.layer.1.output.dense.weight"
    assert torch.equal(vertex[name], sd[f"roberta.{name}"])


def region_config(**granularities):
    cfg = {**MINIMAL, "finetune": {"seeds": [1, 2, 3]}}
    cfg["datasets"] = {d: {"source": "demo"} for d in ("a", "b", "c", "d")}
    cfg["region"] = {"interpolation": [0, 0.5, 1], "extrapolation": {"steps": 2, "max": 4}, "radii": [1, 2],
                     "random_directions": 2, "granularities": granularities}
    return validated_config(cfg, SCHEMA)


def test_the_plan_has_the_papers_shape():
    cfg = region_config(
        same_dataset={"in": ["a"], "ex": ["b", "c"], "pairs": [["a", "a"]]},
        same_task={"in": ["a", "b"], "ex": ["c"], "eval": ["a"], "pairs": [["a", "b"]], "leave": False},
        general={"in": ["a", "b", "c", "d"], "ex": "random", "ex_random": 4, "hull_samples": 5, "seeds": [1, 2],
                 "pairs": [], "leave": False},
    )
    plan = region_plan(cfg)
    rows = pd.DataFrame(plan.rows)
    count = rows.groupby(["granularity", "role"]).size().to_dict()
    assert count[("same_dataset", "in")] == 3 and count[("same_dataset", "ex")] == 6
    assert count[("same_dataset", "hull")] == 3  # |In'| = |In| by default
    # 3 seed pairs x (0, 0.5, 1 and extrapolation 2, 4, -1, -3)
    assert count[("same_dataset", "line")] == 3 * 7
    assert count[("same_task", "line")] == 9 * 7 and count[("same_task", "centroid_line")] == 3
    assert count[("general", "ex")] == 4 and count[("general", "hull")] == 5 and count[("general", "in")] == 8
    # leave: centroid + (toward the origin + 2 random) x 2 radii
    assert count[("same_dataset", "leave")] == 1 + 3 * 2
    assert ("same_task", "leave") not in count
    # line ends are the finetuned models, not merged copies of them
    ends = rows[(rows.role == "line") & rows.alpha.isin([0, 1])]
    assert ends.model.str.startswith("finetuned/").all()
    # the same-task lines are evaluated on their datasets and the rest of the group (eval = a)
    line = rows[(rows.granularity == "same_task") & (rows.role == "line")].iloc[0]
    assert sorted(line.targets) == ["a", "b"]
    assert sorted(plan.targets["finetuned/a/seed1"]) == ["a", "b", "c", "d"]  # union over roles
    assert len(plan.models) == len(set(plan.models))


@pytest.mark.parametrize("granularity, message", [
    ({"in": ["zz"], "ex": ["b"]}, "region.granularities.g.in: dataset 'zz' is not under 'datasets'"),
    ({"in": ["a"], "ex": ["a"]}, "dataset 'a' is in both 'in' and 'ex'"),
    ({"in": ["a"], "ex": ["b"], "seeds": [9]}, "region.granularities.g.seeds: seed 9 is not in finetune.seeds"),
    ({"in": ["a"], "ex": ["b"], "pairs": [["a", "q"]]}, "region.granularities.g.pairs: dataset 'q'"),
])
def test_bad_region_configs_are_one_line_errors(granularity, message):
    with pytest.raises(WeightspaceError, match=message.replace("(", r"\(").replace(".", r"\.")):
        region_plan(region_config(g=granularity))


def test_bad_alpha_is_reported():
    cfg = region_config(g={"in": ["a"], "ex": ["b"], "pairs": [["a", "a"]]})
    cfg["region"]["interpolation"] = [0, 0.123456, 1]
    with pytest.raises(WeightspaceError, match="region.interpolation: 0.123456 has more than 4 decimals"):
        region_plan(cfg)


# --- from the session's tiny workflow run -------------------------------------------------------


@pytest.mark.slow
def test_workflow_writes_the_pb_table_with_the_papers_numbers(tiny_run):
    workdir, config = tiny_run
    pb = pd.read_parquet(workdir / "results/tables/pb.parquet")
    assert set(pb.granularity) == set(config["region"]["granularities"])
    assert pb.pb.between(0, 100).all()
    table = pb.set_index(["granularity", "a", "b"])
    assert set(table.index) == {(g, a, b) for g in config["region"]["granularities"] for a, b in PB_COMPARISONS}
    assert table.loc[("general", "in", "ex"), "n_b"] == config["region"]["granularities"]["general"]["ex_random"]
    assert paper_pb("same_dataset", "hull", "in") == 88.0 and np.isnan(paper_pb("mine", "in", "ex"))
    text = (workdir / "results/tables/pb.md").read_text()
    assert "PB(In', Ex)" in text and "(75.3)" in text and "(88)" in text
    # the tiny finetunes learn tiny_sent perfectly: its own models beat the other datasets' on it
    assert table.loc[("same_dataset", "in", "ex"), "pb"] == 100.0


@pytest.mark.slow
def test_workflow_lines_span_the_grid_and_temp_weights_are_gone(tiny_run):
    workdir, config = tiny_run
    lines = pd.read_parquet(workdir / "results/tables/lines.parquet")
    same = lines[(lines.granularity == "same_dataset") & (lines.role == "line") & (lines.target == "mean")]
    assert sorted(same.alpha) == [-1.0, 0.0, 0.5, 1.0, 2.0]
    assert (lines[lines.role == "centroid_line"].alpha.between(0, 1)).all()
    assert not list((workdir / "results/models").glob("merged/**/*.safetensors"))
    assert not list((workdir / "results/models").glob("region/**/*.safetensors"))
    for plot in ("interpolation", "extrapolation", "loss_distributions", "leave_centroid"):
        assert (workdir / f"results/plots/{plot}.png").stat().st_size > 10_000


@pytest.mark.slow
def test_workflow_leave_table_has_every_direction(tiny_run):
    workdir, _ = tiny_run
    leave = pd.read_parquet(workdir / "results/tables/leave_centroid.parquet")
    same = leave[leave.granularity == "same_dataset"].set_index("kind")
    assert {"centroid", "toward_origin", "toward_pretrained", "random", "finetuned_source"} <= set(same.index)
    assert np.isfinite(leave[["loss_mean", "accuracy_mean"]]).all().all()
    # the pretrained model, the segment's end, lies at the centroid's distance from it
    stats = read_json(workdir / "results/metrics/region/same_dataset/centroid/in.json")
    end = same.loc["toward_pretrained"]
    assert end.fraction == 1 and end.radius == pytest.approx(
        stats["centroid_pretrained_distance"] / stats["mean_centroid_distance"])


def test_probe_jobs_build_derived_models_in_memory_as_the_writers_would(group):
    """recipe_tensors (what a probe job scores) equals the model folder the matching writer saves."""
    tmp, base, members, stats = group
    files = [str(m / "model.safetensors") for m in members]
    centroid = str(tmp / "centroid/model.safetensors")
    cases = {
        "merged": ({"kind": "merged", "sources": files[:2], "coefficients": [2.0]},
                   lambda out: interpolate(members[0], members[1], 2.0, base, out)),
        "hull": ({"kind": "hull", "sources": files, "coefficients": [0.2, 0.3, 0.5]},
                 lambda out: hull_sample(members, [0.2, 0.3, 0.5], base, out)),
        "perturbed": ({"kind": "perturbed", "sources": [], "coefficients": [], "stats": str(tmp / "stats.json"),
                       "seed": 7}, lambda out: perturbed_pretrained(base, tmp / "stats.json", 7, out)),
        "leave": ({"kind": "leave", "sources": [centroid], "coefficients": [2.0], "stats": str(tmp / "stats.json"),
                   "seed": 3, "direction": "random1"},
                  lambda out: leave_centroid(tmp / "centroid", base, tmp / "stats.json", "random1", 2.0, 3, out)),
    }
    x = torch.randint(5, 30, (2, 7))
    for kind, (recipe, write) in cases.items():
        built = recipe_tensors(recipe, base)
        write(tmp / f"written_{kind}")
        written = load_tensors(tmp / f"written_{kind}/model.safetensors")
        assert built.keys() == written.keys() and all(torch.equal(built[n], written[n]) for n in built), kind
        in_memory, on_disk = encoder_with_tensors(base, built).eval(), load_encoder(tmp / f"written_{kind}").eval()
        with torch.no_grad():
            assert torch.equal(in_memory(input_ids=x).last_hidden_state, on_disk(input_ids=x).last_hidden_state)
    assert recipe_tensors({"kind": "finetuned", "sources": files[:1], "coefficients": []}, base) is None
    with pytest.raises(WeightspaceError, match="unknown model kind"):
        recipe_tensors({"kind": "mystery", "sources": [], "coefficients": []}, base)

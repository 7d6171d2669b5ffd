"""Intervals, verdicts and the claims table generated from the tiny workflow's results."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from weightspace.intervals import (bootstrap_interval, clustered_mean_interval, format_interval, t_interval,
                                   verdict)
from weightspace.region.report import effects_table, loss_accuracy_disagreements


def test_verdicts_follow_the_interval_and_the_threshold():
    assert verdict(0.1, 0.5, 0.0, "above") == "holds"
    assert verdict(-0.5, -0.1, 0.0, "above") == "does not hold"
    assert verdict(-0.1, 0.5, 0.0, "above") == "cannot tell"
    assert verdict(-0.5, -0.1, 0.0, "below") == "holds"
    assert verdict(0.1, 0.5, 0.0, "below") == "does not hold"
    assert verdict(np.nan, np.nan, 0.0, "above") == "cannot tell"
    with pytest.raises(ValueError):
        verdict(0, 1, 0, "sideways")


def test_intervals_cover_the_mean_and_are_the_same_on_a_rerun():
    rng = np.random.default_rng(0)
    x = rng.normal(loc=2.0, size=200)
    lo, hi = bootstrap_interval(np.mean, [x])
    assert lo < x.mean() < hi and hi - lo == pytest.approx(2 * 1.96 / np.sqrt(200), rel=0.25)
    assert (lo, hi) == bootstrap_interval(np.mean, [x])
    # groups: resampling them widens the interval beyond the within-group noise
    groups = [rng.normal(loc=m, scale=0.1, size=5) for m in (0.0, 1.0, 2.0, 3.0)]
    lo, hi = clustered_mean_interval(groups)
    assert lo < 1.5 < hi and hi - lo > 1.0
    single = clustered_mean_interval(groups[:1])
    assert single[0] < groups[0].mean() < single[1] and single[1] - single[0] < 0.3
    assert np.isnan(t_interval([1.0])).all() and t_interval([1.0, 2.0, 3.0])[0] < 2.0 < t_interval([1.0, 2.0, 3.0])[1]
    assert format_interval(96.25, 88.9, 100.0) == "96.2 [88.9, 100.0]" and format_interval(3.0, np.nan, np.nan) == "3.0"


@pytest.fixture(scope="module")
def tiny_claims(tiny_run):
    workdir, _ = tiny_run
    tables = workdir / "results/tables"
    return tables, pd.read_parquet(tables / "claims.parquet")


@pytest.mark.slow
def test_the_tiny_runs_claims_table_covers_every_section_with_intervals(tiny_claims):
    tables, claims = tiny_claims
    assert set(claims.verdict) <= {"holds", "does not hold", "cannot tell"}
    sections = " ".join(claims.section)
    for section in ("§3", "§4, Fig. 2a", "§4, Fig. 2b", "§2.3", "§5.1", "§6", "§5.2", "App. F", "§7, Table 2",
                    "§7, Table 3"):
        assert section in sections, section
    # the instrument: every tiny probe beats the label prior
    first = claims.iloc[0]
    assert first.claim.startswith("the probe's loss is no worse") and first.verdict == "holds"
    # numbers are the tables' own: PB and its interval, clustering over states
    pb = pd.read_parquet(tables / "pb.parquet").set_index(["granularity", "a", "b"])
    row = claims[(claims.statistic == "PB(In', Ex) %") & (claims.scope == "general")].iloc[0]
    assert (row.value, row.lo, row.hi) == tuple(pb.loc[("general", "hull", "ex"), ["pb", "pb_lo", "pb_hi"]])
    assert row.lo <= row.value <= row.hi
    clustering = pd.read_parquet(tables / "clustering.parquet")
    by_dataset = clustering[(clustering.metric == "cosine") & (clustering.granularity == "dataset")].iloc[0]
    row = claims[claims.scope.str.contains("by dataset") & (claims.statistic == "cosine clustering accuracy %")].iloc[0]
    assert row.value == pytest.approx(100 * by_dataset.accuracy_mean)
    # 2 seeds x 3 tiny datasets cluster perfectly, but shuffled groups do so in over 5% of shuffles too
    assert row.value == 100.0 and by_dataset.chance_accuracy == 1.0 and row.verdict == "cannot tell"
    md = (tables / "claims.md").read_text()
    assert "| verdict |" in md and md.count("\n| ") == len(claims) + 1


@pytest.mark.slow
def test_pb_and_centroid_tables_print_intervals(tiny_run):
    workdir, _ = tiny_run
    tables = workdir / "results/tables"
    pb = pd.read_parquet(tables / "pb.parquet")
    assert len(pb) == 3 * 3  # every granularity, the three comparisons
    assert (pb.pb_lo <= pb.pb).all() and (pb.pb <= pb.pb_hi).all()
    assert " [" in (tables / "pb.md").read_text()
    runs = pd.read_parquet(tables / "centroid_runs.parquet")
    assert {"gain", "accuracy", "start", "seed"} <= set(runs.columns)
    assert runs[runs.start == "pretrained"].gain.eq(0).all()
    assert "seed(s)" in (tables / "centroid.md").read_text()


def _line_losses(points):
    """region_losses rows of one line on one target: (alpha, loss, accuracy)."""
    return pd.DataFrame([{"granularity": "g", "role": "line", "model": f"m{a}", "pair": "p", "alpha": a,
                          "direction": None, "radius": None, "target": "t", "loss": loss, "loss_se": 0.01,
                          "accuracy": acc, "accuracy_se": 0.01} for a, loss, acc in points])


def test_effects_compare_each_point_with_its_reference_and_flag_disagreements():
    losses = _line_losses([(-1.0, 0.9, 0.60), (0.0, 0.5, 0.80), (0.5, 0.45, 0.82), (1.0, 0.6, 0.78), (2.0, 0.4, 0.70)])
    effects = effects_table(losses).set_index("x")
    assert effects.loc[0.5, "comparison"] == "interpolation"
    assert effects.loc[0.5, "dloss"] == pytest.approx(0.45 - 0.55)
    assert effects.loc[-1.0, "reference"] == "w2" and effects.loc[-1.0, "dloss"] == pytest.approx(0.4)
    assert effects.loc[2.0, "reference"] == "w1" and effects.loc[2.0, "dacc"] == pytest.approx(-0.08)
    assert effects.loc[2.0, "dloss_se"] == pytest.approx(np.hypot(0.01, 0.01))
    # at alpha 2 the accuracy falls by 8 points while the loss falls: the instrument is at fault
    bad = loss_accuracy_disagreements(effects.reset_index())
    assert list(bad.x) == [2.0]

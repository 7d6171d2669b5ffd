"""A demo-style region run end to end: MiniLM finetuned on real demo data, one extrapolated line.

The test that the generalized loss measures the encoder: beyond the line's ends the models get
worse, and loss and accuracy must say so together (an overconfident probe once made the loss
fall there while the accuracy fell).
"""

from __future__ import annotations

import pandas as pd
import pytest

from helpers import ROOT, run_snakemake
from weightspace.config import load_yaml
from weightspace.region.report import loss_accuracy_disagreements

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_line(tmp_path_factory):
    demo = load_yaml(ROOT / "config/demo.yaml")
    config = {
        "base_model": demo["base_model"], "models": demo["models"], "threads": 1, "data": demo["data"],
        "datasets": {d: demo["datasets"][d] for d in ("vader_movies", "vader_tweets")},
        "finetune": {**demo["finetune"], "seeds": [1, 2]},
        "region": {
            "probe": demo["region"]["probe"], "threads": 1, "interpolation": [0, 0.5, 1],
            "extrapolation": {"steps": 2, "max": 4},  # alphas -3, -1, 2, 4
            "granularities": {"same_dataset": {"in": ["vader_movies"], "ex": ["vader_tweets"], "ex_seeds": [1],
                                               "pairs": [["vader_movies", "vader_movies"]], "hull_samples": 2,
                                               "leave": False}},
        },
    }
    workdir = tmp_path_factory.mktemp("demo_line")
    run_snakemake(workdir, config)
    return workdir


def test_beyond_the_line_ends_loss_and_accuracy_agree(demo_line):
    effects = pd.read_parquet(demo_line / "results/tables/region_effects.parquet")
    beyond = effects[effects.comparison == "extrapolation"]
    assert sorted(beyond.x) == [-3.0, -1.0, 2.0, 4.0]
    assert loss_accuracy_disagreements(effects).empty, beyond
    # and the paper's §6: the farthest points are worse than the ends, by loss and by accuracy
    far = beyond[beyond.x.isin([-3.0, 4.0])]
    assert (far.dloss > 0).all() and far.dacc.mean() < 0


def test_every_probe_of_the_run_beats_the_label_prior(demo_line):
    losses = pd.read_parquet(demo_line / "results/tables/region_losses.parquet").drop_duplicates(["model", "target"])
    assert (losses.loss < losses.prior_loss).all(), losses[["model", "loss", "prior_loss"]]
    claims = pd.read_parquet(demo_line / "results/tables/claims.parquet").set_index("claim")
    assert claims.loc["the probe's loss is no worse than predicting the training-label prior", "verdict"] == "holds"
    assert claims.loc["loss and accuracy agree in direction beyond the line ends", "verdict"] == "holds"
    assert claims.loc["the loss rises beyond the line's ends", "value"] > 0

"""The generalized loss on the real demo data: the probe must beat the baselines it has to beat."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from helpers import ROOT
from weightspace.checkpoints import base_model_location
from weightspace.config import load_yaml, validated_config
from weightspace.data import prepare_dataset
from weightspace.probing import probe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo config, its 10 datasets prepared as the workflow prepares them, and MiniLM's folder."""
    config = validated_config(load_yaml(ROOT / "config/demo.yaml"), ROOT / "workflow/schemas/config.schema.yaml")
    data = tmp_path_factory.mktemp("demo_data")
    targets = {}
    for name, spec in config["datasets"].items():
        prepare_dataset(name, spec, config["data"], data / name)
        targets[name] = data / name
    base = base_model_location(config["base_model"], config["models"][config["base_model"]])
    return config, targets, base


def test_the_pretrained_encoders_probe_is_no_worse_than_the_label_prior_on_every_demo_target(demo):
    config, targets, base = demo
    cfg = {**config["region"]["probe"], "max_length": config["finetune"]["max_length"]}
    torch.set_num_threads(2)
    table = probe(base, base, targets, cfg, torch.device("cpu")).set_index("target")
    assert len(table) == 10 and (table["regularisation"] == "cv").all()
    # never worse than the prior beyond the test sample's noise (two standard errors of the paired difference)
    bound = table["prior_loss"] + 2 * table["excess_over_prior_se"]
    assert (table["loss"] <= bound).all(), table[table["loss"] > bound][["loss", "prior_loss", "excess_over_prior_se"]]
    # and clearly better where the frozen encoder knows something (all but the word-sense pairs)
    informative = table.drop(index="wordnet_wic")
    assert (informative["loss"] < informative["prior_loss"]).all()
    assert (informative["accuracy"] > informative["majority_test_accuracy"]).all()
    # every probe's C is inside the grid and its cross-validated loss is recorded
    assert table["cv_loss"].notna().all() and (table["C"] > 0).all()


def test_a_fixed_C_on_the_demo_data_is_overconfident_as_the_paper_reading_warns(demo):
    """`region.probe.C: 1` (the literal reading) on two 2-class demo targets: loss above ln 2 although accuracy is not."""
    config, targets, base = demo
    cfg = {**config["region"]["probe"], "max_length": config["finetune"]["max_length"], "C": 1.0}
    torch.set_num_threads(2)
    chosen = {t: targets[t] for t in ("vader_movies", "vader_nyt")}
    fixed = probe(base, base, chosen, cfg, torch.device("cpu")).set_index("target")
    cv = probe(base, base, chosen, {**cfg, "C": None}, torch.device("cpu")).set_index("target")
    assert (fixed["regularisation"] == "fixed").all() and (fixed["C"] == 1.0).all()
    assert (fixed["loss"] > fixed["prior_loss"]).all() and (cv["loss"] < cv["prior_loss"]).all()
    pd.testing.assert_series_equal(fixed["prior_loss"], cv["prior_loss"])  # the same examples, the same baseline

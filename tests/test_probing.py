"""The generalized loss: first-token features of a frozen encoder and a convex logistic-regression fit."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import SCHEMA
from weightspace.config import validated_config
from weightspace.data import read_split
from weightspace.errors import WeightspaceError
from weightspace.models import load_encoder, load_tokenizer
from weightspace import probing
from weightspace.probing import first_token_features, fit_probe, probe


def test_fit_probe_separates_separable_classes_and_scores_missing_ones():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8))
    y = (x[:, 0] > 0).astype(int)
    scores = fit_probe(x[:200], y[:200], x[200:], y[200:], num_labels=2)
    assert scores["accuracy"] > 0.95 and scores["loss"] < 0.2
    # a test class that the training sample lacks has probability 0 (clipped), not an error
    y3 = y.copy()
    y3[250:] = 2
    missing = fit_probe(x[:200], y3[:200], x[200:], y3[200:], num_labels=3)
    assert missing["loss"] > 5 and missing["accuracy"] <= 0.5
    with pytest.raises(WeightspaceError, match="single class"):
        fit_probe(x[:10], np.zeros(10, int), x[10:20], y[10:20], num_labels=2)


def test_a_probe_on_perfectly_separable_features_stays_finite_and_calibrated():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 32))
    y = (x[:, 0] > 0).astype(int)
    x[:, 0] += np.where(y == 1, 3.0, -3.0)  # a margin: train and test both separate perfectly
    scores = fit_probe(x[:300], y[:300], x[300:], y[300:], num_labels=2)
    assert np.isfinite(scores["loss"]) and scores["loss"] < 0.05 and scores["accuracy"] == 1.0
    assert scores["calibration_error"] < 0.05
    assert scores["C"] <= max(probing.C_GRID)  # the grid bounds the weights: probabilities never reach 0 or 1


def test_features_that_separate_the_training_sample_by_chance_get_the_prior_not_overconfidence():
    """384 noise features, 150 examples: separable by chance, with nothing to learn (the demo's old failure)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(450, 384)), rng.integers(0, 2, 450)
    cv = fit_probe(x[:150], y[:150], x[150:], y[150:], num_labels=2)
    fixed = fit_probe(x[:150], y[:150], x[150:], y[150:], num_labels=2, C=1.0)
    assert cv["loss"] <= cv["prior_loss"] + 2 * cv["excess_over_prior_se"] and cv["loss"] < math.log(2) + 0.01
    assert cv["C"] == min(probing.C_GRID) and np.isfinite(cv["cv_loss"])
    # the fixed-C fit is confidently wrong: its loss is far above ln 2 at chance accuracy
    assert fixed["loss"] > 1.2 and abs(fixed["accuracy"] - 0.5) < 0.1 and np.isnan(fixed["cv_loss"])
    again = fit_probe(x[:150], y[:150], x[150:], y[150:], num_labels=2)
    assert again == cv  # the folds are fixed: a rerun chooses the same C and gives the same loss


def test_the_one_standard_error_rule_regularises_at_least_as_much_as_the_best_cv_loss():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 64))
    y = (x[:, :4].sum(1) + rng.normal(scale=2.0, size=600) > 0).astype(int)
    one_se = fit_probe(x[:400], y[:400], x[400:], y[400:], num_labels=2, cv_rule="one_se")
    best = fit_probe(x[:400], y[:400], x[400:], y[400:], num_labels=2, cv_rule="min")
    assert one_se["C"] <= best["C"] and one_se["cv_loss"] >= best["cv_loss"]
    assert max(one_se["loss"], best["loss"]) < one_se["prior_loss"] - 0.05  # both find the signal
    with pytest.raises(WeightspaceError, match="cv_rule"):
        fit_probe(x[:400], y[:400], x[400:], y[400:], num_labels=2, cv_rule="median")
    with pytest.raises(WeightspaceError, match="single training example"):
        fit_probe(x[:10], np.r_[np.zeros(9, int), 1], x[10:20], y[10:20], num_labels=2)


@pytest.fixture(scope="module")
def run_paths(tiny_run):
    workdir, config = tiny_run
    results = workdir / "results"
    return workdir, config, results / "models/pretrained/tiny", results / "models/finetuned", results / "data"


@pytest.mark.slow
def test_features_are_the_first_tokens_final_state_in_input_order(run_paths):
    _, _, base, finetuned, data = run_paths
    tokenizer, encoder = load_tokenizer(base), load_encoder(finetuned / "tiny_pair/seed1")
    df = read_split(data / "tiny_pair", "test").head(12)
    batched = first_token_features(encoder, tokenizer, df, 32, 5, torch.device("cpu"))
    one_by_one = np.concatenate([first_token_features(encoder, tokenizer, df.iloc[[i]], 32, 1, torch.device("cpu"))
                                 for i in range(len(df))])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert batched.shape == (12, encoder.config.hidden_size)


@pytest.mark.slow
def test_the_probe_loss_is_the_same_on_a_rerun_and_matches_the_workflow(run_paths):
    workdir, config, base, finetuned, data = run_paths
    validated = validated_config(config, SCHEMA)
    cfg = {**validated["region"]["probe"], "max_length": validated["finetune"]["max_length"]}
    targets = {"tiny_sent": data / "tiny_sent", "tiny_topic": data / "tiny_topic"}
    torch.set_num_threads(1)  # as the workflow's probe job (region.threads)
    first = probe(finetuned / "tiny_sent/seed1", base, targets, cfg, torch.device("cpu"))
    again = probe(finetuned / "tiny_sent/seed1", base, targets, cfg, torch.device("cpu"))
    pd.testing.assert_series_equal(first["loss"], again["loss"])
    pd.testing.assert_series_equal(first["accuracy"], again["accuracy"])
    ran = pd.read_parquet(workdir / "results/metrics/probe/finetuned/tiny_sent/seed1.parquet").set_index("target")
    for row in first.itertuples():
        assert ran.loc[row.target, "loss"] == pytest.approx(row.loss, rel=1e-4)
    # the model finetuned on tiny_sent serves tiny_sent best, with a near-perfect probe
    own = first.set_index("target").loc["tiny_sent"]
    assert own["accuracy"] >= 0.9 and own["loss"] < first.set_index("target").loc["tiny_topic", "loss"]

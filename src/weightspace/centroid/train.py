"""Parameter-efficient finetuning from a start point: one job of the centroid experiment's grid.

The paper's §7 and App. H: for each target dataset of a group, BitFit (bias terms + a new head)
from the pretrained model and from the centroid of the other datasets' models, with the full
training set and with at most 1,000 examples (Tables 2 and 3, Fig. 6 and 14). LoRA through peft
is the other method (config `centroid.method`). Both reuse finetuning.train: only the trainable
parameters differ.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from peft import LoraConfig, TaskType, get_peft_model

from ..data import read_split, subsample
from ..errors import WeightspaceError
from ..finetuning import device_name, train_and_test
from ..io import read_json, write_parquet
from ..models import load_classifier, load_tokenizer
from ..seeding import run_seed, seed_everything
from .plan import METHODS, shots_cap

log = logging.getLogger(__name__)


def bitfit_trainable(model) -> Callable[[str], bool]:
    """BitFit: the encoder's bias terms and everything outside the encoder (the new head)."""
    encoder = model.base_model_prefix + "."
    return lambda name: not name.startswith(encoder) or name.endswith(".bias")


def with_lora(model, settings: dict):
    """The model wrapped by peft: LoRA adapters on `target_modules`, the head trained in full."""
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=settings["r"], lora_alpha=settings["alpha"],
                        lora_dropout=settings["dropout"], target_modules=list(settings["target_modules"]))
    return get_peft_model(model, config)


def marked_trainable(model) -> Callable[[str], bool]:
    """The parameters that are trainable now (as peft marked them), as a predicate for train()."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return names.__contains__


def efficient_model(start_dir, num_labels: int, settings: dict, trust_remote_code: bool = False):
    """The start point with a new head, and the predicate of the parameters the method trains."""
    model = load_classifier(start_dir, num_labels, trust_remote_code)
    if settings["method"] == "bitfit":
        return model, bitfit_trainable(model)
    if settings["method"] == "lora":
        model = with_lora(model, settings["lora"])
        return model, marked_trainable(model)
    raise WeightspaceError(f"key 'centroid.method' is '{settings['method']}', expected one of: {', '.join(METHODS)}")


def training_config(finetune_cfg: dict, train_cfg: dict, n_examples: int) -> dict:
    """The finetuning settings with the experiment's own (non-null) ones on top.

    `min_steps` stretches the epochs of small (few-shot) training sets to at least that many steps.
    """
    cfg = {**finetune_cfg, **{k: v for k, v in train_cfg.items() if v is not None and k != "min_steps"}}
    if train_cfg.get("min_steps"):
        steps_per_epoch = math.ceil(n_examples / cfg["batch_size"])
        cfg["epochs"] = max(cfg["epochs"], train_cfg["min_steps"] / steps_per_epoch)
    return cfg


def train_from_start(data_dir, start_dir, tokenizer_dir, target: str, shots, seed: int, settings: dict,
                     finetune_cfg: dict, device: torch.device, trust_remote_code: bool = False):
    """Train the method from `start_dir` on the target; returns (model, metrics row).

    The torch seed depends on (target, seed) only, so both starts of a seed get the same head
    initialisation, the same few-shot subset and the same data order: a paired comparison.
    """
    data_dir = Path(data_dir)
    meta = read_json(data_dir / "meta.json")
    torch_seed = run_seed(target, seed, finetune_cfg["seed_mode"])
    full_train = read_split(data_dir, "train")
    train_df = subsample(full_train, shots_cap(shots), np.random.default_rng(torch_seed))
    cfg = training_config(finetune_cfg, settings["train"], len(train_df))
    seed_everything(torch_seed)
    tokenizer = load_tokenizer(tokenizer_dir)
    model, trainable = efficient_model(start_dir, meta["num_labels"], settings, trust_remote_code)
    n_trainable = sum(p.numel() for n, p in model.named_parameters() if trainable(n))
    n_total = sum(p.numel() for p in model.parameters())
    log.info("%s from %s on %s (%s shots: %d of %d examples), seed %d (torch seed %d), %d of %d parameters "
             "trainable, device %s", settings["method"], start_dir, target, shots, len(train_df), len(full_train),
             seed, torch_seed, n_trainable, n_total, device)
    result, scores = train_and_test(model, tokenizer, train_df, data_dir, cfg, torch_seed, device, trainable)
    row = {
        "target": target,
        "method": settings["method"],
        "shots": shots_cap(shots),
        "seed": seed,
        "torch_seed": torch_seed,
        "num_labels": meta["num_labels"],
        "train_size": len(train_df),
        "full_train_size": len(full_train),
        "test_size": scores["n"],
        "test_accuracy": scores["accuracy"],
        "test_loss": scores["loss"],
        "majority_test_accuracy": meta["majority_test_accuracy"],
        "trainable_params": n_trainable,
        "total_params": n_total,
        "steps": result.steps,
        "lr": cfg["lr"],
        "examples_per_second": result.examples_per_second,
        "wall_seconds": result.wall_seconds,
        "device": device_name(device),
        **result.curve(),
    }
    return model, row


def efficient_finetune(data_dir, start_dir, tokenizer_dir, metrics_path, target: str, start: str, shots, seed: int,
                       settings: dict, finetune_cfg: dict, device: torch.device,
                       trust_remote_code: bool = False) -> dict:
    """One job of the grid: train from the start point and write its metrics row."""
    _, row = train_from_start(data_dir, start_dir, tokenizer_dir, target, shots, seed, settings, finetune_cfg,
                              device, trust_remote_code)
    row = {"start": start, **row}
    write_parquet(pd.DataFrame([row]).astype({"shots": "Int64"}), metrics_path)
    return row

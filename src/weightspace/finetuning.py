"""Supervised finetuning of a sequence classifier: AdamW, linear schedule, dynamic padding.

One loop serves full finetuning and parameter-efficient methods: `trainable` picks the
parameters that are updated, everything else stays bit-identical.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import torch
from transformers import DataCollatorWithPadding

from .errors import WeightspaceError

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    steps: int
    train_examples: int
    train_tokens: int
    wall_seconds: float
    log_steps: list[int] = field(default_factory=list)
    log_losses: list[float] = field(default_factory=list)
    # the validation curve (with validate_every); with patience, the best step, whose weights are kept
    validation_steps: list[int] = field(default_factory=list)
    validation_losses: list[float] = field(default_factory=list)
    validation_accuracies: list[float] = field(default_factory=list)
    best_step: int | None = None
    stopped_early: bool = False

    def curve(self) -> dict:
        """The training and validation curves and the step whose weights were kept, as metrics columns."""
        kept = self.best_step if self.best_step is not None else self.steps
        at = self.validation_steps.index(kept) if kept in self.validation_steps else None
        return {
            "kept_step": kept,
            "stopped_early": self.stopped_early,
            "validation_loss": self.validation_losses[at] if at is not None else None,
            "validation_accuracy": self.validation_accuracies[at] if at is not None else None,
            "log_step": self.log_steps,
            "log_train_loss": self.log_losses,
            "log_validation_step": self.validation_steps,
            "log_validation_loss": self.validation_losses,
            "log_validation_accuracy": self.validation_accuracies,
        }

    @property
    def examples_per_second(self) -> float:
        return self.train_examples / max(self.wall_seconds, 1e-9)

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / max(self.wall_seconds, 1e-9)


def encode(df: pd.DataFrame, tokenizer, max_length: int) -> list[dict]:
    """Tokenize a canonical split into per-example features (padding happens per batch)."""
    texts_a = df["text_a"].tolist()
    texts_b = None if df["text_b"].isna().all() else df["text_b"].tolist()
    enc = tokenizer(texts_a, texts_b, truncation=True, max_length=max_length)
    labels = df["label"].tolist()
    return [{**{k: enc[k][i] for k in enc.keys()}, "labels": labels[i]} for i in range(len(df))]


def batches(features: list[dict], batch_size: int, collate, generator: torch.Generator | None = None):
    order = torch.randperm(len(features), generator=generator).tolist() if generator else range(len(features))
    order = list(order)
    for start in range(0, len(order), batch_size):
        yield collate([features[i] for i in order[start : start + batch_size]])


def autocast(device: torch.device):
    """bf16 autocast on CUDA, plain fp32 on the CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def train(
    model,
    features: list[dict],
    tokenizer,
    cfg: dict,
    seed: int,
    device: torch.device,
    trainable: Callable[[str], bool] | None = None,
    validation: list[dict] | None = None,
) -> TrainResult:
    """Train in place; `cfg` holds lr, batch_size, epochs, max_steps, warmup_ratio, ... (config `finetune`).

    With `validate_every` the model is scored on `validation` every that many steps and at the
    last one. With `patience` as well, training stops after that many scores without a better
    validation loss (or accuracy: `early_stopping_metric`) and the best-scoring weights are kept.
    """
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(device).train()
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(trainable is None or trainable(name))
        if p.requires_grad:
            params.append((name, p))
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "LayerNorm.bias")
    groups = [
        {"params": [p for n, p in params if not n.endswith(no_decay)], "weight_decay": cfg["weight_decay"]},
        {"params": [p for n, p in params if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    # fused: one kernel for all parameters (on 2 CPU cores a third of MiniLM's step time otherwise)
    optimizer = torch.optim.AdamW(
        [g for g in groups if g["params"]], lr=cfg["lr"], betas=tuple(cfg["adam_betas"]), eps=cfg["adam_eps"],
        fused=device.type in ("cpu", "cuda"),
    )
    steps_per_epoch = math.ceil(len(features) / cfg["batch_size"])
    total = math.ceil(steps_per_epoch * cfg["epochs"])
    if cfg.get("max_steps"):
        total = min(total, cfg["max_steps"])
    # Imported here: it pulls in transformers.trainer_utils and peft (~3 s of CPU), which jobs that
    # only encode or evaluate (probes) do not need.
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg["warmup_ratio"] * total), total)
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    generator = torch.Generator().manual_seed(seed)
    progress = Progress(total, cfg["log_every"])
    result = TrainResult(0, 0, 0, 0.0)
    stopper = EarlyStopping(cfg, total, validation, tokenizer, device, params)
    start = time.perf_counter()
    while result.steps < total and not result.stopped_early:
        for batch in batches(features, cfg["batch_size"], collate, generator):
            # counted on the host, before the batch moves: on a GPU a count there waits for the device
            result.train_examples += batch["labels"].shape[0]
            result.train_tokens += int(batch["attention_mask"].sum())
            batch = {k: v.to(device) for k, v in batch.items()}
            with autocast(device):
                loss = model(**batch).loss
            loss.backward()
            if cfg.get("max_grad_norm"):
                torch.nn.utils.clip_grad_norm_([p for _, p in params], cfg["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            result.steps += 1
            if progress.due(result.steps):
                result.log_steps.append(result.steps)
                result.log_losses.append(loss.item())
                progress.report(result, result.log_losses[-1], time.perf_counter() - start)
            if stopper.due(result.steps) and stopper.score(model, result):
                result.stopped_early = True
            if result.steps >= total or result.stopped_early:
                break
    stopper.restore_best(result)
    result.wall_seconds = time.perf_counter() - start
    return result


class EarlyStopping:
    """Validation scores during training; with `patience`, the stop and the best weights.

    The best weights are a copy of the trainable parameters only (BitFit: the biases and the head).
    """

    def __init__(self, cfg: dict, total: int, validation: list[dict] | None, tokenizer, device, params):
        self.every = cfg.get("validate_every")
        self.patience = cfg.get("patience")
        self.metric = cfg.get("early_stopping_metric") or "loss"
        if self.every and not validation:
            raise WeightspaceError("validate_every is set but the dataset has no validation examples")
        self.total, self.validation, self.tokenizer, self.device = total, validation, tokenizer, device
        self.batch_size = cfg["eval_batch_size"]
        self.params = params
        self.best_value, self.best_state, self.bad = None, None, 0

    def due(self, step: int) -> bool:
        return bool(self.every) and (step % self.every == 0 or step == self.total)

    def score(self, model, result: TrainResult) -> bool:
        """Score the model on the validation split; True when training should stop."""
        scores = evaluate(model, self.validation, self.tokenizer, self.batch_size, self.device)
        model.train()
        result.validation_steps.append(result.steps)
        result.validation_losses.append(scores["loss"])
        result.validation_accuracies.append(scores["accuracy"])
        value = scores["loss"] if self.metric == "loss" else -scores["accuracy"]
        log.info("step %d  validation loss %.4f  accuracy %.4f", result.steps, scores["loss"], scores["accuracy"])
        if self.best_value is None or value < self.best_value:
            self.best_value, self.bad = value, 0
            if self.patience:
                result.best_step = result.steps
                self.best_state = [p.detach().clone() for _, p in self.params]
            return False
        self.bad += 1
        return bool(self.patience) and self.bad >= self.patience

    def restore_best(self, result: TrainResult) -> None:
        if self.best_state is None or result.best_step == result.steps:
            return
        with torch.no_grad():
            for (_, p), best in zip(self.params, self.best_state):
                p.copy_(best)
        log.info("kept the weights of step %d (best validation %s of %d scores)", result.best_step, self.metric,
                 len(result.validation_steps))


@torch.no_grad()
def evaluate(model, features: list[dict], tokenizer, batch_size: int, device: torch.device) -> dict:
    """Accuracy and mean cross-entropy on labelled features."""
    model.to(device).eval()
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    # summed on the device and read once at the end: a read per batch would wait for the GPU each time
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    # in order of length: less padding, and the sums do not depend on the order
    features = sorted(features, key=lambda f: len(f["input_ids"]))
    for batch in batches(features, batch_size, collate):
        n += batch["labels"].shape[0]
        batch = {k: v.to(device) for k, v in batch.items()}
        with autocast(device):
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum").double()
        correct += (logits.argmax(-1) == batch["labels"]).sum()
    return {"accuracy": int(correct) / n, "loss": float(loss_sum) / n, "n": n}


class Progress:
    """Logs step, loss, examples/s and ETA every `every` steps (and at the last step)."""

    def __init__(self, total: int, every: int):
        self.total, self.every = total, every

    def due(self, step: int) -> bool:
        return step % self.every == 0 or step == self.total

    def report(self, result: TrainResult, loss: float, elapsed: float) -> None:
        rate = result.steps / max(elapsed, 1e-9)
        eta = (self.total - result.steps) / max(rate, 1e-9)
        log.info(
            "step %d/%d  loss %.4f  %.1f examples/s  %.0f tokens/s  elapsed %s  ETA %s",
            result.steps, self.total, loss, result.train_examples / max(elapsed, 1e-9),
            result.train_tokens / max(elapsed, 1e-9), _hms(elapsed), _hms(eta),
        )


def train_and_test(model, tokenizer, train_df: pd.DataFrame, data_dir, cfg: dict, seed: int, device: torch.device,
                   trainable: Callable[[str], bool] | None = None) -> tuple[TrainResult, dict]:
    """Train on `train_df`, then score on the prepared test split of `data_dir` (logged)."""
    from .data import read_split

    validation = encode(read_split(data_dir, "validation"), tokenizer, cfg["max_length"]) if cfg.get("validate_every") else None
    result = train(model, encode(train_df, tokenizer, cfg["max_length"]), tokenizer, cfg, seed, device, trainable,
                   validation)
    test_features = encode(read_split(data_dir, "test"), tokenizer, cfg["max_length"])
    scores = evaluate(model, test_features, tokenizer, cfg["eval_batch_size"], device)
    log.info("test accuracy %.4f  loss %.4f  (%d examples)", scores["accuracy"], scores["loss"], scores["n"])
    return result, scores


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def finetune(data_dir, base_dir, out_dir, metrics_path, dataset: str, seed: int, cfg: dict,
             device: torch.device, trust_remote_code: bool = False, max_train: int | None = None,
             base: str | None = None, command: str | None = None) -> dict:
    """Finetune the base model on one prepared dataset with one seed; write the model folder and metrics.

    `max_train` trains on a subsample of that many examples (see nested_subsample). `base` names
    the base model when it is not the config's base_model; it enters the torch seed (run_seed).
    The folder holds the weights, a config that names the dataset's labels, the base's tokenizer
    and a model card that records `command`, what made it.
    """
    from pathlib import Path

    from .data import nested_subsample, read_split
    from .io import read_json, write_parquet
    from .models import load_classifier, load_tokenizer, save_model_dir
    from .seeding import run_seed, seed_everything

    meta = read_json(Path(data_dir) / "meta.json")
    torch_seed = run_seed(dataset, seed, cfg["seed_mode"], base)
    seed_everything(torch_seed)
    tokenizer = load_tokenizer(base_dir)
    model = load_classifier(base_dir, meta["num_labels"], trust_remote_code)
    train_split = read_split(data_dir, "train")
    if max_train is not None:
        if max_train > len(train_split):
            log.warning("max_train %d: %s has only %d training examples, all used", max_train, dataset, len(train_split))
        train_split = nested_subsample(train_split, max_train)
    log.info("finetune %s seed %d (torch seed %d) on %d examples, device %s",
             dataset, seed, torch_seed, len(train_split), device)
    result, scores = train_and_test(model, tokenizer, train_split, data_dir, cfg, torch_seed, device)
    name_labels(model.config, meta["label_names"])
    write_finetuned_card(out_dir, base or Path(base_dir).name, meta, seed, len(train_split), scores, command)
    save_model_dir(model.cpu(), out_dir, tokenizer)
    row = {
        "dataset": dataset,
        "seed": seed,
        "torch_seed": torch_seed,
        "num_labels": meta["num_labels"],
        "train_size": len(train_split),
        "test_size": scores["n"],
        "test_accuracy": scores["accuracy"],
        "test_loss": scores["loss"],
        "majority_test_accuracy": meta["majority_test_accuracy"],
        "steps": result.steps,
        "examples_per_second": result.examples_per_second,
        "tokens_per_second": result.tokens_per_second,
        "wall_seconds": result.wall_seconds,
        "device": device_name(device),
        **result.curve(),
    }
    write_parquet(pd.DataFrame([row]), metrics_path)
    return row



def name_labels(config, label_names) -> None:
    """Give the model's config the dataset's class names in label-index order (meta.json's label_names)."""
    config.id2label = dict(enumerate(label_names))
    config.label2id = {name: i for i, name in enumerate(label_names)}


def write_finetuned_card(out_dir, base: str, meta: dict, seed: int, train_size: int, scores: dict,
                         command: str | None) -> None:
    """The model card of a finetuned classifier: its base, data, seed and test scores."""
    from .model_card import write_model_card

    facts = {
        "dataset": meta["dataset"],
        "labels": meta["label_names"],
        "seed": seed,
        "train size": train_size,
        "test accuracy": scores["accuracy"],
        "test loss": scores["loss"],
        "test size": scores["n"],
        "majority baseline (test accuracy)": meta["majority_test_accuracy"],
    }
    write_model_card(out_dir, f"{base} finetuned on {meta['dataset']} (seed {seed})", base, facts, command,
                     pipeline_tag="text-classification")


def device_name(device: torch.device) -> str:
    """The device as the metrics record it: the GPU's model, or the CPU with its threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"

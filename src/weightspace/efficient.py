"""Parameter-efficient finetuning from a start point, and the gains over the pretrained start.

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

from .centres import CENTRES
from .data import read_split, subsample
from .errors import WeightspaceError
from .finetuning import _device_name, train_and_test
from .intervals import clustered_mean, format_interval, t_interval
from .io import read_json, write_parquet, write_text
from .metrics import gather
from .models import load_classifier, load_tokenizer
from .seeding import run_seed, seed_everything

log = logging.getLogger(__name__)

METHODS = ("bitfit", "lora")
STARTS = ("pretrained", *CENTRES)

# The paper's Tables 2 (full data) and 3 (at most 1K examples): accuracy in % from the pretrained
# start and from the centroid ("Fuse"). Table 3's centroid row repeats Table 2's, as printed.
_PAPER_DATASETS = ("boolq", "cb", "cola", "mnli", "mrpc", "multirc", "qnli", "qqp", "rte", "sst2", "wic", "wnli")
_PAPER_CENTROID = (62.23, 56.79, 69.49, 63.01, 69.46, 57.14, 73.77, 79.91, 61.59, 84.91, 55.52, 52.68)
PAPER = {
    "full": {
        "table": "Table 2", "mean_gain": 4.03, "wins_ties_losses": (9, 2, 1),
        "pretrained": dict(zip(_PAPER_DATASETS, (62.17, 50.36, 69.13, 53.17, 68.38, 57.20, 64.88, 74.49, 50.40,
                                                 78.78, 55.14, 54.08))),
        "centroid": dict(zip(_PAPER_DATASETS, _PAPER_CENTROID)),
    },
    "few": {
        "table": "Table 3, at most 1K examples", "mean_gain": 10.66, "wins_ties_losses": (9, 2, 1),
        "pretrained": dict(zip(_PAPER_DATASETS, (62.17, 50.36, 69.13, 34.04, 68.38, 57.20, 50.72, 63.18, 48.52,
                                                 50.92, 49.91, 54.08))),
        "centroid": dict(zip(_PAPER_DATASETS, _PAPER_CENTROID)),
    },
}
PAPER_TOLERANCE = 0.1  # the largest |gain| the paper counts as a tie: its 9 / 2 / 1 from Table 2


# --- one job: a start point, a new head, efficient training ----------------------------------

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


def shots_cap(shots) -> int | None:
    """None for the full training set, else the number of examples."""
    if str(shots) == "full":
        return None
    if not str(shots).isdigit() or int(shots) < 1:
        raise WeightspaceError(f"shots '{shots}': expected 'full' or a positive number of examples")
    return int(shots)


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
        "shots": str(shots),
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
        "device": _device_name(device),
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
    write_parquet(pd.DataFrame([row]), metrics_path)
    return row


# --- Tables 2 and 3 --------------------------------------------------------------------------

def shots_order(shots: str) -> tuple[int, int]:
    return (0, 0) if shots == "full" else (1, int(shots))


def paired_gains(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run with accuracy in % and its gain over the pretrained start of the same (shots, target, seed).

    The pair shares the head initialisation, the few-shot subset and the data order, so the gain
    is a paired difference.
    """
    runs = runs.assign(accuracy=100 * runs["test_accuracy"])
    pretrained = runs[runs.start == "pretrained"].set_index(["shots", "target", "seed"])["accuracy"]
    missing = set(runs.set_index(["shots", "target", "seed"]).index) - set(pretrained.index)
    if missing:
        raise WeightspaceError(f"no pretrained-start run for (shots, target, seed) {sorted(missing)[0]}")
    runs["gain"] = runs["accuracy"].to_numpy() - pretrained.loc[list(zip(runs.shots, runs.target, runs.seed))].to_numpy()
    return runs


OUTCOMES = ("win", "tie", "loss", "both at chance")
# one-sided 5%: an accuracy beats the majority class when it exceeds it by this many binomial SEs
MAJORITY_Z = 1.645


def beats_majority(accuracy, majority, n) -> np.ndarray:
    """Whether an accuracy (in %) on n test examples is above the majority-class rate (in %) beyond noise."""
    majority = np.asarray(majority, dtype=float)
    return np.asarray(accuracy, dtype=float) - majority > MAJORITY_Z * np.sqrt(majority * (100 - majority) / np.asarray(n))


def gains(runs: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """Per (shots, target, start): accuracy in %, and the gain over the pretrained start in points.

    The gain is paired by seed and averaged over seeds, with a t interval over the seeds (none for
    one seed). The outcome of a start: "both at chance" when neither it nor the pretrained start
    beats the majority class (beats_majority), so the gain compares two runs that learned nothing;
    else a tie when the gain is within `tolerance` points or its interval holds zero; else a win
    or a loss.
    """
    runs = paired_gains(runs)
    table = (
        runs.groupby(["shots", "target", "start"])
        .agg(seeds=("seed", "nunique"), accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
             gain=("gain", "mean"), gain_std=("gain", "std"), train_size=("train_size", "first"),
             test_size=("test_size", "first"), majority=("majority_test_accuracy", "first"),
             method=("method", "first"))
        .reset_index()
        .fillna({"accuracy_std": 0.0, "gain_std": 0.0})
    )
    table["majority"] *= 100
    table["above_majority"] = beats_majority(table.accuracy, table.majority, table.test_size)
    pretrained_learned = table[table.start == "pretrained"].set_index(["shots", "target"])["above_majority"]
    learned_either = table.above_majority | pretrained_learned.loc[list(zip(table.shots, table.target))].to_numpy()
    bounds = runs.groupby(["shots", "target", "start"])["gain"].apply(lambda g: t_interval(g.to_numpy()))
    table["gain_lo"] = [bounds[key][0] for key in zip(table.shots, table.target, table.start)]
    table["gain_hi"] = [bounds[key][1] for key in zip(table.shots, table.target, table.start)]
    tie = (table.gain.abs() <= tolerance) | ((table.gain_lo <= 0) & (table.gain_hi >= 0))
    table["outcome"] = np.select([table.start == "pretrained", ~learned_either, tie, table.gain > 0],
                                 [None, "both at chance", "tie", "win"], "loss")
    order = table.assign(_shots=table.shots.map(shots_order), _start=table.start.map(STARTS.index))
    return table.loc[order.sort_values(["_shots", "target", "_start"]).index].reset_index(drop=True)


def mean_gain(paired: pd.DataFrame, shots: str, start: str) -> tuple[float, float, float]:
    """The mean over targets of the mean gain over seeds, with its interval over targets and seeds.

    `paired` is paired_gains(runs).
    """
    part = paired[(paired.shots == shots) & (paired.start == start)]
    return clustered_mean([g.to_numpy() for _, g in part.groupby("target")["gain"]])


def outcome_counts(table: pd.DataFrame, shots: str, start: str) -> tuple[int, int, int, int]:
    """Wins, ties, losses and both-at-chance targets of a start (OUTCOMES)."""
    rows = table[(table.shots == shots) & (table.start == start)]
    return tuple(int((rows.outcome == o).sum()) for o in OUTCOMES)


def markdown(table: pd.DataFrame, runs: pd.DataFrame, tolerance: float) -> str:
    """The paper's Tables 2 and 3: one block per shots setting, rows = starts and gains."""
    method = "BitFit" if table.method.iloc[0] == "bitfit" else "LoRA"
    seeds = int(table.seeds.min())
    paired = paired_gains(runs)
    lines = [f"# The centroid as a starting point ({method}; paper §7, App. H)", "",
             f"Test accuracy (%) after {method} from each start, mean over {seeds} seed(s); gain = start - pretrained "
             "in points, paired by seed, with its 95% t interval over seeds in brackets (none for one seed). A tie "
             f"is |gain| <= {tolerance:g} points or an interval that holds 0 (the paper's Table 2 counts reproduce "
             f"at {PAPER_TOLERANCE:g}). The mean gain's interval resamples targets and the seeds within them. "
             "A start beats the majority class when its accuracy exceeds the majority rate by more than "
             f"{MAJORITY_Z:g} binomial standard errors; a target where neither the start nor the pretrained model "
             "does is counted as both at chance, not as a win, tie or loss.", ""]
    for shots in sorted(table.shots.unique(), key=shots_order):
        part = table[table.shots == shots]
        datasets = sorted(part.target.unique())
        paper = PAPER["full" if shots == "full" else "few"]
        title = "full training set" if shots == "full" else f"at most {shots} training examples"
        lines += [f"## {title} (paper: {paper['table']})", ""]
        starts = [s for s in STARTS if s in set(part.start)]
        means = {start: format_interval(*mean_gain(paired, shots, start), 2) for start in starts if start != "pretrained"}
        rows = []
        for start in starts:
            by_target = part[part.start == start].set_index("target").reindex(datasets)
            rows.append([start, *(f"{a:.2f}" + ("" if above else " (chance)") for a, above in
                                  zip(by_target.accuracy, by_target.above_majority)), f"{by_target.accuracy.mean():.2f}"])
            if start in means:
                rows.append([f"gain ({start})", *(format_interval(g, a, b, 2) for g, a, b in
                                                  zip(by_target.gain, by_target.gain_lo, by_target.gain_hi)),
                             means[start]])
        majority = part.drop_duplicates("target").set_index("target").reindex(datasets).majority
        rows.append(["majority class", *(f"{m:.2f}" for m in majority), f"{majority.mean():.2f}"])
        known = [d for d in datasets if d in paper["pretrained"]]
        if known:
            rows.append(["paper gain (centroid)", *[f"{paper['centroid'][d] - paper['pretrained'][d]:.2f}"
                                                    if d in known else "" for d in datasets], f"{paper['mean_gain']:.2f}"])
        lines += [pd.DataFrame(rows, columns=["start", *datasets, "mean"]).to_markdown(index=False), ""]
        for start, mean in means.items():
            w, t, l, c = outcome_counts(table, shots, start)
            lines.append(f"- {start} vs pretrained: {_count(w, 'win')}, {_count(t, 'tie')}, {_count(l, 'loss')}, "
                         f"{c} both at chance of {w + t + l + c} targets; mean gain {mean} points.")
        pw, pt, pl = paper["wins_ties_losses"]
        lines += [f"- Paper ({paper['table']}, roberta-base, 12 GLUE/SuperGLUE targets): centroid mean gain "
                  f"{paper['mean_gain']:+.2f} points; {_count(pw, 'win')}, {_count(pt, 'tie')}, {_count(pl, 'loss')}.",
                  ""]
    lines.append(f"{seeds} seed(s) per cell; per-target numbers are in centroid.parquet, every run with its paired "
                 "gain and its training and validation curves in centroid_runs.parquet.")
    return "\n".join(lines) + "\n"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def centroid_table(metric_paths, table_path, runs_path, markdown_path, tolerance: float) -> pd.DataFrame:
    """Gather the job metrics into results/tables/centroid.{parquet,md} and centroid_runs.parquet."""
    runs = gather(metric_paths)
    table = gains(runs, tolerance)
    write_parquet(table, table_path)
    write_parquet(paired_gains(runs), runs_path)
    write_text(markdown(table, runs, tolerance), markdown_path)
    for shots in sorted(table.shots.unique(), key=shots_order):
        w, t, l, c = outcome_counts(table, shots, "centroid") if "centroid" in set(table.start) else (0, 0, 0, 0)
        log.info("shots %s: centroid %d wins, %d ties, %d losses, %d both at chance", shots, w, t, l, c)
    return table

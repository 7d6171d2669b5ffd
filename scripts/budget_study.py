"""How much finetuning does the demo need before its models sit in a region the paper would know?

The demo's models are cheap: one epoch over 600 examples (38 steps). This study finetunes the
demo's base model (MiniLM-L6) on one demo dataset at several budgets, 3 seeds each, and measures
with the workflow's own functions (cross-validated probe, merges, App. F steps) what the region
experiments would show at that budget:

- finetuning: test accuracy of the models;
- §5.1 interpolation: loss at alpha 0.5 minus the mean of the two endpoints' losses;
- §6 extrapolation: loss at the farthest alphas (-3 and 4) minus the loss at the nearer endpoint,
  and the same for accuracy (loss and accuracy should agree in direction);
- App. F: loss 1, 4 and 16 mean distances from the models' centroid in random Xavier-shaped
  directions, minus the centroid's loss;
- geometry: mean distance of the models from their centroid and from the pretrained model;
- the finetuned models and the farthest extrapolated points again with the probe fitted on the
  200 validation examples (region.probe.fit_split: validation), which no finetuning run saw: a
  model probed on the training examples it memorised looks more confident than it is.

Each number is the mean over the 3 pairs (or 3 directions) with its range. Output: a table on
stdout and bench/out/budget_study.parquet.

    .venv/bin/python scripts/budget_study.py                       # the four budgets below, ~25 min on 2 cores
    .venv/bin/python scripts/budget_study.py --dataset wordnet_noun_topic --budgets 600x1 1800x3
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SEEDS = (1, 2, 3)
ALPHAS = (-3.0, -1.0, 0.5, 2.0, 4.0)  # beside the endpoints 0 and 1
RADII = (1.0, 4.0, 16.0)
DIRECTIONS = ("random1", "random2", "random3")


def _demo_config() -> dict:
    from weightspace.config import load_yaml, validated_config

    return validated_config(load_yaml(ROOT / "config/demo.yaml"), ROOT / "workflow/schemas/config.schema.yaml")


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)


def _finetune(job) -> dict:
    from weightspace.finetuning import finetune
    from weightspace.models import torch_device

    data_dir, base_dir, out_dir, dataset, seed, cfg = job
    return finetune(data_dir, base_dir, out_dir, Path(out_dir) / "metrics.parquet", dataset, seed, cfg,
                    torch_device("cpu"))


def _probe(job) -> pd.DataFrame:
    import torch

    from weightspace.probing import probe

    model_dir, base_dir, targets, cfg, model_id = job
    return probe(model_dir, base_dir, targets, cfg, torch.device("cpu"), model_id=model_id)


def run_budget(work: Path, dataset: str, train: int, epochs: int, pool, config: dict) -> pd.DataFrame:
    """Finetune 3 seeds at one budget, make the line and App. F points, probe them all."""
    from weightspace.data import prepare_dataset
    from weightspace.merging import interpolate
    from weightspace.region.points import group_stats, leave_centroid
    from weightspace.seeding import run_seed

    base = work / "pretrained"
    data = work / f"data_{train}"
    if not (data / "meta.json").exists():
        spec = {**config["datasets"][dataset], "max_train": train}
        prepare_dataset(dataset, spec, config["data"], data)
    # the probe always sees the same 600 training and 300 test examples, whatever the budget
    probe_data = work / "data_600"
    if not (probe_data / "meta.json").exists():
        prepare_dataset(dataset, {**config["datasets"][dataset], "max_train": 600}, config["data"], probe_data)
    budget = work / f"{train}x{epochs}"
    cfg = {**config["finetune"], "epochs": epochs, "log_every": 1000}
    jobs = [(data, base, budget / f"seed{s}", dataset, s, cfg) for s in SEEDS]
    start = time.perf_counter()
    finetunes = list(pool.map(_finetune, jobs))
    train_seconds = time.perf_counter() - start

    models = {f"seed{s}": budget / f"seed{s}" for s in SEEDS}
    points = dict(models)
    for (a, b) in itertools.combinations(SEEDS, 2):
        for alpha in ALPHAS:
            out = budget / f"line{a}{b}" / f"alpha{alpha:g}"
            interpolate(models[f"seed{a}"], models[f"seed{b}"], alpha, base, out)
            points[f"line{a}{b}/alpha{alpha:g}"] = out
    stats = group_stats(list(models.values()), base, budget / "centroid", budget / "centroid.json")
    points["centroid"] = budget / "centroid"
    for d, direction in enumerate(DIRECTIONS, start=1):
        for r in RADII:
            out = budget / "leave" / direction / f"r{r:g}"
            leave_centroid(budget / "centroid", base, budget / "centroid.json", direction, r,
                           run_seed(f"study/{direction}", 0), out)
            points[f"leave/{direction}/r{r:g}"] = out
    probe_cfg = {**config["region"]["probe"], "max_train": 600, "max_test": None,
                 "max_length": config["finetune"]["max_length"]}
    jobs = [(path, base, {dataset: probe_data}, probe_cfg, name) for name, path in points.items()]
    # the same models and ends probed on the 200 validation examples, which no finetuning run saw
    held_out = {**probe_cfg, "fit_split": "validation"}
    kept = [f"seed{s}" for s in SEEDS] + [f"line{a}{b}/alpha{x:g}" for a, b in itertools.combinations(SEEDS, 2)
                                          for x in (-3.0, 4.0)]
    jobs += [(points[name], base, {dataset: probe_data}, held_out, f"validation:{name}") for name in kept]
    losses = pd.concat(pool.map(_probe, jobs), ignore_index=True).set_index("model")
    return summarise(losses, finetunes, stats, train, epochs, train_seconds)


def summarise(losses: pd.DataFrame, finetunes, stats: dict, train: int, epochs: int, train_seconds: float):
    def at(name, col="loss"):
        return float(losses.loc[name, col])

    rows = []
    for a, b in itertools.combinations(SEEDS, 2):
        pair = f"line{a}{b}"
        ends = {1.0: f"seed{a}", 0.0: f"seed{b}"}
        row = {"pair": pair, "interp_dloss": at(f"{pair}/alpha0.5") - (at(ends[1.0]) + at(ends[0.0])) / 2}
        for alpha, end in ((4.0, 1.0), (-3.0, 0.0)):
            key = f"{pair}/alpha{alpha:g}"
            row[f"extra{alpha:g}_dloss"] = at(key) - at(ends[end])
            row[f"extra{alpha:g}_dacc"] = at(key, "accuracy") - at(ends[end], "accuracy")
        rows.append(row)
    pairs = pd.DataFrame(rows)
    leave = {r: [at(f"leave/{d}/r{r:g}") - at("centroid") for d in DIRECTIONS] for r in RADII}
    held_out = {}
    for col in ("loss", "accuracy"):
        held_out[f"validation_probe_{col}_finetuned"] = float(np.mean([at(f"validation:seed{s}", col) for s in SEEDS]))
        held_out[f"validation_extra_d{col[:3]}"] = float(np.mean([
            at(f"validation:line{a}{b}/alpha{x:g}", col) - at(f"validation:seed{a if x > 1 else b}", col)
            for a, b in itertools.combinations(SEEDS, 2) for x in (-3.0, 4.0)]))
    summary = {
        "budget": f"{train} x {epochs}", "train_examples": train, "epochs": epochs,
        "steps": int(finetunes[0]["steps"]), "train_seconds": train_seconds,
        "finetune_accuracy": float(np.mean([f["test_accuracy"] for f in finetunes])),
        "probe_loss_finetuned": float(np.mean([at(f"seed{s}") for s in SEEDS])),
        "probe_accuracy_finetuned": float(np.mean([at(f"seed{s}", "accuracy") for s in SEEDS])),
        "prior_loss": float(losses["prior_loss"].iloc[0]),
        "mean_task_vector_norm": stats["mean_task_vector_norm"],
        "mean_centroid_distance": stats["mean_centroid_distance"],
        **held_out,
    }
    for col in pairs.columns.drop("pair"):
        summary[col] = float(pairs[col].mean())
        summary[f"{col}_min"], summary[f"{col}_max"] = float(pairs[col].min()), float(pairs[col].max())
    for r, values in leave.items():
        summary[f"leave_r{r:g}_dloss"] = float(np.mean(values))
        summary[f"leave_r{r:g}_dloss_min"], summary[f"leave_r{r:g}_dloss_max"] = min(values), max(values)
    return pd.DataFrame([summary])


def _show(table: pd.DataFrame) -> str:
    def cell(row, col):
        return f"{row[col]:+.3f} [{row[col + '_min']:+.3f}, {row[col + '_max']:+.3f}]"

    lines = ["| budget (examples x epochs) | steps | finetune acc | probe loss / acc (prior) | interp d-loss | "
             "extrap d-loss a=4 / a=-3 | extrap d-acc a=4 / a=-3 | App. F random d-loss r=1 / 4 / 16 | "
             "centroid dist / TV norm | validation probe: loss / acc; extrap d-loss / d-acc |", "|" + "---|" * 10]
    for _, r in table.iterrows():
        lines.append(
            f"| {r.budget} | {r.steps} | {r.finetune_accuracy:.3f} | {r.probe_loss_finetuned:.3f} / "
            f"{r.probe_accuracy_finetuned:.3f} ({r.prior_loss:.3f}) | {cell(r, 'interp_dloss')} | "
            f"{cell(r, 'extra4_dloss')} / {cell(r, 'extra-3_dloss')} | {cell(r, 'extra4_dacc')} / "
            f"{cell(r, 'extra-3_dacc')} | {r['leave_r1_dloss']:+.3f} / {r['leave_r4_dloss']:+.3f} / "
            f"{r['leave_r16_dloss']:+.3f} | {r.mean_centroid_distance:.2f} / {r.mean_task_vector_norm:.2f} | "
            f"{r.validation_probe_loss_finetuned:.3f} / {r.validation_probe_accuracy_finetuned:.3f}; "
            f"{r.validation_extra_dlos:+.3f} / {r.validation_extra_dacc:+.3f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="vader_movies")
    parser.add_argument("--budgets", nargs="+", default=["600x1", "600x3", "1800x1", "1800x3"],
                        help="training examples x epochs")
    parser.add_argument("--workers", type=int, default=2, help="processes, one thread each")
    parser.add_argument("--out", default=str(ROOT / "bench/out/budget_study.parquet"))
    args = parser.parse_args(argv)
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    sys.path.insert(0, str(ROOT / "src"))
    from weightspace.io import write_parquet
    from weightspace.models import save_base_model

    config = _demo_config()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, ProcessPoolExecutor(args.workers, initializer=_worker_init) as pool:
        work = Path(tmp)
        save_base_model("minilm", config["models"]["minilm"], work / "pretrained")
        for budget in args.budgets:
            train, epochs = (int(x) for x in budget.split("x"))
            start = time.perf_counter()
            rows.append(run_budget(work, args.dataset, train, epochs, pool, config))
            print(f"budget {budget}: {time.perf_counter() - start:.0f} s", flush=True)
            print(_show(pd.concat(rows, ignore_index=True)), flush=True)
    table = pd.concat(rows, ignore_index=True).assign(dataset=args.dataset)
    write_parquet(table, args.out)
    print(f"\n{args.dataset}, seeds {list(SEEDS)}; mean over 3 pairs / 3 directions [min, max]\n")
    print(_show(table))


if __name__ == "__main__":
    main()

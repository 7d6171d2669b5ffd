"""The finetuning table: test accuracy per dataset over seeds, beside the majority-class baseline; and
the training curves of any runs of the training loop, as a long table."""

from __future__ import annotations

import pandas as pd

from .io import gather, write_parquet, write_text


def finetune_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean and std test accuracy per dataset, with the majority-class baseline beside it."""
    summary = (
        runs.groupby("dataset")
        .agg(
            seeds=("seed", "nunique"),
            accuracy_mean=("test_accuracy", "mean"),
            accuracy_std=("test_accuracy", "std"),
            majority_baseline=("majority_test_accuracy", "first"),
            loss_mean=("test_loss", "mean"),
            train_size=("train_size", "first"),
            wall_seconds_mean=("wall_seconds", "mean"),
        )
        .reset_index()
    )
    summary["accuracy_std"] = summary["accuracy_std"].fillna(0.0)
    summary["above_baseline"] = summary["accuracy_mean"] > summary["majority_baseline"]
    return summary


# A run's curves as its metrics row holds them (finetuning.TrainResult.curve): list column -> its
# steps' column, split, metric.
CURVES = {
    "log_train_loss": ("log_step", "train", "loss"),
    "log_validation_loss": ("log_validation_step", "validation", "loss"),
    "log_validation_accuracy": ("log_validation_step", "validation", "accuracy"),
}
CURVE_STEPS = ("log_step", "log_validation_step")
# the kept step's validation scores: None in the metrics row of a run without validation
VALIDATION_SCORES = ("validation_loss", "validation_accuracy")


def run_rows(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs without their curves (training_curves holds them), the kept step's validation scores as floats."""
    rows = runs.drop(columns=[c for c in (*CURVES, *CURVE_STEPS) if c in runs])
    return rows.astype({c: "float64" for c in VALIDATION_SCORES if c in rows})


def training_curves(runs: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The training and validation curves of the runs, long: one row per (run, split, metric, step).

    `keys` name a run. A run without validation has train rows only.
    """
    columns = [*keys, "split", "metric", "step", "value"]
    parts = []
    for curve, (steps, split, metric) in CURVES.items():
        if curve not in runs:
            continue
        part = runs[[*keys, steps, curve]].rename(columns={steps: "step", curve: "value"})
        part = part.explode(["step", "value"]).dropna(subset=["step"])  # an empty curve explodes to one empty row
        parts.append(part.assign(split=split, metric=metric))
    curves = pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)
    curves = curves.astype({"step": "int64", "value": "float64"})
    return curves.sort_values([*keys, "split", "metric", "step"], ignore_index=True, kind="stable")


def finetune_table(metric_paths, table_path, curves_path, markdown_path) -> pd.DataFrame:
    """results/tables/finetune.{parquet,md}, a row per run, and finetune_curves.parquet, the runs' curves."""
    runs = gather(metric_paths)
    summary = finetune_summary(runs)
    write_parquet(run_rows(runs), table_path)
    write_parquet(training_curves(runs, ["dataset", "seed"]), curves_path)
    shown = summary.assign(
        accuracy=[f"{m:.3f} ± {s:.3f}" for m, s in zip(summary.accuracy_mean, summary.accuracy_std)],
        majority=summary.majority_baseline.map("{:.3f}".format),
    )[["dataset", "seeds", "train_size", "accuracy", "majority", "above_baseline"]]
    mean = runs["test_accuracy"].mean()
    write_text(
        "# Finetuning: test accuracy per dataset\n\n"
        + shown.to_markdown(index=False)
        + f"\n\nMean over {len(runs)} runs: {mean:.3f}. "
        f"{int(summary.above_baseline.sum())} of {len(summary)} datasets above the majority-class baseline.\n",
        markdown_path,
    )
    return summary

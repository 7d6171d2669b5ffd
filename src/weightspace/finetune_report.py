"""The finetuning table: test accuracy per dataset over seeds, beside the majority-class baseline."""

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


def finetune_table(metric_paths, table_path, markdown_path) -> pd.DataFrame:
    runs = gather(metric_paths)
    summary = finetune_summary(runs)
    # the training and validation curves stay in each run's metrics file
    write_parquet(runs.drop(columns=[c for c in runs if c.startswith("log_")]), table_path)
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

"""The centroid experiment's tables and figure: Tables 2 and 3 (gains over the pretrained start)
and Fig. 6 / 14."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from ..errors import WeightspaceError
from ..finetune_report import run_rows, training_curves
from ..intervals import clustered_mean, format_interval, t_interval
from ..io import gather, write_parquet, write_text
from ..paper import CENTROID_START, CENTROID_TIE
from ..plots import group_colours, new_figure, save_figure
from .plan import STARTS, shots_cap

log = logging.getLogger(__name__)


def shots_column(shots: pd.Series) -> pd.Series:
    """A shots column as the tables type it: Int64, <NA> for the full training set (metrics written
    before it was typed hold 'full' and '1000')."""
    return pd.Series([shots_cap(None if pd.isna(s) else s) for s in shots], index=shots.index, dtype="Int64")


def shots_order(shots) -> tuple[int, int]:
    return (0, 0) if pd.isna(shots) else (1, int(shots))


def shots_settings(shots: pd.Series) -> list:
    """The distinct settings of a shots column: the full training set (<NA>) first, then by size."""
    return sorted(pd.unique(shots), key=shots_order)


def in_setting(shots: pd.Series, setting) -> pd.Series:
    """Which rows have shots setting `setting` (<NA>, None or 'full': the full training set)."""
    cap = None if pd.isna(setting) else shots_cap(setting)
    return shots.isna() if cap is None else shots.eq(cap).fillna(False).astype(bool)


def shots_label(setting) -> str:
    """A shots setting as the markdown names it: 'full' or the number of examples."""
    return "full" if pd.isna(setting) else str(int(setting))


def paired_gains(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run with accuracy in % and its gain over the pretrained start of the same (shots, target, seed).

    The pair shares the head initialisation, the few-shot subset and the data order, so the gain
    is a paired difference.
    """
    keys = ["shots", "target", "seed"]
    runs = runs.assign(shots=shots_column(runs["shots"]), accuracy=100 * runs["test_accuracy"])
    pretrained = runs.loc[runs.start == "pretrained", [*keys, "accuracy"]].rename(columns={"accuracy": "_pretrained"})
    runs = runs.merge(pretrained, on=keys, how="left", validate="many_to_one")  # <NA> shots match each other
    missing = runs[runs["_pretrained"].isna()]
    if not missing.empty:
        first = missing.iloc[0]
        raise WeightspaceError(f"no pretrained-start run for (shots, target, seed) "
                               f"({shots_label(first.shots)}, {first.target}, {first.seed})")
    return runs.assign(gain=runs["accuracy"] - runs.pop("_pretrained"))


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
        runs.groupby(["shots", "target", "start"], dropna=False)
        .agg(seeds=("seed", "nunique"), accuracy=("accuracy", "mean"), accuracy_std=("accuracy", "std"),
             gain=("gain", "mean"), gain_std=("gain", "std"),
             gain_lo=("gain", lambda g: t_interval(g.to_numpy())[0]),
             gain_hi=("gain", lambda g: t_interval(g.to_numpy())[1]), train_size=("train_size", "first"),
             test_size=("test_size", "first"), majority=("majority_test_accuracy", "first"),
             method=("method", "first"))
        .reset_index()
        .fillna({"accuracy_std": 0.0, "gain_std": 0.0})
    )
    table["majority"] *= 100
    table["above_majority"] = beats_majority(table.accuracy, table.majority, table.test_size)
    pretrained_learned = (table.loc[table.start == "pretrained", ["shots", "target", "above_majority"]]
                          .rename(columns={"above_majority": "_learned"}))
    learned_either = table.above_majority | table.merge(pretrained_learned, on=["shots", "target"], how="left")[
        "_learned"].to_numpy(dtype=bool)
    tie = (table.gain.abs() <= tolerance) | ((table.gain_lo <= 0) & (table.gain_hi >= 0))
    table["outcome"] = np.select([table.start == "pretrained", ~learned_either, tie, table.gain > 0],
                                 [None, "both at chance", "tie", "win"], "loss")
    order = table.assign(_shots=table.shots.map(shots_order), _start=table.start.map(STARTS.index))
    return table.loc[order.sort_values(["_shots", "target", "_start"]).index].reset_index(drop=True)


def mean_gain(paired: pd.DataFrame, shots, start: str) -> tuple[float, float, float]:
    """The mean over targets of the mean gain over seeds, with its interval over targets and seeds.

    `paired` is paired_gains(runs).
    """
    part = paired[in_setting(paired.shots, shots) & (paired.start == start)]
    return clustered_mean([g.to_numpy() for _, g in part.groupby("target")["gain"]])


def outcome_counts(table: pd.DataFrame, shots, start: str) -> tuple[int, int, int, int]:
    """Wins, ties, losses and both-at-chance targets of a start (OUTCOMES)."""
    rows = table[in_setting(table.shots, shots) & (table.start == start)]
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
             f"at {CENTROID_TIE:g}). The mean gain's interval resamples targets and the seeds within them. "
             "A start beats the majority class when its accuracy exceeds the majority rate by more than "
             f"{MAJORITY_Z:g} binomial standard errors; a target where neither the start nor the pretrained model "
             "does is counted as both at chance, not as a win, tie or loss.", ""]
    for shots in shots_settings(table.shots):
        part = table[in_setting(table.shots, shots)]
        datasets = sorted(part.target.unique())
        paper = CENTROID_START["full" if pd.isna(shots) else "few"]
        title = setting_title(shots)
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
                 "gain in centroid_runs.parquet and its training and validation curves in centroid_curves.parquet.")
    return "\n".join(lines) + "\n"


def setting_title(shots) -> str:
    return "full training set" if pd.isna(shots) else f"at most {shots_label(shots)} training examples"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


RUN_KEYS = ["target", "start", "shots", "seed"]


def centroid_table(metric_paths, table_path, runs_path, curves_path, markdown_path, tolerance: float) -> pd.DataFrame:
    """Gather the job metrics into results/tables/centroid.{parquet,md}, centroid_runs.parquet (a row
    per run) and centroid_curves.parquet (the runs' training and validation curves, long)."""
    runs = gather(metric_paths)
    table = gains(runs, tolerance)
    paired = paired_gains(runs)
    write_parquet(table, table_path)
    write_parquet(run_rows(paired), runs_path)
    write_parquet(training_curves(paired, RUN_KEYS), curves_path)
    write_text(markdown(table, runs, tolerance), markdown_path)
    for shots in shots_settings(table.shots):
        w, t, l, c = outcome_counts(table, shots, "centroid") if "centroid" in set(table.start) else (0, 0, 0, 0)
        log.info("shots %s: centroid %d wins, %d ties, %d losses, %d both at chance", shots_label(shots), w, t, l, c)
    return table


def centroid_gains(table, path, tolerance: float) -> None:
    """Fig. 6 / 14 style: the gain over the pretrained start per target, one panel per shots setting.

    `table` is gains(): columns shots, target, start, gain, gain_lo, gain_hi. Bars per
    start (the pretrained start itself is the zero line), whiskers the interval over seeds; the grey
    band is |gain| <= tolerance (a tie); hatched, faded bars are targets where both starts are at chance.
    """
    table = table[table.start != "pretrained"]
    settings = shots_settings(table.shots)
    starts = list(dict.fromkeys(table.start))
    fig = new_figure((max(6.0, 0.7 * table.target.nunique() * len(starts) + 2), 3.6 * len(settings)))
    axes = fig.subplots(len(settings), 1, squeeze=False)[:, 0]
    colours = group_colours(starts)
    width = 0.8 / max(len(starts), 1)
    for ax, shots in zip(axes, settings):
        part = table[in_setting(table.shots, shots)]
        targets = sorted(part.target.unique())
        x = np.arange(len(targets))
        ax.axhspan(-tolerance, tolerance, color="0.85", zorder=0, label=f"tie (|gain| <= {tolerance:g})")
        ax.axhline(0, color="black", linewidth=0.8)
        for i, start in enumerate(starts):
            rows = part[part.start == start].set_index("target").reindex(targets)
            errors = np.nan_to_num(np.vstack([rows.gain - rows.gain_lo, rows.gain_hi - rows.gain]))
            bars = ax.bar(x + (i - (len(starts) - 1) / 2) * width, rows.gain, width, yerr=errors,
                          color=colours[start], label=start, capsize=2)
            for bar, outcome in zip(bars, rows.outcome):
                if outcome == "both at chance":
                    bar.set_hatch("//")
                    bar.set_alpha(0.4)
        ax.set_xticks(x, [f"{t}\n(both at chance)" if (part[part.target == t].outcome == "both at chance").all()
                          else t for t in targets], rotation=30, ha="right")
        ax.set_ylabel("gain over pretrained (points)")
        ax.set_title(setting_title(shots))
        ax.legend(fontsize="small")
    save_figure(fig, path)

"""Tables and figures of the region experiments: losses per use of a model, PB (Fig. 4), the lines
(Fig. 3, 5), leaving the centroid (App. F, Fig. 11).

A model's loss in a role is its mean generalized loss over the role's targets: the granularity's
`eval` datasets for In, In', Ex and App. F, the pair's datasets plus `eval` for a line (§3.1, §5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..errors import WeightspaceError
from ..intervals import bootstrap_interval, format_interval
from ..io import gather, read_json, read_parquet, write_parquet, write_text
from ..paper import PB as PAPER_PB
from ..plots import empty_panel, granularity_axes, new_figure, save_figure
from .plan import TABLE_ROLES, Plan

ROLE_KEYS = ["granularity", "role", "model", "pair", "dataset_a", "dataset_b", "alpha", "direction", "radius",
             "fraction"]
# Kept from each probe: the loss and accuracy, their test-sample standard errors, the prior's loss.
PROBE_COLUMNS = ["loss", "loss_se", "accuracy", "accuracy_se", "prior_loss", "excess_over_prior",
                 "excess_over_prior_se", "C"]
# The keys that place a model in each table of its uses: the other ROLE_KEYS are empty for those roles.
USE_KEYS = {
    "pb_models": ["granularity", "role", "model"],
    "line_models": ["granularity", "role", "pair", "dataset_a", "dataset_b", "alpha", "model"],
    "leave_models": ["granularity", "direction", "radius", "fraction", "model"],
}
USE_ROLES = {"pb_models": ("in", "hull", "ex"), "line_models": ("line", "centroid_line"), "leave_models": ("leave",)}
MODEL_COLUMNS = ["loss", "accuracy", "prior_loss", "targets"]


def target_losses(plan: Plan, probes: pd.DataFrame) -> pd.DataFrame:
    """One row per (use of a model, target) with the probe's loss and accuracy."""
    rows = pd.DataFrame(plan.rows).explode("targets").rename(columns={"targets": "target"})
    for key in ROLE_KEYS:
        if key not in rows:
            rows[key] = None
    merged = rows.merge(probes[["model", "target", *PROBE_COLUMNS]], on=["model", "target"], how="left")
    missing = merged[merged["loss"].isna()]
    if not missing.empty:
        first = missing.iloc[0]
        raise WeightspaceError(f"no probe result for model '{first['model']}' on target '{first['target']}'")
    return merged[ROLE_KEYS + ["target", *PROBE_COLUMNS]]


def model_losses(losses: pd.DataFrame) -> pd.DataFrame:
    """One row per use of a model: its mean loss, accuracy and prior loss over the use's targets."""
    keys = [k for k in ROLE_KEYS if losses[k].notna().any()]
    out = losses.groupby(keys, dropna=False, sort=False).agg(
        loss=("loss", "mean"), accuracy=("accuracy", "mean"), prior_loss=("prior_loss", "mean"),
        targets=("target", "nunique")).reset_index()
    for key in ROLE_KEYS:
        if key not in out:
            out[key] = None
    return out


def region_losses(losses: pd.DataFrame) -> pd.DataFrame:
    """One row per (granularity, role, model, target): the probe's scores, without the keys of a role.

    A probe depends on the model and the target alone, so the uses of a model that differ only in
    those keys (an end of several lines) are one row; USE_KEYS's tables place each use.
    """
    return losses.drop_duplicates(["granularity", "role", "model", "target"])[
        ["granularity", "role", "model", "target", *PROBE_COLUMNS]].reset_index(drop=True)


def use_table(models: pd.DataFrame, name: str) -> pd.DataFrame:
    """The uses of one table of USE_KEYS: its roles' rows of model_losses, with the keys that place them."""
    rows = models[models["role"].isin(USE_ROLES[name])]
    return rows[[*USE_KEYS[name], *MODEL_COLUMNS]].astype(
        {k: float for k in ("alpha", "radius", "fraction") if k in USE_KEYS[name]}).reset_index(drop=True)


def pb(losses_a: Sequence[float], losses_b: Sequence[float]) -> float:
    """PB(A, B): the share of pairs (a in A, b in B) with loss(a) <= loss(b) (§5.2)."""
    a = np.asarray(losses_a, dtype=float)[:, None]
    b = np.asarray(losses_b, dtype=float)[None, :]
    if a.size == 0 or b.size == 0:
        raise WeightspaceError("PB needs at least one model in each group")
    return float((a <= b).mean())


PB_GROUPS = ("in", "hull", "ex")
# (A, B) of each PB(A, B), in the order of the paper's numbers (weightspace.paper.PB)
PB_COMPARISONS = (("in", "ex"), ("hull", "ex"), ("hull", "in"))
PB_COLUMNS = ["granularity", "a", "b", "n_a", "n_b", "pb", "pb_lo", "pb_hi"]


def pb_table(models: pd.DataFrame) -> pd.DataFrame:
    """PB(A, B) in percent with its 95% bootstrap interval: a row per granularity and comparison
    (PB_COMPARISONS) whose groups both have models."""
    rows = []
    for granularity, df in models[models["role"].isin(PB_GROUPS)].groupby("granularity", sort=False):
        loss = {role: df.loc[df["role"] == role, "loss"].to_numpy() for role in PB_GROUPS}
        for a, b in PB_COMPARISONS:
            if not (len(loss[a]) and len(loss[b])):
                continue
            # over models: each group resampled on its own (In' as drawn, though its points come from In)
            lo, hi = bootstrap_interval(lambda x, y: 100 * pb(x, y), [loss[a], loss[b]])
            rows.append({"granularity": granularity, "a": a, "b": b, "n_a": len(loss[a]), "n_b": len(loss[b]),
                         "pb": 100 * pb(loss[a], loss[b]), "pb_lo": lo, "pb_hi": hi})
    return pd.DataFrame(rows, columns=PB_COLUMNS)


def paper_pb(granularity: str, a: str, b: str) -> float:
    """The paper's PB(A, B) in percent for a granularity of its own (same_dataset, ...), else NaN."""
    return PAPER_PB.get(granularity, (np.nan,) * len(PB_COMPARISONS))[PB_COMPARISONS.index((a, b))]


def pb_markdown(table: pd.DataFrame, models: pd.DataFrame) -> str:
    """pb.md: a row per granularity, PB(In, Ex), PB(In', Ex) and PB(In', In) side by side with the paper's."""
    models = models[models["role"].isin(PB_GROUPS)]
    by = table.set_index(["granularity", "a", "b"])

    def cell(granularity, a, b):
        if (granularity, a, b) not in by.index:
            return "-"
        r = by.loc[(granularity, a, b)]
        ours = format_interval(r.pb, r.pb_lo, r.pb_hi)
        theirs = paper_pb(granularity, a, b)
        return ours if pd.isna(theirs) else f"{ours} ({theirs:g})"

    lines = [
        "# PB: how often a model of one group has a generalized loss no higher than one of another (§5.2)",
        "",
        "Percent, ours with its 95% bootstrap interval over models (the paper's in parentheses). In = finetuned",
        "models of the granularity's source datasets, In' = samples of In's convex hull, Ex = the exterior. A",
        "model's loss is its mean linear-probe test cross-entropy over the granularity's targets.",
        "",
        "| granularity | \\|In\\| | \\|In'\\| | \\|Ex\\| | PB(In, Ex) | PB(In', Ex) | PB(In', In) | mean loss In / In' / Ex |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for granularity, df in models.groupby("granularity", sort=False):
        loss = df.groupby("role")["loss"].mean()
        sizes = df.groupby("role").size()
        means = " / ".join(f"{loss[g]:.3f}" if g in loss else "-" for g in PB_GROUPS)
        counts = " | ".join(str(int(sizes.get(g, 0))) for g in PB_GROUPS)
        cells = " | ".join(cell(granularity, a, b) for a, b in PB_COMPARISONS)
        lines.append(f"| {granularity} | {counts} | {cells} | {means} |")
    return "\n".join(lines) + "\n"


def line_table(models: pd.DataFrame, losses: pd.DataFrame) -> pd.DataFrame:
    """Per (granularity, role, alpha, target): mean and std over pairs; target 'mean' = over the line's targets."""
    lines = models[models["role"].isin(["line", "centroid_line"])].assign(target="mean")
    per_target = losses[losses["role"].isin(["line", "centroid_line"])]
    both = pd.concat([lines, per_target], ignore_index=True)
    if both.empty:
        return pd.DataFrame(columns=["granularity", "role", "alpha", "target", "loss_mean", "loss_std",
                                     "accuracy_mean", "pairs"])
    table = both.groupby(["granularity", "role", "alpha", "target"], sort=False).agg(
        loss_mean=("loss", "mean"), loss_std=("loss", "std"), accuracy_mean=("accuracy", "mean"),
        pairs=("pair", "nunique")).reset_index()
    table["loss_std"] = table["loss_std"].fillna(0.0)
    return table.sort_values(["granularity", "role", "target", "alpha"], ignore_index=True)


def pretrained_segment(stats: dict) -> float:
    """The distance from In's centroid to the pretrained model, in In's mean distances from the centroid."""
    return stats["centroid_pretrained_distance"] / stats["mean_centroid_distance"]


def with_leave_distances(losses: pd.DataFrame, stats: dict[str, dict]) -> pd.DataFrame:
    """The losses with every step from In's centroid given both its radius and its fraction.

    A step toward the pretrained model is planned as a fraction t of the segment from In's
    centroid to the pretrained model, every other step as a radius r in In's mean distances from
    the centroid; each gives the other, r = t x the segment's length in those units.
    """
    losses = losses.copy()
    leave = losses["role"].eq("leave")
    for granularity in losses.loc[leave, "granularity"].unique():
        segment = pretrained_segment(stats[granularity])
        rows = leave & losses["granularity"].eq(granularity)
        toward = rows & losses["direction"].eq("toward_pretrained")
        losses.loc[toward, "radius"] = losses.loc[toward, "fraction"].astype(float) * segment
        losses.loc[rows & ~toward, "fraction"] = losses.loc[rows & ~toward, "radius"].astype(float) / segment
    return losses


LEAVE_COLUMNS = ["granularity", "kind", "radius", "fraction", "accuracy_mean", "accuracy_std", "loss_mean",
                 "loss_std", "models"]


def leave_table(models: pd.DataFrame, losses: pd.DataFrame, stats: dict[str, dict]) -> pd.DataFrame:
    """App. F: accuracy and loss against radius (in units of In's mean distance from its centroid).

    Kinds: centroid (radius 0), toward_origin, toward_pretrained, random (mean and std over the
    directions); and the finetuned In models at their own radius, split as in Fig. 11(b) into
    source (a model on its own dataset) and non-source (on the granularity's other targets). Every
    row has its fraction too: the radius over the distance to the pretrained model (with_leave_distances).
    """
    rows = []
    leave = models[models["role"] == "leave"].assign(kind=lambda d: d["direction"].str.replace(r"\d+$", "", regex=True))
    for (granularity, kind, radius), df in leave.groupby(["granularity", "kind", "radius"], sort=False):
        rows.append(dict(granularity=granularity, kind=kind, radius=radius, fraction=df["fraction"].iloc[0],
                         **_mean_std(df.groupby("model")), models=len(df)))
    for granularity in leave["granularity"].unique():
        s = stats[granularity]
        radius = dict(zip(s["models"], np.asarray(s["centroid_distances"]) / s["mean_centroid_distance"]))
        segment = pretrained_segment(s)
        inside = losses[(losses["granularity"] == granularity) & (losses["role"] == "in")].copy()
        inside["source"] = [m.split("/")[1] == t for m, t in zip(inside["model"], inside["target"])]
        for kind, df in (("finetuned_source", inside[inside["source"]]), ("finetuned_non_source", inside[~inside["source"]])):
            if df.empty:
                continue
            # Mean over targets of the mean over that target's models, as in Fig. 11(b); std over models.
            by_target = df.groupby("target")[["accuracy", "loss"]].mean()
            at = float(np.mean([radius[m] for m in df["model"].unique()]))
            rows.append({"granularity": granularity, "kind": kind, "radius": at, "fraction": at / segment,
                         **_mean_std(df.groupby("model")), "accuracy_mean": float(by_target["accuracy"].mean()),
                         "loss_mean": float(by_target["loss"].mean()), "models": df["model"].nunique()})
    table = pd.DataFrame(rows, columns=LEAVE_COLUMNS).astype({"fraction": float})
    return table.sort_values(["granularity", "kind", "radius"], ignore_index=True)


def _mean_std(by_model) -> dict:
    """Mean and std over models of each model's mean accuracy and loss over its targets."""
    per_model = by_model[["accuracy", "loss"]].mean()
    out = {}
    for metric in ("accuracy", "loss"):
        out[f"{metric}_mean"] = float(per_model[metric].mean())
        out[f"{metric}_std"] = float(per_model[metric].std()) if len(per_model) > 1 else 0.0
    return out


EFFECT_COLUMNS = ["granularity", "comparison", "role", "unit", "target", "x", "reference", "dloss", "dloss_se",
                  "dacc", "dacc_se"]


def effects_table(losses: pd.DataFrame) -> pd.DataFrame:
    """How the loss and accuracy change along the lines and away from the centroid, per target.

    One row per (point, target) against its reference point on the same target:
    - interpolation: a line's interior alpha against the mean of its two ends (§5.1);
    - extrapolation: an alpha beyond an end against that end, alpha > 1 against w1 (alpha 1),
      alpha < 0 against w2 (alpha 0) (§6);
    - leave: a step of radius r from In's centroid against the centroid (App. F); `role` is the
      direction (toward_origin, toward_pretrained, random1, ...).
    `unit` is the pair or the direction; `x` the alpha or the radius; `reference` what the point is
    compared with: the ends (their mean), w1, w2 or the centroid. The standard errors are
    those of the two probes' test samples combined (as if independent: conservative, since both
    points are scored on the same examples).
    """
    rows = []
    lines = losses[losses["role"].isin(["line", "centroid_line"])]
    for (granularity, role, pair, target), df in lines.groupby(["granularity", "role", "pair", "target"], sort=False):
        by_alpha = df.drop_duplicates("alpha").set_index("alpha")
        if not {0.0, 1.0} <= set(by_alpha.index):
            continue
        ends = by_alpha.loc[[0.0, 1.0]]
        middle = {"loss": ends.loss.mean(), "accuracy": ends.accuracy.mean(),
                  "loss_se": float(np.sqrt((ends.loss_se ** 2).sum()) / 2),
                  "accuracy_se": float(np.sqrt((ends.accuracy_se ** 2).sum()) / 2)}
        for alpha, point in by_alpha.iterrows():
            if 0 < alpha < 1:
                comparison, reference, ref = "interpolation", "ends", middle
            elif alpha > 1 or alpha < 0:
                comparison, reference = "extrapolation", "w1" if alpha > 1 else "w2"
                ref = by_alpha.loc[1.0 if alpha > 1 else 0.0]
            else:
                continue
            rows.append(_effect(granularity, comparison, role, pair, target, alpha, reference, point, ref))
    leave = losses[losses["role"] == "leave"]
    for (granularity, target), df in leave.groupby(["granularity", "target"], sort=False):
        centre = df[df["direction"] == "centroid"]
        if centre.empty:
            continue
        ref = centre.iloc[0]
        for _, point in df[df["direction"] != "centroid"].iterrows():
            rows.append(_effect(granularity, "leave", point["direction"], point["direction"], target,
                                point["radius"], "centroid", point, ref))
    return pd.DataFrame(rows, columns=EFFECT_COLUMNS)


def _effect(granularity, comparison, role, unit, target, x, reference, point, ref) -> dict:
    return {"granularity": granularity, "comparison": comparison, "role": role, "unit": unit, "target": target,
            "x": float(x), "reference": reference, "dloss": point["loss"] - ref["loss"],
            "dloss_se": float(np.hypot(point["loss_se"], ref["loss_se"])),
            "dacc": point["accuracy"] - ref["accuracy"],
            "dacc_se": float(np.hypot(point["accuracy_se"], ref["accuracy_se"]))}


def loss_accuracy_disagreements(effects: pd.DataFrame) -> pd.DataFrame:
    """Extrapolated points whose accuracy falls by more than its standard error while their loss falls.

    A probe that measures the encoder cannot say a model got better by loss and worse by accuracy
    at once; such rows point at the instrument (an overconfident probe), not at the models.
    """
    beyond = effects[effects["comparison"] == "extrapolation"]
    return beyond[(beyond["dacc"] < -beyond["dacc_se"]) & (beyond["dloss"] < 0)]


def region_tables(plan: Plan, probe_paths, stats_paths: dict[str, Path], out: dict,
                  part: str = "all") -> dict[str, pd.DataFrame]:
    """Write the tables of one part of the plan (plan.TABLE_ROLES) from its probes.

    `out` maps the tables to write to paths: for part 'all' losses and effects; 'pb' pb, pb_md and
    pb_models (the losses behind Fig. 4); 'lines' lines and line_models; 'leave' leave and
    leave_models. `stats_paths`: In's centroid statistics per granularity (leave reads them).
    """
    probes = gather(probe_paths)
    stats = {g: read_json(p) for g, p in stats_paths.items()}
    losses = with_leave_distances(target_losses(plan.only(TABLE_ROLES[part]), probes), stats)
    models = model_losses(losses)
    tables = {
        "losses": lambda: region_losses(losses), "effects": lambda: effects_table(losses),
        "pb": lambda: pb_table(models), "lines": lambda: line_table(models, losses),
        "leave": lambda: leave_table(models, losses, stats),
        **{name: (lambda name=name: use_table(models, name)) for name in USE_KEYS},
    }
    written = {name: tables[name]() for name in out if name in tables}
    for name, df in written.items():
        write_parquet(df, out[name])
    if "pb_md" in out:
        write_text(pb_markdown(written["pb"], models), out["pb_md"])
    return written


# -- figures --------------------------------------------------------------------------------------

def lines_figure(lines, path, extrapolation: bool = False) -> None:
    """Fig. 3 / 10 (interpolation, alpha in [0, 1]) or Fig. 5 / 12 (all alphas): loss along the lines.

    `lines` is line_table(): per granularity, role (line, centroid_line) and alpha the
    mean and std over pairs of the mean loss over the line's targets (target == 'mean'). The solid
    line is the mean over pairs, the band one std; the dashed line joins the two groups' centroids.
    """
    lines = lines[lines["target"] == "mean"]
    if not extrapolation:
        lines = lines[(lines["alpha"] >= 0) & (lines["alpha"] <= 1)]
    names = list(dict.fromkeys(lines["granularity"])) or ["region"]
    fig, axes = granularity_axes(names)
    for ax, name in zip(axes, names):
        part = lines[lines["granularity"] == name]
        if part.empty:
            empty_panel(ax, "no lines configured")
            continue
        for role, style, colour in (("line", "-", "tab:blue"), ("centroid_line", "--", "tab:orange")):
            df = part[part["role"] == role].sort_values("alpha")
            if df.empty:
                continue
            pairs = int(df["pairs"].max())
            label = f"between models ({pairs} pair{'' if pairs == 1 else 's'})" if role == "line" else "between centroids"
            ax.plot(df["alpha"], df["loss_mean"], style, color=colour, marker=".", label=label)
            ax.fill_between(df["alpha"], df["loss_mean"] - df["loss_std"], df["loss_mean"] + df["loss_std"],
                            color=colour, alpha=0.2, linewidth=0)
        for end in (0, 1):
            ax.axvline(end, color="0.6", linewidth=0.6, zorder=0)
        if extrapolation:
            from matplotlib.ticker import FormatStrFormatter

            ax.set_xscale("symlog", linthresh=1.0)
            outside = sorted({a for a in part["alpha"] if a <= -1 or a >= 2})
            ax.set_xticks([0, 1, *outside], [f"{a:g}" for a in (0, 1, *outside)], rotation=45, fontsize="small")
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter("%.3g"))
        ax.set_xlabel("alpha  (w = alpha w1 + (1 - alpha) w2)")
        ax.set_ylabel("generalized loss (mean over targets)")
        ax.set_title(name)
        ax.legend(fontsize="small")
    save_figure(fig, path)


def loss_distributions_figure(models, path) -> None:
    """Fig. 4: loss distributions of In (finetuned), In' (hull samples) and Ex (exterior) per granularity."""
    groups = (("in", "In"), ("hull", "In'"), ("ex", "Ex"))
    models = models[models["role"].isin([g for g, _ in groups])]
    names = list(dict.fromkeys(models["granularity"])) or ["region"]
    fig, axes = granularity_axes(names, width=4.2)
    colours = dict(zip([g for g, _ in groups], ["tab:blue", "tab:green", "tab:red"]))
    rng = np.random.default_rng(0)
    for ax, name in zip(axes, names):
        part = models[models["granularity"] == name]
        if part.empty:
            empty_panel(ax, "no region configured")
            continue
        present = [(g, label) for g, label in groups if (part["role"] == g).any()]
        data = [part.loc[part["role"] == g, "loss"].to_numpy() for g, _ in present]
        ax.boxplot(data, tick_labels=[label for _, label in present], showfliers=False, widths=0.5)
        for i, ((g, _), values) in enumerate(zip(present, data), start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=14, color=colours[g], alpha=0.8, zorder=3)
        ax.set_ylabel("generalized loss (mean over targets)")
        ax.set_title(name)
    save_figure(fig, path)


def leave_figure(leave, path) -> None:
    """Fig. 11: accuracy (as the paper plots it) and loss against the distance from In's centroid.

    One row per granularity: accuracy on the left, loss on the right; distance 1 = In's mean
    distance from its centroid. Toward the origin, toward the pretrained model (its segment ends
    at the pretrained model), random Xavier-shaped directions (mean and std over directions), and
    the finetuned In models at their own distance (source / non-source).
    """
    import pandas as pd

    names = list(dict.fromkeys(leave["granularity"])) or ["region"]
    fig = new_figure((9.6, 3.8 * len(names)))
    grid = fig.subplots(len(names), 2, squeeze=False)
    styles = {"toward_origin": ("tab:blue", "toward the origin"),
              "toward_pretrained": ("tab:purple", "toward pretrained"), "random": ("tab:red", "random directions")}
    for row, name in zip(grid, names):
        part = leave[leave["granularity"] == name]
        for ax, metric, label_y in zip(row, ("accuracy", "loss"), ("accuracy", "generalized loss")):
            if part.empty:
                empty_panel(ax, "App. F not configured")
                continue
            centre = part[part["kind"] == "centroid"]
            for kind, (colour, label) in styles.items():
                if not (part["kind"] == kind).any():
                    continue
                df = pd.concat([centre, part[part["kind"] == kind]]).sort_values("radius")
                ax.plot(df["radius"], df[f"{metric}_mean"], "-", marker=".", color=colour, label=label)
                ax.fill_between(df["radius"], df[f"{metric}_mean"] - df[f"{metric}_std"],
                                df[f"{metric}_mean"] + df[f"{metric}_std"], color=colour, alpha=0.2, linewidth=0)
            for kind, marker, label in (("finetuned_source", "o", "finetuned (source)"),
                                        ("finetuned_non_source", "s", "finetuned (non-source)")):
                df = part[part["kind"] == kind]
                if not df.empty:
                    ax.errorbar(df["radius"], df[f"{metric}_mean"], yerr=df[f"{metric}_std"], fmt=marker,
                                color="black", markerfacecolor="white" if kind.endswith("non_source") else "black",
                                label=label, capsize=3)
            ax.set_xlabel("distance from In's centroid (units of In's mean distance)")
            ax.set_ylabel(f"{label_y} (mean over targets)")
            if metric == "loss":
                ax.set_yscale("log")
            ax.set_title(f"{name}: {metric}")
        row[0].legend(fontsize="small")
    save_figure(fig, path)


FIGURES = {
    "interpolation": lambda table, path: lines_figure(table, path),
    "extrapolation": lambda table, path: lines_figure(table, path, extrapolation=True),
    "loss_distributions": loss_distributions_figure,
    "leave_centroid": leave_figure,
}


def draw_figure(name: str, table_path, path) -> None:
    """Draw region figure `name` (one of FIGURES) from its table."""
    if name not in FIGURES:
        raise WeightspaceError(f"no region figure '{name}' (known: {', '.join(FIGURES)})")
    FIGURES[name](read_parquet(table_path), path)

"""Tables of the region experiments: losses per use of a model, PB, lines, leaving the centroid.

A model's loss in a role is its mean generalized loss over the role's targets: the granularity's
`eval` datasets for In, In', Ex and App. F, the pair's datasets plus `eval` for a line (§3.1, §5).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import WeightspaceError
from .io import read_json, write_parquet, write_text
from .metrics import gather
from .region import pb
from .region_plan import Plan, centroid_id

# §5.2: PB(In, Ex), PB(In', Ex), PB(In', In) in percent.
PAPER_PB = {
    "same_dataset": (100.0, 100.0, 88.0),
    "same_task": (75.3, 100.0, 96.7),
    "general": (89.8, 100.0, 90.0),
}
ROLE_KEYS = ["granularity", "role", "model", "pair", "dataset_a", "dataset_b", "alpha", "direction", "radius"]


def target_losses(plan: Plan, probes: pd.DataFrame) -> pd.DataFrame:
    """One row per (use of a model, target) with the probe's loss and accuracy."""
    rows = pd.DataFrame(plan.rows).explode("targets").rename(columns={"targets": "target"})
    for key in ROLE_KEYS:
        if key not in rows:
            rows[key] = None
    merged = rows.merge(probes[["model", "target", "loss", "accuracy"]], on=["model", "target"], how="left")
    missing = merged[merged["loss"].isna()]
    if not missing.empty:
        first = missing.iloc[0]
        raise WeightspaceError(f"no probe result for model '{first['model']}' on target '{first['target']}'")
    return merged[ROLE_KEYS + ["target", "loss", "accuracy"]]


def model_losses(losses: pd.DataFrame) -> pd.DataFrame:
    """One row per use of a model: its mean loss and accuracy over the use's targets."""
    keys = [k for k in ROLE_KEYS if losses[k].notna().any()]
    out = losses.groupby(keys, dropna=False, sort=False).agg(
        loss=("loss", "mean"), accuracy=("accuracy", "mean"), targets=("target", "nunique")).reset_index()
    for key in ROLE_KEYS:
        if key not in out:
            out[key] = None
    return out


def pb_table(models: pd.DataFrame, stats: dict[str, dict]) -> pd.DataFrame:
    """PB(In, Ex), PB(In', Ex), PB(In', In) per granularity (percent), the paper's values beside them."""
    rows = []
    for granularity, df in models[models["role"].isin(["in", "hull", "ex"])].groupby("granularity", sort=False):
        loss = {role: df.loc[df["role"] == role, "loss"].to_numpy() for role in ("in", "hull", "ex")}
        paper = PAPER_PB.get(granularity, (np.nan,) * 3)
        row = {"granularity": granularity, "n_in": len(loss["in"]), "n_hull": len(loss["hull"]), "n_ex": len(loss["ex"])}
        for (a, b), ours, theirs in zip([("in", "ex"), ("hull", "ex"), ("hull", "in")], _names(), paper):
            row[ours] = 100 * pb(loss[a], loss[b]) if len(loss[a]) and len(loss[b]) else np.nan
            row[f"paper_{ours}"] = theirs
        for role in ("in", "hull", "ex"):
            row[f"loss_{role}_mean"] = float(np.mean(loss[role])) if len(loss[role]) else np.nan
        row["in_mean_task_vector_norm"] = stats.get(granularity, {}).get("mean_task_vector_norm", np.nan)
        row["in_mean_centroid_distance"] = stats.get(granularity, {}).get("mean_centroid_distance", np.nan)
        rows.append(row)
    return pd.DataFrame(rows)


def _names():
    return ["pb_in_ex", "pb_hull_ex", "pb_hull_in"]


def pb_markdown(table: pd.DataFrame) -> str:
    def cell(ours, theirs):
        ours = "-" if pd.isna(ours) else f"{ours:.1f}"
        return ours if pd.isna(theirs) else f"{ours} ({theirs:g})"

    lines = [
        "# PB: how often a model of one group has a generalized loss no higher than one of another (§5.2)",
        "",
        "Percent, ours (the paper's in brackets). In = finetuned models of the granularity's source datasets,",
        "In' = samples of In's convex hull, Ex = the exterior. A model's loss is its mean linear-probe",
        "test cross-entropy over the granularity's targets.",
        "",
        "| granularity | \\|In\\| | \\|In'\\| | \\|Ex\\| | PB(In, Ex) | PB(In', Ex) | PB(In', In) | mean loss In / In' / Ex |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        losses = " / ".join("-" if pd.isna(v) else f"{v:.3f}" for v in (r.loss_in_mean, r.loss_hull_mean, r.loss_ex_mean))
        lines.append(f"| {r.granularity} | {r.n_in} | {r.n_hull} | {r.n_ex} | {cell(r.pb_in_ex, r.paper_pb_in_ex)} | "
                     f"{cell(r.pb_hull_ex, r.paper_pb_hull_ex)} | {cell(r.pb_hull_in, r.paper_pb_hull_in)} | {losses} |")
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


def leave_table(models: pd.DataFrame, losses: pd.DataFrame, stats: dict[str, dict]) -> pd.DataFrame:
    """App. F: loss against radius (in units of In's mean distance from its centroid).

    Directions: centroid (radius 0), pretrained, random (mean and std over the directions); and the
    finetuned In models at their own radius, split as in Fig. 11(b) into source (a model on its own
    dataset) and non-source (on the granularity's other targets).
    """
    rows = []
    leave = models[models["role"] == "leave"].assign(kind=lambda d: d["direction"].str.replace(r"\d+$", "", regex=True))
    for (granularity, kind, radius), df in leave.groupby(["granularity", "kind", "radius"], sort=False):
        rows.append(dict(granularity=granularity, kind=kind, radius=radius, loss_mean=df["loss"].mean(),
                         loss_std=df["loss"].std() if len(df) > 1 else 0.0, models=len(df)))
    for granularity in leave["granularity"].unique():
        s = stats[granularity]
        radius = dict(zip(s["models"], np.asarray(s["centroid_distances"]) / s["mean_centroid_distance"]))
        inside = losses[(losses["granularity"] == granularity) & (losses["role"] == "in")].copy()
        inside["source"] = [m.split("/")[1] == t for m, t in zip(inside["model"], inside["target"])]
        for kind, df in (("finetuned_source", inside[inside["source"]]), ("finetuned_non_source", inside[~inside["source"]])):
            if df.empty:
                continue
            # Mean over targets of the mean over that target's models, as in Fig. 11(b).
            per_target = df.groupby("target")["loss"].mean()
            radii = [radius[m] for m in df["model"].unique()]
            rows.append(dict(granularity=granularity, kind=kind, radius=float(np.mean(radii)),
                             loss_mean=float(per_target.mean()), loss_std=float(df.groupby("model")["loss"].mean().std()),
                             models=df["model"].nunique()))
    table = pd.DataFrame(rows, columns=["granularity", "kind", "radius", "loss_mean", "loss_std", "models"])
    table["loss_std"] = table["loss_std"].fillna(0.0)
    return table.sort_values(["granularity", "kind", "radius"], ignore_index=True)


def region_tables(plan: Plan, probe_paths, stats_paths: dict[str, Path], out: dict) -> dict[str, pd.DataFrame]:
    """Write the tables; `out` maps losses, models, pb, pb_md, lines, leave to paths."""
    probes = gather(probe_paths)
    stats = {g: read_json(p) for g, p in stats_paths.items()}
    losses = target_losses(plan, probes)
    models = model_losses(losses)
    tables = {"losses": losses, "models": models, "pb": pb_table(models, stats),
              "lines": line_table(models, losses), "leave": leave_table(models, losses, stats)}
    for name, df in tables.items():
        write_parquet(df, out[name])
    write_text(pb_markdown(tables["pb"]), out["pb_md"])
    return tables

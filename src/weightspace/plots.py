"""Figures of the paper's kind, drawn with matplotlib's object API (Agg canvas, no pyplot state).

Each function takes plain arrays and labels and writes one PNG atomically.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from .io import atomic_path


def group_colours(groups: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per group (tab10, tab20 beyond 10 groups, then a continuous map)."""
    import matplotlib

    names = sorted(set(groups), key=_natural)
    if len(names) <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {n: cmap(i) for i, n in enumerate(names)}
    if len(names) <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return {n: cmap(i) for i, n in enumerate(names)}
    cmap = matplotlib.colormaps["gist_ncar"]
    return {n: cmap(i / len(names)) for i, n in enumerate(names)}


def tsne_embedding(distance: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of a precomputed distance matrix (perplexity capped below the number of points)."""
    from sklearn.manifold import TSNE

    n = len(distance)
    perplexity = min(perplexity, max(1.0, (n - 1) / 3))
    tsne = TSNE(n_components=2, metric="precomputed", init="random", random_state=seed, perplexity=perplexity)
    return tsne.fit_transform(np.asarray(distance, dtype=np.float64))


def tsne_clusters(points: np.ndarray, panels: Sequence[dict], path, title: str = "") -> None:
    """Fig. 2 style: one panel per grouping; dot = true group, ring = the cluster's majority group.

    Each panel dict: {"title": str, "groups": [group per model], "cluster_groups": [the
    assigned cluster's majority group per model]}.
    """
    fig = Figure(figsize=(6.2 * len(panels), 5.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        colours = group_colours(panel["groups"])
        ring = [colours.get(g, (0.5, 0.5, 0.5, 1.0)) for g in panel["cluster_groups"]]
        inner = [colours[g] for g in panel["groups"]]
        ax.scatter(points[:, 0], points[:, 1], s=200, c=ring, linewidths=0)
        ax.scatter(points[:, 0], points[:, 1], s=50, c=inner, edgecolors="white", linewidths=0.8)
        ax.set_title(panel["title"])
        ax.set_xticks([])
        ax.set_yticks([])
        handles = [Line2D([], [], marker="o", linestyle="", color=colours[g], label=g) for g in colours]
        ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def similarity_heatmap(matrix: np.ndarray, names: Sequence[str], groups: Sequence[str], path,
                       title: str = "", label: str = "cosine similarity") -> None:
    """Fig. 8 style: the matrix with models ordered by group, group boundaries and names marked."""
    order = sorted(range(len(names)), key=lambda i: (_natural(groups[i]), _natural(names[i])))
    ordered = matrix[np.ix_(order, order)]
    sorted_groups = [groups[i] for i in order]
    size = min(14.0, 4.0 + 0.08 * len(names))
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    off_diagonal = ordered[~np.eye(len(ordered), dtype=bool)]
    low, high = (float(off_diagonal.min()), float(off_diagonal.max())) if off_diagonal.size else (0.0, 1.0)
    image = ax.imshow(ordered, cmap="viridis", vmin=low, vmax=high, interpolation="nearest")
    fig.colorbar(image, ax=ax, label=f"{label} (diagonal off scale)", shrink=0.8)
    edges = [0] + [i for i in range(1, len(sorted_groups)) if sorted_groups[i] != sorted_groups[i - 1]] + [len(order)]
    for edge in edges[1:-1]:
        ax.axhline(edge - 0.5, color="white", linewidth=0.8)
        ax.axvline(edge - 0.5, color="white", linewidth=0.8)
    centres = [(a + b - 1) / 2 for a, b in zip(edges[:-1], edges[1:])]
    labels = [sorted_groups[a] for a in edges[:-1]]
    ax.set_xticks(centres, labels, rotation=90, fontsize="small")
    ax.set_yticks(centres, labels, fontsize="small")
    if title:
        ax.set_title(title)
    _save(fig, path)


def _save(fig: Figure, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _natural(text: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


def centroid_gains(table, path, tolerance: float) -> None:
    """Fig. 6 / 14 style: the gain over the pretrained start per target, one panel per shots setting.

    `table` is efficient.gains(): columns shots, target, start, gain, gain_lo, gain_hi. Bars per
    start (the pretrained start itself is the zero line), whiskers the interval over seeds; the grey
    band is |gain| <= tolerance (a tie); hatched, faded bars are targets where both starts are at chance.
    """
    from .efficient import shots_order

    table = table[table.start != "pretrained"]
    settings = sorted(table.shots.unique(), key=shots_order)
    starts = list(dict.fromkeys(table.start))
    fig = Figure(figsize=(max(6.0, 0.7 * table.target.nunique() * len(starts) + 2), 3.6 * len(settings)),
                 layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(settings), 1, squeeze=False)[:, 0]
    colours = group_colours(starts)
    width = 0.8 / max(len(starts), 1)
    for ax, shots in zip(axes, settings):
        part = table[table.shots == shots]
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
        ax.set_title("full training set" if shots == "full" else f"at most {shots} training examples")
        ax.legend(fontsize="small")
    _save(fig, path)


def _granularity_axes(names: Sequence[str], width: float = 4.8, height: float = 3.8):
    fig = Figure(figsize=(width * max(len(names), 1), height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(names), 1), squeeze=False)[0]
    return fig, axes


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def region_lines(lines, path, extrapolation: bool = False) -> None:
    """Fig. 3 / 10 (interpolation, alpha in [0, 1]) or Fig. 5 / 12 (all alphas): loss along the lines.

    `lines` is region_report.line_table(): per granularity, role (line, centroid_line) and alpha the
    mean and std over pairs of the mean loss over the line's targets (target == 'mean'). The solid
    line is the mean over pairs, the band one std; the dashed line joins the two groups' centroids.
    """
    lines = lines[lines["target"] == "mean"]
    if not extrapolation:
        lines = lines[(lines["alpha"] >= 0) & (lines["alpha"] <= 1)]
    names = list(dict.fromkeys(lines["granularity"])) or ["region"]
    fig, axes = _granularity_axes(names)
    for ax, name in zip(axes, names):
        part = lines[lines["granularity"] == name]
        if part.empty:
            _empty(ax, "no lines configured")
            continue
        for role, style, colour in (("line", "-", "tab:blue"), ("centroid_line", "--", "tab:orange")):
            df = part[part["role"] == role].sort_values("alpha")
            if df.empty:
                continue
            label = f"between models ({int(df['pairs'].max())} pairs)" if role == "line" else "between centroids"
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
    _save(fig, path)


def region_loss_distributions(models, path) -> None:
    """Fig. 4: loss distributions of In (finetuned), In' (hull samples) and Ex (exterior) per granularity."""
    groups = (("in", "In"), ("hull", "In'"), ("ex", "Ex"))
    models = models[models["role"].isin([g for g, _ in groups])]
    names = list(dict.fromkeys(models["granularity"])) or ["region"]
    fig, axes = _granularity_axes(names, width=4.2)
    colours = dict(zip([g for g, _ in groups], ["tab:blue", "tab:green", "tab:red"]))
    rng = np.random.default_rng(0)
    for ax, name in zip(axes, names):
        part = models[models["granularity"] == name]
        if part.empty:
            _empty(ax, "no region configured")
            continue
        present = [(g, label) for g, label in groups if (part["role"] == g).any()]
        data = [part.loc[part["role"] == g, "loss"].to_numpy() for g, _ in present]
        ax.boxplot(data, tick_labels=[label for _, label in present], showfliers=False, widths=0.5)
        for i, ((g, _), values) in enumerate(zip(present, data), start=1):
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=14, color=colours[g], alpha=0.8, zorder=3)
        ax.set_ylabel("generalized loss (mean over targets)")
        ax.set_title(name)
    _save(fig, path)


def region_leave(leave, path) -> None:
    """Fig. 11: accuracy (as the paper plots it) and loss against the distance from In's centroid.

    One row per granularity: accuracy on the left, loss on the right; distance 1 = In's mean
    distance from its centroid. Toward the origin, toward the pretrained model (its segment ends
    at the pretrained model), random Xavier-shaped directions (mean and std over directions), and
    the finetuned In models at their own distance (source / non-source).
    """
    import pandas as pd

    names = list(dict.fromkeys(leave["granularity"])) or ["region"]
    fig = Figure(figsize=(9.6, 3.8 * len(names)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(len(names), 2, squeeze=False)
    styles = {"toward_origin": ("tab:blue", "toward the origin"),
              "toward_pretrained": ("tab:purple", "toward pretrained"), "random": ("tab:red", "random directions")}
    for row, name in zip(grid, names):
        part = leave[leave["granularity"] == name]
        for ax, metric, label_y in zip(row, ("accuracy", "loss"), ("accuracy", "generalized loss")):
            if part.empty:
                _empty(ax, "App. F not configured")
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
    _save(fig, path)

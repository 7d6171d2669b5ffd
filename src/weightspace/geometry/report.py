"""The geometry experiment's table and figures: clustering scores (§4, Table 1, App. B-D), the
t-SNE of Fig. 2 and the similarity heatmaps."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from ..clustering import EUCLIDEAN_KERNELS
from ..intervals import format_interval
from ..io import gather, write_parquet, write_text
from ..paper import CLUSTERING_NOTE
from ..paths import natural_key
from ..plots import group_colours, new_figure, save_figure


def clustering_table(summary_paths, f1_paths, table_path, f1_table_path, markdown_path):
    """Every experiment's clustering scores in results/tables/clustering.{parquet,md}, its F1 per group
    in clustering_f1.parquet."""
    rows = gather(summary_paths)
    f1 = gather(f1_paths)
    write_parquet(rows, table_path)
    write_parquet(f1, f1_table_path)
    cos = rows[rows.metric == "cosine"].set_index(["experiment", "granularity"])
    euc = rows[rows.metric == "euclidean"].set_index(["experiment", "granularity"])

    def spread(part):
        return pd.Series([format_interval(100 * a, 100 * lo, 100 * hi) for a, lo, hi in
                          zip(part.accuracy_mean, part.accuracy_lo, part.accuracy_hi)], index=part.index)

    shown = pd.DataFrame({
        "reference": cos.reference, "models": cos.models, "k": cos.k,
        "accuracy % (cosine)": spread(cos), "accuracy % (euclidean)": spread(euc).reindex(cos.index),
        "shuffled groups": (100 * cos.chance_accuracy).map("{:.1f}%".format),
        "purity (cosine)": cos.purity,
        "silhouette (cosine)": cos.silhouette_groups,
        "silhouette (euclidean)": euc.silhouette_groups.reindex(cos.index),
        "mean F1 (cosine)": cos.f1_mean,
    }).reset_index()
    kernels = "; ".join(f"{k}: {EUCLIDEAN_KERNELS[k]}" for k in pd.unique(euc.affinity))
    lines = [
        "# Clustering task vectors (paper §2.3, §4, App. B-D)", "",
        "Spectral clustering into k = the number of groups. Reference: what each model's weights are measured "
        "from (own_base: its own base, the task vector; first_base: the experiment's first base; none: zero, "
        "the raw weights). Cosine: affinity from the cosine similarity "
        f"({rows.loc[rows.metric == 'cosine', 'affinity'].iloc[0]}); Euclidean: affinity from the distance d "
        f"({kernels}). Accuracy: clusters matched one-to-one to groups (Hungarian), the mean over "
        f"{int(rows.states.iloc[0])} random states of the clustering with the 2.5-97.5% range over them in brackets; "
        "shuffled groups: the 95th percentile of the accuracy when the groups are shuffled over the same "
        "clusters (what an accuracy must beat to follow the groups at all). Purity: each cluster labelled with "
        "its most common group. Silhouette: of the true groups, under that distance.", "",
        shown.to_markdown(index=False, floatfmt=".3f"), "",
        "## Per-group F1 (cosine; Hungarian matching, and in brackets by cluster majority as in Table 1)", "",
    ]
    cosine_f1 = f1[f1.metric == "cosine"]
    for (experiment, granularity), groups in cosine_f1.groupby(["experiment", "granularity"], sort=False):
        cells = ", ".join(f"{g.group} {g.f1:.2f} ({g.f1_majority:.2f})" for g in groups.itertuples())
        lines.append(f"- {experiment} by {granularity}: {cells}")
    lines += ["", CLUSTERING_NOTE, ""]
    write_text("\n".join(lines), markdown_path)
    return rows


def tsne_clusters(points: np.ndarray, panels: Sequence[dict], path, title: str = "") -> None:
    """Fig. 2 style: one panel per grouping; dot = true group, ring = the cluster's majority group.

    Each panel dict: {"title": str, "groups": [group per model], "cluster_groups": [the
    assigned cluster's majority group per model]}.
    """
    fig = new_figure((6.2 * len(panels), 5.4))
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
    save_figure(fig, path)


def similarity_heatmap(matrix: np.ndarray, names: Sequence[str], groups: Sequence[str], path,
                       title: str = "", label: str = "cosine similarity") -> None:
    """Fig. 8 style: the matrix with models ordered by group, group boundaries and names marked."""
    order = sorted(range(len(names)), key=lambda i: (natural_key(groups[i]), natural_key(names[i])))
    ordered = matrix[np.ix_(order, order)]
    sorted_groups = [groups[i] for i in order]
    size = min(14.0, 4.0 + 0.08 * len(names))
    fig = new_figure((size + 1.5, size))
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
    save_figure(fig, path)

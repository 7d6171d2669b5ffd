"""What every figure shares: matplotlib's object API (an Agg canvas, no pyplot state), a fixed
colour per group, a panel per granularity, and a PNG written atomically. The figures themselves
are in each experiment's report module."""

from __future__ import annotations

from typing import Sequence

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .io import atomic_path
from .paths import natural_key


def new_figure(figsize: tuple[float, float]) -> Figure:
    """An empty figure with constrained layout, drawn on its own Agg canvas."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def granularity_axes(names: Sequence[str], width: float = 4.8, height: float = 3.8):
    """A figure with one panel per granularity in a row, and its axes."""
    fig = new_figure((width * max(len(names), 1), height))
    return fig, fig.subplots(1, max(len(names), 1), squeeze=False)[0]


def empty_panel(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def group_colours(groups: Sequence[str]) -> dict[str, tuple]:
    """A fixed colour per group (tab10, tab20 beyond 10 groups, then a continuous map)."""
    names = sorted(set(groups), key=natural_key)
    if len(names) <= 10:
        cmap = matplotlib.colormaps["tab10"]
        return {n: cmap(i) for i, n in enumerate(names)}
    if len(names) <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return {n: cmap(i) for i, n in enumerate(names)}
    cmap = matplotlib.colormaps["gist_ncar"]
    return {n: cmap(i / len(names)) for i, n in enumerate(names)}


def save_figure(fig: Figure, path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)

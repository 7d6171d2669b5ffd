"""The region of similarly finetuned models (paper §5.2, App. F): its hull, its outside, PB.

A group In of finetuned models spans a region. This module makes the points the paper compares:
samples of the convex hull (In'), the pretrained model moved in a random Xavier-shaped direction
by as much as a finetuned model moves (the General level's exterior), and points that leave the
centroid of In toward the origin, toward the pretrained model or in a random direction.

The workflow builds each such point in memory inside the probe job that scores it
(`recipe_tensors`), so no merged model is written to disk; the writers (`hull_sample`,
`perturbed_pretrained`, `leave_centroid`) save one as a model folder for use elsewhere.

Distances are Euclidean over the floating encoder tensors; a model's "task vector norm" is its
distance from the pretrained model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..checkpoints import WEIGHTS
from ..errors import WeightspaceError
from ..io import load_tensors, read_json, write_json
from ..merging import Combination, combine, line_tensors, save_encoder
from ..taskvectors import task_vector, weights_file

def recipe_tensors(recipe: dict, pretrained_dir) -> dict[str, torch.Tensor] | None:
    """The encoder tensors of a derived model of the region plan, built in memory from its recipe.

    `recipe` is region.plan.Recipe as a dict whose `sources` are weight files (and `stats` the
    statistics file of In's centroid). None for the kinds that are model folders already
    (finetuned models and centroids), which are read from disk.
    """
    kind, sources, coefficients = recipe["kind"], recipe["sources"], recipe["coefficients"]
    if kind in ("finetuned", "centroid"):
        return None
    if kind == "merged":
        return line_tensors(sources[0], sources[1], coefficients[0], pretrained_dir)
    if kind == "hull":
        return hull_tensors(sources, coefficients, pretrained_dir)
    if kind == "perturbed":
        return perturbed_tensors(pretrained_dir, recipe["stats"], recipe["seed"])[0]
    if kind == "leave":
        return left_centroid_tensors(sources[0], pretrained_dir, recipe["stats"], recipe["direction"], coefficients[0],
                                     recipe["seed"])[0]
    raise WeightspaceError(f"region: unknown model kind '{kind}'")


def hull_tensors(members: Sequence, coefficients: Sequence[float], pretrained_dir) -> dict[str, torch.Tensor]:
    """hull_point(...) in memory."""
    return hull_point(members, coefficients, pretrained_dir).tensors()


def hull_point(members: Sequence, coefficients: Sequence[float], pretrained_dir) -> Combination:
    """sum_i coefficients[i] * members[i]: one point of the convex hull of the members."""
    if not math.isclose(sum(coefficients), 1.0, rel_tol=0, abs_tol=1e-9) or min(coefficients) < 0:
        raise WeightspaceError(f"hull: coefficients must be >= 0 and sum to 1 (got {list(coefficients)})")
    return Combination(members, list(coefficients), pretrained_dir)


def hull_sample(members: Sequence, coefficients: Sequence[float], pretrained_dir, out_dir) -> None:
    """Write hull_point(...) as a bare encoder into out_dir."""
    save_encoder(hull_point(members, coefficients, pretrained_dir), pretrained_dir, out_dir,
                 metadata={"coefficients": ",".join(f"{c:.6f}" for c in coefficients)},
                 title=f"A point of the convex hull of {len(members)} models")




def group_stats(members: Sequence, pretrained_dir, out_dir, stats_path, names: Sequence[str] | None = None) -> dict:
    """Write the centroid of `members` into out_dir and its statistics (JSON) to stats_path.

    The statistics are what App. F and the General exterior need: each member's distance from the
    pretrained model (task vector norm) and from the centroid, their means, the centroid's distance
    from the pretrained model, and the tensors that finetuning moved (an unused pooler does not).
    """
    if not members:
        raise WeightspaceError("centroid: no member models")
    # a temporary folder that the probe jobs read: its weights and config alone
    save_encoder(Combination(members, [1.0 / len(members)] * len(members), pretrained_dir), pretrained_dir,
                 out_dir, metadata={"members": len(members)}, standalone=False)
    centroid_file = Path(out_dir) / WEIGHTS
    moved: set[str] = set()
    tv_norms, distances = [], []
    for member in members:
        squares = 0.0
        for name, delta in task_vector(member, pretrained_dir).tensors():
            squares += float(delta.double().square().sum())
            if bool(delta.any()):
                moved.add(name)
        tv_norms.append(math.sqrt(squares))
        distances.append(_norm(task_vector(member, centroid_file).tensors()))
    stats = {
        "models": [str(m) for m in (names or members)],
        "task_vector_norms": tv_norms,
        "mean_task_vector_norm": float(np.mean(tv_norms)),
        "centroid_distances": distances,
        "mean_centroid_distance": float(np.mean(distances)),
        "centroid_pretrained_distance": _norm(task_vector(centroid_file, pretrained_dir).tensors()),
        "moved_tensors": sorted(moved),
    }
    write_json(stats, stats_path)
    return stats


def _norm(named_tensors) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for _, t in named_tensors))


def xavier_direction(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """A random direction of unit Euclidean norm over the given tensors, Xavier-shaped (§3.1).

    Each entry is i.i.d. N(0, 2 / (fan_in + fan_out)) as in Glorot & Bengio (2010), so layers get
    the spread of a reasonable network; a 1-D tensor of n entries counts fan_in = fan_out = n. The
    draw happens on the CPU in sorted name order, so a seed gives the same direction everywhere.
    """
    generator = torch.Generator().manual_seed(seed)
    direction = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        fan_in, fan_out = _fans(shape)
        std = math.sqrt(2.0 / (fan_in + fan_out))
        direction[name] = torch.randn(shape, generator=generator, dtype=torch.float32) * std
    norm = _norm(direction.items())
    return {name: t / norm for name, t in direction.items()}


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def perturbed_tensors(pretrained_dir, stats_path, seed: int) -> tuple[dict[str, torch.Tensor], float]:
    """pretrained + r * u, u a random Xavier-shaped unit direction, r = In's mean task vector norm; and r.

    The General level's exterior (§3.1): a model as far from the pretrained one as a finetuned
    model, in a direction no finetuning chose. Only the tensors finetuning moved are perturbed.
    """
    stats = read_json(stats_path)
    radius = stats["mean_task_vector_norm"]
    weights = load_tensors(Path(pretrained_dir) / WEIGHTS)
    direction = xavier_direction(_shapes(weights, stats["moved_tensors"], stats_path), seed)
    return _moved(weights, direction, radius), radius


def perturbed_pretrained(pretrained_dir, stats_path, seed: int, out_dir) -> float:
    """Write perturbed_tensors(...) as a bare encoder into out_dir; returns the distance moved."""
    tensors, radius = perturbed_tensors(pretrained_dir, stats_path, seed)
    save_encoder(tensors, pretrained_dir, out_dir, metadata={"perturbation_norm": radius, "seed": seed},
                 title="The pretrained encoder moved in a random Xavier-shaped direction")
    return radius


LEAVE_DIRECTIONS = ("toward_origin", "toward_pretrained", "random<N>")


def left_centroid_tensors(centroid, pretrained_dir, stats_path, direction: str, step: float,
                          seed: int | None) -> tuple[dict[str, torch.Tensor], float]:
    """A step away from In's centroid (App. F), and the Euclidean distance moved.

    `centroid` is In's centroid (its folder or weights file) and d In's mean distance from it.
    - toward_origin: `step` = r, the centroid scaled toward theta = 0 (the paper's "towards the
      origin of the axis") until it has moved r * d; every floating tensor shrinks by one factor.
    - toward_pretrained: `step` = t in (0, 1], the point t of the way along the segment from the
      centroid to the pretrained model (t = 1 is the pretrained encoder itself).
    - random<N>: `step` = r, r * d along a random Xavier-shaped unit direction, drawn from `seed`
      over the tensors finetuning moved.
    """
    stats = read_json(stats_path)
    centroid = load_tensors(weights_file(centroid))
    floating = {n: t.float() for n, t in centroid.items() if t.is_floating_point()}
    if direction == "toward_origin":
        length = _norm(floating.items())
        distance = step * stats["mean_centroid_distance"]
        if distance >= length:
            raise WeightspaceError(f"{stats_path}: radius {step:g} ({distance:.4g}) reaches past the origin, "
                                   f"{length:.4g} from the centroid")
        return _moved(centroid, {n: -t / length for n, t in floating.items()}, distance), distance
    if direction == "toward_pretrained":
        if not 0 < step <= 1:
            raise WeightspaceError(f"toward_pretrained: fraction {step:g} of the segment to the pretrained model is "
                                   "outside (0, 1] (1 = the pretrained model; beyond it the segment ends)")
        pretrained = load_tensors(Path(pretrained_dir) / WEIGHTS)
        toward = {n: pretrained[n].float() - t for n, t in floating.items()}
        length = _norm(toward.items())
        if length == 0:
            raise WeightspaceError(f"{stats_path}: the centroid is the pretrained model; no direction toward it")
        return _moved(centroid, {n: t / length for n, t in toward.items()}, step * length), step * length
    if direction.startswith("random"):
        unit = xavier_direction(_shapes(centroid, stats["moved_tensors"], stats_path), seed)
        distance = step * stats["mean_centroid_distance"]
        return _moved(centroid, unit, distance), distance
    raise WeightspaceError(f"leave: unknown direction '{direction}' (expected one of {', '.join(LEAVE_DIRECTIONS)})")


def leave_centroid(centroid_dir, pretrained_dir, stats_path, direction: str, step: float, seed: int | None,
                   out_dir) -> float:
    """Write left_centroid_tensors(...) as a bare encoder into out_dir; returns the distance moved."""
    tensors, distance = left_centroid_tensors(centroid_dir, pretrained_dir, stats_path, direction, step, seed)
    save_encoder(tensors, pretrained_dir, out_dir,
                 metadata={"direction": direction, "step": step, "distance": distance, "seed": seed},
                 title=f"A step away from a centroid ({direction})")
    return distance


def _shapes(weights: dict, names: Sequence[str], stats_path) -> dict[str, tuple[int, ...]]:
    missing = [n for n in names if n not in weights]
    if missing:
        raise WeightspaceError(f"{stats_path}: tensor '{missing[0]}' is not in the model (stale statistics?)")
    if not names:
        raise WeightspaceError(f"{stats_path}: finetuning moved no tensor, so there is no direction to draw")
    return {n: tuple(weights[n].shape) for n in names}


def _moved(weights: dict, unit: dict, distance: float) -> dict[str, torch.Tensor]:
    """weights + distance * unit on the tensors of `unit`; the rest unchanged; original dtypes."""
    return {n: (t.float() + distance * unit[n]).to(t.dtype) if n in unit else t for n, t in weights.items()}

"""Spectral clustering of models from their pairwise similarities, scored against known groups.

As the paper's authors: sklearn's SpectralClustering on a precomputed affinity, by default
(cosine + 1) / 2, with assign_labels='discretize' and k = the number of groups. Clusters are
matched one-to-one to groups with the Hungarian algorithm (accuracy, per-group F1); purity and
Table 1's F1 label each cluster with its most common group instead.

For the Euclidean contrast the affinity is a Gaussian kernel of the distance d: by default the
authors' exp(-D / 2) of squared distances D, i.e. exp(-d^2 / 2) with no scale, or (`median`)
exp(-d^2 / (2 sigma^2)) with sigma the median distance between two different models. Unscaled,
task vectors a few units apart get affinities that are tiny and span orders of magnitude (close
to a nearest-neighbour graph), and beyond d = 38.6 they are 0 in float64 (a graph without edges).
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import SpectralClustering
from sklearn.metrics import f1_score, silhouette_score

from .errors import WeightspaceError
from .paths import natural_key

AFFINITIES = ("shift", "clip", "exp")
EUCLIDEAN_KERNELS = {
    "authors": "exp(-d^2 / 2), the authors' exp(-D / 2) of squared distances D",
    "median": "exp(-d^2 / (2 sigma^2)), sigma the median distance between two models",
}


def cosine_distance(cosine: np.ndarray) -> np.ndarray:
    distance = np.clip(1.0 - cosine, 0.0, 2.0)
    np.fill_diagonal(distance, 0.0)
    return distance


def gaussian_affinity(distance: np.ndarray) -> np.ndarray:
    """exp(-d^2 / (2 sigma^2)), sigma = the median off-diagonal distance."""
    off_diagonal = distance[~np.eye(len(distance), dtype=bool)]
    sigma = float(np.median(off_diagonal)) if off_diagonal.size else 1.0
    return np.exp(-(distance**2) / (2 * max(sigma, 1e-12) ** 2))


def euclidean_affinity(distance: np.ndarray, kernel: str = "authors") -> np.ndarray:
    """The affinity of Euclidean distances under one of EUCLIDEAN_KERNELS."""
    if kernel == "authors":
        return np.exp(-(distance**2) / 2)
    if kernel == "median":
        return gaussian_affinity(distance)
    raise WeightspaceError(f"euclidean_kernel '{kernel}': expected one of {', '.join(EUCLIDEAN_KERNELS)}")


def cosine_affinity(cosine: np.ndarray, transform: str = "shift") -> np.ndarray:
    """shift: (M + 1) / 2 (the authors'); clip: max(M, 0); exp: a Gaussian kernel of 1 - M."""
    if transform == "shift":
        return (cosine + 1.0) / 2.0
    if transform == "clip":
        return np.clip(cosine, 0.0, None)
    if transform == "exp":
        return gaussian_affinity(cosine_distance(cosine))
    raise WeightspaceError(f"affinity '{transform}': expected one of {', '.join(AFFINITIES)}")


def spectral_clusters(affinity: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    model = SpectralClustering(n_clusters=k, affinity="precomputed", assign_labels="discretize", random_state=seed)
    return model.fit_predict(affinity)


def matched_groups(groups: Sequence[str], clusters: np.ndarray) -> dict[int, str]:
    """Cluster -> group, one-to-one, maximising the number of models in their group's cluster."""
    names, cluster_ids, table = _contingency(groups, clusters)
    rows, cols = linear_sum_assignment(-table)
    return {int(cluster_ids[c]): names[r] for r, c in zip(rows, cols)}


def matched_accuracy(groups: Sequence[str], clusters: np.ndarray) -> float:
    """The share of models in the cluster matched one-to-one to their group (Hungarian)."""
    _, _, table = _contingency([str(g) for g in groups], clusters)
    rows, cols = linear_sum_assignment(-table)
    return float(table[rows, cols].sum() / len(groups))


def majority_groups(groups: Sequence[str], clusters: np.ndarray) -> dict[int, str]:
    """Cluster -> its most common group (ties: the group first in sorted order)."""
    out = {}
    for c in np.unique(clusters):
        counts = Counter(g for g, x in zip(groups, clusters) if x == c)
        out[int(c)] = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    return out


def score(groups: Sequence[str], clusters: np.ndarray, distance: np.ndarray | None = None) -> dict:
    """Accuracy (Hungarian), purity, per-group F1 (Hungarian and majority), silhouettes."""
    groups = [str(g) for g in groups]
    names = sorted(set(groups))
    matched = matched_groups(groups, clusters)
    majority = majority_groups(groups, clusters)
    predicted = [matched.get(int(c), "<unmatched>") for c in clusters]
    by_majority = [majority[int(c)] for c in clusters]
    f1 = f1_score(groups, predicted, labels=names, average=None, zero_division=0)
    f1_majority = f1_score(groups, by_majority, labels=names, average=None, zero_division=0)
    return {
        "clusters": int(len(np.unique(clusters))),  # spectral clustering can leave one of the k empty
        "models": len(groups),
        "accuracy": float(np.mean([p == g for p, g in zip(predicted, groups)])),
        "purity": float(np.mean([p == g for p, g in zip(by_majority, groups)])),
        "f1": {n: float(v) for n, v in zip(names, f1)},
        "f1_majority": {n: float(v) for n, v in zip(names, f1_majority)},
        "silhouette_groups": _silhouette(distance, groups),
        "silhouette_clusters": _silhouette(distance, clusters),
        "cluster_group": {str(c): matched[c] for c in sorted(matched)},
    }


def cluster_and_score(similarity: np.ndarray, groups: Sequence[str], k: int | None = None,
                      transform: str = "shift", seed: int = 0) -> tuple[np.ndarray, dict]:
    """Cluster from a cosine similarity matrix; k defaults to the number of groups."""
    k = k or len(set(groups))
    _check_k(k, len(groups))
    clusters = spectral_clusters(cosine_affinity(similarity, transform), k, seed)
    return clusters, {"k": k, **score(groups, clusters, cosine_distance(similarity))}


def cluster_euclidean(distance: np.ndarray, groups: Sequence[str], k: int | None = None,
                      seed: int = 0, kernel: str = "authors") -> tuple[np.ndarray, dict]:
    """Cluster from a Euclidean distance matrix through `kernel` (EUCLIDEAN_KERNELS)."""
    k = k or len(set(groups))
    _check_k(k, len(groups))
    clusters = spectral_clusters(euclidean_affinity(distance, kernel), k, seed)
    return clusters, {"k": k, **score(groups, clusters, distance)}


def accuracy_over_states(affinity: np.ndarray, groups: Sequence[str], states: Sequence[int], k: int | None = None) -> list[float]:
    """Hungarian accuracy of spectral clustering at each random state (its eigen-solver and discretisation start)."""
    k = k or len(set(groups))
    _check_k(k, len(groups))
    return [matched_accuracy(groups, spectral_clusters(affinity, k, s)) for s in states]


def chance_accuracy(groups: Sequence[str], clusters: np.ndarray, permutations: int = 1000, seed: int = 0,
                    quantile: float = 0.95) -> float:
    """The `quantile` of Hungarian accuracy when the groups are shuffled over the same clusters.

    What an accuracy must exceed to say that the clusters follow the groups at all: with k groups
    of a few models each, matching alone scores well above 1/k.
    """
    rng = np.random.default_rng(seed)
    groups = np.asarray([str(g) for g in groups])
    null = [matched_accuracy(rng.permutation(groups), clusters) for _ in range(permutations)]
    return float(np.quantile(null, quantile))


def _check_k(k: int, n: int) -> None:
    if not 2 <= k < n:
        raise WeightspaceError(f"k = {k}: expected 2 <= k < the number of models ({n})")


def _contingency(groups, clusters):
    names = sorted(set(groups))
    cluster_ids = np.unique(clusters)
    table = np.zeros((len(names), len(cluster_ids)), dtype=np.int64)
    row = {n: i for i, n in enumerate(names)}
    col = {c: j for j, c in enumerate(cluster_ids)}
    for g, c in zip(groups, clusters):
        table[row[g], col[c]] += 1
    return names, cluster_ids, table


def _silhouette(distance, labels) -> float:
    if distance is None or not 2 <= len(set(map(str, labels))) <= len(labels) - 1:
        return float("nan")
    return float(silhouette_score(distance, [str(x) for x in labels], metric="precomputed"))


# -- a similarity matrix from a file (the CLI) ------------------------------------------------

def read_similarity_csv(path) -> tuple[list[str], np.ndarray]:
    """A square CSV: the header holds the model names, then one row of numbers per model."""
    path = Path(path)
    if not path.exists():
        raise WeightspaceError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except Exception as err:  # any parse error of pandas
        raise WeightspaceError(f"{path}: cannot read as CSV ({type(err).__name__}: {err})") from None
    names = [str(c).strip() for c in frame.columns]
    if frame.shape[0] != frame.shape[1]:
        raise WeightspaceError(f"{path}: expected a square matrix, got {frame.shape[0]} rows for {len(names)} names")
    try:
        matrix = frame.to_numpy(dtype=np.float64)
    except ValueError:
        raise WeightspaceError(f"{path}: expected numbers below the header row") from None
    if not np.isfinite(matrix).all():
        raise WeightspaceError(f"{path}: has empty or non-finite entries")
    if len(set(names)) != len(names):
        raise WeightspaceError(f"{path}: model names in the header repeat")
    if np.abs(matrix - matrix.T).max() > 1e-6:
        raise WeightspaceError(f"{path}: the matrix is not symmetric")
    if np.abs(matrix).max() > 1 + 1e-6:
        raise WeightspaceError(f"{path}: entries outside [-1, 1]; expected cosine similarities")
    return names, matrix


def groups_from_pattern(names: Sequence[str], pattern: str, source="--label-pattern") -> list[str]:
    """Each name's group: the first capture group of `pattern` (searched in the name)."""
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise WeightspaceError(f"{source}: {pattern!r} is not a regular expression ({err})") from None
    if regex.groups < 1:
        raise WeightspaceError(f"{source}: {pattern!r} has no capture group (the group name)")
    groups = []
    for name in names:
        match = regex.search(name)
        if match is None or match.group(1) is None:
            raise WeightspaceError(f"{source}: {pattern!r} does not match model '{name}'")
        groups.append(match.group(1))
    return groups


def cluster_matrix_file(path, k: int, pattern: str, exclude: Sequence[str] = (), transform: str = "shift",
                        seed: int = 0) -> dict:
    """Cluster the models of a similarity CSV; the JSON-ready summary the CLI prints."""
    names, matrix = read_similarity_csv(path)
    return {"file": str(path), **cluster_named(names, matrix, k, pattern, exclude, transform, seed)}


def cluster_named(names: Sequence[str], cosine: np.ndarray, k: int, pattern: str, exclude: Sequence[str] = (),
                  transform: str = "shift", seed: int = 0) -> dict:
    """Cluster models by their cosine matrix, each model's group the first capture of `pattern` in its
    name, leaving out the groups in `exclude`; the JSON-ready summary the CLI prints."""
    groups = groups_from_pattern(names, pattern)
    unknown = sorted(set(exclude) - set(groups))
    if unknown:
        raise WeightspaceError(f"--exclude {unknown[0]}: no model has that group "
                               f"(groups: {', '.join(sorted(set(groups), key=natural_key))})")
    keep = [i for i, g in enumerate(groups) if g not in set(exclude)]
    names = [names[i] for i in keep]
    groups = [groups[i] for i in keep]
    clusters, result = cluster_and_score(cosine[np.ix_(keep, keep)], groups, k, transform, seed)
    return {
        "affinity": transform,
        "seed": seed,
        "groups": len(set(groups)),
        **{key: result[key] for key in ("models", "k", "accuracy", "purity", "silhouette_groups")},
        "f1": dict(sorted(result["f1"].items(), key=lambda kv: natural_key(kv[0]))),
        "cluster_group": result["cluster_group"],
        "assignments": {n: int(c) for n, c in zip(names, clusters)},
    }

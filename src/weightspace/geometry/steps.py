"""The geometry experiment's jobs: task vectors and their similarities, clustering, t-SNE."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..clustering import (accuracy_over_states, chance_accuracy, cluster_and_score, cluster_euclidean,
                          cosine_affinity, cosine_distance, euclidean_affinity, majority_groups)
from ..errors import WeightspaceError
from ..intervals import percentile_interval
from ..io import read_parquet, write_parquet
from ..similarity import Similarity, stream_similarity
from ..taskvectors import task_vector
from .plan import Member
from .report import similarity_heatmap, tsne_clusters

log = logging.getLogger(__name__)


def similarity_step(members: list[dict], model_files, pretrained_files, reference_files, out_path,
                    include_head: bool, memory_mb: float, device) -> None:
    """Task vectors of the experiment's models, their similarities in one pass, as long-form parquet.

    `reference_files`: per model, the base weights its vector is taken against (None: zero).
    """
    vectors = [task_vector(f, p, include_head, name=m["model"]).against(r)
               for m, f, p, r in zip(members, model_files, pretrained_files, reference_files)]
    write_parquet(stream_similarity(vectors, memory_mb, device).long_form(), out_path)


def cluster_step(similarity_path, members: list[dict], group_by: list[str], affinity: str, euclidean_kernel: str,
                 reference: str, seed: int, states: int, summary_path, assignments_path, states_path,
                 f1_path) -> None:
    """Cluster the models by cosine and by Euclidean distance for every grouping; score both.

    `affinity` turns cosines into affinities, `euclidean_kernel` distances (clustering's
    EUCLIDEAN_KERNELS); `reference` (REFERENCES) is recorded with the scores.

    The assignments are those of random state `seed`; the accuracy is also taken at `states`
    random states (0, 1, ...) for its spread, and beside it the accuracy that shuffled groups reach.
    """
    experiment = _stem(similarity_path)
    similarity = Similarity.from_long_form(read_parquet(similarity_path))
    by_model = {m["model"]: Member.from_record(m) for m in members}
    if set(by_model) != set(similarity.names):
        raise WeightspaceError(f"{similarity_path}: holds other models than the experiment '{experiment}' (rerun similarity)")
    ordered = [by_model[n] for n in similarity.names]
    affinities = {"cosine": cosine_affinity(similarity.cosine, affinity),
                  "euclidean": euclidean_affinity(similarity.euclidean, euclidean_kernel)}
    summary, assignments, spread, f1 = [], [], [], []
    for granularity in group_by:
        groups = [m.group(granularity) for m in ordered]
        runs = {
            "cosine": cluster_and_score(similarity.cosine, groups, transform=affinity, seed=seed),
            "euclidean": cluster_euclidean(similarity.euclidean, groups, seed=seed, kernel=euclidean_kernel),
        }
        for metric, (clusters, result) in runs.items():
            accuracies = accuracy_over_states(affinities[metric], groups, range(states))
            spread += [{"experiment": experiment, "granularity": granularity, "metric": metric, "state": i,
                        "accuracy": a} for i, a in enumerate(accuracies)]
            lo, hi = percentile_interval(accuracies)
            chance = chance_accuracy(groups, clusters, seed=seed)
            log.info("%s by %s, %s: k=%d accuracy %.3f (%.3f-%.3f over %d states; shuffled groups reach %.3f) "
                     "purity %.3f", experiment, granularity, metric, result["k"], result["accuracy"], lo, hi, states,
                     chance, result["purity"])
            summary.append({
                "experiment": experiment, "granularity": granularity, "metric": metric, "reference": reference,
                "affinity": affinity if metric == "cosine" else euclidean_kernel,
                **{k: result[k] for k in ("models", "k", "accuracy", "purity", "silhouette_groups", "silhouette_clusters")},
                "accuracy_mean": float(np.mean(accuracies)), "accuracy_lo": float(lo), "accuracy_hi": float(hi),
                "states": states, "chance_accuracy": chance,
                "f1_mean": float(sum(result["f1"].values()) / len(result["f1"])),
            })
            f1 += group_f1_rows(result, experiment=experiment, granularity=granularity, metric=metric)
            majority = majority_groups(groups, clusters)
            for member, group, cluster in zip(ordered, groups, clusters):
                assignments.append({
                    "model": member.path, "granularity": granularity, "metric": metric, "group": group,
                    "cluster": int(cluster), "cluster_group": result["cluster_group"].get(str(int(cluster))),
                    "cluster_majority": majority[int(cluster)],
                })
    write_parquet(pd.DataFrame(summary), summary_path)
    write_parquet(pd.DataFrame(assignments), assignments_path)
    write_parquet(pd.DataFrame(spread), states_path)
    write_parquet(pd.DataFrame(f1), f1_path)


def group_f1_rows(result: dict, **keys) -> list[dict]:
    """One row per group of a clustering's score: its F1 by Hungarian matching and by cluster majority."""
    return [{**keys, "group": group, "f1": value, "f1_majority": result["f1_majority"][group]}
            for group, value in result["f1"].items()]


def plots_step(similarity_path, assignments_path, tsne_path, heatmap_path, seed: int, perplexity: float) -> None:
    """t-SNE of the cosine distance (a panel per grouping) and the similarity heatmap."""

    experiment = _stem(similarity_path)
    similarity = Similarity.from_long_form(read_parquet(similarity_path))
    assigned = read_parquet(assignments_path)
    assigned = assigned[assigned.metric == "cosine"]
    granularities = list(dict.fromkeys(assigned.granularity))
    points = tsne_embedding(cosine_distance(similarity.cosine), seed, perplexity)
    panels = []
    for granularity in granularities:
        rows = assigned[assigned.granularity == granularity].set_index("model").loc[similarity.names]
        panels.append({"title": f"by {granularity}: {len(set(rows.group))} groups", "groups": list(rows.group),
                       "cluster_groups": list(rows.cluster_majority)})
    tsne_clusters(points, panels, tsne_path,
                  title=f"{experiment}: t-SNE of task vectors (cosine distance); dot = true group, ring = cluster")
    first = assigned[assigned.granularity == granularities[0]].set_index("model").loc[similarity.names]
    similarity_heatmap(similarity.cosine, similarity.names, list(first.group), heatmap_path,
                       title=f"{experiment}: cosine similarity of task vectors, by {granularities[0]}")


def tsne_embedding(distance: np.ndarray, seed: int = 0, perplexity: float = 30.0) -> np.ndarray:
    """2-D t-SNE of a precomputed distance matrix (perplexity capped below the number of points)."""
    from sklearn.manifold import TSNE

    n = len(distance)
    perplexity = min(perplexity, max(1.0, (n - 1) / 3))
    tsne = TSNE(n_components=2, metric="precomputed", init="random", random_state=seed, perplexity=perplexity)
    return tsne.fit_transform(np.asarray(distance, dtype=np.float64))


def _stem(path) -> str:
    return Path(path).name.split(".")[0]

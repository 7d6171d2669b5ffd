"""The config's `geometry.experiments`: which finetuned models each experiment compares, and
the groups (dataset, family, train size, base model) each model belongs to.

A model's path under results/models/finetuned/ is `{dataset}/seed{seed}` for the main grid,
`{dataset}/n{size}/seed{seed}` for a run on a subsample of `size` training examples (App. C) and
`{dataset}/base-{base}/seed{seed}` for a run from another base model (App. B).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import WeightspaceError

GRANULARITIES = ("dataset", "family", "size", "base")
# What a model's weights are measured from: its own base, the first of the experiment's `bases`
# (the only one when it lists none), or zero (the raw weights).
REFERENCES = ("own_base", "first_base", "none")
DEFAULT_REFERENCE = "first_base"  # the schema's default; its description says why


@dataclass(frozen=True)
class Member:
    """One finetuned model of an experiment."""

    dataset: str
    seed: int
    family: str | None
    size: int | None  # None: the full training split
    base: str
    path: str  # relative to results/models/finetuned/

    def group(self, granularity: str) -> str:
        if granularity == "size":
            return "full" if self.size is None else str(self.size)
        return str(getattr(self, granularity))

    def record(self) -> dict:
        return {"model": self.path, "dataset": self.dataset, "seed": self.seed, "family": self.family,
                "size": self.size, "base": self.base}


def member_path(dataset: str, seed: int, size: int | None, base: str, default_base: str) -> str:
    parts = [dataset]
    if base != default_base:
        parts.append(f"base-{base}")
    if size is not None:
        parts.append(f"n{size}")
    return "/".join(parts + [f"seed{seed}"])


def experiment_members(config: dict, name: str) -> list[Member]:
    """The models of experiment `name`, in (family, dataset, base, size, seed) order."""
    spec = _spec(config, name)
    where = f"geometry.experiments.{name}"
    families = _families(config, spec, where)
    datasets = spec.get("datasets") or list(dict.fromkeys(d for members in families.values() for d in members))
    for dataset in datasets:
        if dataset not in config["datasets"]:
            raise WeightspaceError(f"key '{where}.datasets' names dataset '{dataset}', which is not under 'datasets'")
    family_of = {}
    for family, members in families.items():
        for dataset in members:
            if dataset in family_of:
                raise WeightspaceError(
                    f"key '{where}.families': dataset '{dataset}' is in both '{family_of[dataset]}' and "
                    f"'{family}' (each model needs one group)"
                )
            family_of[dataset] = family
    if families:
        missing = [d for d in datasets if d not in family_of]
        if missing:
            raise WeightspaceError(f"key '{where}.families': dataset '{missing[0]}' is in none of them")
    seeds = spec.get("seeds") or config["finetune"]["seeds"]
    sizes = spec.get("sizes") or [None]
    bases = _bases(config, spec)
    for base in bases:
        if base not in config["models"]:
            raise WeightspaceError(f"key '{where}.bases' names model '{base}', which is not under 'models'")
    if len(sizes) > 1 and len(bases) > 1:
        raise WeightspaceError(f"key '{where}': give 'sizes' or 'bases', not both")
    members = [
        Member(d, s, family_of.get(d), n, b, member_path(d, s, n, b, config["base_model"]))
        for d in datasets for b in bases for n in sizes for s in seeds
    ]
    _check_group_by(spec, members, where)
    return members


def group_by(config: dict, name: str) -> list[str]:
    return list(_spec(config, name)["group_by"])


def experiment_reference(config: dict, name: str) -> str:
    """The experiment's `reference`, one of REFERENCES."""
    value = _spec(config, name).get("reference", DEFAULT_REFERENCE)
    if value not in REFERENCES:
        raise WeightspaceError(
            f"key 'geometry.experiments.{name}.reference': expected one of {', '.join(REFERENCES)}, got {value!r}"
        )
    return value


def reference_bases(config: dict, name: str) -> list[str | None]:
    """Per model of experiment_members(config, name), the base model its vector is taken against
    (None: no base, the raw weights)."""
    members = experiment_members(config, name)
    mode = experiment_reference(config, name)
    if mode == "none":
        return [None] * len(members)
    if mode == "own_base":
        return [m.base for m in members]
    return [_bases(config, _spec(config, name))[0]] * len(members)


def experiment_names(config: dict) -> list[str]:
    return sorted(config.get("geometry", {}).get("experiments", {}))


def check_experiments(config: dict) -> None:
    for name in experiment_names(config):
        experiment_members(config, name)
        experiment_reference(config, name)


def _spec(config: dict, name: str) -> dict:
    experiments = config.get("geometry", {}).get("experiments", {})
    if name not in experiments:
        raise WeightspaceError(f"no experiment '{name}' under 'geometry.experiments' (known: {', '.join(experiments)})")
    return experiments[name]


def _bases(config: dict, spec: dict) -> list[str]:
    return spec.get("bases") or [config["base_model"]]


def _families(config: dict, spec: dict, where: str) -> dict[str, list[str]]:
    """The experiment's groups: names of config families, or an explicit {group: [datasets]}."""
    families = spec.get("families") or {}
    if isinstance(families, dict):
        return {str(k): list(v) for k, v in families.items()}
    known = config.get("families", {})
    for family in families:
        if family not in known:
            raise WeightspaceError(
                f"key '{where}.families' names family '{family}', which is not under 'families' "
                f"(known: {', '.join(sorted(known))})"
            )
    return {f: list(known[f]) for f in families}


def _check_group_by(spec: dict, members: list[Member], where: str) -> None:
    if not spec.get("datasets") and not spec.get("families"):
        raise WeightspaceError(f"key '{where}': needs 'datasets' or 'families'")
    for granularity in spec["group_by"]:
        groups = {m.group(granularity) for m in members}
        if granularity == "family" and not spec.get("families"):
            raise WeightspaceError(f"key '{where}.group_by': 'family' needs 'families'")
        if len(groups) < 2:
            raise WeightspaceError(
                f"key '{where}.group_by': '{granularity}' gives {len(groups)} group ({', '.join(groups)}); "
                "clustering needs at least 2"
            )
        if len(groups) >= len(members):
            raise WeightspaceError(
                f"key '{where}.group_by': '{granularity}' gives {len(groups)} groups for {len(members)} models; "
                "clustering needs more models than groups (add seeds)"
            )


# -- the workflow's steps ------------------------------------------------------------------------
# (torch, sklearn and matplotlib are imported inside: the Snakefile imports this module to plan jobs)

PAPER = ("Paper (roberta-base): per dataset 98% accuracy (12 General datasets x 20 seeds, Fig. 2a); "
         "per family 90% (NLI, Sentiment, Topic x 5 seeds, Fig. 2b); Table 1 F1 (majority labels): "
         "tasks NLI 100, Topic 87, Sentiment 83; tasks + Twitter: Twitter 30, NLI 100, Topic 61, Sentiment 71.")


def similarity_step(members: list[dict], model_files, pretrained_files, reference_files, out_path,
                    include_head: bool, memory_mb: float, device) -> None:
    """Task vectors of the experiment's models, their similarities in one pass, as long-form parquet.

    `reference_files`: per model, the base weights its vector is taken against (None: zero).
    """
    from .io import write_parquet
    from .similarity import stream_similarity
    from .taskvectors import task_vector

    vectors = [task_vector(f, p, include_head, name=m["model"]).against(r)
               for m, f, p, r in zip(members, model_files, pretrained_files, reference_files)]
    write_parquet(stream_similarity(vectors, memory_mb, device).long_form(), out_path)


def cluster_step(similarity_path, members: list[dict], group_by: list[str], affinity: str, euclidean_kernel: str,
                 reference: str, seed: int, states: int, summary_path, assignments_path, states_path) -> None:
    """Cluster the models by cosine and by Euclidean distance for every grouping; score both.

    `affinity` turns cosines into affinities, `euclidean_kernel` distances (clustering's
    EUCLIDEAN_KERNELS); `reference` (REFERENCES) is recorded with the scores.

    The assignments are those of random state `seed`; the accuracy is also taken at `states`
    random states (0, 1, ...) for its spread, and beside it the accuracy that shuffled groups reach.
    """
    import json
    import logging

    import numpy as np
    import pandas as pd

    from .clustering import (accuracy_over_states, chance_accuracy, cluster_and_score, cluster_euclidean,
                             cosine_affinity, euclidean_affinity, majority_groups)
    from .intervals import percentile_interval
    from .io import read_parquet, write_parquet
    from .similarity import Similarity

    log = logging.getLogger(__name__)
    experiment = _stem(similarity_path)
    similarity = Similarity.from_long_form(read_parquet(similarity_path))
    by_model = {m["model"]: Member(m["dataset"], m["seed"], m["family"], m["size"], m["base"], m["model"])
                for m in members}
    if set(by_model) != set(similarity.names):
        raise WeightspaceError(f"{similarity_path}: holds other models than the experiment '{experiment}' (rerun similarity)")
    ordered = [by_model[n] for n in similarity.names]
    affinities = {"cosine": cosine_affinity(similarity.cosine, affinity),
                  "euclidean": euclidean_affinity(similarity.euclidean, euclidean_kernel)}
    summary, assignments, spread = [], [], []
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
                "f1": json.dumps(result["f1"]), "f1_majority": json.dumps(result["f1_majority"]),
            })
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


def plots_step(similarity_path, assignments_path, tsne_path, heatmap_path, seed: int, perplexity: float) -> None:
    """t-SNE of the cosine distance (a panel per grouping) and the similarity heatmap."""
    from .clustering import cosine_distance
    from .io import read_parquet
    from .plots import similarity_heatmap, tsne_clusters, tsne_embedding
    from .similarity import Similarity

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


def clustering_table(summary_paths, table_path, markdown_path):
    """Every experiment's clustering scores in results/tables/clustering.{parquet,md}."""
    import json

    import pandas as pd

    from .clustering import EUCLIDEAN_KERNELS
    from .intervals import format_interval
    from .io import write_parquet, write_text
    from .metrics import gather

    rows = gather(summary_paths)
    write_parquet(rows, table_path)
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
    for (experiment, granularity), row in cos.iterrows():
        f1, majority = json.loads(row.f1), json.loads(row.f1_majority)
        cells = ", ".join(f"{g} {f1[g]:.2f} ({majority[g]:.2f})" for g in f1)
        lines.append(f"- {experiment} by {granularity}: {cells}")
    lines += ["", PAPER, ""]
    write_text("\n".join(lines), markdown_path)
    return rows


def _stem(path) -> str:
    from pathlib import Path

    return Path(path).name.split(".")[0]

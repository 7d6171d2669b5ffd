"""Every file name the workflow writes, in one place: the rules build their inputs and outputs from
these functions and the plans their model ids, so a path is spelled once.

A model id names the model's folder under results/models/ and its probe file under
results/metrics/probe/:

    finetuned/{dataset}/seed{seed}                     a finetuned model (the finetune rule)
    finetuned/{dataset}/n{size}/seed{seed}             one trained on `size` examples (App. C)
    finetuned/{dataset}/base-{base}/seed{seed}         one finetuned from another base (App. B)
    external/{name}                                    a checkpoint of the config's `external`, imported
    merged/{granularity}/{pair}/alpha{alpha}           alpha * w1 + (1 - alpha) * w2 (§5.1, §6)
    region/{granularity}/centroid/{set}                mean of In ("in") or of one dataset's models
    region/{granularity}/hull/sample{i}                a Dirichlet sample of In's convex hull (§5.2)
    region/{granularity}/perturbed/sample{i}           pretrained + random Xavier-shaped step (§3.1)
    region/{granularity}/leave/{direction}/r{radius}   a step away from In's centroid (App. F): toward
                                                       the origin or a random direction
    region/{granularity}/leave/toward_pretrained/f{t}  t of the way from In's centroid to the pretrained model

Every function also takes Snakemake wildcards ("{dataset}") in place of values, which is how the
rules spell their output patterns.
"""

from __future__ import annotations

import re

ALPHA_DECIMALS = 4
SPLITS = ("train", "validation", "test")


def format_alpha(alpha) -> str:
    """A coefficient as it appears in paths and tables: at most ALPHA_DECIMALS decimals, no -0.

    0.1 -> '0.1', 3.17 -> '3.17', -31.0 -> '-31', 0.30000000000000004 -> '0.3'. One function for
    every path so that a coefficient always names the same file.
    """
    text = f"{float(alpha):.{ALPHA_DECIMALS}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def natural_key(text) -> list:
    """Sort key that orders 'seed2' before 'seed10'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(text))]


# -- data ------------------------------------------------------------------------------------------

def data_dir(dataset: str) -> str:
    return f"results/data/{dataset}"


def data_files(dataset: str) -> dict[str, str]:
    """The prepared splits and metadata of one dataset, by split name and 'meta'."""
    return {s: f"{data_dir(dataset)}/{s}.parquet" for s in SPLITS} | {"meta": f"{data_dir(dataset)}/meta.json"}


# -- models ----------------------------------------------------------------------------------------

def pretrained_dir(base: str) -> str:
    return f"results/models/pretrained/{base}"


def finetuned_path(dataset: str, seed, size=None, base: str | None = None) -> str:
    """A finetuned model's path under results/models/finetuned/ (and results/metrics/finetune/):
    `size` for a run on a subsample, `base` for a run from a base other than the config's."""
    parts = [dataset]
    if base is not None:
        parts.append(f"base-{base}")
    if size is not None:
        parts.append(f"n{size}")
    return "/".join(parts + [f"seed{seed}"])


def finetuned_id(dataset: str, seed) -> str:
    return f"finetuned/{finetuned_path(dataset, seed)}"


def external_id(name: str) -> str:
    return f"external/{name}"


def centroid_id(granularity: str, member_set: str) -> str:
    return f"region/{granularity}/centroid/{member_set}"


def merged_id(granularity: str, pair: str, alpha) -> str:
    """A point of a line; `alpha` is formatted unless it is a wildcard."""
    text = alpha if isinstance(alpha, str) else format_alpha(alpha)
    return f"merged/{granularity}/{pair}/alpha{text}"


def sample_id(granularity: str, kind: str, sample: int) -> str:
    """Sample `sample` of a granularity's convex hull (kind 'hull') or of its exterior ('perturbed')."""
    return f"region/{granularity}/{kind}/sample{sample}"


def leave_id(granularity: str, direction: str, step) -> str:
    """A step from In's centroid: a fraction of the way toward the pretrained model, else a radius."""
    prefix = "f" if direction == "toward_pretrained" else "r"
    return f"region/{granularity}/leave/{direction}/{prefix}{format_alpha(step)}"


def model_dir(model: str) -> str:
    """The folder of the model with id `model`."""
    return f"results/models/{model}"


def weights_path(model: str) -> str:
    return f"{model_dir(model)}/model.safetensors"


def stats_path(centroid: str) -> str:
    """The statistics (JSON) of the region centroid with id `centroid`."""
    return f"results/metrics/{centroid}.json"


def probe_result(model: str) -> str:
    return f"results/metrics/probe/{model}.parquet"


def finetune_metrics(path: str) -> str:
    """The metrics of the finetuned model at `path` (finetuned_path)."""
    return f"results/metrics/finetune/{path}.parquet"


def centre_dir(centre: str, target: str) -> str:
    """A centre of the datasets other than `target` (§7): the centroid, or a merge of another kind."""
    if centre == "centroid":
        return f"results/models/centroid/{target}"
    return f"results/models/centre/{centre}/{target}"


def efficient_metrics(method: str, target: str, start: str, shots, seed) -> str:
    """One BitFit / LoRA run's metrics."""
    return f"results/metrics/{method}/{target}/{start}/{shots}/seed{seed}.parquet"


def similarity_file(experiment: str) -> str:
    """Every pairwise similarity of a geometry experiment's task vectors (long form)."""
    return f"results/metrics/similarity/{experiment}.parquet"


def clustering_files(experiment: str) -> dict[str, str]:
    """A geometry experiment's clustering: scores, F1 per group, each model's cluster, accuracy per random state."""
    stem = f"results/metrics/clustering/{experiment}"
    return {"summary": f"{stem}.parquet", "f1": f"{stem}.f1.parquet", "assignments": f"{stem}.assignments.parquet",
            "states": f"{stem}.states.parquet"}


# -- tables and plots ------------------------------------------------------------------------------

def table(name: str, ext: str = "parquet") -> str:
    return f"results/tables/{name}.{ext}"


def plot(name: str) -> str:
    return f"results/plots/{name}.png"

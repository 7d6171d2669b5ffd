import functools
import os
import re
import sys
from pathlib import Path

from weightspace.config import families_of, load_yaml, validated_config
from weightspace.errors import WeightspaceError

ROOT = Path(workflow.basedir)

try:
    for configfile in workflow.configfiles:
        load_yaml(configfile)  # Snakemake's reader lets a key given twice win unseen
    config.update(
        validated_config(
            config,
            ROOT / "workflow/schemas/config.schema.yaml",
            source=", ".join(map(str, workflow.configfiles)) or "config",
        )
    )
except WeightspaceError as err:
    sys.exit(f"error: {err}")

if not any(
    spec["source"] == "hf" for spec in [*config["datasets"].values(), *config["models"].values()]
):
    # Nothing in this config comes from a hub: make sure no library reaches for one.
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

DATASETS = sorted(config["datasets"])
SEEDS = config["finetune"]["seeds"]
BASE = config["base_model"]


wildcard_constraints:
    dataset="|".join(map(re.escape, DATASETS)),
    base="|".join(map(re.escape, config["models"])),
    seed=r"\d+",


def data_files(dataset):
    """The prepared splits and metadata of one dataset."""
    folder = f"results/data/{dataset}"
    return {s: f"{folder}/{s}.parquet" for s in ("train", "validation", "test")} | {
        "meta": f"{folder}/meta.json"
    }


def pretrained_dir(base=BASE):
    return f"results/models/pretrained/{base}"


def finetuned_weights(dataset, seed):
    return f"results/models/finetuned/{dataset}/seed{seed}/model.safetensors"


def finetune_metrics(dataset, seed):
    return f"results/metrics/finetune/{dataset}/seed{seed}.parquet"


def finetune_grid():
    """Every (dataset, seed) of the config's finetuning grid."""
    return [(d, s) for d in DATASETS for s in SEEDS]


def gpu_runtime(passes):
    """The `runtime` resource (minutes) of a GPU rule, for cluster executors: grows with the
    examples in the meta.json files among the job's inputs (trained `passes` times) and with
    each retry; see the config's `cluster` section and weightspace.cluster."""
    from weightspace.cluster import runtime_minutes

    def runtime(wildcards, input, attempt):
        metas = [f for f in input if f.endswith("meta.json")]
        return runtime_minutes(metas, passes, config["cluster"], attempt)

    return runtime


@functools.cache
def geometry_models(experiment):
    """The models of a `geometry` experiment: records, finetuned and pretrained weights, and the
    weights each is measured from (None: zero)."""
    from weightspace.geometry import experiment_members, reference_bases

    members = experiment_members(config, experiment)
    return {
        "records": [m.record() for m in members],
        "weights": [f"results/models/finetuned/{m.path}/model.safetensors" for m in members],
        "pretrained": [f"{pretrained_dir(m.base)}/model.safetensors" for m in members],
        "reference": [None if b is None else f"{pretrained_dir(b)}/model.safetensors"
                      for b in reference_bases(config, experiment)],
    }


def centroid_members(target):
    """Weights of the models finetuned on the centroid group's other datasets, by dataset."""
    from weightspace.centroid_plan import group_datasets, leave_one_out

    others = leave_one_out(group_datasets(config), target)
    return {d: [finetuned_weights(d, s) for s in SEEDS] for d in others}


def efficient_start(start, target):
    """The weights a BitFit / LoRA run starts from: the pretrained model or a centre."""
    if start == "pretrained":
        return f"{pretrained_dir()}/model.safetensors"
    if start == "centroid":
        return f"results/models/centroid/{target}/model.safetensors"
    return f"results/models/centre/{start}/{target}/model.safetensors"


def efficient_metrics(target, start, shots, seed):
    return f"results/metrics/{config['centroid']['method']}/{target}/{start}/{shots}/seed{seed}.parquet"


@functools.cache
def region():
    """The plan of the config's `region` section: every model, its recipe and targets."""
    from weightspace.region_plan import region_plan

    return region_plan(config)


def region_weights(model):
    """Weights of a model of the region plan that is on disk (finetuned/..., region/.../centroid/...)."""
    from weightspace.region_plan import weights_path

    return weights_path(model)


def probe_result(model):
    return f"results/metrics/probe/{model}.parquet"


def region_recipe(model):
    if model not in region().models:
        raise ValueError(f"region: no model '{model}' in the config's region plan")
    return region().models[model]


def probed_model(wildcards):
    if hasattr(wildcards, "model"):
        return wildcards.model
    return f"merged/{wildcards.granularity}/{wildcards.pair}/alpha{wildcards.alpha}"


def probe_recipe(wildcards):
    """The recipe of the model a probe job scores, its model ids as files (a line point outside the
    configured alphas gets the line's recipe)."""
    from weightspace.region_plan import line_recipe, recipe_files

    model = probed_model(wildcards)
    if model in region().models:
        return recipe_files(model, region().models[model])
    if not hasattr(wildcards, "pair"):
        raise ValueError(f"region: no model '{model}' in the config's region plan")
    ends = region().granularities[wildcards.granularity].pairs[wildcards.pair]
    return recipe_files(model, line_recipe(*ends, wildcards.alpha))


def probe_sources(wildcards):
    """The files a probe job builds its model from: weights (with the config of a model read from its
    folder), and In's statistics where the recipe reads them."""
    recipe = probe_recipe(wildcards)
    sources = list(recipe["sources"])
    if recipe["kind"] in ("finetuned", "centroid"):
        sources.append(str(Path(sources[0]).with_name("config.json")))
    return sources + ([recipe["stats"]] if recipe["stats"] else [])


def probe_targets(wildcards):
    """The targets a model is probed on; a (pair, alpha) outside the configured grid gets the pair's."""
    model = probed_model(wildcards)
    if model in region().targets:
        return sorted(region().targets[model])
    if not hasattr(wildcards, "pair"):
        raise ValueError(f"region: no model '{model}' in the config's region plan")
    return region().granularities[wildcards.granularity].pair_targets[wildcards.pair]


def probe_data(wildcards):
    splits = ("test", "meta", config["region"]["probe"]["fit_split"])
    return [f for t in probe_targets(wildcards) for k, f in data_files(t).items() if k in splits]


def claims_inputs(wildcards):
    """The tables the claims are checked against: those of the sections the config runs."""
    inputs = {}
    if config.get("region") is not None:
        inputs |= {name: f"results/tables/{name}.parquet" for name in ("region_losses", "region_effects", "pb")}
    if config.get("geometry") is not None and config["geometry"]["experiments"]:
        inputs["clustering"] = "results/tables/clustering.parquet"
        inputs["clustering_states"] = [
            f"results/metrics/clustering/{e}.states.parquet" for e in sorted(config["geometry"]["experiments"])
        ]
    if config.get("centroid") is not None:
        inputs["centroid_runs"] = "results/tables/centroid_runs.parquet"
    return inputs


def all_targets():
    targets = ["results/tables/finetune.md"]
    if config.get("centroid") is not None:
        targets += ["results/tables/centroid.md", "results/plots/centroid_gain.png"]
    if config.get("region") is not None:
        targets += ["results/tables/pb.md"] + [
            f"results/plots/{p}.png" for p in ("interpolation", "extrapolation", "loss_distributions", "leave_centroid")
        ]
    if config.get("geometry") is not None and config["geometry"]["experiments"]:
        experiments = sorted(config["geometry"]["experiments"])
        targets += ["results/tables/clustering.md"] + [
            f"results/plots/{kind}_{e}.png" for e in experiments for kind in ("tsne", "similarity")
        ]
    if any(config.get(section) is not None for section in ("region", "geometry", "centroid")):
        targets.append("results/tables/claims.md")
    return targets


# After a crash (README "After a crash"): a lock that no running Snakemake holds, and what the
# killed jobs left, are cleared before Snakemake looks at them. Only in the process the user
# started: a cluster job parses this file too, while the run that submitted it holds the lock.
from weightspace.resume import clear_crashed_run, record_lock_holder

if not (workflow.remote_exec or workflow.subprocess_exec):
    from snakemake.logging import logger

    for done in clear_crashed_run():
        logger.warning(f"weightspace: {done}")


onstart:
    # the main process, once it holds the lock (not in a dry run, not in a cluster job)
    record_lock_holder()

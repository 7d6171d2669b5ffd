# The config, checked once, and what the rule files share (paths from weightspace.paths, the one
# place a file name is spelled; input functions from wildcards to files; the targets of a run).
import functools
import os
import re
import sys
from pathlib import Path

from weightspace import external, paths
from weightspace.centroid import plan as centroid_plan
from weightspace.config import experiment_settings, families_of, load_yaml, validated_config
from weightspace.errors import WeightspaceError
from weightspace.geometry import plan as geometry_plan
from weightspace.region.plan import TABLE_ROLES, in_stats_paths, line_recipe, recipe_files, region_plan

ROOT = Path(workflow.basedir)
SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"

try:
    for configfile in workflow.configfiles:
        load_yaml(configfile)  # Snakemake's reader lets a key given twice win unseen
    config.update(
        validated_config(config, SCHEMA, source=", ".join(map(str, workflow.configfiles)) or "config")
    )
except WeightspaceError as err:
    sys.exit(f"error: {err}")

if not any(
    spec["source"] == "hf" for spec in [*config["datasets"].values(), *config["models"].values()]
) and not any(spec.get("hub") for spec in config["external"].values()):
    # Nothing in this config comes from a hub: make sure no library reaches for one.
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

DATASETS = sorted(config["datasets"])
SEEDS = config["finetune"]["seeds"]
BASE = config["base_model"]
# geometry, region and centroid: the config's section, or the schema's defaults where it is off
SETTINGS = experiment_settings(config, SCHEMA)
ENVIRONMENT = "../../envs/weightspace.yaml"


def one_of(names):
    """A wildcard constraint that matches exactly the given names (nothing when there are none)."""
    return "|".join(map(re.escape, names)) or "(?!)"


def geometry_experiments():
    return geometry_plan.experiment_names(config)


wildcard_constraints:
    dataset=one_of(DATASETS),
    base=one_of(config["models"]),
    seed=r"\d+",
    experiment=one_of(geometry_experiments()),


def pretrained_weights(base=BASE):
    return f"{paths.pretrained_dir(base)}/model.safetensors"


def finetuned_weights(path):
    """The weights of the finetuned model at `path` (paths.finetuned_path)."""
    return paths.weights_path(f"finetuned/{path}")


def finetuned_config(path):
    return f"{paths.model_dir(f'finetuned/{path}')}/config.json"


def gpu_runtime(passes):
    """The `runtime` resource (minutes) of a GPU rule, for cluster executors: grows with the
    examples in the meta.json files among the job's inputs (trained `passes` times) and with
    each retry; see the config's `cluster` section and weightspace.slurm_runtime."""
    from weightspace.slurm_runtime import runtime_minutes

    def runtime(wildcards, input, attempt):
        metas = [f for f in input if f.endswith("meta.json")]
        return runtime_minutes(metas, passes, config["cluster"], attempt)

    return runtime


# -- data and finetuning ---------------------------------------------------------------------------


def dataset_files(wildcards):
    return paths.data_files(wildcards.dataset)


def dataset_spec(wildcards):
    return config["datasets"][wildcards.dataset]


def dataset_families(wildcards):
    return families_of(config, wildcards.dataset)


def model_spec(wildcards):
    return config["models"][wildcards.base]


def external_spec(wildcards):
    return config["external"][wildcards.name]


def external_source_files(wildcards):
    return external.source_files(wildcards.name, external_spec(wildcards))


def external_base(wildcards):
    return external.base_of(config, wildcards.name)


def external_base_weights(wildcards):
    return pretrained_weights(external_base(wildcards))


def finetune_metrics_files():
    """The metrics of every (dataset, seed) of the config's finetuning grid."""
    return [paths.finetune_metrics(paths.finetuned_path(d, s)) for d in DATASETS for s in SEEDS]


# -- geometry --------------------------------------------------------------------------------------


@functools.cache
def geometry_models(experiment):
    """The models of a `geometry` experiment: records, finetuned and pretrained weights, and the
    weights each is measured from (None: zero)."""
    members = geometry_plan.experiment_members(config, experiment)
    return {
        "records": [m.record() for m in members],
        "weights": [paths.weights_path(m.model_id) for m in members],
        "pretrained": [pretrained_weights(m.base) for m in members],
        "reference": [None if b is None else pretrained_weights(b) for b in geometry_plan.reference_bases(config, experiment)],
    }


def experiment_models(wildcards):
    return geometry_models(wildcards.experiment)


def experiment_weights(wildcards):
    return geometry_models(wildcards.experiment)["weights"]


def experiment_bases(wildcards):
    return sorted(set(geometry_models(wildcards.experiment)["pretrained"]))


def experiment_records(wildcards):
    return geometry_models(wildcards.experiment)["records"]


def clustering_files(kind):
    """One kind of paths.clustering_files of every geometry experiment."""
    return [paths.clustering_files(e)[kind] for e in geometry_experiments()]


def experiment_grouping(wildcards):
    """The experiment's groupings (`group_by`) and what its vectors are measured from."""
    return {"group_by": geometry_plan.group_by(config, wildcards.experiment),
            "reference": geometry_plan.experiment_reference(config, wildcards.experiment)}


# -- centroid --------------------------------------------------------------------------------------


def centre_members(wildcards):
    """Weights of the models a target's centres are made of, by dataset (centroid_plan.centre_models)."""
    models = centroid_plan.centre_models(config, wildcards.target)
    return {d: [paths.weights_path(m) for m in ids] for d, ids in models.items()}


def centre_member_weights(wildcards):
    return [w for weights in centre_members(wildcards).values() for w in weights]


def efficient_start(wildcards):
    """The weights a BitFit / LoRA run starts from: the pretrained model or a centre."""
    if wildcards.start == "pretrained":
        return pretrained_weights()
    return f"{paths.centre_dir(wildcards.start, wildcards.target)}/model.safetensors"


def target_files(wildcards):
    return paths.data_files(wildcards.target)


def efficient_metrics(target, start, shots, seed):
    return paths.efficient_metrics(SETTINGS["centroid"]["method"], target, start, shots, seed)


# -- region ----------------------------------------------------------------------------------------


@functools.cache
def region():
    """The plan of the config's `region` section: every model, its recipe and targets."""
    return region_plan(config)


def region_recipe(model):
    if model not in region().models:
        raise ValueError(f"region: no model '{model}' in the config's region plan")
    return region().models[model]


def region_centroid_members(wildcards):
    """The model ids of the models a region centroid averages."""
    return list(region_recipe(paths.centroid_id(wildcards.granularity, wildcards.set)).sources)


def region_centroid_weights(wildcards):
    return [paths.weights_path(m) for m in region_centroid_members(wildcards)]


def probed_model(wildcards):
    if hasattr(wildcards, "model"):
        return wildcards.model
    return paths.merged_id(wildcards.granularity, wildcards.pair, wildcards.alpha)


def probe_recipe(wildcards):
    """The recipe of the model a probe job scores, its model ids as files (a line point outside the
    configured alphas gets the line's recipe)."""
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
    splits = ("test", "meta", SETTINGS["region"]["probe"]["fit_split"])
    return [f for t in probe_targets(wildcards) for k, f in paths.data_files(t).items() if k in splits]


def probe_data_dirs(wildcards):
    return {t: paths.data_dir(t) for t in probe_targets(wildcards)}


def probe_settings():
    probe = SETTINGS["region"]["probe"]
    return {**probe, "max_length": probe["max_length"] or config["finetune"]["max_length"]}


def region_probes(part):
    """The probe results one part of the region tables reads (weightspace.region.plan.TABLE_ROLES)."""
    return section_inputs("region", [paths.probe_result(m) for m in region().probe_ids(TABLE_ROLES[part])])


def region_stats():
    return list(in_stats_paths(region()).values())


# -- targets ---------------------------------------------------------------------------------------


def claims_inputs(wildcards):
    """The tables the claims are checked against: those of the sections the config runs."""
    inputs = {}
    if runs("region"):
        inputs |= {name: paths.table(name) for name in ("region_losses", "region_effects", "pb")}
    if runs("geometry"):
        inputs["clustering"] = paths.table("clustering")
        inputs["clustering_states"] = clustering_files("states")
    if runs("centroid"):
        inputs["centroid_runs"] = paths.table("centroid_runs")
    return inputs


def runs(section):
    """Whether the config runs experiment `section` (geometry: with at least one experiment)."""
    if section == "geometry":
        return bool(geometry_experiments())
    return config.get(section) is not None


def section_inputs(section, files):
    """The inputs of a table of experiment `section`: `files`, or a one-line error when the config does
    not run it (a target of that experiment asked for by name)."""

    def inputs(wildcards):
        if not runs(section):
            raise WeightspaceError(f"the config does not run '{section}': add a '{section}:' section to "
                                   "build this (config/README.md)")
        return files

    return inputs


# The Snakefile's target rules, by the experiment each needs (None: every config runs it).
PAPER_ITEMS = {
    "finetune_scores": None,
    "fig2_tsne": "geometry",
    "similarity_heatmaps": "geometry",
    "table1_f1": "geometry",
    "fig3_interpolation": "region",
    "fig4_pb": "region",
    "fig5_extrapolation": "region",
    "appF_leave_centroid": "region",
    "table2_3_centroid": "centroid",
}


def paper_targets():
    """The paper items (the target rules of the Snakefile) that this config runs, and the claims
    where it runs an experiment."""
    targets = [item for item, section in PAPER_ITEMS.items() if section is None or runs(section)]
    return targets + (["paper_claims"] if len(targets) > 1 else [])


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

import os
import re
import sys
from pathlib import Path

from weightspace.config import families_of, validated_config
from weightspace.errors import WeightspaceError

ROOT = Path(workflow.basedir)

try:
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
DEMO_DIR = ROOT / "resources/demo"


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


def all_targets():
    return ["results/tables/finetune.md"]

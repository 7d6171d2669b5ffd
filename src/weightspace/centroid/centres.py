"""Starting points built from other datasets' finetuned models (paper §7, App. H).

For a target dataset t of a group, the members are the models finetuned on the group's other
datasets. Their centroid is the paper's start; task arithmetic (Ilharco et al., 2023) and TIES
(Yadav et al., 2023) are two other centres of the same models, beyond the paper, so the table can
say whether the plain mean is the best start. Every centre is a bare encoder in the pretrained
model's naming, so `models.load_classifier` puts a new head on it.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from peft.utils.merge_utils import ties

from ..checkpoints import check_checkpoint
from ..errors import WeightspaceError
from ..merging import aligned_tensors, combine, save_encoder
from .plan import CENTRES


def centroid(members: Mapping[str, Sequence], pretrained_dir, out_dir, command: str | None = None) -> None:
    """The mean encoder of every member model (all datasets, all seeds), as in the paper.

    `command`, what made it, goes into the folder's model card (as in the other centres).
    """
    models = [m for seeds in members.values() for m in seeds]
    combine(models, [1.0 / len(models)] * len(models), pretrained_dir, out_dir,
            metadata={"centre": "centroid", "datasets": ",".join(members), "models": len(models)},
            title=f"Centroid of {len(models)} finetuned models", command=command, classifier_start=True)


def task_arithmetic(members: Mapping[str, Sequence], pretrained_dir, out_dir, scale: float,
                    command: str | None = None) -> None:
    """w0 + scale * sum over datasets of the dataset's task vector (the mean over its seeds).

    With scale = 1 / number of datasets this is the centroid; larger scales extrapolate.
    """
    models, coefficients = [], []
    for seeds in members.values():
        models += list(seeds)
        coefficients += [scale / len(seeds)] * len(seeds)
    combine([pretrained_dir, *models], [1.0 - scale * len(members), *coefficients], pretrained_dir, out_dir,
            metadata={"centre": "task_arithmetic", "scale": scale, "datasets": ",".join(members)},
            title=f"Task arithmetic over {len(members)} datasets' finetuned models ({len(models)} models)",
            command=command, classifier_start=True)


def ties_merge(members: Mapping[str, Sequence], pretrained_dir, out_dir, density: float, scale: float,
               command: str | None = None) -> None:
    """w0 + scale * TIES(task vectors of the datasets), tensor by tensor.

    A dataset's task vector is the mean over its seeds. peft's `ties` trims each to its top
    `density` share by magnitude, elects a sign per entry by the summed mass and averages the
    entries that agree with it. The trim is per tensor (as in peft and mergekit), not over the
    whole flattened vector as in the TIES paper.
    """
    models = [m for seeds in members.values() for m in seeds]
    for model in models:
        check_checkpoint(model, pretrained_dir)
    merged = {}
    for name, w0, tensors in aligned_tensors(models, pretrained_dir):
        start = w0.to(torch.float32)
        vectors = [torch.stack([next(tensors).to(torch.float32) for _ in seeds]).mean(0) - start
                   for seeds in members.values()]
        merged[name] = (start + scale * ties(vectors, torch.ones(len(vectors)), density)).to(w0.dtype)
    save_encoder(merged, pretrained_dir, out_dir,
                 metadata={"centre": "ties", "density": density, "scale": scale, "datasets": ",".join(members)},
                 title=f"TIES merge of {len(members)} datasets' finetuned models ({len(models)} models)",
                 command=command, classifier_start=True)


def build_centre(kind: str, members: Mapping[str, Sequence], pretrained_dir, out_dir, settings: dict,
                 command: str | None = None) -> None:
    """Write the centre `kind` of the member models (settings: the config's `centroid` section);
    `command` is what made it, for its model card."""
    if kind == "centroid":
        centroid(members, pretrained_dir, out_dir, command)
    elif kind == "task_arithmetic":
        task_arithmetic(members, pretrained_dir, out_dir, settings["task_arithmetic"]["scale"], command)
    elif kind == "ties":
        ties_merge(members, pretrained_dir, out_dir, settings["ties"]["density"], settings["ties"]["scale"], command)
    else:
        raise WeightspaceError(f"unknown centre '{kind}' (expected one of: {', '.join(CENTRES)})")

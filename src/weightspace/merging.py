"""New points in weight space from finetuned models: w = sum_i c_i * w_i over the encoder.

Interpolation, extrapolation, centroids and convex-hull samples are all this one operation with
different coefficients. It streams tensor by tensor, so memory holds one tensor per model.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open

from .errors import WeightspaceError
from .io import save_tensors
from .models import WEIGHTS, encoder_key_map


def combine(checkpoints: Sequence, coefficients: Sequence[float], pretrained_dir, out_dir,
            metadata: dict | None = None) -> None:
    """Write sum_i coefficients[i] * encoder(checkpoints[i]) as a bare encoder into out_dir.

    `checkpoints` are model folders or model.safetensors files (finetuned, or bare encoders such as
    other merges). Encoder tensors a checkpoint lacks (an unused pooler) are the pretrained ones.
    The result has the pretrained model's tensor names and config, so load_encoder() reads it.
    """
    if len(checkpoints) != len(coefficients) or not checkpoints:
        raise WeightspaceError(f"combine: {len(checkpoints)} checkpoints but {len(coefficients)} coefficients")
    pretrained_dir = Path(pretrained_dir)
    files = [_weights_file(c) for c in checkpoints]
    with safe_open(str(pretrained_dir / WEIGHTS), framework="pt") as base:
        names = list(base.keys())
        handles = [safe_open(str(f), framework="pt") for f in files]
        maps = [encoder_key_map(h.keys(), names) for h in handles]
        merged = {}
        for name in names:
            acc = None
            for handle, key_map, coef in zip(handles, maps, coefficients):
                key = key_map[name]
                tensor = (handle.get_tensor(key) if key else base.get_tensor(name)).to(torch.float32)
                acc = coef * tensor if acc is None else acc + coef * tensor
            merged[name] = acc.to(base.get_tensor(name).dtype)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(pretrained_dir / "config.json", out_dir / "config.json")
    save_tensors(merged, out_dir / WEIGHTS, metadata={k: str(v) for k, v in (metadata or {}).items()})


def _weights_file(checkpoint) -> Path:
    path = Path(checkpoint)
    return path if path.suffix == ".safetensors" else path / WEIGHTS

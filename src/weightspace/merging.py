"""New points in weight space from finetuned models: w = sum_i c_i * w_i over the encoder.

Interpolation, extrapolation, centroids and convex-hull samples are all this one operation with
different coefficients. It streams tensor by tensor, so memory holds one tensor per model.
"""

from __future__ import annotations

import shutil
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Sequence

import torch
from safetensors import safe_open

from .checkpoints import FLOATING, WEIGHTS, check_checkpoint, encoder_key_map, weights_file
from .errors import WeightspaceError
from .io import save_tensors
from .region_plan import format_alpha

_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def combined_tensors(checkpoints: Sequence, coefficients: Sequence[float], pretrained_dir) -> dict[str, torch.Tensor]:
    """sum_i coefficients[i] * encoder(checkpoints[i]), by the pretrained encoder's tensor names.

    `checkpoints` are model folders or model.safetensors files (finetuned, or bare encoders such as
    other merges); each must fit the pretrained encoder (checkpoints.check_checkpoint). Encoder
    tensors a checkpoint lacks (an unused pooler) are the pretrained ones; non-floating tensors
    are copied from the pretrained model.
    """
    if len(checkpoints) != len(coefficients) or not checkpoints:
        raise WeightspaceError(f"combine: {len(checkpoints)} checkpoints but {len(coefficients)} coefficients")
    pretrained_dir = Path(pretrained_dir)
    for checkpoint in checkpoints:
        check_checkpoint(checkpoint, pretrained_dir)
    # A zero coefficient drops its model: alpha = 1 or 0 on a line then copies an endpoint bit for bit
    # (0 * w would turn a stored -0.0 into +0.0), and its tensors are not read at all.
    used = [(c, k) for c, k in zip(checkpoints, coefficients) if k != 0] or [(checkpoints[0], 0.0)]
    files = [weights_file(c) for c, _ in used]
    with ExitStack() as stack:
        base = stack.enter_context(safe_open(str(pretrained_dir / WEIGHTS), framework="pt"))
        names = list(base.keys())
        handles = [stack.enter_context(safe_open(str(f), framework="pt")) for f in files]
        maps = [encoder_key_map(h.keys(), names) for h in handles]
        merged = {}
        for name in names:
            if base.get_slice(name).get_dtype() not in FLOATING:
                # integer buffers (position_ids) are not weights: a weighted sum would truncate them
                merged[name] = base.get_tensor(name)
                continue
            acc = None
            for handle, key_map, (_, coef) in zip(handles, maps, used):
                key = key_map[name]
                term = coef * (handle.get_tensor(key) if key else base.get_tensor(name)).to(torch.float32)
                acc = term if acc is None else acc + term
            merged[name] = acc.to(_DTYPES[base.get_slice(name).get_dtype()])
    return merged


def combine(checkpoints: Sequence, coefficients: Sequence[float], pretrained_dir, out_dir,
            metadata: dict | None = None) -> None:
    """Write combined_tensors(...) as a bare encoder into out_dir (the pretrained model's names and
    config, so load_encoder() reads it)."""
    save_encoder(combined_tensors(checkpoints, coefficients, pretrained_dir), pretrained_dir, out_dir, metadata)


def line_coefficients(alpha) -> tuple[float, float]:
    """(alpha, 1 - alpha), with 1 - alpha computed in decimal so that swapping the endpoints is exact.

    In binary floating point 1 - (1 - a) != a (0.1 -> 0.09999999999999998); from the alpha's
    decimal text both coefficients are exact decimals, so line_coefficients(1 - a) is the reverse
    of line_coefficients(a) for every alpha with at most region_plan.ALPHA_DECIMALS decimals.
    """
    a = Decimal(format_alpha(alpha))
    return float(a), float(1 - a)


def line_tensors(w1, w2, alpha, pretrained_dir) -> dict[str, torch.Tensor]:
    """alpha * w1 + (1 - alpha) * w2 over the encoder (alpha outside [0, 1] extrapolates).

    Exact at the ends: alpha = 1 is w1's encoder and alpha = 0 is w2's, bit for bit. Symmetric:
    line_tensors(w1, w2, a) and line_tensors(w2, w1, 1 - a) are the same tensors (float addition
    of two terms commutes and the coefficients are the same two numbers).
    """
    return combined_tensors([w1, w2], list(line_coefficients(alpha)), pretrained_dir)


def interpolate(w1, w2, alpha, pretrained_dir, out_dir, metadata: dict | None = None) -> None:
    """Write line_tensors(w1, w2, alpha) as a bare encoder into out_dir."""
    save_encoder(line_tensors(w1, w2, alpha, pretrained_dir), pretrained_dir, out_dir,
                 metadata={"alpha": format_alpha(alpha), **(metadata or {})})


def save_encoder(tensors: dict, pretrained_dir, out_dir, metadata: dict | None = None) -> None:
    """Write bare-encoder tensors with the pretrained model's config, so load_encoder() reads them."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(pretrained_dir) / "config.json", out_dir / "config.json")
    save_tensors(tensors, out_dir / WEIGHTS, metadata={k: str(v) for k, v in (metadata or {}).items()})

"""New points in weight space from finetuned models: w = sum_i c_i * w_i over the encoder.

Interpolation, extrapolation, centroids and convex-hull samples are all this one operation with
different coefficients. It streams tensor by tensor, so memory holds one tensor per model.
"""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .checkpoints import WEIGHTS, check_checkpoint, encoder_key_map, weights_file
from .errors import WeightspaceError
from .io import open_weights, save_tensors
from .paths import format_alpha


def aligned_tensors(checkpoints: Sequence, pretrained_dir) -> Iterator[tuple[str, torch.Tensor, Iterator[torch.Tensor]]]:
    """Per tensor of the pretrained encoder, in its order: (name, pretrained tensor, each
    checkpoint's tensor under that name, read as the iterator is consumed), so that one member's
    copy of a tensor is in memory at a time. Consume it before the next name.

    A tensor a checkpoint lacks (an unused pooler) did not move: the pretrained one stands in. Each
    file is opened once and closed when the loop ends (or is abandoned).
    """
    pretrained = Path(pretrained_dir) / WEIGHTS
    files = [weights_file(c) for c in checkpoints]
    with open_weights([pretrained, *files]) as handles:
        base = handles[pretrained]
        names = list(base.keys())
        members = [handles[f] for f in files]
        maps = [encoder_key_map(h.keys(), names) for h in members]
        for name in names:
            w0 = base.get_tensor(name)
            yield name, w0, (w0 if m[name] is None else h.get_tensor(m[name]) for h, m in zip(members, maps))


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
    merged = {}
    for name, w0, tensors in aligned_tensors([c for c, _ in used], pretrained_dir):
        if not w0.is_floating_point():
            # integer buffers (position_ids) are not weights: a weighted sum would truncate them
            merged[name] = w0
            continue
        acc = None
        for tensor, (_, coef) in zip(tensors, used):
            term = coef * tensor.to(torch.float32)
            acc = term if acc is None else acc + term
        merged[name] = acc.to(w0.dtype)
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
    of line_coefficients(a) for every alpha with at most paths.ALPHA_DECIMALS decimals.
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

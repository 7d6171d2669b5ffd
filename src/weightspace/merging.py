"""New points in weight space from finetuned models: w = sum_i c_i * w_i over the encoder.

Interpolation, extrapolation, centroids and convex-hull samples are all this one operation with
different coefficients. It streams slice by slice (Combination), so a merge written to disk holds
a few MB, not a model.
"""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Iterator, Sequence

import torch

from .checkpoints import FLOATING, WEIGHTS, check_checkpoint, encoder_key_map, tensor_header, tokenizer_files, weights_file
from .errors import WeightspaceError
from .io import (DTYPES, TensorReader, copy_file, intra_op_threads, load_tensors, open_weights, save_tensors,
                 tensor_writer)
from .model_card import write_model_card
from .models import classifier_encoder_names
from .paths import format_alpha

_SLICE = 1 << 20  # elements of a tensor summed at a time: the sum and a member's slice, 4 MB each, stay in L3

ENCODER_NOTES = (
    "A bare encoder in the base model's architecture, without a task head: load it with `AutoModel`, or with "
    "`AutoModelForSequenceClassification.from_pretrained(folder, num_labels=K)` for a new, untrained head. "
    "The base model's pooler, if it has one, is kept: transformers reports it as unexpected for a classification "
    "head that does not use it (RoBERTa's does not).",
)
START_NOTES = (
    "A start to finetune from: a bare encoder in the base model's architecture, without a task head. Load it with "
    "`AutoModelForSequenceClassification.from_pretrained(folder, num_labels=K)` for a new, untrained head; every "
    "tensor it holds is one the classifier reads. Encoder tensors the classifier does not have (RoBERTa's pooler) "
    "are left out, so `AutoModel` initialises such a pooler afresh.",
)


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
    """sum_i coefficients[i] * encoder(checkpoints[i]), by the pretrained encoder's tensor names, in
    memory (Combination.tensors)."""
    return Combination(checkpoints, coefficients, pretrained_dir).tensors()


class Combination:
    """sum_i coefficients[i] * encoder(checkpoints[i]), by the pretrained encoder's tensor names.

    `checkpoints` are model folders or model.safetensors files (finetuned, or bare encoders such as
    other merges); each must fit the pretrained encoder (checkpoints.check_checkpoint). Encoder
    tensors a checkpoint lacks (an unused pooler) are the pretrained ones; non-floating tensors
    are copied from the pretrained model. tensors() computes it in memory; write() streams it
    into a safetensors file, holding a slice, not a model; save_encoder takes either.

    Each tensor is summed in slices of _SLICE elements: every member's slice is read by pread
    (io.TensorReader) into a buffer that stays in the CPU's cache, scaled and added there, so the
    members' weights are copied once out of the page cache and the arithmetic costs little more.
    The terms are added in order (the first one's product, then each next one added), as plain
    tensor arithmetic would. The arithmetic runs on one thread: on slices of this size a second one
    costs more in hand-offs than it saves (make bench).
    """

    def __init__(self, checkpoints: Sequence, coefficients: Sequence[float], pretrained_dir):
        if len(checkpoints) != len(coefficients) or not checkpoints:
            raise WeightspaceError(f"combine: {len(checkpoints)} checkpoints but {len(coefficients)} coefficients")
        pretrained_dir = Path(pretrained_dir)
        for checkpoint in checkpoints:
            check_checkpoint(checkpoint, pretrained_dir)
        # A zero coefficient drops its model: alpha = 1 or 0 on a line then copies an endpoint bit for
        # bit (0 * w would turn a stored -0.0 into +0.0), and its tensors are not read at all.
        used = [(c, k) for c, k in zip(checkpoints, coefficients) if k != 0] or [(checkpoints[0], 0.0)]
        self.pretrained = pretrained_dir / WEIGHTS
        files = [weights_file(c) for c, _ in used]
        self.header = tensor_header(self.pretrained)
        maps = [encoder_key_map(tensor_header(f), list(self.header)) for f in files]
        # integer buffers (position_ids) are not weights: a weighted sum would truncate them
        self.terms = {name: None if dtype not in FLOATING else
                      [((self.pretrained, name) if m[name] is None else (f, m[name]), k) for f, m, (_, k) in zip(files, maps, used)]
                      for name, (_, dtype) in self.header.items()}

    def tensors(self, names: set[str] | None = None) -> dict[str, torch.Tensor]:
        """The combination's tensors (those in `names`, if given)."""
        merged = {}
        with intra_op_threads(1):
            for (name, dtype, shape), parts in self._computed(self._entries(names)):
                merged[name] = torch.empty(shape, dtype=DTYPES[dtype])
                flat = merged[name].view(-1)
                for start, part in parts:
                    flat[start:start + part.numel()] = part
        return merged

    def write(self, path, names: set[str] | None = None, metadata: dict[str, str] | None = None) -> None:
        """The combination's tensors (those in `names`, if given) as a safetensors file at `path`."""
        entries = self._entries(names)
        with tensor_writer(path, entries, metadata) as out, intra_op_threads(1):
            for (name, dtype, _), parts in self._computed(entries):
                for start, part in parts:
                    out.write(name, start, part.to(DTYPES[dtype]))

    def _entries(self, names: set[str] | None) -> list[tuple[str, str, tuple[int, ...]]]:
        """(name, safetensors dtype, shape) of the tensors kept, in the pretrained file's order."""
        return [(n, dtype, shape) for n, (shape, dtype) in self.header.items() if names is None or n in names]

    def _computed(self, entries):
        """(entry, iterator of (start, flat slice)) per entry: the weighted sums in float32 slices,
        each valid until the iterator moves on; an integer tensor in one piece."""
        width = min(_SLICE, max((math.prod(shape) for *_, shape in entries), default=0))
        buffers = torch.empty(2, width, dtype=torch.float32)
        with TensorReader() as reader:
            for entry in entries:
                name, _, shape = entry
                if self.terms[name] is None:
                    yield entry, iter([(0, load_tensors(self.pretrained, [name])[name].reshape(-1))])
                else:
                    yield entry, _weighted_slices(reader, self.terms[name], math.prod(shape), *buffers)


def _weighted_slices(reader: TensorReader, terms, numel: int, acc: torch.Tensor, term: torch.Tensor):
    """Yield (start, sum of coefficient * tensor[start:stop] over terms ((file, key), coefficient))
    for the slices of _SLICE elements of a tensor of `numel` elements, in float32, summed in `acc`
    (with `term` as scratch): each slice is overwritten by the next."""
    locations = [(path, *reader.location(path, key), coefficient) for (path, key), coefficient in terms]
    for start in range(0, numel, _SLICE):
        n = min(numel, start + _SLICE) - start
        for k, (path, dtype, offset, coefficient) in enumerate(locations):
            target = acc[:n] if k == 0 else term[:n]
            reader.read(path, dtype, offset + start * DTYPES[dtype].itemsize, target)
            target.mul_(coefficient)
            if k:
                acc[:n].add_(target)
        yield start, acc[:n]


def combine(checkpoints: Sequence, coefficients: Sequence[float], pretrained_dir, out_dir,
            metadata: dict | None = None, title: str = "Merged encoder", command: str | None = None,
            classifier_start: bool = False) -> None:
    """Write the Combination of the checkpoints as a bare encoder into out_dir (the pretrained
    model's names and config, so load_encoder() reads it); `title`, `metadata` and `command` make
    its card (save_encoder)."""
    save_encoder(Combination(checkpoints, coefficients, pretrained_dir), pretrained_dir, out_dir, metadata,
                 title, command, classifier_start=classifier_start)


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
    return line_point(w1, w2, alpha, pretrained_dir).tensors()


def line_point(w1, w2, alpha, pretrained_dir) -> Combination:
    """alpha * w1 + (1 - alpha) * w2, not yet computed (see line_tensors)."""
    return Combination([w1, w2], list(line_coefficients(alpha)), pretrained_dir)


def interpolate(w1, w2, alpha, pretrained_dir, out_dir, metadata: dict | None = None,
                command: str | None = None) -> None:
    """Write line_point(w1, w2, alpha) as a bare encoder into out_dir."""
    save_encoder(line_point(w1, w2, alpha, pretrained_dir), pretrained_dir, out_dir,
                 metadata={"alpha": format_alpha(alpha), "w1": str(w1), "w2": str(w2), **(metadata or {})},
                 title=f"alpha * w1 + (1 - alpha) * w2 at alpha = {format_alpha(alpha)}", command=command)


def save_encoder(tensors: dict | Combination, pretrained_dir, out_dir, metadata: dict | None = None, title: str = "Merged encoder",
                 command: str | None = None, standalone: bool = True, classifier_start: bool = False) -> None:
    """Write bare-encoder tensors (or a Combination, streamed) as a model folder that plain
    transformers loads (load_encoder() too).

    The folder gets the pretrained model's config and tokenizer files, a model card (`title`, the
    base, `metadata` as its facts, `command`) and the weights, last; `metadata` is also stored in
    the weights file. Nothing is loaded: the rest is copies of small files. Not `standalone`: the
    config and the weights alone (a temporary folder that only this library reads). A
    `classifier_start` (a centre to finetune from) keeps only the encoder tensors that a
    sequence-classification model of the architecture has, so that it loads with no unexpected key.
    """
    out_dir, pretrained_dir = Path(out_dir), Path(pretrained_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ["config.json", *(tokenizer_files(pretrained_dir) if standalone else [])]:
        copy_file(pretrained_dir / name, out_dir / name)
    if standalone:
        write_model_card(out_dir, title, pretrained_dir.name, metadata or {}, command,
                         notes=START_NOTES if classifier_start else ENCODER_NOTES)
    kept = classifier_encoder_names(pretrained_dir) if classifier_start else None
    facts = {k: str(v) for k, v in (metadata or {}).items()}
    if isinstance(tensors, Combination):
        tensors.write(out_dir / WEIGHTS, kept, facts)
    else:
        save_tensors(tensors if kept is None else {k: v for k, v in tensors.items() if k in kept}, out_dir / WEIGHTS, facts)

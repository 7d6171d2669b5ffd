"""Task vectors: a finetuned encoder minus a reference, by default the pretrained encoder it
started from, read lazily from safetensors.

A task vector is never held whole: callers read it tensor by tensor, or row slice by row slice,
from files opened with `io.open_weights`. Only floating tensors count (integer buffers such as
`position_ids` are not weights). Encoder tensors the finetuned checkpoint lacks (a pooler that
sequence classification does not use) did not move: they keep their pretrained values, zeros
against the model's own base.

`TaskVector.against` changes the reference: another base of the same architecture (one common
origin for models finetuned from different bases, App. B), or None, zero: the raw weights.

With `include_head`, the classification head's tensors are appended; the head has no pretrained
counterpart (its random initialisation is not stored), so its values count from zero whatever
the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch

from .checkpoints import FLOATING, encoder_key_map, read_config, tensor_header, weights_file
from .errors import WeightspaceError
from .io import open_weights


@dataclass(frozen=True)
class Entry:
    """One tensor of a task vector: where its finetuned and pretrained values are stored."""

    name: str
    shape: tuple[int, ...]
    finetuned_key: str | None  # None: the checkpoint lacks it, the tensor did not move
    pretrained_key: str | None  # None: a head tensor, counted from zero (also its key in a reference)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class TaskVector:
    name: str
    finetuned: Path
    pretrained: Path  # the base it started from: its layout, and the tensors the checkpoint lacks
    entries: tuple[Entry, ...]
    reference: Path | None  # the weights subtracted; None: zero (the raw weights)

    @property
    def numel(self) -> int:
        return sum(e.numel for e in self.entries)

    @property
    def files(self) -> list[Path]:
        """The weights files its values are read from."""
        return [p for p in (self.finetuned, self.pretrained, self.reference) if p is not None]

    def against(self, reference) -> "TaskVector":
        """The same model measured from `reference`, a model folder or its model.safetensors with the
        encoder tensors of `pretrained`, or from zero (None)."""
        if reference is None:
            return replace(self, reference=None)
        reference = weights_file(reference)
        if reference != self.pretrained:
            _check_reference(reference, self)
        return replace(self, reference=reference)

    def layout(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(e.name, e.shape) for e in self.entries]

    def entry(self, name: str) -> Entry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(name)

    def tensors(self, dtype=torch.float32, names=None) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, weights - reference) for every tensor (or those in `names`), in layout order."""
        with open_weights(self.files) as files:
            for e in self.entries:
                if names is None or e.name in names:
                    yield e.name, self.rows(files, e, None, None, dtype)

    def flatten(self, dtype=torch.float32, names=None) -> torch.Tensor:
        """The whole task vector as one 1-D tensor (for small models and checks only)."""
        names = None if names is None else set(names)
        return torch.cat([t.reshape(-1) for _, t in self.tensors(dtype, names)])

    def finetuned_rows(self, files: Mapping[Path, object], entry: Entry, start, stop) -> torch.Tensor | None:
        """Rows start:stop of the finetuned tensor (None if the checkpoint lacks it); mmap-backed, read-only."""
        if entry.finetuned_key is None:
            return None
        return _rows(files[self.finetuned], entry.finetuned_key, start, stop)

    def pretrained_rows(self, files: Mapping[Path, object], entry: Entry, start, stop) -> torch.Tensor | None:
        if entry.pretrained_key is None:
            return None
        return _rows(files[self.pretrained], entry.pretrained_key, start, stop)

    def reference_rows(self, files: Mapping[Path, object], entry: Entry, start, stop) -> torch.Tensor | None:
        """Rows start:stop of the reference tensor (None: zero, for a head tensor or no reference)."""
        if self.reference is None or entry.pretrained_key is None:
            return None
        return _rows(files[self.reference], entry.pretrained_key, start, stop)

    def weight_rows(self, files: Mapping[Path, object], entry: Entry, start, stop) -> torch.Tensor:
        """Rows start:stop of the model's tensor: the finetuned one, or the pretrained one it did not move from."""
        finetuned = self.finetuned_rows(files, entry, start, stop)
        return self.pretrained_rows(files, entry, start, stop) if finetuned is None else finetuned

    def rows(self, files, entry: Entry, start, stop, dtype=torch.float32) -> torch.Tensor:
        """weights - reference for rows start:stop of one tensor (start=stop=None: all of it)."""
        weights = self.weight_rows(files, entry, start, stop)
        reference = self.reference_rows(files, entry, start, stop)
        if reference is None:
            return weights.to(dtype, copy=True)  # not a view of a file that is about to close
        return weights.to(dtype) - reference.to(dtype)


def task_vector(finetuned, pretrained, include_head: bool = False, name: str | None = None) -> TaskVector:
    """The task vector of a finetuned checkpoint against the bare pretrained encoder it started from.

    `finetuned` and `pretrained` are model folders or their model.safetensors files.
    """
    finetuned, pretrained = weights_file(finetuned), weights_file(pretrained)
    base = tensor_header(pretrained)
    tuned = tensor_header(finetuned)
    base_names = [n for n, (_, dtype) in base.items() if dtype in FLOATING]
    key_map = encoder_key_map(tuned, base_names)
    entries = []
    for n in base_names:
        key = key_map[n]
        if key is not None and tuned[key][0] != base[n][0]:
            raise WeightspaceError(
                f"{finetuned}: tensor '{key}' has shape {list(tuned[key][0])}, but the pretrained "
                f"'{n}' in {pretrained} has {list(base[n][0])} (finetuned from another base?)"
            )
        entries.append(Entry(n, base[n][0], key, n))
    if include_head:
        encoder_keys = {k for k in key_map.values() if k is not None}
        for key, (shape, dtype) in tuned.items():
            if key not in encoder_keys and dtype in FLOATING:
                entries.append(Entry(key, shape, key, None))
    return TaskVector(name or str(finetuned.parent), finetuned, pretrained, tuple(entries), pretrained)


def common_layout(vectors: Sequence[TaskVector]) -> list[Entry]:
    """The entries shared by all vectors, in the first vector's order.

    Encoder tensors must match exactly (same names and shapes: same architecture). Head tensors
    (include_head) are kept only where every model has them with one shape: heads for different
    numbers of labels cannot be compared.
    """
    if not vectors:
        raise WeightspaceError("no models to compare")
    first = vectors[0]
    encoder = [e for e in first.entries if e.pretrained_key is not None]
    for v in vectors[1:]:
        other = [(e.name, e.shape) for e in v.entries if e.pretrained_key is not None]
        if other != [(e.name, e.shape) for e in encoder]:
            raise WeightspaceError(
                f"{v.finetuned} and {first.finetuned}: their encoders have different tensors "
                "(task vectors of different architectures cannot be compared)"
            )
    heads = [e for e in first.entries if e.pretrained_key is None]
    shared = [e for e in heads if all(_has(v, e) for v in vectors[1:])]
    return encoder + shared


def dropped_head_tensors(vectors: Sequence[TaskVector]) -> list[str]:
    kept = {e.name for e in common_layout(vectors)}
    return sorted({e.name for v in vectors for e in v.entries if e.name not in kept})


def _check_reference(reference: Path, vector: TaskVector) -> None:
    header = tensor_header(reference)
    for e in vector.entries:
        if e.pretrained_key is None:
            continue
        found = header.get(e.pretrained_key)
        if found is None or found[0] != e.shape:
            has = "lacks it" if found is None else f"has shape {list(found[0])}"
            raise WeightspaceError(
                f"{reference}: reference tensor '{e.pretrained_key}' {has}, but {vector.pretrained} has "
                f"{list(e.shape)} (a reference must be a base of the same architecture)"
            )


def _has(vector: TaskVector, entry: Entry) -> bool:
    try:
        return vector.entry(entry.name).shape == entry.shape
    except KeyError:
        return False


def _rows(handle, key: str, start, stop) -> torch.Tensor:
    if start is None:
        return handle.get_tensor(key)
    return handle.get_slice(key)[start:stop]


def raw_weight_vectors(folders, names, include_head: bool) -> list:
    """The models' raw weights (reference zero) over the encoder tensors of the first model.

    Without a base no file holds the tensors under the bare encoder's names, so the first model's
    encoder part (its tensors under the architecture's prefix, `roberta.` in a RoBERTa classifier)
    is the layout; as against a base, a head counts only with include_head. A layout tensor a model
    lacks (a pooler that a classifier drops) reads as the first model's.
    """
    layout_file = weights_file(folders[0])
    header = tensor_header(layout_file)
    prefix = architecture_prefix(folders[0], header)
    encoder = {key[len(prefix):]: (key, shape) for key, (shape, dtype) in header.items()
               if key.startswith(prefix) and dtype in FLOATING}
    vectors = []
    for folder, name in zip(folders, names):
        file = weights_file(folder)
        tuned = tensor_header(file)
        key_map = encoder_key_map(tuned, list(encoder))
        entries = []
        for tensor, (layout_key, shape) in encoder.items():
            own = key_map[tensor]
            if own is not None and tuned[own][0] != shape:
                raise WeightspaceError(f"{file}: tensor '{own}' has shape {list(tuned[own][0])}, but '{layout_key}' "
                                       f"in {layout_file} has {list(shape)} (models of different architectures?)")
            entries.append(Entry(tensor, shape, own, layout_key))
        if include_head:
            encoder_keys = set(key_map.values())
            entries += [Entry(key, shape, key, None) for key, (shape, dtype) in tuned.items()
                        if key not in encoder_keys and dtype in FLOATING]
        vectors.append(TaskVector(name, file, layout_file, tuple(entries), None))
    return vectors


def architecture_prefix(folder, header) -> str:
    """The prefix a model with a head stores its encoder under (the architecture's base_model_prefix
    and a dot); '' for a bare encoder, or an architecture transformers does not know."""
    from transformers import CONFIG_MAPPING, MODEL_MAPPING

    model_type = read_config(Path(folder) / "config.json").get("model_type")
    try:
        prefix = MODEL_MAPPING[CONFIG_MAPPING[model_type]].base_model_prefix + "."
    except (KeyError, ValueError, AttributeError):
        return ""
    return prefix if any(k.startswith(prefix) for k in header) else ""

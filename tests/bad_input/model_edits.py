"""Damage done to a copy of the tiny model folder, one function per case of models.yaml.

Each edit is what a user's folder can look like: a copy cut short, a checkpoint saved as a pickle
(written here with torch.save; nothing ever loads it), weights under the wrong name, code the
model needs, files of two different models mixed.
"""

from __future__ import annotations

import json
from pathlib import Path

WEIGHTS = "model.safetensors"


def _tensors(folder: Path) -> dict:
    from safetensors.numpy import load_file

    return load_file(str(folder / WEIGHTS))


def _save(tensors: dict, path: Path) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path))


def _save_pickle(folder: Path) -> None:
    import torch

    torch.save({k: torch.from_numpy(v) for k, v in _tensors(folder).items()}, folder / "pytorch_model.bin")


def _edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}, indent=2))


def truncated_weights(folder: Path) -> None:
    """A copy cut short: the header is whole, the data is not."""
    path = folder / WEIGHTS
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garbage_weights(folder: Path) -> None:
    (folder / WEIGHTS).write_bytes(b"<html>404 Not Found</html>\n" * 40)


def pickle_only(folder: Path) -> None:
    _save_pickle(folder)
    (folder / WEIGHTS).unlink()


def bin_beside_other_safetensors(folder: Path) -> None:
    _save_pickle(folder)
    (folder / WEIGHTS).rename(folder / "other.safetensors")


def missing_shard(folder: Path) -> None:
    """A sharded checkpoint whose second shard was not copied."""
    tensors = _tensors(folder)
    names = sorted(tensors)
    first = "model-00001-of-00002.safetensors"
    _save({n: tensors[n] for n in names[:10]}, folder / first)
    weight_map = {n: first if i < 10 else "model-00002-of-00002.safetensors" for i, n in enumerate(names)}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / WEIGHTS).unlink()


def auto_map_code(folder: Path) -> None:
    """The model's own code, present in the folder (refused unless trust_remote_code is on)."""
    _edit_config(folder, auto_map={"AutoModel": "modeling_tiny.TinyModel"})
    (folder / "modeling_tiny.py").write_text("raise SystemExit('the test model code must never run')\n")


def auto_map_missing_module(folder: Path) -> None:
    _edit_config(folder, auto_map={"AutoConfig": "configuration_tiny.TinyConfig",
                                   "AutoModel": "modeling_tiny.TinyModel"})
    (folder / "configuration_tiny.py").write_text("raise SystemExit('the test model code must never run')\n")


def config_not_json(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "roberta", "hidden_size": 64,\n')


def config_not_object(folder: Path) -> None:
    (folder / "config.json").write_text('["roberta"]\n')


def wrong_shape_tensor(folder: Path) -> None:
    """One layer's feed-forward matrix has another width than the same matrix of the other layer."""
    import numpy as np

    tensors = _tensors(folder)
    tensors["encoder.layer.1.intermediate.dense.weight"] = np.zeros((96, 64), dtype=np.float32)
    _save(tensors, folder / WEIGHTS)


def config_of_another_model(folder: Path) -> None:
    """config.json of a model with a larger vocabulary beside these weights."""
    _edit_config(folder, vocab_size=50265)


EDITS = {f.__name__: f for f in (truncated_weights, garbage_weights, pickle_only, bin_beside_other_safetensors,
                                 missing_shard, auto_map_code, auto_map_missing_module, config_not_json,
                                 config_not_object, wrong_shape_tensor, config_of_another_model)}

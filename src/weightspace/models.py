"""Base models and finetuned checkpoints: resolving, loading and saving (safetensors only)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from .checkpoints import WEIGHTS, base_model_location, check_model
from .errors import WeightspaceError
from .io import honour_umask, scratch_folder, tensor_names


def save_base_model(name: str, spec: dict, out_dir, trust_remote_code: bool = False) -> None:
    """Write the base encoder (no task head) as safetensors + config + tokenizer into out_dir."""
    check_model(name, spec, trust_remote_code)
    location = base_model_location(name, spec)
    kwargs = {"revision": spec["revision"]} if spec.get("revision") else {}
    tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code, **kwargs)
    model = AutoModel.from_pretrained(
        location, trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs
    )
    save_model_dir(model, out_dir, tokenizer)


def save_model_dir(model, out_dir, tokenizer=None) -> None:
    """save_pretrained into a scratch folder beside the weights, then move the files in, the weights last.

    A killed save leaves only that folder (`.model.safetensors.tmpPID`), which the next save into
    out_dir removes; the files get the mode the umask gives.
    """
    out_dir = Path(out_dir)
    with scratch_folder(out_dir / WEIGHTS) as tmp:
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="1000GB")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for file in sorted(os.listdir(tmp), key=lambda f: f == WEIGHTS):
            honour_umask(tmp / file)
            os.replace(tmp / file, out_dir / file)


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


def torch_device(setting: str = "auto") -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise WeightspaceError("config key 'device' is 'cuda' but no CUDA device is visible")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")

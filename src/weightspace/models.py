"""Base models and finetuned checkpoints: resolving, loading and saving (safetensors only)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from .checkpoints import WEIGHTS, base_model_location, check_model
from .errors import WeightspaceError
from .io import honour_umask, scratch_folder, tensor_names

log = logging.getLogger(__name__)


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
    with scratch_folder(out_dir / WEIGHTS) as tmp, quiet_transformers():
        model.save_pretrained(tmp, safe_serialization=True, max_shard_size="1000GB")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for file in sorted(os.listdir(tmp), key=lambda f: f == WEIGHTS):
            honour_umask(tmp / file)
            os.replace(tmp / file, out_dir / file)


def classifier_encoder_names(model_dir) -> set[str] | None:
    """The encoder tensors a sequence-classification model of `model_dir`'s architecture has (without
    its encoder prefix): built on the meta device, so nothing is allocated. None where transformers
    has no such model for the config (or the config is not one it reads)."""
    try:
        config = AutoConfig.from_pretrained(str(model_dir))
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config)
    except (OSError, ValueError, KeyError):
        return None
    prefix = model.base_model_prefix + "."
    return {k[len(prefix):] for k in model.state_dict() if k.startswith(prefix)}


def load_tokenizer(model_dir):
    return AutoTokenizer.from_pretrained(str(model_dir))


def load_classifier(model_dir, num_labels: int, trust_remote_code: bool = False):
    """The encoder from `model_dir` with a freshly initialised classification head."""
    _check_weights(model_dir)
    config = AutoConfig.from_pretrained(str(model_dir), num_labels=num_labels, trust_remote_code=trust_remote_code)
    return loaded_quietly(AutoModelForSequenceClassification, model_dir, config=config,
                          trust_remote_code=trust_remote_code)


def load_encoder(model_dir, trust_remote_code: bool = False):
    """The bare encoder (any head in the checkpoint is dropped)."""
    _check_weights(model_dir)
    return loaded_quietly(AutoModel, model_dir, trust_remote_code=trust_remote_code)


@contextmanager
def quiet_transformers():
    """transformers' progress bars off and its log at errors only (a job's log says what it does itself)."""
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def loaded_quietly(cls, model_dir, **kwargs):
    """cls.from_pretrained(model_dir) from safetensors, without transformers' load report and progress bar.

    The report's news is expected here: a new head is initialised, a checkpoint's head is not read by
    a bare encoder, a pooler is not read by a classifier without one (RoBERTa's) or made afresh for an
    encoder whose checkpoint lacks it. Those keys go to the debug log; an encoder tensor that is
    missing or not read is a warning, as it means the checkpoint does not fit.
    """
    with quiet_transformers():
        model, info = cls.from_pretrained(str(model_dir), use_safetensors=True, output_loading_info=True, **kwargs)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in info.get(kind) or [])
        encoder = [k for k in keys if {"embeddings", "encoder"} & set(k.split("."))]
        if encoder:
            log.warning("%s: %d encoder tensors %s when loaded as %s, e.g. %s", model_dir, len(encoder),
                        kind.replace("_keys", ""), type(model).__name__, encoder[0])
        if len(encoder) < len(keys):
            log.debug("%s: %s (expected): %s", model_dir, kind, ", ".join(k for k in keys if k not in encoder))
    return model


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

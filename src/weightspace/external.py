"""Checkpoints the workflow did not train (config `external`, and the `weightspace` commands).

A checkpoint is a model folder (config.json and safetensors weights, with or without a head) or a
peft adapter folder (adapter_config.json and adapter_model.safetensors) over a declared base model.
Each is imported once into a model folder of the workflow's kind, results/models/external/{name}/:
one model.safetensors, its config and tokenizer. A model's tensors are copied as they are; an
adapter is merged into its base by peft (merge_and_unload: w + B A scale), so that its task vector
is the dense difference of the merged model and the base, and it is measured, clustered, merged and
probed like any finetuned model.

The checks read only JSON files and safetensors headers, and torch, transformers and peft are
imported by the functions that load weights: the Snakefile checks the config's checkpoints while it
is parsed.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Sequence

from .checkpoints import (ADAPTER_CONFIG, ADAPTER_WEIGHTS, WEIGHTS, check_adapter, check_checkpoint,
                          check_model_folder, checkpoint_kind, model_folder, model_weights, tensor_header,
                          tokenizer_files)
from .errors import WeightspaceError

log = logging.getLogger(__name__)
# The files a tokenizer may be saved as; a checkpoint without them takes its base's tokenizer.
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json")
# What a hub checkpoint's download keeps: never a pickle.
HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "README.md"]


def check_external(name: str, spec: dict, base_folder, trust_remote_code: bool = False) -> str | None:
    """The kind of a configured local checkpoint ('model' or 'adapter') once it fits its base.

    `base_folder` is the base model's folder (None where it is fetched from a hub: only the
    checkpoint's own files are checked). None for a hub checkpoint, fetched on the login node.
    """
    folder = source_folder(name, spec)
    if folder is None:
        return None
    try:
        return check_folder(folder, base_folder, trust_remote_code)
    except WeightspaceError as err:
        raise WeightspaceError(f"external '{name}': {err}") from None


def check_folder(folder, base_folder, trust_remote_code: bool = False) -> str:
    """The kind of checkpoint `folder` is, once it fits the base model in `base_folder` (None: unchecked)."""
    kind = checkpoint_kind(folder)
    if kind == "model":
        check_model_folder(Path(folder), trust_remote_code)
        if base_folder is not None:
            check_checkpoint(folder, base_folder)
    elif base_folder is not None:
        check_adapter(folder, base_folder)
    return kind


def configured(config: dict, name: str, where: str) -> dict:
    """The `external` entry `name`, which the config key `where` names."""
    known = config.get("external") or {}
    if name not in known:
        raise WeightspaceError(f"key '{where}' names '{name}', which is neither under 'datasets' nor under 'external'")
    return known[name]


def base_of(config: dict, name: str) -> str:
    """The base model an external checkpoint was finetuned from (default: the config's base_model)."""
    return config["external"][name].get("base") or config["base_model"]


def check_same_base(config: dict, name: str, where: str, experiment: str) -> None:
    """Refuse an external checkpoint in an experiment built on base_model when it was finetuned from another."""
    if base_of(config, name) != config["base_model"]:
        raise WeightspaceError(f"key '{where}': external '{name}' was finetuned from '{base_of(config, name)}', "
                               f"but {experiment} is of base_model '{config['base_model']}'")


def dataset_of(config: dict, name: str) -> str:
    """What an external checkpoint was finetuned on: its group by dataset (default: its name)."""
    return config["external"][name].get("dataset") or name


def source_folder(name: str, spec: dict) -> Path | None:
    """The folder of a configured checkpoint: its `path`; None for a hub checkpoint."""
    if spec.get("hub"):
        return None
    if not spec.get("path"):
        raise WeightspaceError(f"external '{name}': needs key 'external.{name}.path' (a folder) or "
                               f"'external.{name}.hub' (a hub id)")
    return Path(spec["path"])


def source_files(name: str, spec: dict) -> list[str]:
    """The files the import of a local checkpoint reads, so that a changed checkpoint is imported again."""
    folder = source_folder(name, spec)
    if folder is None:
        return []
    if checkpoint_kind(folder) == "adapter":
        return [str(folder / "adapter_config.json"), str(folder / ADAPTER_WEIGHTS)]
    return [str(folder / "config.json"), *map(str, model_weights(folder))]


def import_external(name: str, spec: dict, base_name: str, base_dir, out_dir, trust_remote_code: bool = False,
                    command: str | None = None) -> str:
    """Import a configured checkpoint into out_dir (a hub one is fetched first), with a model card
    that says where it came from; returns its kind."""
    folder = source_folder(name, spec) or fetch_hub_checkpoint(spec["hub"], spec.get("revision"))
    source = f"{spec['hub']} (revision {spec.get('revision') or 'main'})" if spec.get("hub") else str(folder)
    facts = {"source": source, "dataset": spec.get("dataset"), "family": spec.get("family")}
    card = {"title": f"{name}: a checkpoint imported by weightspace", "base": base_name, "command": command,
            "facts": {k: v for k, v in facts.items() if v is not None}}
    try:
        kind = import_folder(folder, base_dir, out_dir, trust_remote_code, card)
    except WeightspaceError as err:
        raise WeightspaceError(f"external '{name}': {err}") from None
    log.info("external '%s': imported the %s in %s into %s", name, kind, folder, out_dir)
    return kind


def fetch_hub_checkpoint(repo_id: str, revision: str | None = None) -> Path:
    """A hub checkpoint's safetensors, configs and tokenizer in the local hub cache (the login node's job)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
        raise WeightspaceError(f"hub checkpoint '{repo_id}' (revision {revision or 'main'}) could not be fetched: "
                               f"{str(err).splitlines()[0]}") from None


def import_folder(folder, base_dir, out_dir, trust_remote_code: bool = False, card: dict | None = None,
                  kind: str | None = None) -> str:
    """Write checkpoint `folder` as a model folder of one model.safetensors into out_dir; returns its kind.

    A model's tensors (head included) are copied into one file, shards joined, with its config; an
    adapter is merged into the base model in `base_dir` (which a model's import may leave out: then
    it is not checked against a base). The tokenizer files are the checkpoint's, else the base's.
    `card`: the model card's title, base, facts and command (write_model_card); None writes none.
    The weights are written last. `kind`: the folder's, where the caller has checked it already.
    """
    from .io import copy_file, load_tensors, save_tensors
    from .model_card import write_model_card
    from .models import save_model_dir

    folder, out_dir = Path(folder), Path(out_dir)
    kind = kind or check_folder(folder, base_dir, trust_remote_code)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_folder(folder, base_dir)
    for file in tokenizer_files(tokenizer) if tokenizer is not None else []:
        if file != ADAPTER_CONFIG:
            copy_file(tokenizer / file, out_dir / file)
    if card is not None:
        facts = {"kind": "peft adapter, merged into its base (merge_and_unload)" if kind == "adapter" else
                 "model folder", **card["facts"]}
        write_model_card(out_dir, card["title"], card["base"], facts, card["command"])
    if kind == "adapter":
        save_model_dir(merged_adapter(folder, base_dir, trust_remote_code), out_dir)
        return kind
    tensors = {k: v for file in model_weights(folder) for k, v in load_tensors(file).items()}
    copy_file(folder / "config.json", out_dir / "config.json")
    save_tensors(tensors, out_dir / WEIGHTS, metadata={"source": str(folder)})
    return kind


def tokenizer_folder(*folders) -> Path | None:
    """The first of `folders` (None skipped) that holds a tokenizer."""
    return next((Path(f) for f in folders if f is not None and any((Path(f) / t).exists() for t in TOKENIZER_FILES)),
                None)


def merged_adapter(folder, base_dir, trust_remote_code: bool = False):
    """The base model with the peft adapter in `folder` merged into its weights (peft's merge_and_unload).

    An adapter trained for sequence classification (task_type SEQ_CLS) is loaded onto the base's
    classification model, whose head the adapter saves (modules_to_save); any other onto the bare
    encoder. An adapter whose factors peft cannot place on the base is refused: merged, it would
    silently be the base.
    """
    from peft import PeftConfig, PeftModel
    from transformers import AutoModel, AutoModelForSequenceClassification

    from .models import loaded_quietly

    folder, base_dir = Path(folder), Path(base_dir)
    config = PeftConfig.from_pretrained(str(folder))
    if str(config.task_type) in ("SEQ_CLS", "TaskType.SEQ_CLS"):
        base = loaded_quietly(AutoModelForSequenceClassification, base_dir, num_labels=adapter_labels(folder),
                              trust_remote_code=trust_remote_code)
    else:
        base = loaded_quietly(AutoModel, base_dir, trust_remote_code=trust_remote_code)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = PeftModel.from_pretrained(base, str(folder))
    missing = [str(w.message) for w in caught if "missing adapter keys" in str(w.message)]
    if missing:
        raise WeightspaceError(f"{folder}: peft cannot place the adapter on the base model {base_dir}: "
                               f"{missing[0][:300]}")
    return model.merge_and_unload()


def adapter_labels(folder) -> int:
    """The classes of a classification adapter's saved head: the rows of its last layer (the
    smallest first dimension among the head's matrices; the 2 of a new head if none is saved)."""
    header = tensor_header(Path(folder) / ADAPTER_WEIGHTS)
    rows = [shape[0] for key, (shape, _) in header.items() if "lora_" not in key and len(shape) == 2]
    return min(rows) if rows else 2


@contextmanager
def loadable_checkpoints(folders: Sequence, base_dir=None, trust_remote_code: bool = False) -> Iterator[list[Path]]:
    """Each checkpoint folder as a folder with one model.safetensors, for the commands that read
    weights: a model folder with one weights file as it is, any other (sharded, or an adapter,
    which needs `base_dir`) imported into a temporary folder, removed on exit."""
    with ExitStack() as stack:
        loadable = []
        for folder in map(Path, folders):
            kind = check_folder(folder, base_dir, trust_remote_code)
            if kind == "model" and (folder / WEIGHTS).exists():
                loadable.append(folder)
                continue
            if kind == "adapter" and base_dir is None:
                raise WeightspaceError(f"{folder}: a peft adapter is measured against its base model: give --base")
            scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="weightspace-")))
            import_folder(folder, base_dir, scratch, trust_remote_code, kind=kind)
            loadable.append(scratch)
        yield loadable


def base_folder_of(config: dict, base: str) -> Path | None:
    """The local folder of a configured base model (None: fetched from a hub on the login node)."""
    return model_folder(base, config["models"][base])

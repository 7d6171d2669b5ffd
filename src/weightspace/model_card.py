"""The model card (README.md) of a model folder: what the model is and how it was made.

A card is Hugging Face's format: YAML front matter the hub reads (library, base model, task), then
a few lines of text. It holds no timestamps, so the same model gets the same card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import yaml

from .io import write_text

CARD = "README.md"


def write_model_card(out_dir, title: str, base: str | None, facts: Mapping[str, object], command: str | None,
                     pipeline_tag: str | None = None, notes: Sequence[str] = ()) -> None:
    """Write out_dir/README.md (atomically): front matter, `title`, the base model, `facts`, `notes`, `command`.

    `base` names the base model (a hub id or the config's name for it; None when unknown);
    `facts` are "name: value" lines in their order (a list is joined by commas, a float gets 4
    significant digits); `notes` are sentences printed after them; `command` is what made the
    model (e.g. `snakemake --cores 1 results/models/.../model.safetensors`); `pipeline_tag` is the
    hub's task (`text-classification` for a classifier, None for a bare encoder).
    """
    write_text(model_card(title, base, facts, command, pipeline_tag, notes), Path(out_dir) / CARD)


def model_card(title: str, base: str | None, facts: Mapping[str, object], command: str | None,
               pipeline_tag: str | None = None, notes: Sequence[str] = ()) -> str:
    """The text of write_model_card's README.md."""
    lines = ["---", front_matter(base, pipeline_tag).rstrip("\n"), "---", "", f"# {title}", ""]
    if base is not None:
        lines.append(f"- base model: {base}")
    lines += [f"- {name}: {_shown(value)}" for name, value in facts.items()]
    lines.append("")
    for note in notes:
        lines += [note, ""]
    if command is not None:
        lines += ["Made with:", "", "```", command, "```", ""]
    return "\n".join(lines)


def front_matter(base: str | None, pipeline_tag: str | None) -> str:
    """The card's YAML metadata for the hub."""
    meta = {"library_name": "transformers"}
    if base is not None:
        meta["base_model"] = base
    if pipeline_tag is not None:
        meta["pipeline_tag"] = pipeline_tag
    meta["tags"] = ["weightspace"]
    return yaml.safe_dump(meta, sort_keys=False, default_flow_style=False)


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_shown(v) for v in value)
    return str(value)

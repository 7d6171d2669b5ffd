"""Atomic writes and the file formats of the project: safetensors, parquet, JSON."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import WeightspaceError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; rename it onto `path` only on success.

    A killed job leaves at most a `.tmp` file, never a file that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_parquet(df: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(text: str, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise WeightspaceError(f"{path}: file not found") from None
    except json.JSONDecodeError as err:
        raise WeightspaceError(f"{path}: not valid JSON ({err})") from None


def read_parquet(path) -> pd.DataFrame:
    if not Path(path).exists():
        raise WeightspaceError(f"{path}: file not found")
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise WeightspaceError(f"{path}: not a readable parquet file ({str(err).splitlines()[0]})") from None


def save_tensors(tensors: Mapping[str, torch.Tensor], path, metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors as safetensors (contiguous, atomically)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata or {}))


def tensor_names(path) -> list[str]:
    with _open(path) as f:
        return list(f.keys())


def load_tensors(path, names=None) -> dict[str, torch.Tensor]:
    """Read all tensors, or only `names`, from a safetensors file (never unpickles)."""
    with _open(path) as f:
        return {k: f.get_tensor(k) for k in (names if names is not None else f.keys())}


def _open(path):
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightspaceError(f"{path}: weights are only read from .safetensors files")
    if not path.exists():
        raise WeightspaceError(f"{path}: file not found")
    return safe_open(str(path), framework="pt")

"""Atomic writes and the file formats of the project: safetensors, parquet, JSON."""

from __future__ import annotations

import glob
import json
import math
import os
import shutil
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .checkpoints import safetensors_file
from .errors import WeightspaceError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path for `path` in a scratch folder beside it; move it onto `path` only on success.

    A killed job leaves at most the scratch folder (see scratch_folder), never a file that looks
    complete. The file gets the mode the umask gives (0644 under umask 022).
    """
    path = Path(path)
    with scratch_folder(path) as scratch:
        tmp = scratch / path.name
        yield tmp
        honour_umask(tmp)
        os.replace(tmp, path)


@contextmanager
def scratch_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A new folder `.NAME.tmpPID` beside `path` for writing it, removed on exit.

    Writers that keep temporaries of their own beside their output (safetensors does) keep them
    in here. Scratch folders of `path` that a dead process left are removed first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_scratch(path)
    scratch = path.with_name(f".{path.name}.tmp{os.getpid()}")
    scratch.mkdir()
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remove_stale_scratch(path: Path) -> None:
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp*"):
        pid = stale.name.rpartition(".tmp")[2]
        if pid.isdigit() and not _other_live_process(int(pid)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


def _other_live_process(pid: int) -> bool:
    """Whether `pid` runs on this host and is not this process.

    The scratch folder of any other pid is a dead writer's: one job at a time writes an output
    (on a cluster perhaps on another node, where the pid means nothing here).
    """
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def honour_umask(path: Path) -> None:
    """Give a written file (or folder) the mode a plain open() would: 0o666 (0o777) less the umask.

    Temporary files (mkstemp, the safetensors writer) are created 0600, unreadable to a group
    that shares the results.
    """
    umask = os.umask(0o077)
    os.umask(umask)
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~umask)


def write_parquet(df: pd.DataFrame, path) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_json(obj, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_text(text: str, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def copy_file(source, path) -> None:
    """Copy the bytes of `source` to `path` atomically."""
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)


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


def gather(paths) -> pd.DataFrame:
    """The rows of every parquet file in `paths`, one table (the per-job metrics behind a table)."""
    return pd.concat([read_parquet(p) for p in paths], ignore_index=True)


def save_tensors(tensors: Mapping[str, torch.Tensor], path, metadata: Mapping[str, str] | None = None) -> None:
    """Write tensors as safetensors (contiguous, atomically); the same tensors and metadata give the same bytes."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=dict(metadata or {}))
        _sort_metadata(tmp)


def _sort_metadata(path: Path) -> None:
    """Rewrite a safetensors header with its metadata in sorted key order, in place.

    The writer emits the metadata in hash-map order, which differs from process to process. The
    re-encoded header holds the same strings in another order, so it has the same length and the
    data offsets stay valid.
    """
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        text = f.read(size)
        header = json.loads(text)
        if "__metadata__" not in header:
            return
        header = {"__metadata__": dict(sorted(header.pop("__metadata__").items())), **header}
        encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(encoded) != len(text.rstrip(b" ")):
            raise RuntimeError(f"{path}: the safetensors header changed length when its metadata was sorted")
        f.seek(8)
        f.write(encoded.ljust(size))


def tensor_names(path) -> list[str]:
    with open_safetensors(path) as f:
        return list(f.keys())


def load_tensors(path, names=None) -> dict[str, torch.Tensor]:
    """Read all tensors, or only `names`, from a safetensors file (never unpickles)."""
    with open_safetensors(path) as f:
        return {k: f.get_tensor(k) for k in (names if names is not None else f.keys())}


def open_safetensors(path):
    """A safetensors file (or a model folder's), memory-mapped, as a context manager."""
    return safe_open(str(safetensors_file(path)), framework="pt")


DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
          "BOOL": torch.bool}  # safetensors dtype names


def tensor_offsets(path) -> dict[str, tuple[str, int]]:
    """name -> (dtype, byte offset of its data in the file) from a safetensors header (a
    little-endian u64 length, then JSON whose `data_offsets` count from the end of the header)."""
    path = safetensors_file(path)
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return {k: (v["dtype"], 8 + size + v["data_offsets"][0]) for k, v in header.items()}


@contextmanager
def intra_op_threads(n: int):
    """torch's intra-op threads set to n for the block, then back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class TensorWriter:
    """A safetensors file whose tensors (names, dtypes, shapes) are known before their values: the
    header goes first, then each tensor's bytes are written at their place with pwrite, a slice at a
    time, so that a merge never holds a whole model (safetensors' save_file needs every tensor in
    memory, and copies them all into one bytes object). Made by tensor_writer."""

    def __init__(self, fd: int, path: Path, entries, metadata: Mapping[str, str]):
        header, self.offsets, end = {"__metadata__": dict(sorted(metadata.items()))} if metadata else {}, {}, 0
        for name, dtype, shape in entries:
            size = math.prod(shape) * DTYPES[dtype].itemsize
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [end, end + size]}
            self.offsets[name], end = (dtype, end), end + size
        encoded = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        encoded += b" " * (-len(encoded) % 8)
        self.fd, self.path, self.start, self.size, self.written = fd, path, 8 + len(encoded), end, 0
        os.write(fd, len(encoded).to_bytes(8, "little") + encoded)

    def write(self, name: str, start: int, values: torch.Tensor) -> None:
        """values (CPU, the tensor's dtype) as the elements of `name` from index `start` on (flat)."""
        dtype, offset = self.offsets[name]
        if values.dtype != DTYPES[dtype]:
            raise WeightspaceError(f"{self.path}: tensor {name} is {dtype}, given {values.dtype}")
        view = memoryview(values.contiguous().reshape(-1).view(torch.uint8).numpy()).cast("B")
        position, done = self.start + offset + start * values.element_size(), 0
        while done < len(view):
            done += os.pwrite(self.fd, view[done:], position + done)
        self.written += done


@contextmanager
def tensor_writer(path, entries: list[tuple[str, str, tuple[int, ...]]],
                  metadata: Mapping[str, str] | None = None) -> Iterator[TensorWriter]:
    """A TensorWriter for `path` (entries: name, safetensors dtype, shape, in file order), written
    under a temporary name and moved onto `path` only once every tensor byte is written."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
        try:
            writer = TensorWriter(fd, Path(path), entries, metadata or {})
            yield writer
        finally:
            os.close(fd)
        if writer.written != writer.size:
            raise WeightspaceError(f"{path}: {writer.written} of {writer.size} tensor bytes written")


class TensorReader:
    """Reads element ranges of safetensors tensors straight into float32 buffers with pread.

    A memory map (safe_open) pays a page fault per 4 KB on first touch and, sliced, a copy into
    a new tensor; pread copies the page-cache bytes once, into a buffer that is reused and stays
    in the CPU's cache. Files are opened once each; close() (or the context) closes them.
    """

    def __init__(self):
        self.fds, self.offsets, self.staging = {}, {}, torch.empty(0, dtype=torch.uint8)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def location(self, path: Path, key: str) -> tuple[str, int]:
        """(dtype, byte offset) of tensor `key` in `path`; the file is opened on first use."""
        if path not in self.fds:
            self.offsets[path] = tensor_offsets(path)
            self.fds[path] = os.open(path, os.O_RDONLY)
        return self.offsets[path][key]

    def read(self, path: Path, dtype: str, offset: int, out: torch.Tensor) -> None:
        """out (float32, contiguous, on the CPU) = the len(out) values of `dtype` from byte `offset`
        of `path` (a file located before)."""
        torch_dtype = DTYPES[dtype]
        if torch_dtype == torch.float32:
            self._pread(path, out, offset)
            return
        size = out.numel() * torch_dtype.itemsize
        if self.staging.numel() < size:
            self.staging = torch.empty(size, dtype=torch.uint8)
        staged = self.staging[:size]
        self._pread(path, staged, offset)
        out.copy_(staged.view(torch_dtype))

    def _pread(self, path: Path, out: torch.Tensor, offset: int) -> None:
        view = memoryview(out.numpy()).cast("B")
        done = 0
        while done < len(view):
            got = os.preadv(self.fds[path], [view[done:]], offset + done)
            if got <= 0:
                raise WeightspaceError(f"{path}: ended early (changed or cut short while being read)")
            done += got


@contextmanager
def open_weights(paths) -> Iterator[dict[Path, object]]:
    """Open each distinct safetensors file (or model folder) once; all closed, and unmapped, on exit."""
    with ExitStack() as stack:
        files = {}
        for path in map(Path, paths):
            if path not in files:
                files[path] = stack.enter_context(open_safetensors(path))
        yield files

"""Datasets in one canonical form: parquet splits with text_a, text_b, label (0..K-1).

Sources: `hf` (datasets.load_dataset), `local` (csv, jsonl or parquet files) and
`demo` (the offline suite committed under resources/demo).
"""

from __future__ import annotations

import csv
import logging
import numbers
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import WeightspaceError
from .io import read_parquet, write_json, write_parquet

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
DEMO_DIR = Path(__file__).resolve().parents[2] / "resources" / "demo"
RARE_COUNT, RARE_SHARE = 5, 0.01  # a training class under 5 examples or under 1% of train is warned of


def prepare_dataset(name: str, spec: dict, data_cfg: dict, out_dir, families=(), demo_dir=DEMO_DIR) -> dict:
    """Load a dataset from its source, check it, cap it and write canonical splits + meta.json."""
    raw, label_names = load_source(name, spec, demo_dir)
    splits = {s: canonical_split(name, s, df, spec) for s, df in raw.items()}
    if "train" not in splits:
        raise WeightspaceError(f"dataset '{name}': needs a train split (found: {', '.join(raw)})")
    check_label_values(name, splits, label_names)
    rng = np.random.default_rng(data_cfg["split_seed"])
    if "test" not in splits:
        log.info("dataset %s: no test split, carving %.0f%% of train", name, 100 * data_cfg["test_fraction"])
        splits["train"], splits["test"] = carve(splits["train"], data_cfg["test_fraction"], rng)
    if "validation" not in splits:
        splits["train"], splits["validation"] = carve(splits["train"], data_cfg["validation_fraction"], rng)
    label_names = label_names or _label_values(splits)
    for split, df in splits.items():
        splits[split] = encode_labels(name, split, df, label_names)
    for split in SPLITS:
        cap = spec.get(f"max_{split}") or data_cfg[f"max_{split}"]
        splits[split] = subsample(splits[split], cap, rng)
        if splits[split].empty:
            raise WeightspaceError(f"dataset '{name}': split '{split}' is empty")
    warn_about_classes(name, splits, label_names)
    out_dir = Path(out_dir)
    for split in SPLITS:
        write_parquet(splits[split], out_dir / f"{split}.parquet")
    test_counts = np.bincount(splits["test"]["label"], minlength=len(label_names))
    meta = {
        "dataset": name,
        "source": spec["source"],
        "families": list(families),
        "label_names": [str(x) for x in label_names],
        "num_labels": len(label_names),
        "pair": bool(splits["train"]["text_b"].notna().any()),
        "sizes": {s: len(splits[s]) for s in SPLITS},
        "majority_test_accuracy": float(test_counts.max() / test_counts.sum()),
    }
    write_json(meta, out_dir / "meta.json")
    log.info("dataset %s: %s", name, meta["sizes"])
    return meta


def load_source(name: str, spec: dict, demo_dir=DEMO_DIR) -> tuple[dict[str, pd.DataFrame], list | None]:
    """Return the raw splits (canonical split name -> DataFrame) and class names if the source knows them."""
    source = spec["source"]
    if source == "demo":
        return _load_demo(name, spec, Path(demo_dir)), spec.get("labels")
    if source == "local":
        return _load_local(name, spec), spec.get("labels")
    if source == "hf":
        return _load_hf(name, spec)
    raise WeightspaceError(f"dataset '{name}': unknown source '{source}'")


def _load_demo(name, spec, demo_dir):
    folder = demo_dir / (spec.get("name") or name)
    if not folder.is_dir():
        known = sorted(p.name for p in demo_dir.iterdir() if p.is_dir()) if demo_dir.is_dir() else []
        raise WeightspaceError(f"dataset '{name}': no demo dataset at {folder} (known: {', '.join(known)})")
    splits = {s: pd.read_parquet(folder / f"{s}.parquet") for s in SPLITS if (folder / f"{s}.parquet").exists()}
    return {s: df.drop(columns="text_b") if df["text_b"].isna().all() else df for s, df in splits.items()}


def _load_local(name, spec):
    readers = {".csv": pd.read_csv, ".jsonl": lambda p: pd.read_json(p, lines=True), ".parquet": pd.read_parquet}
    splits = {}
    for split, file in spec["files"].items():
        path = Path(file)
        if not path.exists():
            raise WeightspaceError(f"dataset '{name}': file {path} (split {split}) not found")
        reader = readers.get(path.suffix)
        if reader is None:
            raise WeightspaceError(f"dataset '{name}': {path} is not .csv, .jsonl or .parquet")
        try:
            _check_unique_columns(name, split, path, _file_columns(path))
            splits[split] = reader(path)
        except WeightspaceError:
            raise
        except Exception as err:  # parse errors of any reader
            raise WeightspaceError(
                f"dataset '{name}': cannot read {path} ({type(err).__name__}: {str(err).splitlines()[0]})"
            ) from None
    return splits


def _file_columns(path: Path) -> list[str]:
    """The column names as the file writes them (pandas reads a csv header 'x,x' as x and x.1).

    A jsonl object keeps one value per key, so its rows cannot repeat a column.
    """
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            return next(csv.reader(f), [])
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_schema(path).names
    return []


def _check_unique_columns(name, split, path, columns) -> None:
    twice = [col for i, col in enumerate(columns) if col and col in columns[:i]]
    if twice:
        raise WeightspaceError(f"dataset '{name}': column '{twice[0]}' appears twice in {path} (split {split})")


def _load_hf(name, spec):
    import datasets

    mapping = spec.get("splits") or {"train": "train", "validation": "validation", "test": "test"}
    kwargs = {key: spec[key] for key in ("data_files", "revision") if spec.get(key)}
    try:
        dsd = datasets.load_dataset(spec["path"], spec.get("name"), **kwargs)
    except Exception as err:  # hub, network and builder errors all end here
        raise WeightspaceError(
            f"dataset '{name}': cannot load '{spec.get('path')}' ({type(err).__name__}: {str(err).splitlines()[0]})"
        ) from None
    splits = {}
    for canonical, source_split in mapping.items():
        if source_split not in dsd:
            raise WeightspaceError(
                f"dataset '{name}': split '{source_split}' (for {canonical}) not in {spec['path']} "
                f"(has: {', '.join(dsd)})"
            )
        splits[canonical] = dsd[source_split].to_pandas()
    feature = dsd[mapping["train"]].features.get(spec["label"])
    names = getattr(feature, "names", None)
    return splits, (spec.get("labels") or names)


def canonical_split(name: str, split: str, df: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Select and rename the text and label columns; reject missing columns and empty texts."""
    columns = {"text_a": spec.get("text_a", "text_a"), "label": spec.get("label", "label")}
    text_b = spec.get("text_b") or ("text_b" if spec["source"] == "demo" and "text_b" in df.columns else None)
    if text_b:
        columns["text_b"] = text_b
    for role, column in columns.items():
        for col in _as_list(column):
            if col not in df.columns:
                raise WeightspaceError(
                    f"dataset '{name}': column '{col}' ({role}) not in split '{split}' "
                    f"(columns: {', '.join(map(str, df.columns))})"
                )
    if df.empty:
        raise WeightspaceError(f"dataset '{name}': split '{split}' is empty")
    header_row = _header_row(df)
    if header_row is not None:
        raise WeightspaceError(
            f"dataset '{name}': the header row repeats at row {header_row} of split '{split}' (two files concatenated?)"
        )
    out = pd.DataFrame(index=df.index)
    for role in ("text_a", "text_b"):
        if role not in columns:
            out[role] = pd.Series(pd.NA, index=df.index, dtype="string")
            continue
        out[role] = _joined_text(df, _as_list(columns[role]))
        empty = out[role].isna() | (out[role].str.strip() == "")
        if empty.any():
            row = int(np.flatnonzero(empty.to_numpy())[0])
            raise WeightspaceError(
                f"dataset '{name}': empty text in column '{columns[role]}' of split '{split}' (row {row})"
            )
    out["label"] = df[columns["label"]]
    missing = out["label"].isna().to_numpy()
    if missing.any():
        raise WeightspaceError(
            f"dataset '{name}': missing label in column '{columns['label']}' of split '{split}' "
            f"(row {int(np.flatnonzero(missing)[0])})"
        )
    return out.reset_index(drop=True)


def _header_row(df: pd.DataFrame) -> int | None:
    """The first row whose values are the column names, or None."""
    repeats = np.ones(len(df), dtype=bool)
    for i, col in enumerate(df.columns):
        values = df.iloc[:, i]
        if not (pd.api.types.is_object_dtype(values) or pd.api.types.is_string_dtype(values)):
            return None  # a header row would have made the column text
        repeats &= (values == str(col)).to_numpy(dtype=bool, na_value=False)
        if not repeats.any():
            return None
    return int(np.flatnonzero(repeats)[0])


def _as_list(column) -> list[str]:
    return [column] if isinstance(column, str) else list(column)


def _joined_text(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """One text column, or several joined with a space (e.g. MultiRC's question and answer)."""
    text = df[columns[0]].astype("string")
    for col in columns[1:]:
        text = text.str.cat(df[col].astype("string"), sep=" ", na_rep="")
    return text.str.strip()


def check_label_values(name: str, splits: dict[str, pd.DataFrame], label_names: list | None) -> None:
    """Refuse label values that cannot be what the user meant, in the splits as the source gives them.

    Classes listed twice, labels of several kinds (0 and "0"), a train split of one class and,
    when the classes come from the data, a validation or test label that train never has.
    """
    if label_names:
        twice = [v for i, v in enumerate(label_names) if v in label_names[:i]]
        if twice:
            raise WeightspaceError(
                f"dataset '{name}': label {twice[0]!r} is given twice in labels (expected distinct values)"
            )
    values = {split: splits[split]["label"].unique().tolist() for split in sorted(splits, key=lambda s: s != "train")}
    _check_one_kind(name, values)
    train = values["train"]
    if len(train) == 1:
        most = max(values, key=lambda s: len(values[s]))
        also = f" but split '{most}' has {len(values[most])} ({_listed(values[most])})" if len(values[most]) > 1 else ""
        raise WeightspaceError(f"dataset '{name}': split 'train' has only one class ({train[0]!r}){also}")
    if label_names is None:
        known = set(train)
        for split, split_values in values.items():
            unseen = [v for v in split_values if v not in known]
            if unseen:
                raise WeightspaceError(
                    f"dataset '{name}': label {unseen[0]!r} in split '{split}' never occurs in split 'train' "
                    f"(train has: {_listed(train)})"
                )


def _check_one_kind(name, values: dict[str, list]) -> None:
    first = values["train"][0]
    for split, split_values in values.items():
        other = next((v for v in split_values if _label_kind(v) != _label_kind(first)), None)
        if other is not None:
            raise WeightspaceError(
                f"dataset '{name}': label {other!r} in split '{split}' is {_label_kind(other)} but label {first!r} "
                f"in split 'train' is {_label_kind(first)} (the label values of the splits must be of one kind)"
            )


def _label_kind(value) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, (bool, np.bool_)):
        return "a boolean"
    if isinstance(value, numbers.Number):
        return "a number"
    return f"a {type(value).__name__}"


def _listed(values: list) -> str:
    return ", ".join(map(str, _sorted_labels(values)))


def _label_values(splits) -> list:
    return _sorted_labels(pd.concat([df["label"] for df in splits.values()]).unique().tolist())


def _sorted_labels(values: list) -> list:
    return sorted(values, key=lambda v: (str(type(v)), v))


def encode_labels(name: str, split: str, df: pd.DataFrame, label_names: list) -> pd.DataFrame:
    """Map label values to 0..K-1 in the order of `label_names`.

    Integer labels with string class names are already class codes (datasets' ClassLabel).
    """
    labels = df["label"]
    if pd.api.types.is_integer_dtype(labels) and all(isinstance(v, str) for v in label_names):
        index = {i: i for i in range(len(label_names))}
    else:
        index = {v: i for i, v in enumerate(label_names)}
    codes = labels.map(index)
    if codes.isna().any():
        bad = labels[codes.isna()].iloc[0]
        raise WeightspaceError(
            f"dataset '{name}': unknown label {bad!r} in split '{split}' "
            f"(expected one of: {', '.join(map(str, index))})"
        )
    out = df.copy()
    out["label"] = codes.astype("int64")
    return out


def warn_about_classes(name: str, splits: dict[str, pd.DataFrame], label_names: list) -> None:
    """Warn of a class rare in train, or in train but not in test, in the splits as written: a user may mean either."""
    train = np.bincount(splits["train"]["label"], minlength=len(label_names))
    test = np.bincount(splits["test"]["label"], minlength=len(label_names))
    for label, n_train, n_test in zip(label_names, train, test):
        if n_train < max(RARE_COUNT, RARE_SHARE * train.sum()):
            log.warning(
                "dataset '%s': class '%s' is rare in split 'train': %d of %d examples "
                "(rare: fewer than %d or under %.0f%%)", name, label, n_train, train.sum(), RARE_COUNT, 100 * RARE_SHARE
            )
        if n_train and not n_test:
            log.warning("dataset '%s': class '%s' has %d examples in split 'train' and none in split 'test'",
                        name, label, n_train)


def carve(train: pd.DataFrame, fraction: float, rng) -> tuple[pd.DataFrame, pd.DataFrame]:
    order = rng.permutation(len(train))
    n_val = max(1, int(round(len(train) * fraction)))
    return train.iloc[order[n_val:]].reset_index(drop=True), train.iloc[order[:n_val]].reset_index(drop=True)


def subsample(df: pd.DataFrame, cap: int | None, rng) -> pd.DataFrame:
    """At most `cap` rows drawn by `rng`, in their original order."""
    if cap is None or len(df) <= cap:
        return df.reset_index(drop=True)
    keep = np.sort(rng.choice(len(df), size=cap, replace=False))
    return df.iloc[keep].reset_index(drop=True)


def nested_subsample(df: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """The first n examples of one fixed shuffle: the same subset for every run seed, and each
    size a subset of every larger one, so that runs differ in the amount of data only."""
    order = np.random.default_rng(seed).permutation(len(df))
    return df.iloc[np.sort(order[:n])].reset_index(drop=True)


def read_split(data_dir, split: str) -> pd.DataFrame:
    path = Path(data_dir) / f"{split}.parquet"
    if not path.exists():
        raise WeightspaceError(f"{path}: file not found (run the prepare_data rule)")
    return read_parquet(path)

"""The paper config's hub datasets, checked offline against the cards in tests/data/hub_datasets.yaml."""

import fnmatch
import os

import pytest
import yaml

from helpers import ROOT, shipped_workdir
from weightspace.config import validated_config
from weightspace.data import prepare_dataset

SCHEMA = ROOT / "workflow/schemas/config.schema.yaml"
PAPER = ROOT / "config/config.yaml"
HUB = yaml.safe_load((ROOT / "tests/data/hub_datasets.yaml").read_text())
PARQUET_EXPORT = "refs/convert/parquet"
RAW = yaml.safe_load(PAPER.read_text())
HF_DATASETS = sorted(name for name, spec in RAW["datasets"].items() if spec["source"] == "hf")


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    # local dataset files are relative to the working directory, where ISEAR's export would be
    cwd = os.getcwd()
    os.chdir(shipped_workdir(tmp_path_factory.mktemp("paper")))
    try:
        return validated_config(RAW, SCHEMA, source=str(PAPER))
    finally:
        os.chdir(cwd)


def _as_list(columns) -> list:
    if columns is None:
        return []
    return [columns] if isinstance(columns, str) else list(columns)


def _glob(pattern: str, path: str) -> bool:
    """Match as the hub's file system globs: `*` stays within one folder."""
    parts, names = pattern.split("/"), path.split("/")
    return len(parts) == len(names) and all(fnmatch.fnmatchcase(n, p) for p, n in zip(parts, names))


def hub_problems(spec: dict, hub: dict) -> list[str]:
    """What in one `source: hf` entry disagrees with its repository's card (empty: nothing)."""
    key = spec["path"] + (f"@{spec['revision']}" if spec.get("revision") else "")
    repo = hub.get(key)
    if repo is None:
        return [f"{key}: not in tests/data/hub_datasets.yaml"]
    configs, name = repo["configs"], spec.get("name")
    if name is not None and spec.get("revision") == PARQUET_EXPORT:
        return [f"{key}: a parquet export has no named configs (pick its folder with data_files)"]
    if spec.get("data_files"):
        problems, picked = [], set()
        for split, pattern in spec["data_files"].items():
            owners = {c for c, info in configs.items() if any(_glob(pattern, f) for f in info.get("files", []))}
            if not owners:
                problems.append(f"{key}: data_files.{split} {pattern!r} matches no file")
            picked |= owners
        if len(picked) > 1:
            problems.append(f"{key}: data_files mix configs {sorted(picked)}")
        if problems:
            return problems
        columns, splits = configs[picked.pop()]["columns"], list(spec["data_files"])
    else:
        name = repo.get("default") if name is None else name
        if name is None:
            return [f"{key}: needs a `name` (one of: {', '.join(configs)})"]
        if name not in configs:
            return [f"{key}: no config {name!r} (has: {', '.join(configs)})"]
        columns, splits = configs[name]["columns"], configs[name]["splits"]
    problems = [
        f"{key}: column {column!r} ({role}) not in {columns}"
        for role in ("text_a", "text_b", "label")
        for column in _as_list(spec.get(role))
        if column not in columns
    ]
    mapping = spec.get("splits") or {s: s for s in ("train", "validation", "test")}
    problems += [
        f"{key}: split {split!r} (for {canonical}) not in {splits}"
        for canonical, split in mapping.items()
        if split not in splits
    ]
    return problems


@pytest.mark.parametrize("name", HF_DATASETS)
def test_hub_dataset_columns_and_splits_match_its_card(config, name):
    assert hub_problems(config["datasets"][name], HUB["hub"]) == []


@pytest.mark.parametrize(
    "name, change",
    [
        ("mrpc", {"text_b": "sentense2"}),
        ("multirc", {"text_b": ["question", "answers"]}),
        ("yahoo_answers", {"label": "topics"}),
        ("mnli", {"splits": {"train": "train", "test": "validation_match"}}),
        ("sst5", {"splits": {"train": "train", "validation": "dev", "test": "test"}}),
        ("tweet_emoji", {"name": "emojis"}),
        ("amazon_reviews_multi", {"name": None}),
        ("anli", {"splits": {"train": "train_r3", "validation": "validation", "test": "test"}}),
        ("anli", {"data_files": {"train": "plain_text/train-r*.parquet", "validation": "plain_text/dev_r*.parquet",
                                 "test": "plain_text/test_r*.parquet"}}),
        ("financial_phrasebank", {"data_files": {"train": "sentences_50agre/train/*.parquet"}}),
        ("financial_phrasebank", {"data_files": {"train": "*/train/*.parquet"}}),
        ("esnli", {"name": "plain_text"}),
        ("trec_coarse", {"revision": None}),
    ],
)
def test_a_typo_is_caught(config, name, change):
    assert hub_problems({**config["datasets"][name], **change}, HUB["hub"])


def test_no_dataset_is_read_from_a_loading_script(config):
    script_only = set(HUB["script_only"])
    from_scripts = [name for name in HF_DATASETS if config["datasets"][name]["path"] in script_only
                    and config["datasets"][name].get("revision") != PARQUET_EXPORT]
    assert from_scripts == []


def test_same_task_ex_is_every_other_dataset(config):
    same_task = config["region"]["granularities"]["same_task"]
    assert len(same_task["ex"]) == len(set(same_task["ex"]))
    assert set(same_task["ex"]) == set(config["datasets"]) - set(same_task["in"])


def test_hf_source_passes_revision_and_data_files_to_load_dataset(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        rows = {"sentence": ["up", "down", "flat", "up again"], "label": [2, 0, 1, 2]}
        features = datasets.Features({"sentence": datasets.Value("string"),
                                      "label": datasets.ClassLabel(names=["negative", "neutral", "positive"])})
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows, features=features)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = RAW["datasets"]["financial_phrasebank"]
    data = {"max_train": None, "max_validation": None, "max_test": None, "validation_fraction": 0.25,
            "test_fraction": 0.25, "split_seed": 0}
    meta = prepare_dataset("financial_phrasebank", spec, data, tmp_path)
    assert calls == [("takala/financial_phrasebank", None,
                      {"data_files": {"train": "sentences_50agree/train/*.parquet"}, "revision": PARQUET_EXPORT})]
    assert meta["label_names"] == ["negative", "neutral", "positive"]

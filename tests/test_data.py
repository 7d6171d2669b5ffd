import json

import pandas as pd
import pytest

from conftest import ROOT, make_tiny_datasets
from weightspace.data import prepare_dataset, read_split
from weightspace.errors import WeightspaceError

DATA_CFG = {"max_train": None, "max_validation": 1000, "max_test": None, "validation_fraction": 0.1,
            "test_fraction": 0.2, "split_seed": 0}


@pytest.fixture(scope="module")
def specs(tmp_path_factory):
    return make_tiny_datasets(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("name", ["tiny_sent", "tiny_topic", "tiny_pair"])
def test_local_sources_become_canonical_splits(specs, tmp_path, name):
    meta = prepare_dataset(name, specs[name], DATA_CFG, tmp_path, families=["f"])
    for split in ("train", "validation", "test"):
        df = pd.read_parquet(tmp_path / f"{split}.parquet")
        assert list(df.columns) == ["text_a", "text_b", "label"]
        assert df["label"].between(0, meta["num_labels"] - 1).all()
        assert (df["text_b"].notna().all() if name == "tiny_pair" else df["text_b"].isna().all())
    assert meta["sizes"] == {"train": 144, "validation": 16, "test": 48}
    assert json.loads((tmp_path / "meta.json").read_text()) == meta
    assert 0 < meta["majority_test_accuracy"] < 1


def test_label_order_follows_config(specs, tmp_path):
    meta = prepare_dataset("tiny_sent", specs["tiny_sent"], DATA_CFG, tmp_path)
    assert meta["label_names"] == ["neg", "pos"]
    raw = pd.read_csv(specs["tiny_sent"]["files"]["test"])
    test = pd.read_parquet(tmp_path / "test.parquet")
    assert (test["label"] == (raw["polarity"] == "pos").astype(int)).all()


def test_caps_and_carving_are_deterministic(specs, tmp_path):
    cfg = {**DATA_CFG, "max_train": 50, "max_test": 20}
    prepare_dataset("tiny_topic", specs["tiny_topic"], cfg, tmp_path / "a")
    prepare_dataset("tiny_topic", specs["tiny_topic"], cfg, tmp_path / "b")
    for split in ("train", "validation", "test"):
        a, b = (pd.read_parquet(tmp_path / x / f"{split}.parquet") for x in "ab")
        pd.testing.assert_frame_equal(a, b)
    assert len(a) == 20 and len(pd.read_parquet(tmp_path / "a/train.parquet")) == 50


def test_test_split_is_carved_when_missing(specs, tmp_path):
    spec = {**specs["tiny_sent"], "files": {"train": specs["tiny_sent"]["files"]["train"]}}
    meta = prepare_dataset("tiny_sent", spec, DATA_CFG, tmp_path)
    assert meta["sizes"]["test"] == 32 and sum(meta["sizes"].values()) == 160


def test_multiple_columns_are_joined(specs, tmp_path):
    spec = {**specs["tiny_pair"], "text_a": ["first", "gold"], "text_b": None}
    prepare_dataset("tiny_pair", spec, DATA_CFG, tmp_path)
    train = pd.read_parquet(tmp_path / "train.parquet")
    assert train["text_a"].str.endswith(("same", "different")).all()
    assert train["text_b"].isna().all()


def _bad(specs, tmp_path, name, frame_change=None, **spec_change):
    spec = {**specs[name], **spec_change}
    if frame_change:
        path = tmp_path / "bad.csv"
        frame_change(pd.read_csv(specs[name]["files"]["train"])).to_csv(path, index=False)
        spec["files"] = {**spec["files"], "train": str(path)}
    with pytest.raises(WeightspaceError) as err:
        prepare_dataset(name, spec, DATA_CFG, tmp_path / "out")
    return str(err.value)


def test_missing_column(specs, tmp_path):
    msg = _bad(specs, tmp_path, "tiny_sent", text_a="review")
    assert msg.startswith("dataset 'tiny_sent': column 'review' (text_a) not in split 'train'")


def test_unknown_label(specs, tmp_path):
    msg = _bad(specs, tmp_path, "tiny_sent", lambda df: df.assign(polarity=df.polarity.replace("pos", "meh")))
    assert msg.startswith("dataset 'tiny_sent': unknown label 'meh' in split 'train' (expected one of: neg, pos)")


def test_empty_text(specs, tmp_path):
    msg = _bad(specs, tmp_path, "tiny_sent", lambda df: df.assign(sentence=[""] + df.sentence[1:].tolist()))
    assert msg == "dataset 'tiny_sent': empty text in column 'sentence' of split 'train' (row 0)"


def test_empty_split(specs, tmp_path):
    msg = _bad(specs, tmp_path, "tiny_sent", lambda df: df.iloc[:0])
    assert msg == "dataset 'tiny_sent': split 'train' is empty"


def test_missing_file(specs, tmp_path):
    msg = _bad(specs, tmp_path, "tiny_sent", files={"train": "nope.csv"})
    assert msg == "dataset 'tiny_sent': file nope.csv (split train) not found"


def test_hf_source_offline_with_a_local_builder(specs, tmp_path):
    """The hf adapter (datasets.load_dataset), fed local parquet files: no hub involved."""
    files = specs["tiny_pair"]["files"]
    spec = {"source": "hf", "path": "parquet", "data_files": {"train": files["train"], "validation": files["test"]},
            "text_a": "first", "text_b": "second", "label": "gold", "splits": {"train": "train", "test": "validation"}}
    meta = prepare_dataset("hf_pair", spec, DATA_CFG, tmp_path)
    assert meta["label_names"] == ["different", "same"] and meta["pair"]
    assert meta["sizes"] == {"train": 144, "validation": 16, "test": 48}


def test_hf_missing_split_names_the_dataset(specs, tmp_path):
    spec = {"source": "hf", "path": "parquet", "data_files": {"train": specs["tiny_pair"]["files"]["train"]},
            "text_a": "first", "label": "gold", "splits": {"train": "train", "test": "test"}}
    with pytest.raises(WeightspaceError, match=r"dataset 'x': split 'test' \(for test\) not in parquet"):
        prepare_dataset("x", spec, DATA_CFG, tmp_path)


def test_demo_suite_datasets_load(tmp_path):
    demo = ROOT / "resources/demo"
    names = sorted(p.name for p in demo.iterdir() if p.is_dir())
    assert len(names) >= 10
    for name in names:
        meta = prepare_dataset(name, {"source": "demo"}, {**DATA_CFG, "max_train": 2000}, tmp_path / name)
        assert meta["sizes"]["train"] >= 900 and meta["sizes"]["test"] >= 300, name


def test_corrupt_prepared_split_is_one_line(tmp_path):
    (tmp_path / "train.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(WeightspaceError) as err:
        read_split(tmp_path, "train")
    assert str(err.value).startswith(f"{tmp_path / 'train.parquet'}: not a readable parquet file (")
    assert "\n" not in str(err.value)

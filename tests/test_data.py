import json

import pandas as pd
import pytest

from helpers import ROOT, make_tiny_datasets
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


def _csv(*labels, header="text,label") -> str:
    return header + "\n" + "".join(f"word{i} text,{label}\n" for i, label in enumerate(labels))


def _local(tmp_path, **files) -> dict:
    """A local dataset of the given split -> (file name, text), text in column `text`, label in `label`."""
    for filename, text in files.values():
        (tmp_path / filename).write_text(text)
    return {"source": "local", "text_a": "text", "label": "label",
            "files": {split: str(tmp_path / filename) for split, (filename, _) in files.items()}}


def _refusal(spec, tmp_path) -> str:
    with pytest.raises(WeightspaceError) as err:
        prepare_dataset("d", spec, DATA_CFG, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    return str(err.value)


@pytest.mark.parametrize("split", ["test", "validation"])
def test_label_train_never_has(tmp_path, split):
    spec = _local(tmp_path, train=("train.csv", _csv(*"ab" * 10)), **{split: (f"{split}.csv", _csv(*"abc" * 4))})
    msg = _refusal(spec, tmp_path)
    assert msg == f"dataset 'd': label 'c' in split '{split}' never occurs in split 'train' (train has: a, b)"


def test_unknown_test_label_with_labels_given_is_unknown(tmp_path):
    spec = _local(tmp_path, train=("train.csv", _csv(*"ab" * 10)), test=("test.csv", _csv(*"abc" * 4)))
    msg = _refusal({**spec, "labels": ["a", "b"]}, tmp_path)
    assert msg == "dataset 'd': unknown label 'c' in split 'test' (expected one of: a, b)"


def test_integer_and_text_labels_are_refused(tmp_path):
    spec = _local(tmp_path, train=("train.csv", _csv(*[0, 1] * 10)), test=("test.csv", _csv(*["neg", "pos"] * 4)))
    assert _refusal(spec, tmp_path) == ("dataset 'd': label 'neg' in split 'test' is text but label 0 in split 'train' "
                                        "is a number (the label values of the splits must be of one kind)")


def test_integer_and_digit_string_labels_are_refused(tmp_path):
    pd.DataFrame({"text": ["a b", "c d"] * 4, "label": ["0", "1"] * 4}).to_parquet(tmp_path / "test.parquet")
    spec = _local(tmp_path, train=("train.csv", _csv(*[0, 1] * 10)))
    spec["files"]["test"] = str(tmp_path / "test.parquet")
    assert _refusal(spec, tmp_path).startswith("dataset 'd': label '0' in split 'test' is text but label 0 in split")


@pytest.mark.parametrize("labels", [None, ["a", "b"]])
def test_one_class_train_is_refused(tmp_path, labels):
    spec = _local(tmp_path, train=("train.csv", _csv(*"a" * 20)), test=("test.csv", _csv(*"ab" * 4)))
    msg = _refusal({**spec, "labels": labels}, tmp_path)
    assert msg == "dataset 'd': split 'train' has only one class ('a') but split 'test' has 2 (a, b)"


def test_one_class_everywhere_is_refused(tmp_path):
    spec = _local(tmp_path, train=("train.csv", _csv(*"a" * 20)))
    assert _refusal(spec, tmp_path) == "dataset 'd': split 'train' has only one class ('a')"


def test_repeated_header_is_refused(tmp_path):
    spec = _local(tmp_path, train=("train.csv", _csv(*"ab" * 5) + _csv(*"ab" * 5)), test=("test.csv", _csv(*"ab" * 4)))
    msg = _refusal(spec, tmp_path)
    assert msg == "dataset 'd': the header row repeats at row 10 of split 'train' (two files concatenated?)"


def test_repeated_csv_column_is_refused(tmp_path):
    spec = _local(tmp_path, train=("train.csv", "text,label,label\na b,a,x\nc d,b,y\n"))
    path = tmp_path / "train.csv"
    assert _refusal(spec, tmp_path) == f"dataset 'd': column 'label' appears twice in {path} (split train)"


def test_repeated_parquet_column_is_refused(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "train.parquet"
    pq.write_table(pa.table([["a b", "c d"], ["x", "y"], ["e f", "g h"]], names=["text", "label", "text"]), path)
    spec = {"source": "local", "text_a": "text", "label": "label", "files": {"train": str(path)}}
    assert _refusal(spec, tmp_path) == f"dataset 'd': column 'text' appears twice in {path} (split train)"


def test_missing_label_is_refused(tmp_path):
    spec = _local(tmp_path, train=("train.csv", _csv("a", "b", "a", "", "b")))
    assert _refusal(spec, tmp_path) == "dataset 'd': missing label in column 'label' of split 'train' (row 3)"


def test_label_given_twice_is_refused(tmp_path):
    spec = _local(tmp_path, train=("train.csv", _csv(*"ab" * 10)))
    msg = _refusal({**spec, "labels": ["a", "b", "a"]}, tmp_path)
    assert msg == "dataset 'd': label 'a' is given twice in labels (expected distinct values)"


def _warnings(caplog, spec, tmp_path) -> list[str]:
    with caplog.at_level("WARNING", logger="weightspace.data"):
        prepare_dataset("d", spec, DATA_CFG, tmp_path / "out")
    assert (tmp_path / "out/meta.json").exists()
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


@pytest.mark.parametrize("counts, rare", [((40, 40, 3), "3 of 83"), ((600, 600, 6), "6 of 1206"),
                                         ((200, 195, 5), None)])
def test_rare_training_class_is_warned_of(caplog, tmp_path, counts, rare):
    train = _csv(*(label for label, n in zip("abc", counts) for _ in range(n)))
    spec = _local(tmp_path, train=("train.csv", train), validation=("val.csv", _csv(*"abc" * 3)),
                  test=("test.csv", _csv(*"abc" * 3)))
    expected = [f"dataset 'd': class 'c' is rare in split 'train': {rare} examples (rare: fewer than 5 or under 1%)"]
    assert _warnings(caplog, spec, tmp_path) == (expected if rare else [])


def test_training_class_missing_from_test_is_warned_of(caplog, tmp_path):
    spec = _local(tmp_path, train=("train.csv", _csv(*"abc" * 10)), validation=("val.csv", _csv(*"abc")),
                  test=("test.csv", _csv(*"ab" * 4)))
    assert _warnings(caplog, spec, tmp_path) == ["dataset 'd': class 'c' has 10 examples in split 'train' and none in "
                                                 "split 'test'"]

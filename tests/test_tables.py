"""Every parquet table of the tiny run is tidy for pandas: long, typed, no lists, JSON or mostly-empty columns.

The rule, per column of each results/tables/*.parquet and results/metrics/clustering/*.parquet
(found by glob, so a new table is checked without being named here):
- its dtype is numeric, boolean or string: never object, which is what pandas makes of lists,
  dicts and columns of mixed types;
- a string column holds no JSON (a cell opening with '{' or '[') and no number written as text,
  except FREE_TEXT columns, prose that may quote a number;
- it is filled in at least half its rows, but for a column whose empty cell is a value (shots:
  <NA> is the full training set) and for a float column that this config cannot fill in any row
  (EMPTY_BY_CONFIG);
and no two rows of a table are the same.
"""

from __future__ import annotations

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

GLOBS = ("results/tables/*.parquet", "results/metrics/clustering/*.parquet")
# prose for a reader: the paper's claim may be a number ("88") or words ("rises")
FREE_TEXT = {("claims", "paper")}
# <NA> is a value: the full training set
NULL_IS_A_VALUE = {"shots"}
# a t interval over seeds, which the tiny config's one centroid seed does not have
EMPTY_BY_CONFIG = {("centroid", "gain_lo"), ("centroid", "gain_hi")}


@pytest.fixture(scope="module")
def tables(tiny_run) -> dict[str, pd.DataFrame]:
    workdir, _ = tiny_run
    paths = sorted(p for pattern in GLOBS for p in workdir.glob(pattern))
    return {str(p.relative_to(workdir)): pd.read_parquet(p) for p in paths}


def table_name(path: str) -> str:
    """'results/tables/pb.parquet' -> 'pb'; a clustering metrics file by its kind ('tiny.f1.parquet' -> 'f1')."""
    parts = path.rsplit("/", 1)[1].split(".")
    return parts[-2] if len(parts) > 2 else parts[0]


def test_the_run_writes_the_tables_this_file_knows(tables):
    names = {p.rsplit("/", 1)[1] for p in tables if p.startswith("results/tables/")}
    assert {"finetune.parquet", "finetune_curves.parquet", "clustering.parquet", "clustering_f1.parquet",
            "pb.parquet", "pb_models.parquet", "line_models.parquet", "leave_models.parquet", "lines.parquet",
            "leave_centroid.parquet", "region_losses.parquet", "region_effects.parquet", "centroid.parquet",
            "centroid_runs.parquet", "centroid_curves.parquet", "claims.parquet"} <= names
    assert "region_models.parquet" not in names
    assert all(len(df) for df in tables.values()), [p for p, df in tables.items() if df.empty]


def test_no_column_holds_objects(tables):
    bad = {(path, c): str(df[c].dtype) for path, df in tables.items() for c in df
           if not (pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c])
                   or isinstance(df[c].dtype, pd.StringDtype))}
    assert not bad


def test_string_columns_hold_neither_json_nor_numbers(tables):
    bad = {}
    for path, df in tables.items():
        for c in df.select_dtypes(include="string"):
            cells = df[c].dropna()
            json = cells[cells.str.match(r"\s*[\[{]")]
            numbers = cells[pd.to_numeric(cells, errors="coerce").notna()]
            if len(json) or (len(numbers) and (table_name(path), c) not in FREE_TEXT):
                bad[(path, c)] = sorted(set(json) | set(numbers))[:3]
    assert not bad


def test_no_column_is_mostly_empty(tables):
    bad = {}
    for path, df in tables.items():
        for c in df:
            empty = float(df[c].isna().mean())
            if c in NULL_IS_A_VALUE or empty <= 0.5:
                continue
            if (table_name(path), c) in EMPTY_BY_CONFIG and empty == 1.0 and df[c].dtype == "float64":
                continue
            bad[(path, c)] = round(empty, 2)
    assert not bad


def test_every_row_is_one_observation(tables):
    duplicated = {path: int(df.duplicated().sum()) for path, df in tables.items() if df.duplicated().any()}
    assert not duplicated


def test_shots_is_a_nullable_integer_wherever_it_appears(tables):
    with_shots = {path: df["shots"] for path, df in tables.items() if "shots" in df}
    assert {table_name(p) for p in with_shots} == {"centroid", "centroid_runs", "centroid_curves"}
    for path, shots in with_shots.items():
        assert shots.dtype == "Int64" and shots.isna().any() and set(shots.dropna()) == {40}, path


def test_curves_are_long(tables):
    finetune = tables["results/tables/finetune_curves.parquet"]
    assert list(finetune.columns) == ["dataset", "seed", "split", "metric", "step", "value"]
    runs = tables["results/tables/finetune.parquet"]
    assert len(finetune.groupby(["dataset", "seed"])) == len(runs)
    # the kept step's validation loss in the run's row is the curve's at that step
    kept = runs.merge(finetune[(finetune.split == "validation") & (finetune.metric == "loss")],
                      left_on=["dataset", "seed", "kept_step"], right_on=["dataset", "seed", "step"])
    assert len(kept) == len(runs) and (kept.value == kept.validation_loss).all()


def test_the_markdown_tables_say_what_the_parquet_tables_hold(tiny_run, tables):
    workdir, _ = tiny_run
    f1 = tables["results/tables/clustering_f1.parquet"]
    row = f1[(f1.granularity == "family") & (f1.metric == "cosine") & (f1.group == "topic")].iloc[0]
    md = (workdir / "results/tables/clustering.md").read_text()
    assert f"topic {row.f1:.2f} ({row.f1_majority:.2f})" in md
    centroid = (workdir / "results/tables/centroid.md").read_text()
    assert "## full training set" in centroid and "## at most 40 training examples" in centroid
    pb = tables["results/tables/pb.parquet"].set_index(["granularity", "a", "b"])
    same = pb.loc[("same_dataset", "in", "ex")]
    assert f"| same_dataset | {int(same.n_a)} | " in (workdir / "results/tables/pb.md").read_text()

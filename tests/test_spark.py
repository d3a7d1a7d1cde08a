"""smartprice.spark on a real local Spark session: prices equal the CLI's, every row priced once, bad inputs named."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_catalog, shared_file
from smartprice import CatalogError, PricePredictor, read_catalog
from smartprice import spark as spark_module
from smartprice.modelio import ModelDirError

ROOT = Path(__file__).resolve().parents[1]
REAL_ROWS = 300  # a few hundred real listings: every code path, seconds of work


def _skip_reason() -> str | None:
    """Why Spark cannot run here, or None."""
    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install -e '.[spark]')"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "Java is not installed (Spark needs Java 17 or newer)"
    return None


# pandas >= 3: the warning PySpark gives the tests' own calls (session start, createDataFrame from pandas);
# test_no_pandas_warning_* check that predict_prices itself gives none.
pytestmark = pytest.mark.filterwarnings("ignore:PySpark does not yet fully support:FutureWarning")
needs_spark = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


@pytest.fixture(scope="session")
def spark():
    """One small local Spark session for the whole run: two cores, 1 GB driver, no UI, errors-only logging."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the workers run this interpreter (smartprice installed)
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("smartprice-tests")
               .config("spark.driver.memory", "1g").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false").config("spark.sql.shuffle.partitions", "4")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A cheap CPU model fitted on the shipped example catalog."""
    directory = tmp_path_factory.mktemp("spark") / "model"
    train = read_catalog(ROOT / "examples" / "train.csv", labelled=True)
    PricePredictor(preset="cpu", trees=50, folds=2).fit(train).save(directory)
    return directory


@pytest.fixture(scope="session")
def real_parquet(tmp_path_factory) -> Path:
    """The first few hundred rows of test_unlabeled.csv as Parquet (skipped without the shared data)."""
    source = shared_file("test_unlabeled.csv")
    path = tmp_path_factory.mktemp("spark-real") / "test.parquet"
    pd.read_csv(source, dtype=str, keep_default_na=False, nrows=REAL_ROWS).to_parquet(path, index=False)
    return path


def _collect(frame) -> dict[str, float]:
    """sample_id -> price of a Spark result, each id once."""
    rows = frame.collect()
    prices = {str(r["sample_id"]): r["price"] for r in rows}
    assert len(prices) == len(rows), "a sample_id came back twice"
    return prices


def _example():
    """examples/spark_predict.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("spark_predict", ROOT / "examples" / "spark_predict.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example


def _inline(rows: int = 40) -> pd.DataFrame:
    """Listings with the awkward cases: blank content, null content, odd units."""
    frame = make_catalog(rows, labelled=False)[["sample_id", "catalog_content"]]
    for row, text in {3: "", 7: None, 11: "Value: 0.0\nUnit: nonsense"}.items():
        if row < rows:
            frame.loc[row, "catalog_content"] = text
    return frame


# --- the real session ---------------------------------------------------------------------------

@needs_spark
def test_equals_cli_on_real_rows_in_several_partitions(spark, model_dir, real_parquet, tmp_path):
    out = tmp_path / "cli.csv"
    subprocess.run([sys.executable, "-m", "smartprice", "-q", "predict", str(model_dir), str(real_parquet), "--out", str(out)],
                   check=True, capture_output=True, text=True)
    cli = pd.read_csv(out, dtype={"sample_id": str})
    expected = dict(zip(cli["sample_id"], cli["price"]))
    catalog = spark.read.parquet(str(real_parquet))
    by_spark = _collect(spark_module.predict_prices(catalog.repartition(4), model_dir))
    assert len(by_spark) == len(expected) == REAL_ROWS
    assert by_spark.keys() == expected.keys()
    got = np.array([by_spark[i] for i in cli["sample_id"]])
    np.testing.assert_allclose(got, cli["price"].to_numpy(), rtol=0, atol=1e-9)
    assert np.isfinite(got).all() and (got > 0).all()
    # order, partitioning and batch size do not change a price: shuffled rows, 3 partitions, 37-row predict calls
    shuffled = catalog.orderBy(catalog["catalog_content"].desc()).repartition(3)
    again = _collect(spark_module.predict_prices(shuffled, str(model_dir), batch_size=37))
    assert again.keys() == expected.keys()
    np.testing.assert_allclose([again[i] for i in cli["sample_id"]], got, rtol=0, atol=1e-9)


@needs_spark
def test_blank_and_null_content_priced_like_predictor(spark, model_dir):
    frame = _inline()
    prices = _collect(spark_module.predict_prices(spark.createDataFrame(frame).repartition(3), model_dir, batch_size=8))
    expected = PricePredictor.load(model_dir).predict(frame.fillna({"catalog_content": ""}))
    got = np.array([prices[i] for i in frame["sample_id"]])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    assert np.isfinite(got).all() and (got > 0).all()


@needs_spark
def test_column_names_and_id_type_are_kept(spark, model_dir):
    frame = _inline(12).rename(columns={"sample_id": "sku", "catalog_content": "listing"})
    frame["sku"] = frame["sku"].astype("int64")
    result = spark_module.predict_prices(spark.createDataFrame(frame).repartition(2), model_dir, id_column="sku",
                                         text_column="listing", price_column="predicted")
    assert result.columns == ["sku", "predicted"]
    assert dict(result.dtypes) == {"sku": "bigint", "predicted": "double"}
    assert sorted(r["sku"] for r in result.collect()) == sorted(frame["sku"])


@needs_spark
def test_null_sample_id_fails_the_job_naming_the_column(spark, model_dir):
    frame = _inline(10)
    frame.loc[4, "sample_id"] = None
    result = spark_module.predict_prices(spark.createDataFrame(frame).repartition(2), model_dir)
    with pytest.raises(Exception, match=r"CatalogError: input DataFrame, column 'sample_id': 1 null or blank id") as error:
        result.collect()
    found = _example().USER_ERROR.search(str(error.value))  # what examples/spark_predict.py prints as its one line
    assert found and found.group(1).startswith("input DataFrame, column 'sample_id': 1 null or blank id(s)")


@needs_spark
@pytest.mark.parametrize("column,message", [
    ("catalog_content", r"column 'catalog_content': type bigint, expected string"),
    ("missing", r"missing required column 'catalog_content'"),
])
def test_bad_content_column_refused_on_the_driver(spark, model_dir, column, message):
    frame = pd.DataFrame({"sample_id": ["a", "b"], "catalog_content": [1, 2]})
    if column == "missing":
        frame = frame.rename(columns={"catalog_content": "text"})
    with pytest.raises(CatalogError, match=message):
        spark_module.predict_prices(spark.createDataFrame(frame), model_dir)


@needs_spark
def test_unreadable_model_directory(spark, tmp_path):
    catalog = spark.createDataFrame(_inline(6))
    with pytest.raises(ModelDirError, match="model directory not found"):  # on the driver, before any job
        spark_module.predict_prices(catalog, tmp_path / "nowhere")
    lazy = spark_module.predict_prices(catalog, tmp_path / "nowhere", check_on_driver=False)
    with pytest.raises(Exception, match=r"ModelDirError: smartprice on executor .*nowhere: model directory not found"):
        lazy.collect()  # the executors fail the job with the same message


@needs_spark
def test_transformer_model_refused_on_the_driver(spark, model_dir, tmp_path):
    fake = tmp_path / "fusion"
    shutil.copytree(model_dir, fake)
    config = json.loads((fake / "config.json").read_text())
    config["config"]["kind"] = "fusion"
    (fake / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="a 'fusion' model cannot be priced on Spark; only the cpu preset"):
        spark_module.predict_prices(spark.createDataFrame(_inline(4)), fake)


@needs_spark
def test_shipped_model_and_example_script(spark, model_dir, tmp_path):
    frame = _inline(30)
    source = tmp_path / "in.parquet"
    frame.to_parquet(source, index=False)
    example = _example()
    args = example.parse_args([str(source), str(model_dir), str(tmp_path / "out.parquet"), "--ship", "--partitions", "3"])
    assert example.run(spark, args) == len(frame)  # the model went through SparkContext.addArchive + SparkFiles
    written = pd.read_parquet(tmp_path / "out.parquet").set_index("sample_id")["price"]
    expected = PricePredictor.load(model_dir).predict(frame.fillna({"catalog_content": ""}))
    np.testing.assert_allclose(written.loc[frame["sample_id"]].to_numpy(), expected, rtol=0, atol=1e-9)


def _pandas_warnings(lines: list[str]) -> list[str]:
    return [line for line in lines if "Warning" in line and "pandas" in line.lower()]


@needs_spark
def test_no_pandas_warning_on_the_driver_and_prices_unchanged(spark, model_dir, tmp_path):
    """Every warning the driver raises while predict_prices builds and runs a job is recorded, none about pandas."""
    frame = _inline(30)
    source = tmp_path / "in.parquet"
    frame.to_parquet(source, index=False)
    catalog = spark.read.parquet(str(source)).repartition(3)  # no pandas conversion of our own before the call
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prices = _collect(spark_module.predict_prices(catalog, model_dir, batch_size=7))
    assert not _pandas_warnings([f"{w.category.__name__}: {w.message}" for w in caught])
    expected = PricePredictor.load(model_dir).predict(frame.fillna({"catalog_content": ""}))
    np.testing.assert_allclose([prices[i] for i in frame["sample_id"]], expected, rtol=0, atol=1e-9)


@needs_spark
def test_no_pandas_warning_from_a_submitted_job(model_dir, tmp_path):
    """examples/spark_predict.py under spark-submit, as users run it: the driver's and the Python workers' stderr
    (Spark forwards the workers' to it) hold no pandas warning, and the prices are PricePredictor's."""
    frame = _inline(40)
    source, out = tmp_path / "in.parquet", tmp_path / "out.parquet"
    frame.to_parquet(source, index=False)
    submit = Path(sys.executable).with_name("spark-submit")
    if not submit.exists():
        pytest.skip(f"no spark-submit beside {sys.executable} (pyspark installs one)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # a user's default warning filters
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    result = subprocess.run([str(submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
                             "--conf", "spark.ui.showConsoleProgress=false", str(ROOT / "examples" / "spark_predict.py"),
                             str(source), str(model_dir), str(out), "--partitions", "3", "--batch-size", "8"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not _pandas_warnings(result.stderr.splitlines() + result.stdout.splitlines()), result.stderr[-3000:]
    written = pd.read_parquet(out).set_index("sample_id")["price"]
    expected = PricePredictor.load(model_dir).predict(frame.fillna({"catalog_content": ""}))
    np.testing.assert_allclose(written.loc[frame["sample_id"]].to_numpy(), expected, rtol=0, atol=1e-9)


# --- the executor side in this process (no JVM) -------------------------------------------------

def test_model_loaded_once_per_process_across_batches_and_tasks(model_dir, monkeypatch):
    loads = []
    real_load = PricePredictor.load.__func__
    monkeypatch.setattr(PricePredictor, "load", classmethod(lambda cls, d: loads.append(d) or real_load(cls, d)))
    monkeypatch.setattr(spark_module, "_MODELS", {})
    frame = _inline(25)
    for _task in range(2):  # two tasks in one Python worker, 10-row Arrow batches, 4-row predict calls
        batches = (frame.iloc[i:i + 10] for i in range(0, len(frame), 10))
        out = pd.concat(spark_module._price_partition(batches, model_dir=str(model_dir), id_column="sample_id",
                                                      text_column="catalog_content", price_column="price", batch_size=4))
        assert out["sample_id"].tolist() == frame["sample_id"].tolist()
    assert len(loads) == 1


@pytest.mark.parametrize("sizes,rows", [([10, 10, 5], 4), ([3, 3, 3], 5), ([7], 7), ([2, 9, 1], 100)])
def test_batches_regroup_in_order(sizes, rows):
    frames, start = [], 0
    for size in sizes:
        frames.append(pd.DataFrame({"x": range(start, start + size)}, index=range(100, 100 + size)))
        start += size
    out = list(spark_module._batches(iter(frames), rows))
    assert [len(f) for f in out[:-1]] == [rows] * (len(out) - 1) and 0 < len(out[-1]) <= rows
    assert pd.concat(out)["x"].tolist() == list(range(start))


def test_missing_pyspark_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(ImportError, match=r"pip install 'smartprice\[spark\]'"):
        spark_module.require_pyspark()


def test_model_archive_of_the_folder_itself_resolves_one_level_down(model_dir, tmp_path):
    unpacked = tmp_path / "model.zip"  # what Spark unpacks `zip -r model.zip model` to: the folder inside
    shutil.copytree(model_dir, unpacked / "model")
    assert spark_module.resolve_model_dir(unpacked) == unpacked / "model"
    assert spark_module.resolve_model_dir(model_dir) == model_dir


@needs_spark
def test_range_columns_equal_predict_interval(spark, model_dir, tmp_path):
    frame = _inline()
    got = spark_module.predict_prices(spark.createDataFrame(frame).repartition(3), model_dir, batch_size=8,
                                      interval=0.9).toPandas().set_index("sample_id").loc[frame["sample_id"]]
    assert got.columns.tolist() == ["price", "price_low", "price_high"]
    expected = PricePredictor.load(model_dir).predict_interval(frame.fillna({"catalog_content": ""}), 0.9)
    np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=0, atol=1e-9)
    from smartprice.ranges import CoverageError, NoRangesError

    with pytest.raises(CoverageError, match="interval"):
        spark_module.predict_prices(spark.createDataFrame(frame), model_dir, interval=1.0)
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    config = json.loads((old / "config.json").read_text())
    config.pop("ranges")
    config["files"].pop("ranges.npz")
    (old / "ranges.npz").unlink()
    (old / "config.json").write_text(json.dumps(config))
    with pytest.raises(NoRangesError, match="retrain"):
        spark_module.predict_prices(spark.createDataFrame(frame), old, interval=0.8)

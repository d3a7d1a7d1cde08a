"""Price catalogs bigger than one machine on Apache Spark: a thin layer over PricePredictor.

    from smartprice.spark import predict_prices
    prices = predict_prices(spark.read.parquet("catalog/"), "/models/cpu")   # sample_id, price
    prices.write.parquet("prices/")

The driver checks the DataFrame's schema and loads the model once before any job runs, so a
missing column, a non-string content column, an unreadable or transformer model directory fail at
once. The executors run `PricePredictor.load(dir).predict(frame)` through `mapInPandas`: each
Python worker loads the model once (a per-process cache keyed by the model's path, reused across
tasks while Spark reuses the worker) and prices its partitions `batch_size` rows per call.

The model directory is a path every node can read, or an archive shipped with the job
(`spark-submit --archives model.zip#model`, or `ship_model(spark, dir)` which calls
SparkContext.addArchive): a relative name that is not a directory where the process runs is looked
up with SparkFiles. Only the CPU preset runs here; transformer models are refused on the driver.
pyspark is imported when a function is called: `pip install 'smartprice[spark]'` (Java 17+ too).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import logging
import os
import shutil
import socket
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .catalog import ID_COLUMN, PRICE_COLUMN, TEXT_COLUMN, CatalogError
from .cpu.parallel import PROCESSES_ENV
from .modelio import CONFIG_NAME, ModelDirError, read_config
from .ranges import RETRAIN_FOR_RANGES, NoRangesError, check_coverage

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from .predictor import PricePredictor

log = logging.getLogger(__name__)

SPARK_INSTALL = "pip install 'smartprice[spark]' (and Java 17 or newer on every node)"
BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"  # Spark's Arrow batch: the default rows per predict call
SPARK_KINDS = ("cpu",)  # model kinds priced on executors; transformer models need torch and a GPU plan of their own
WARM_UP_LISTING = "Item Name: Barilla Spaghetti 16 oz (Pack of 12)\nValue: 192.0\nUnit: Ounce"  # priced once on the driver
_MODELS: dict[tuple[str, int], PricePredictor] = {}  # this process's loaded models: (path, config mtime) -> model
_SHIPPED: set[tuple[str, str]] = set()  # (application id, archive name) already added to a SparkContext
# PySpark 4 warns "does not yet fully support pandas >= 3.0.0" each time its pandas bridge is set up (mapInPandas
# here). Our jobs use that bridge for Arrow batches of two columns in and float64 prices out, nothing else, and
# tests/test_spark.py shows the prices equal PricePredictor's to 1e-9 under pandas 3: the warning is silenced for our
# own calls only, so a user's own pandas-on-Spark code still gets it.
PANDAS3_WARNING = r"PySpark does not yet fully support pandas"


@contextlib.contextmanager
def quiet_pandas3_warning() -> Iterator[None]:
    """Silence PySpark's pandas >= 3 FutureWarning inside the block (our calls; the session start of our own job script)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=PANDAS3_WARNING, category=FutureWarning)
        yield


def require_pyspark() -> Any:
    """Import pyspark, or fail with one line that names the extra to install."""
    try:
        import pyspark
    except ImportError:
        raise ImportError(f"smartprice.spark needs pyspark: {SPARK_INSTALL}") from None
    return pyspark


def resolve_model_dir(model_dir: str | os.PathLike[str]) -> Path:
    """The model directory as this process sees it: the path itself, else the archive Spark shipped under that name.

    An archive of the model's folder (`zip -r model.zip model`) unpacks to one folder more than an archive of
    its contents (`cd model && zip -r ../model.zip .`); both are accepted.
    """
    text = os.fspath(model_dir)
    path = Path(text.removeprefix("file://"))
    if not path.is_dir() and not path.is_absolute():
        try:
            from pyspark import SparkFiles

            shipped = Path(SparkFiles.get(text))
            if shipped.is_dir():
                path = shipped
        except Exception:  # no SparkContext here, or no SparkFiles root: keep the path, load() says it is missing
            pass
    try:
        if path.is_dir() and not (path / CONFIG_NAME).exists():
            inner = [p for p in path.iterdir() if (p / CONFIG_NAME).is_file()]
            if len(inner) == 1:
                path = inner[0]
    except OSError:
        pass  # unreadable: load() turns it into a ModelDirError
    return path


def load_model(model_dir: str | os.PathLike[str], *, cache: bool = True) -> PricePredictor:
    """Load a CPU model once per process (cached by path and config.json's mtime, so a retrained model is reloaded)."""
    path = resolve_model_dir(model_dir)
    try:
        key = (str(path.resolve()), (path / CONFIG_NAME).stat().st_mtime_ns)
    except OSError:
        key = (str(path), -1)  # missing or unreadable: read_config below gives the reason
    model = _MODELS.get(key)
    if model is not None:
        return model
    from .predictor import PricePredictor

    try:
        kind = read_config(path).get("config", {}).get("kind")
        if kind not in SPARK_KINDS:
            raise ModelDirError(f"{path}: a {kind!r} model cannot be priced on Spark; only the cpu preset runs on "
                                f"executors (price it with 'smartprice predict' on one machine, or train --preset cpu)")
        model = PricePredictor.load(path)
    except OSError as exc:
        raise ModelDirError(f"{path}: cannot read the model directory ({exc.strerror or exc}); "
                            "every node needs it, or ship it with the job (--archives model.zip#model)") from None
    if cache:
        _MODELS[key] = model
        log.info("loaded model %s in process %d", path, os.getpid())
    return model


def check_model(model_dir: str | os.PathLike[str], ranges: bool = False) -> None:
    """Driver side: load the model as an executor would and price one listing, so a broken model fails before any job.

    With `ranges`, a model that has no price ranges fails here too (NoRangesError: retrain it).
    """
    model = load_model(model_dir, cache=False)  # the driver prices nothing itself: do not keep the model in its memory
    if ranges and not model.has_ranges:
        raise NoRangesError(f"{resolve_model_dir(model_dir)}: this model has no price ranges: {RETRAIN_FOR_RANGES}")
    price = model.predict(pd.DataFrame({ID_COLUMN: ["check"], TEXT_COLUMN: [WARM_UP_LISTING]}))  # fails: a bug
    if not (len(price) == 1 and np.isfinite(price).all() and (price > 0).all()):
        raise RuntimeError(f"{resolve_model_dir(model_dir)}: a test listing was priced {price!r} (a bug)")


def _check_schema(df: DataFrame, id_column: str, text_column: str, price_column: str) -> None:
    """Fail on the driver, before any job, on a missing column or a content column that is not text."""
    from pyspark.sql.types import ArrayType, BinaryType, MapType, StringType, StructType

    fields = {f.name: f for f in df.schema.fields}
    for column in (id_column, text_column):
        if column not in fields:
            raise CatalogError(f"input DataFrame: missing required column '{column}' "
                               f"(found: {', '.join(map(repr, fields)) or 'none'})")
    if id_column == price_column:
        raise CatalogError(f"input DataFrame: id column '{id_column}' has the name of the output price column; "
                           "rename it or pass price_column=")
    text_type = fields[text_column].dataType
    if not isinstance(text_type, StringType):
        raise CatalogError(f"input DataFrame, column '{text_column}': type {text_type.simpleString()}, expected string "
                           f"(cast it: F.col('{text_column}').cast('string'))")
    id_type = fields[id_column].dataType
    if isinstance(id_type, (ArrayType, MapType, StructType, BinaryType)):
        raise CatalogError(f"input DataFrame, column '{id_column}': type {id_type.simpleString()}, "
                           "expected a string or a number")


def _batches(frames: Iterator[pd.DataFrame], rows: int) -> Iterator[pd.DataFrame]:
    """Regroup Spark's Arrow batches into frames of `rows` rows (the last one shorter), in order."""
    held: list[pd.DataFrame] = []
    count = 0
    for frame in frames:
        held.append(frame)
        count += len(frame)
        if count >= rows:
            whole = pd.concat(held, ignore_index=True) if len(held) > 1 else held[0].reset_index(drop=True)
            start = 0
            while count - start >= rows:
                yield whole.iloc[start:start + rows]
                start += rows
            held = [whole.iloc[start:]] if start < count else []
            count -= start
    if count:
        yield pd.concat(held, ignore_index=True) if len(held) > 1 else held[0]


def _price_partition(frames: Iterator[pd.DataFrame], *, model_dir: str, id_column: str, text_column: str,
                     price_column: str, batch_size: int, interval: float | None = None) -> Iterator[pd.DataFrame]:
    """Executor side: price one partition's rows, `batch_size` per predict call, with the process's cached model."""
    model = None
    for frame in _batches(frames, batch_size):
        if not len(frame):
            continue
        ids = frame[id_column]
        missing = ids.isna().to_numpy()
        if ids.dtype == object or pd.api.types.is_string_dtype(ids.dtype):
            missing = missing | ids.fillna("").astype(str).str.strip().eq("").to_numpy()
        if missing.any():
            raise CatalogError(f"input DataFrame, column '{id_column}': {int(missing.sum())} null or blank id(s) in a "
                               f"batch on executor {socket.gethostname()}; every row needs an id (filter or fill them)")
        if model is None:
            os.environ.setdefault(PROCESSES_ENV, "1")  # Spark runs a Python worker per core already: no pool in each
            try:
                model = load_model(model_dir)
            except ModelDirError as exc:
                raise ModelDirError(f"smartprice on executor {socket.gethostname()}: {exc}") from None
        listings = pd.DataFrame({ID_COLUMN: ids.to_numpy(), TEXT_COLUMN: frame[text_column].to_numpy()})
        if interval is None:
            priced = pd.DataFrame({price_column: model.predict(listings)})
        else:
            priced = model.predict_interval(listings, interval).set_axis(_price_columns(price_column), axis=1)
        if len(priced) != len(frame) or not (np.isfinite(priced.to_numpy()).all() and (priced.to_numpy() > 0).all()):
            raise RuntimeError(f"smartprice: {len(priced)} prices for {len(frame)} rows, or a price not finite and > 0 (a bug)")
        priced.insert(0, id_column, ids.to_numpy())
        yield priced.astype({c: np.float64 for c in priced.columns[1:]})


def _price_columns(price_column: str) -> list[str]:
    """The output's price columns with ranges: price, price_low, price_high (named after `price_column`)."""
    return [price_column, f"{price_column}_low", f"{price_column}_high"]


def predict_prices(df: DataFrame, model_dir: str | os.PathLike[str], *, id_column: str = ID_COLUMN,
                   text_column: str = TEXT_COLUMN, price_column: str = PRICE_COLUMN, batch_size: int | None = None,
                   check_on_driver: bool = True, interval: float | None = None) -> DataFrame:
    """A lazy DataFrame of `id_column, price` for every row of `df`, priced on the executors with a CPU model.

    `model_dir` is what the executors open (a path on every node, or the name of an archive shipped
    with the job); `check_on_driver` loads it once on the driver first to fail before any job runs.
    `batch_size` is rows per predict call (default: spark.sql.execution.arrow.maxRecordsPerBatch).
    Null content is priced as blank text; a null id fails the job with a CatalogError naming the column.
    With `interval` (a coverage such as 0.8) the rows also get `price_low, price_high`, a calibrated range.
    """
    require_pyspark()
    if interval is not None:
        interval = check_coverage(interval, "interval")
    from pyspark.sql.types import DoubleType, StructField, StructType

    _check_schema(df, id_column, text_column, price_column)
    if batch_size is None:
        batch_size = int(df.sparkSession.conf.get(BATCH_CONF, "10000") or 10000)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    model_dir = os.fspath(model_dir)
    if check_on_driver:
        check_model(model_dir, ranges=interval is not None)  # the executors' checks and messages, before any job
    id_field = df.schema[id_column]
    prices = _price_columns(price_column) if interval is not None else [price_column]
    schema = StructType([StructField(id_column, id_field.dataType, id_field.nullable),
                         *(StructField(name, DoubleType(), False) for name in prices)])
    price = functools.partial(_price_partition, model_dir=model_dir, id_column=id_column, text_column=text_column,
                              price_column=price_column, batch_size=batch_size,
                              interval=interval)  # module-level: pickled by reference
    with quiet_pandas3_warning():
        return df.select(id_column, text_column).mapInPandas(price, schema)


def ship_model(spark: SparkSession, model_dir: str | os.PathLike[str], name: str | None = None) -> str:
    """Zip a local model directory and add it to the job (SparkContext.addArchive); returns the name for predict_prices.

    The name defaults to one derived from config.json, so shipping the same model twice is harmless
    and a retrained model gets a new name (Spark refuses to replace an archive it already ships).
    """
    require_pyspark()
    source = Path(model_dir)
    config = source / CONFIG_NAME
    if not config.is_file():
        raise ModelDirError(f"{source}: not a smartprice model (no {CONFIG_NAME}); train one with 'smartprice train'")
    name = name or "smartprice-model-" + hashlib.sha256(config.read_bytes()).hexdigest()[:12]
    context = spark.sparkContext
    if (context.applicationId, name) in _SHIPPED:
        return name
    staging = Path(tempfile.mkdtemp(prefix="smartprice-ship-"))
    atexit.register(shutil.rmtree, staging, ignore_errors=True)  # Spark has copied it by the time the driver exits
    archive = shutil.make_archive(str(staging / name), "zip", root_dir=source)  # the contents, at the archive's top
    context.addArchive(f"{archive}#{name}")
    _SHIPPED.add((context.applicationId, name))
    log.info("shipping model %s to the executors as %s", source, name)
    return name

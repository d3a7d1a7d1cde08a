"""Price a Parquet catalog on Spark and write `sample_id, price` as Parquet (a job to spark-submit).

The model directory is read by every executor: a path present on every node,

    spark-submit examples/spark_predict.py catalog.parquet /models/cpu prices.parquet

or shipped with the job as a zip of the directory's contents, named by the text after '#':

    (cd model && zip -r ../model.zip .)
    spark-submit --archives model.zip#model examples/spark_predict.py catalog.parquet model prices.parquet

or, with `--ship`, zipped on the driver and shipped by the job itself (SparkContext.addArchive):

    spark-submit examples/spark_predict.py catalog.parquet ./model prices.parquet --ship

smartprice and its `spark` extra must be installed on the driver and on every executor
(`pip install 'smartprice[spark]'`, or a packed environment shipped with --archives).
"""

from __future__ import annotations

import argparse
import re
import sys
import time

from pyspark.errors import PythonException
from pyspark.sql import SparkSession

from smartprice import CatalogError
from smartprice.modelio import ModelDirError
from smartprice.spark import predict_prices, quiet_pandas3_warning, ship_model

USER_ERROR = re.compile(r"^smartprice\.\w+\.(?:CatalogError|ModelDirError): (.*)$", re.MULTILINE)  # in executor tracebacks


def run(spark: SparkSession, args: argparse.Namespace) -> int:
    """Read the catalog, price it on the executors, write the prices; returns the number of rows written."""
    catalog = spark.read.parquet(args.input)
    if args.partitions:
        catalog = catalog.repartition(args.partitions)
    model = ship_model(spark, args.model) if args.ship else args.model
    prices = predict_prices(catalog, model, id_column=args.id_column, text_column=args.text_column,
                            batch_size=args.batch_size)
    prices.write.mode("overwrite" if args.overwrite else "errorifexists").parquet(args.output)
    return spark.read.parquet(args.output).count()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The job's arguments: input Parquet, model directory (or shipped name), output Parquet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="Parquet file or folder with sample_id and catalog_content (any Spark path)")
    parser.add_argument("model", help="model directory on every node, or the name of a shipped archive")
    parser.add_argument("output", help="Parquet folder to write sample_id, price to")
    parser.add_argument("--ship", action="store_true", help="model is a directory here: zip it and ship it with the job")
    parser.add_argument("--id-column", default="sample_id")
    parser.add_argument("--text-column", default="catalog_content")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per predict call (default: spark.sql.execution.arrow.maxRecordsPerBatch)")
    parser.add_argument("--partitions", type=int, default=0, help="repartition the input first (0: as read)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """spark-submit entry point: one line on stderr and exit 2 for a mistake the user can fix."""
    args = parse_args(argv)
    with quiet_pandas3_warning():  # PySpark checks the pandas version while converting its configuration at start
        spark = SparkSession.builder.appName("smartprice-predict").getOrCreate()
    started = time.perf_counter()
    try:
        rows = run(spark, args)
    except (CatalogError, ModelDirError) as exc:  # found on the driver before any job ran
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PythonException as exc:  # raised on an executor: a user's mistake is one smartprice line in the traceback
        mistake = USER_ERROR.search(str(exc))
        if mistake is None:
            raise
        print(f"error: {mistake.group(1)}", file=sys.stderr)
        return 2
    finally:
        spark.stop()
    print(f"priced {rows} rows in {time.perf_counter() - started:.1f} s -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

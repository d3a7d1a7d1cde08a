"""Spark benchmark: smartprice.spark on a local[2] session against `smartprice predict` on the same rows.

Writes test_unlabeled.csv repeated `--repeat` times (sample_ids made unique; `--rows` keeps the first
N rows) as Parquet twice, one file for `smartprice predict` and `--partitions` files for Spark (so
Spark reads that many partitions without a shuffle), then runs, each in its own process as a user
does: `smartprice predict` streaming the file in one run, and a Spark job (local[2]: both cores)
that reads the folder, prices it with `smartprice.spark.predict_prices` and writes Parquet. Prints
rows/s of each (end to end, and the Spark job alone without JVM start), the ratio Spark / single
process (the issue's target: >= 0.8 on the same 2 cores), peak RSS of the CLI, of the Spark driver
(Python + JVM) and of the Python workers (largest one and their sum, sampled from /proc every
0.1 s), checks that every row got the same price from both (to 1e-9), then one JSON line.

    python bench/spark.py                                # 100x: 439,000 rows (minutes)
    python bench/spark.py --repeat 2 --model DIR         # a quick check of the bench itself
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DATA, SMARTPRICE, require_data, run_timed, tree_memory_mib

TARGET_RATIO = 0.8  # the bar: Spark on local[2] keeps 80% of one process's rows/s on the same cores


def write_inputs(source: Path, repeat: int, rows: int | None, single: Path, folder: Path, partitions: int) -> int:
    """Write `source` repeated (ids suffixed by the copy) as one Parquet file and as `partitions` files; return rows."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.read_csv(source, dtype=str, keep_default_na=False)[["sample_id", "catalog_content"]]
    total = len(frame) * repeat if rows is None else min(rows, len(frame) * repeat)
    bounds = np.linspace(0, total, partitions + 1).astype(int)  # row ranges of the Spark part files
    folder.mkdir()
    schema = pa.schema([("sample_id", pa.string()), ("catalog_content", pa.string())])
    parts: list[pq.ParquetWriter] = []
    with pq.ParquetWriter(single, schema) as whole:
        written = 0
        for copy in range(repeat):
            chunk = frame.assign(sample_id=frame["sample_id"] + f"-{copy}").iloc[: total - written]
            if chunk.empty:
                break
            table = pa.Table.from_pandas(chunk, schema=schema, preserve_index=False)
            whole.write_table(table, row_group_size=20_000)
            for part in range(partitions):  # the slice of this copy that falls in each part file
                lo, hi = max(bounds[part] - written, 0), min(bounds[part + 1] - written, len(chunk))
                if lo < hi:
                    while len(parts) <= part:
                        parts.append(pq.ParquetWriter(folder / f"part-{len(parts):05d}.parquet", schema))
                    parts[part].write_table(table.slice(lo, hi - lo))
            written += len(chunk)
    for writer in parts:
        writer.close()
    return total


def measure(command: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a command; wall seconds, and peak RSS (MiB) of its driver, its JVM and its Python workers, sampled."""
    peaks = {"driver_python": 0.0, "jvm": 0.0, "workers_sum": 0.0, "worker_max": 0.0, "tree_sum": 0.0}

    def sample(root: int) -> None:  # resident sets now, every 0.1 s: Spark's Python workers come and go
        rss = tree_memory_mib(root, "VmRSS")
        workers = [mib for pid, (name, mib) in rss.items() if pid != root and name.startswith("python")]
        for key, value in (("driver_python", rss.get(root, ("", 0.0))[1]),
                           ("jvm", sum(mib for name, mib in rss.values() if name == "java")),
                           ("workers_sum", sum(workers)), ("worker_max", max(workers, default=0.0)),
                           ("tree_sum", sum(mib for _, mib in rss.values()))):
            peaks[key] = max(peaks[key], value)

    timed = run_timed(command, stdout=subprocess.PIPE, env=env, sample=sample)
    result = {"seconds": round(timed["seconds"], 2), **{f"peak_{k}_mib": round(v, 1) for k, v in peaks.items()}}
    last = timed["stdout"].strip().splitlines()[-1:]
    if last and last[0].startswith("{"):
        result.update(json.loads(last[0]))  # what the Spark run measured inside itself
    return result


def spark_run(model: str, folder: str, out: str, batch_size: int | None, driver_memory: str) -> None:
    """Internal: one local[2] Spark session, read the folder, price it, write Parquet; print the job's seconds."""
    import warnings

    warnings.filterwarnings("ignore", message="PySpark does not yet fully support", category=FutureWarning)
    from pyspark.sql import SparkSession

    from smartprice.spark import predict_prices

    started = time.perf_counter()
    spark = (SparkSession.builder.master("local[2]").appName("smartprice-bench")
             .config("spark.driver.memory", driver_memory).config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.files.openCostInBytes", str(2**30)).getOrCreate())  # one partition per part file, not packed
    spark.sparkContext.setLogLevel("ERROR")
    session_seconds = time.perf_counter() - started
    catalog = spark.read.parquet(folder)
    partitions = catalog.rdd.getNumPartitions()
    job_started = time.perf_counter()
    predict_prices(catalog, model, batch_size=batch_size).write.mode("overwrite").parquet(out)
    job_seconds = time.perf_counter() - job_started
    spark.stop()
    print(json.dumps({"session_seconds": round(session_seconds, 2), "job_seconds": round(job_seconds, 2),
                      "partitions": partitions}))


def compare(cli_out: Path, spark_out: Path, rows: int) -> float:
    """Largest absolute price difference between the two outputs; every row must be in both, once."""
    import numpy as np
    import pandas as pd

    cli = pd.read_csv(cli_out, dtype={"sample_id": str})
    spark = pd.read_parquet(spark_out)
    assert len(cli) == len(spark) == rows, f"rows: input {rows}, smartprice predict {len(cli)}, Spark {len(spark)}"
    merged = cli.merge(spark, on="sample_id", suffixes=("_cli", "_spark"), validate="one_to_one")
    assert len(merged) == rows, "Spark and smartprice predict priced different sample_ids"
    assert (merged["price_spark"] > 0).all() and np.isfinite(merged["price_spark"]).all()
    return float(np.abs(merged["price_cli"] - merged["price_spark"]).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=100, help="copies of test_unlabeled.csv (100: 439,000 rows)")
    parser.add_argument("--rows", type=int, default=None, help="keep only the first N rows of the repeated file")
    parser.add_argument("--model", type=Path, help="an existing CPU model directory (default: fit the cpu preset on train.csv)")
    parser.add_argument("--partitions", type=int, default=8, help="Parquet part files, so Spark partitions, of the input")
    parser.add_argument("--batch-size", type=int, default=None, help="rows per predict call on Spark (default: Arrow's 10,000)")
    parser.add_argument("--driver-memory", default="2g", help="spark.driver.memory of the local session (JVM heap)")
    parser.add_argument("--spark-run", nargs=3, help=argparse.SUPPRESS)  # internal: MODEL FOLDER OUT
    args = parser.parse_args()
    if args.spark_run:
        spark_run(*args.spark_run, args.batch_size, args.driver_memory)
        return
    require_data("bench/spark.py", "train.csv", "test_unlabeled.csv")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    cli = SMARTPRICE
    results: dict = {"cpu_count": os.cpu_count(), "load_average_start": round(os.getloadavg()[0], 2)}
    with tempfile.TemporaryDirectory(prefix="smartprice-spark-bench-") as tmp:
        tmp = Path(tmp)
        model = args.model
        if model is None:
            model = tmp / "model"
            fit = measure(cli + ["train", str(DATA / "train.csv"), "--out", str(model)])
            print(f"fit on train.csv           {fit['seconds']:7.1f} s", flush=True)
        rows = write_inputs(DATA / "test_unlabeled.csv", args.repeat, args.rows, tmp / "in.parquet", tmp / "parts",
                            args.partitions)
        results["rows"] = rows
        single = measure(cli + ["predict", str(model), str(tmp / "in.parquet"), "--out", str(tmp / "cli.csv")])
        batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []
        spark = measure([sys.executable, __file__, "--spark-run", str(model), str(tmp / "parts"), str(tmp / "spark.parquet"),
                         "--driver-memory", args.driver_memory, *batch], env=env)
        results["max_abs_difference"] = compare(tmp / "cli.csv", tmp / "spark.parquet", rows)
    single["rows_per_s"] = round(rows / single["seconds"], 1)
    spark["rows_per_s"] = round(rows / spark["seconds"], 1)
    spark["job_rows_per_s"] = round(rows / spark["job_seconds"], 1)
    results.update(smartprice_predict=single, spark=spark, ratio_end_to_end=round(spark["rows_per_s"] / single["rows_per_s"], 3),
                   ratio_job=round(spark["job_rows_per_s"] / single["rows_per_s"], 3), target_ratio=TARGET_RATIO,
                   load_average_end=round(os.getloadavg()[0], 2))
    print(f"smartprice predict   {rows:8d} rows {single['seconds']:7.1f} s {single['rows_per_s']:7.0f} rows/s  "
          f"peak RSS {single['peak_driver_python_mib']:5.0f} MiB (largest of its forked workers "
          f"{single['peak_worker_max_mib']:.0f} MiB)")
    print(f"Spark local[2]       {rows:8d} rows {spark['seconds']:7.1f} s {spark['rows_per_s']:7.0f} rows/s end to end, "
          f"{spark['job_rows_per_s']:.0f} rows/s in the job ({spark['job_seconds']:.1f} s, {spark['partitions']} partitions; "
          f"session start {spark['session_seconds']:.1f} s)")
    print(f"  peak RSS: driver Python {spark['peak_driver_python_mib']:.0f} MiB, JVM {spark['peak_jvm_mib']:.0f} MiB, "
          f"Python workers {spark['peak_workers_sum_mib']:.0f} MiB together (largest {spark['peak_worker_max_mib']:.0f} MiB)")
    print(f"ratio Spark / smartprice predict: {results['ratio_end_to_end']:.2f} end to end, {results['ratio_job']:.2f} "
          f"job only (target >= {TARGET_RATIO}); largest price difference {results['max_abs_difference']:.1e}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()

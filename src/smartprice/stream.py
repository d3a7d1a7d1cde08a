"""Catalogs larger than memory: predict chunk by chunk (catalog.iter_catalog), write the output as it goes.

The output goes to a temporary file beside the target, renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .catalog import DEFAULT_CHUNK_ROWS, ID_COLUMN, PRICE_COLUMN, iter_catalog  # re-exported for the CLI
from .metrics import range_report, smape_report
from .ranges import RETRAIN_FOR_RANGES, NoRangesError, check_coverage, check_coverages

log = logging.getLogger(__name__)

BYTES_PER_ROW_AT_LEAST = 1_000  # a catalog row is ~1 kB of text (train.csv: 960 bytes): a row-count estimate
Progress = Callable[[int], Any]  # called with the number of rows just finished


def _temporary_beside(target: Path) -> Path:
    """An empty file next to `target` with the permissions a plain new file would get."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)  # mkstemp makes it private; the output should not be
    return Path(name)


def _chunk_done(rows: int, progress: Progress | None) -> None:
    """After each chunk: free its reference cycles (the CLI pauses the collector inside chunks), report progress."""
    gc.collect()
    if progress is not None:
        progress(rows)


def predict_file(model: Any, path: str | Path, out: str | Path, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 progress: Progress | None = None, interval: float | None = None) -> int:
    """Write `sample_id,price` for every row of a catalog to `out`, chunk by chunk; return the row count.

    `model` is a fitted PricePredictor. With `interval` (a coverage such as 0.8) the rows also get
    `price_low,price_high`. `out` appears only when complete (a failure leaves any old file).
    """
    if interval is not None:
        interval = check_coverage(interval, "--interval")
        if not model.has_ranges:  # before reading the catalog
            raise NoRangesError(f"this model has no price ranges: {RETRAIN_FOR_RANGES}")
    out = Path(out)
    temporary = _temporary_beside(out)
    rows = 0
    with contextlib.suppress(OSError):  # a missing file is iter_catalog's error to report
        model.expect_rows(min(chunk_rows, Path(path).stat().st_size // BYTES_PER_ROW_AT_LEAST))
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            for frame in iter_catalog(path, chunk_rows=chunk_rows):
                if interval is None:
                    priced = pd.DataFrame({ID_COLUMN: frame[ID_COLUMN], "price": model.predict(frame)})
                else:
                    priced = pd.concat([frame[[ID_COLUMN]], model.predict_interval(frame, interval)], axis=1)
                priced.to_csv(handle, header=rows == 0, index=False)
                rows += len(frame)
                _chunk_done(len(frame), progress)
        temporary.replace(out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    log.info("wrote %d predictions to %s", rows, out)
    return rows


def evaluate_file(model: Any, path: str | Path, *, strict: bool = False, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  progress: Progress | None = None, intervals: list[float] | None = None) -> dict:
    """SMAPE overall and by price band on a labelled catalog read in chunks (keeps a few floats per row).

    With `intervals` (coverages such as [0.8, 0.9]) the report also has each range's observed coverage and width.
    """
    levels = check_coverages(intervals, "--interval") if intervals else []
    if levels and not model.has_ranges:
        raise NoRangesError(f"this model has no price ranges: {RETRAIN_FOR_RANGES}")
    predicted, actual, bounds = [], [], {c: ([], []) for c in levels}
    for frame in iter_catalog(path, labelled=True, strict=strict, chunk_rows=chunk_rows):
        if levels:
            prices, ranges = model.predict_ranges(frame, levels)
            for level, (low, high) in ranges.items():
                bounds[level][0].append(low)
                bounds[level][1].append(high)
        else:
            prices = model.predict(frame)
        predicted.append(prices)
        actual.append(frame[PRICE_COLUMN].to_numpy(dtype=float))
        _chunk_done(len(frame), progress)
    truth = np.concatenate(actual)
    report = smape_report(np.concatenate(predicted), truth)
    if levels:
        report["ranges"] = {f"{level:g}": range_report(truth, np.concatenate(low), np.concatenate(high))
                            for level, (low, high) in bounds.items()}
    return report

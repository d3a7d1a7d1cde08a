"""Catalogs larger than memory: read in chunks, predict chunk by chunk, write the output as it goes.

Every chunk gets read_catalog's checks (catalog.validate_frame / check_prices) with file row numbers,
and sample_ids are checked for duplicates across chunks, so a streamed file fails exactly where a
whole one would. The output goes to a temporary file beside the target, renamed into place at the end.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import lzma
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .catalog import ID_COLUMN, PRICE_COLUMN, REQUIRED_COLUMNS, CatalogError, check_prices, open_format, validate_frame
from .metrics import smape_report

log = logging.getLogger(__name__)

# The CPU model forks a worker per predict call of 1000+ rows (~50 ms); 20k rows is ~4 s of work
# per chunk on 2 cores, so that overhead stays near 1%, and a chunk's matrices stay well under 1 GB.
BYTES_PER_ROW_AT_LEAST = 1_000  # a catalog row is ~1 kB of text (train.csv: 960 bytes): a row-count estimate
DEFAULT_CHUNK_ROWS = 20_000
Progress = Callable[[int], Any]  # called with the number of rows just finished


def _raw_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Unvalidated chunks of a CSV/TSV (plain or compressed) or Parquet file; errors name the file."""
    kind, compression = open_format(path)
    if kind == "parquet":
        yield from _parquet_chunks(path, chunk_rows)
        return
    rows = 0
    try:
        reader = pd.read_csv(path, chunksize=chunk_rows, dtype=str, keep_default_na=False, encoding="utf-8",
                             sep="\t" if kind == "tsv" else ",", compression=compression)
        with reader:
            for chunk in reader:
                yield chunk
                rows += len(chunk)
    except pd.errors.EmptyDataError:
        raise CatalogError(f"{path}: file is empty; expected a header with {', '.join(REQUIRED_COLUMNS)}") from None
    except UnicodeDecodeError:
        raise CatalogError(f"{path}: not valid UTF-8 (after row {rows}); re-save the file as UTF-8") from None
    except pd.errors.ParserError as exc:
        raise CatalogError(f"{path}: malformed {kind.upper()} ({exc})") from None
    except (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, ValueError) as exc:
        if compression is None or isinstance(exc, CatalogError):
            raise
        raise CatalogError(f"{path}: cannot decompress ({compression}): {exc}; the file is damaged or truncated") from None


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Record batches of a Parquet file as frames; a file without rows yields one empty frame with its columns."""
    import pyarrow.parquet as pq

    try:
        source = pq.ParquetFile(path)
        batches = iter(source.iter_batches(batch_size=chunk_rows))
        empty = source.schema_arrow.empty_table().to_pandas()
    except Exception as exc:  # pyarrow raises many types for damaged files
        raise CatalogError(f"{path}: cannot read as Parquet ({exc})") from None
    yielded = False
    while True:
        try:
            batch = next(batches, None)
        except Exception as exc:
            raise CatalogError(f"{path}: cannot read as Parquet ({exc})") from None
        if batch is None:
            break
        if batch.num_rows:
            yielded = True
            yield batch.to_pandas()
    if not yielded:
        yield empty  # validate_frame names missing columns, or says there are no rows


def iter_catalog(path: str | Path, *, labelled: bool = False, strict: bool = False,
                 chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Validated chunks of a catalog, in file order, with the columns and checks of read_catalog.

    Unlabelled: every row comes back. Labelled: rows with a missing or invalid price are skipped with one
    warning at the end (or, if `strict`, the first is an error), as read_catalog does for a whole file.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, got {chunk_rows}")
    path = Path(path)
    seen: dict[str, int] = {}  # sample_id -> file row: duplicates are errors across chunks too
    first_row, kept, skipped, first_problem = 1, 0, 0, None
    for raw in _raw_chunks(path, chunk_rows):
        frame = validate_frame(raw, path, labelled=labelled, first_row=first_row)
        for offset, sample_id in enumerate(frame[ID_COLUMN].tolist()):
            row = seen.setdefault(sample_id, first_row + offset)
            if row != first_row + offset:
                raise CatalogError(f"{path}, row {first_row + offset}, column '{ID_COLUMN}': "
                                   f"duplicate sample_id {sample_id!r} (also at row {row})")
        if labelled:
            price, bad, message = check_prices(frame, path, first_row)
            if message is not None:
                if strict:
                    raise CatalogError(message)
                skipped += int(bad.sum())
                first_problem = first_problem or message
            frame = frame.assign(**{PRICE_COLUMN: price}).loc[~bad].reset_index(drop=True)
        first_row += len(raw)
        kept += len(frame)
        if len(frame):
            yield frame
    if skipped:
        log.warning("%s: skipped %d of %d rows with a missing or invalid price (first: %s)",
                    path, skipped, first_row - 1, first_problem)
    if labelled and not kept:
        raise CatalogError(f"{path}: no rows left after dropping rows with invalid prices")


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
                 progress: Progress | None = None) -> int:
    """Write `sample_id,price` for every row of a catalog to `out`, chunk by chunk; return the row count.

    `model` is a fitted PricePredictor. `out` appears only when complete (a failure leaves any old file).
    """
    out = Path(out)
    temporary = _temporary_beside(out)
    rows = 0
    with contextlib.suppress(OSError):  # a missing file is iter_catalog's error to report
        model.expect_rows(min(chunk_rows, Path(path).stat().st_size // BYTES_PER_ROW_AT_LEAST))
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            for frame in iter_catalog(path, chunk_rows=chunk_rows):
                prices = model.predict(frame)
                pd.DataFrame({ID_COLUMN: frame[ID_COLUMN], "price": prices}).to_csv(handle, header=rows == 0, index=False)
                rows += len(frame)
                _chunk_done(len(frame), progress)
        temporary.replace(out)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    log.info("wrote %d predictions to %s", rows, out)
    return rows


def evaluate_file(model: Any, path: str | Path, *, strict: bool = False, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  progress: Progress | None = None) -> dict:
    """SMAPE overall and by price band on a labelled catalog read in chunks (keeps two floats per row)."""
    predicted, actual = [], []
    for frame in iter_catalog(path, labelled=True, strict=strict, chunk_rows=chunk_rows):
        predicted.append(model.predict(frame))
        actual.append(frame[PRICE_COLUMN].to_numpy(dtype=float))
        _chunk_done(len(frame), progress)
    return smape_report(np.concatenate(predicted), np.concatenate(actual))

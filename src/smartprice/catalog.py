"""Read and validate catalog files, and split `catalog_content` into its fields.

Every problem with a user's file becomes a `CatalogError` whose message names the file,
and the row and column where there is one, so the CLI can print it on one line.
"""

from __future__ import annotations

import logging
import lzma
import math
import re
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import CatalogError, SettingsError  # CatalogError re-exported: smartprice.catalog.CatalogError

log = logging.getLogger(__name__)

ID_COLUMN = "sample_id"
TEXT_COLUMN = "catalog_content"
IMAGE_COLUMN = "image_link"
PRICE_COLUMN = "price"
REQUIRED_COLUMNS = (ID_COLUMN, TEXT_COLUMN)  # image_link is optional: no model uses images yet
DEFAULT_CHUNK_ROWS = 20_000  # rows a streamed chunk: a few seconds of CPU-model work, matrices well under 1 GB
WHOLE_FILE_CHUNK_ROWS = 100_000  # read_catalog's chunks: fewer, larger pieces to collect


def _where(path: Path | str, row: int | None = None, column: str | None = None) -> str:
    """Format a location like `train.csv, row 12, column 'price'` (rows 1-based, header excluded)."""
    parts = [str(path)]
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column '{column}'")
    return ", ".join(parts)


def _check_utf8(path: Path, raw: bytes) -> str:
    """Decode the file as UTF-8 or raise an error that gives the line of the first bad byte."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CatalogError(
            f"{path}: not valid UTF-8 (byte {exc.start}, line {line}); re-save the file as UTF-8"
        ) from None


# Compressed catalogs are recognised by their first bytes (a misnamed file still reads), the name as a fallback.
MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\xfd7zXZ\x00", "xz"), (b"PK\x03\x04", "zip"))
COMPRESSED_SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".xz": "xz", ".zip": "zip"}
PARQUET_SUFFIXES = (".parquet", ".pq")
TSV_SUFFIXES = (".tsv", ".tab")


def file_format(path: Path) -> tuple[str, str | None]:
    """(kind, compression) of a catalog file: kind "parquet" | "csv" | "tsv", compression as pandas names it.

    `train.tsv.gz` is ("tsv", "gzip"); the compression comes from the file's magic bytes.
    """
    with open(path, "rb") as handle:
        head = handle.read(8)
    compression = next((name for magic, name in MAGIC if head.startswith(magic)), None)
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED_SUFFIXES:
        compression = compression or COMPRESSED_SUFFIXES[suffixes[-1]]
        suffixes = suffixes[:-1]
    inner = suffixes[-1] if suffixes else ""
    if inner in PARQUET_SUFFIXES or (compression is None and head.startswith(b"PAR1")):
        return "parquet", None
    return ("tsv" if inner in TSV_SUFFIXES else "csv"), compression


def _decompress(path: Path, compression: str) -> bytes:
    """The file's bytes after decompression; a damaged archive is a CatalogError naming the file."""
    import bz2
    import gzip
    import lzma
    import zipfile
    import zlib

    try:
        if compression == "zip":
            with zipfile.ZipFile(path) as archive:
                members = [m for m in archive.infolist() if not m.is_dir()]
                if len(members) != 1:
                    raise CatalogError(f"{path}: a .zip catalog must hold exactly one file, found {len(members)}")
                return archive.read(members[0])
        opener = {"gzip": gzip.decompress, "bz2": bz2.decompress, "xz": lzma.decompress}[compression]
        return opener(path.read_bytes())
    except (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, ValueError) as exc:
        if isinstance(exc, CatalogError):
            raise
        raise CatalogError(f"{path}: cannot decompress ({compression}): {exc}; the file is damaged or truncated") from None


def open_format(path: Path) -> tuple[str, str | None]:
    """`file_format` of a catalog that must exist and be a file (CatalogError otherwise)."""
    if not path.exists():
        raise CatalogError(f"{path}: file not found")
    if path.is_dir():
        raise CatalogError(f"{path}: is a directory, expected a .csv, .tsv or .parquet file")
    return file_format(path)


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
    except UnicodeDecodeError:  # find the first bad byte and its line (reads the file again, on this error only)
        _check_utf8(path, _decompress(path, compression) if compression else path.read_bytes())
        raise CatalogError(f"{path}: not valid UTF-8 (after row {rows}); re-save the file as UTF-8") from None
    except pd.errors.ParserError as exc:
        raise CatalogError(f"{path}: malformed {kind.upper()} ({exc})") from None
    except (OSError, EOFError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, ValueError) as exc:
        if compression is None or isinstance(exc, CatalogError):
            raise
        if compression == "zip":
            _decompress(path, compression)  # an archive of 0 or 2+ files: says so, naming the count
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
        raise SettingsError(f"chunk_rows must be at least 1, got {chunk_rows}")
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


def check_prices(frame: pd.DataFrame, path: Path, first_row: int = 1) -> tuple[pd.Series, np.ndarray, str | None]:
    """Prices as floats, the mask of missing/invalid ones and a message naming the first (file row numbers)."""
    raw = frame[PRICE_COLUMN]
    price = pd.to_numeric(raw, errors="coerce").astype(float)
    bad = ~np.isfinite(price.to_numpy()) | (price.to_numpy() <= 0)
    message = None
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        value = raw.iloc[first]
        reason = "missing" if str(value).strip() in ("", "nan", "None") else f"invalid ({value!r})"
        message = (
            f"{_where(path, first + first_row, PRICE_COLUMN)}: price is {reason}; prices must be finite numbers > 0"
        )
    return price, bad, message


def read_catalog(path: str | Path, *, labelled: bool = False, strict: bool = False) -> pd.DataFrame:
    """Read a catalog file (CSV, TSV, compressed, or Parquet) and return a validated frame: `iter_catalog` collected.

    Columns out: sample_id (str), catalog_content (str, '' when blank), image_link (str) and,
    when `labelled`, price (float, finite, > 0). Extra columns are dropped.
    """
    frames = list(iter_catalog(path, labelled=labelled, strict=strict, chunk_rows=WHOLE_FILE_CHUNK_ROWS))
    if not frames:
        raise CatalogError(f"{path}: no rows; expected a header and at least one listing")
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)


def validate_frame(frame: pd.DataFrame, path: Path, *, labelled: bool = False, first_row: int = 1) -> pd.DataFrame:
    """Check the columns and ids of rows read from `path`, normalise them; prices are left as read.

    `first_row` is the file row of the frame's first row, so a chunk of a file reports global rows.
    """
    frame.columns = [str(c).strip() for c in frame.columns]
    required = REQUIRED_COLUMNS + ((PRICE_COLUMN,) if labelled else ())
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CatalogError(
            f"{path}: missing required column {', '.join(repr(c) for c in missing)} "
            f"(found: {', '.join(map(repr, frame.columns)) or 'none'})"
        )
    if frame.empty:
        raise CatalogError(f"{path}: has a header but no rows")
    if IMAGE_COLUMN not in frame.columns:
        frame[IMAGE_COLUMN] = ""
    frame = frame[[ID_COLUMN, TEXT_COLUMN, IMAGE_COLUMN] + ([PRICE_COLUMN] if labelled else [])].copy()
    frame[TEXT_COLUMN] = frame[TEXT_COLUMN].fillna("").astype(str)
    frame[IMAGE_COLUMN] = frame[IMAGE_COLUMN].fillna("").astype(str)
    ids = frame[ID_COLUMN].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip())
    blank = np.flatnonzero((ids == "").to_numpy())
    if blank.size:
        raise CatalogError(f"{_where(path, int(blank[0]) + first_row, ID_COLUMN)}: sample_id is blank")
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        dup_rows = np.flatnonzero(duplicated)
        first_id = ids.iloc[dup_rows[0]]
        rows = [int(r) + first_row for r in dup_rows if ids.iloc[r] == first_id][:2]
        raise CatalogError(
            f"{_where(path, rows[1], ID_COLUMN)}: duplicate sample_id {first_id!r} (also at row {rows[0]})"
        )
    frame[ID_COLUMN] = ids
    return frame


# --- catalog_content fields -----------------------------------------------------------------

# "Item Name: La Victoria Green Taco Sauce Mild, 12 Ounce (Pack of 6)"
ITEM_NAME_RE = re.compile(r"^\s*Item Name:\s*(.*)$", re.MULTILINE | re.IGNORECASE)
# "Bullet Point 1: Original Butter Cookies: Classic butter cookies ..."  (also "Bullet Point:")
BULLET_RE = re.compile(r"^\s*Bullet Point(?:\s*\d+)?:\s*(.*)$", re.MULTILINE | re.IGNORECASE)
# "Product Description: This Tangy Carolina Barbecue Sauce ..."
DESCRIPTION_RE = re.compile(r"^\s*Product Description:\s*(.*)$", re.MULTILINE | re.IGNORECASE)
# "Value: 72.0"
VALUE_RE = re.compile(r"^\s*Value:\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$", re.MULTILINE | re.IGNORECASE)
# "Unit: Fl Oz"
UNIT_RE = re.compile(r"^\s*Unit:\s*(.*?)\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class CatalogFields:
    """The parts of one `catalog_content` string."""

    item_name: str = ""
    bullets: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""
    value: float | None = None
    unit: str = ""


def split_catalog_content(text: str) -> CatalogFields:
    """Split `catalog_content` into name, bullets, description, Value and Unit.

    Text without an `Item Name:` line (free-form listings) becomes the item name's first line.
    """
    text = text or ""
    name = ITEM_NAME_RE.search(text)
    value = VALUE_RE.search(text)
    unit = UNIT_RE.search(text)
    parsed_value = float(value.group(1)) if value else None
    if parsed_value is not None and not math.isfinite(parsed_value):
        parsed_value = None
    item_name = name.group(1).strip() if name else text.strip().split("\n", 1)[0][:300]
    return CatalogFields(
        item_name=item_name,
        bullets=tuple(b.strip() for b in BULLET_RE.findall(text) if b.strip()),
        description=" ".join(d.strip() for d in DESCRIPTION_RE.findall(text)),
        value=parsed_value,
        unit=unit.group(1).strip() if unit else "",
    )

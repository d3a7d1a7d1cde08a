"""Read and validate catalog files, and split `catalog_content` into its fields.

Every problem with a user's file becomes a `CatalogError` whose message names the file,
and the row and column where there is one, so the CLI can print it on one line.
"""

from __future__ import annotations

import io
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

ID_COLUMN = "sample_id"
TEXT_COLUMN = "catalog_content"
IMAGE_COLUMN = "image_link"
PRICE_COLUMN = "price"
REQUIRED_COLUMNS = (ID_COLUMN, TEXT_COLUMN)  # image_link is optional: no model uses images yet


class CatalogError(ValueError):
    """A catalog file the user must fix; the message says where and how."""


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


def _read_table(path: Path) -> pd.DataFrame:
    """Load CSV, TSV (optionally gzip/bz2/xz/zip-compressed) or Parquet into a frame of strings."""
    kind, compression = open_format(path)
    if kind == "parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises many types for damaged files
            raise CatalogError(f"{path}: cannot read as Parquet ({exc})") from None
        return frame
    raw = _decompress(path, compression) if compression else path.read_bytes()
    if not raw.strip():
        raise CatalogError(f"{path}: file is empty; expected a header with {', '.join(REQUIRED_COLUMNS)}")
    text = _check_utf8(path, raw)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, sep="\t" if kind == "tsv" else ",")
    except pd.errors.ParserError as exc:
        raise CatalogError(f"{path}: malformed {kind.upper()} ({exc})") from None
    return frame


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


def _validate_prices(frame: pd.DataFrame, path: Path, strict: bool) -> pd.DataFrame:
    """Keep rows whose price is a finite number > 0; warn (or raise, if strict) about the rest."""
    price, bad, message = check_prices(frame, path)
    if message is not None:
        if strict:
            raise CatalogError(message)
        log.warning("%s: skipped %d of %d training rows with a missing or invalid price (first: %s)",
                    path, int(bad.sum()), len(frame), message)
    frame = frame.assign(**{PRICE_COLUMN: price})
    frame = frame.loc[~bad].reset_index(drop=True)
    if frame.empty:
        raise CatalogError(f"{path}: no training rows left after dropping rows with invalid prices")
    return frame


def read_catalog(path: str | Path, *, labelled: bool = False, strict: bool = False) -> pd.DataFrame:
    """Read a catalog file (CSV or Parquet) and return a validated frame.

    Columns out: sample_id (str), catalog_content (str, '' when blank), image_link (str) and,
    when `labelled`, price (float, finite, > 0). Extra columns are dropped.
    """
    path = Path(path)
    frame = validate_frame(_read_table(path), path, labelled=labelled)
    if labelled:
        frame = _validate_prices(frame, path, strict)
    return frame.reset_index(drop=True)


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

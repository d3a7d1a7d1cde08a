"""Price an uploaded catalog (CSV/TSV/Parquet, compressed or not) with the CLI's reader; return the priced CSV.

The upload is stored under a neutral name that keeps its suffixes (`.tsv.gz`: the reader tells TSV
by name, compression and Parquet by their bytes), so messages name the user's file, not ours.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import pandas as pd

from ..catalog import COMPRESSED_SUFFIXES, ID_COLUMN, iter_catalog
from ..errors import UserError
from .forms import FieldError

SUFFIX_RE = re.compile(r"\.[A-Za-z0-9]{1,10}")
CATALOG_SUFFIXES = (".csv", ".tsv", ".tab", ".txt", ".parquet", ".pq", *COMPRESSED_SUFFIXES)
MAX_NAME_CHARS = 200  # a file name shown back on the page


def display_name(filename: str | None) -> str:
    """The uploaded file's own name, without any folder a browser sent, cut to MAX_NAME_CHARS."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name.strip()
    return name[:MAX_NAME_CHARS] or "the file"


def download_name(filename: str) -> str:
    """'shop.tsv.gz' -> 'shop-priced.csv' (the catalog suffixes dropped)."""
    stem = filename
    while Path(stem).suffix.lower() in CATALOG_SUFFIXES:
        stem = stem[: -len(Path(stem).suffix)]
    return f"{stem or 'catalog'}-priced.csv"


def _stored_name(filename: str) -> str:
    suffixes = [s.lower() for s in PurePosixPath(filename).suffixes[-2:] if SUFFIX_RE.fullmatch(s)]
    return "upload" + "".join(suffixes)


def price_upload(predictor: Any, upload: BinaryIO, filename: str, *, max_rows: int, coverage: float | None) -> bytes:
    """The priced file (`sample_id,price` and, with `coverage`, `price_low,price_high`) as UTF-8 CSV bytes.

    Reads at most `max_rows` + 1 rows: a longer file is a FieldError before any pricing. A file the
    reader refuses is a FieldError with the reader's message, naming `filename`.
    """
    with tempfile.TemporaryDirectory(prefix="smartprice-upload-") as folder:
        path = Path(folder) / _stored_name(filename)
        with open(path, "wb") as handle:
            shutil.copyfileobj(upload, handle, 1024 * 1024)
        try:
            chunks = iter_catalog(path, chunk_rows=max_rows + 1)
            frame = next(chunks)
            chunks.close()
            if len(frame) > max_rows:
                raise FieldError("file", f"{filename}: more than {max_rows:,} rows; price a larger file with "
                                         "'smartprice predict MODEL FILE --out prices.csv', or split it", 413)
        except UserError as exc:
            raise FieldError("file", str(exc).replace(str(path), filename)) from None
    if coverage is None:
        prices = pd.DataFrame({"price": predictor.predict(frame)})
    else:
        try:
            prices = predictor.predict_interval(frame, coverage=coverage)[["price", "price_low", "price_high"]]
        except UserError as exc:  # a model saved before ranges existed, or a coverage it refuses
            raise FieldError("ranges", str(exc)) from None
    # the same columns and number format as `smartprice predict` (stream.predict_file)
    return pd.concat([frame[[ID_COLUMN]].reset_index(drop=True), prices.reset_index(drop=True)], axis=1) \
        .to_csv(index=False).encode("utf-8")

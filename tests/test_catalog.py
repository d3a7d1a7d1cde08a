"""Every bad input gives a clear error naming the file, row and column (or is handled)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from smartprice.catalog import CatalogError, read_catalog

HEADER = "sample_id,catalog_content,image_link,price\n"


def write(tmp_path, text: str | bytes, name: str = "cat.csv"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_reads_csv_and_ignores_extra_columns(tmp_path):
    path = write(tmp_path, "sample_id,catalog_content,image_link,price,extra\n1,\"Item Name: A\nValue: 1\",x,2.5,zz\n")
    frame = read_catalog(path, labelled=True)
    assert list(frame.columns) == ["sample_id", "catalog_content", "image_link", "price"]
    assert frame.loc[0, "price"] == 2.5 and frame.loc[0, "sample_id"] == "1"


def test_reads_parquet(tmp_path):
    path = tmp_path / "cat.parquet"
    pd.DataFrame({"sample_id": [1, 2], "catalog_content": ["a", None]}).to_parquet(path)
    frame = read_catalog(path)
    assert frame["sample_id"].tolist() == ["1", "2"] and frame["catalog_content"].tolist() == ["a", ""]


def test_missing_column(tmp_path):
    path = write(tmp_path, "sample_id,image_link\n1,x\n")
    with pytest.raises(CatalogError, match=r"cat\.csv: missing required column 'catalog_content'"):
        read_catalog(path)


def test_missing_price_column_when_training(tmp_path):
    path = write(tmp_path, "sample_id,catalog_content\n1,x\n")
    with pytest.raises(CatalogError, match="missing required column 'price'"):
        read_catalog(path, labelled=True)


def test_empty_file(tmp_path):
    with pytest.raises(CatalogError, match=r"cat\.csv: file is empty"):
        read_catalog(write(tmp_path, ""))


def test_header_only(tmp_path):
    with pytest.raises(CatalogError, match=r"cat\.csv: has a header but no rows"):
        read_catalog(write(tmp_path, HEADER))


def test_duplicate_sample_id(tmp_path):
    path = write(tmp_path, HEADER + "7,a,x,1\n8,b,x,2\n7,c,x,3\n")
    with pytest.raises(CatalogError, match=r"cat\.csv, row 3, column 'sample_id': duplicate sample_id '7' \(also at row 1\)"):
        read_catalog(path, labelled=True)


def test_not_utf8(tmp_path):
    path = write(tmp_path, HEADER.encode() + b"1,caf\xe9 au lait,x,2\n")
    with pytest.raises(CatalogError, match=r"cat\.csv: not valid UTF-8 \(byte \d+, line 2\)"):
        read_catalog(path)


def test_missing_file(tmp_path):
    with pytest.raises(CatalogError, match="nope.csv: file not found"):
        read_catalog(tmp_path / "nope.csv")


@pytest.mark.parametrize("bad, reason", [("", "missing"), ("abc", "invalid"), ("0", "invalid"),
                                         ("-3", "invalid"), ("inf", "invalid")])
def test_bad_price_strict(tmp_path, bad, reason):
    path = write(tmp_path, HEADER + f"1,a,x,2\n2,b,x,{bad}\n")
    with pytest.raises(CatalogError, match=rf"cat\.csv, row 2, column 'price': price is {reason}"):
        read_catalog(path, labelled=True, strict=True)


def test_bad_prices_skipped_with_counted_warning(tmp_path, caplog):
    path = write(tmp_path, HEADER + "1,a,x,2\n2,b,x,\n3,c,x,-1\n4,d,x,nan\n5,e,x,3.5\n")
    with caplog.at_level(logging.WARNING):
        frame = read_catalog(path, labelled=True)
    assert frame["sample_id"].tolist() == ["1", "5"]
    assert "skipped 3 of 5 rows" in caplog.text


def test_blank_content_kept_for_prediction(tmp_path):
    frame = read_catalog(write(tmp_path, "sample_id,catalog_content\n1,\n2,\"  \"\n"))
    assert frame["catalog_content"].tolist() == ["", "  "]


def test_blank_sample_id(tmp_path):
    with pytest.raises(CatalogError, match=r"row 2, column 'sample_id': sample_id is blank"):
        read_catalog(write(tmp_path, "sample_id,catalog_content\n1,a\n,b\n"))

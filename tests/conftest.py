"""Shared fixtures: a small inline catalog, and the path of the shared real data when present."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

_ITEMS = [
    ("La Victoria Green Taco Sauce Mild, 12 Ounce (Pack of 6)", 72.0, "Fl Oz", 14.9),
    ("Salerno Butter Cookies, 8 Ounce (Pack of 4)", 32.0, "Ounce", 13.1),
    ("Folgers Lively Columbian K-Cup 18 Count", 18.0, "count", 9.5),
    ("Goya Sazonador Total Seasoning, 30 Ounce (Pack of 6)", 180.0, "Ounce", 41.0),
    ("McCormick Ground Cinnamon, 2.37 oz", 2.37, "Ounce", 3.9),
    ("Barilla Spaghetti Pasta 16 oz (Pack of 12)", 192.0, "Ounce", 19.2),
    ("Twinings English Breakfast Tea, 20 Count (Pack of 6)", 120.0, "Count", 21.0),
    ("Kerrygold Pure Irish Butter 8 oz", 8.0, "Ounce", 4.6),
    ("Lindt Excellence 70% Dark Chocolate Bar, 3.5 oz (Pack of 12)", 42.0, "Ounce", 33.0),
    ("San Pellegrino Sparkling Water, 16.9 Fl Oz (Pack of 24)", 405.6, "Fl Oz", 27.5),
]


def make_catalog(rows: int = 40, labelled: bool = True) -> pd.DataFrame:
    """A deterministic catalog frame built from the items above with varied packs."""
    records = []
    for i in range(rows):
        name, value, unit, price = _ITEMS[i % len(_ITEMS)]
        factor = 1 + (i // len(_ITEMS))
        text = f"Item Name: {name} v{factor}\nBullet Point 1: Tasty item {i}\nValue: {value * factor}\nUnit: {unit}\n"
        record = {"sample_id": str(1000 + i), "catalog_content": text, "image_link": f"https://x/{i}.jpg"}
        if labelled:
            record["price"] = round(price * factor * (1 + 0.03 * (i % 3)), 2)
        records.append(record)
    return pd.DataFrame(records)


@pytest.fixture
def catalog() -> pd.DataFrame:
    return make_catalog()


def shared_file(name: str) -> Path:
    """Path of a shared data file, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared data not available: {path} is absent (tests using real data need ../shared/data)")
    return path


def kill_during(command: list[str], checkpoint: Path, moment: str, log_file: Path, timeout: float = 180) -> None:
    """Run a training command and SIGKILL it at `moment`.

    "first-epoch": shortly after training starts (the loop logs its schedule), before any checkpoint;
    "later-epoch": shortly after the first epoch's checkpoint is on disk;
    "checkpoint-write": as soon as a checkpoint is being written beside the old one (`.tmp`).
    """
    staging = checkpoint.with_name(checkpoint.name + ".tmp")
    state = checkpoint / "loop_state.json"
    with open(log_file, "wb") as log:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + timeout
        while time.time() < deadline and process.poll() is None:
            if moment == "first-epoch" and b"schedule:" in log_file.read_bytes():
                time.sleep(0.3)
                break
            if moment == "later-epoch" and state.exists() and json.loads(state.read_text())["epoch"] >= 1:
                time.sleep(0.1)
                break
            if moment == "checkpoint-write" and staging.exists():
                break
            time.sleep(0.01)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()


def kill_after_first_epoch(command: list[str], checkpoint: Path, timeout: float = 180) -> None:
    """Run a training command and SIGKILL it once its first epoch checkpoint is on disk."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = checkpoint / "loop_state.json"
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        if state.exists() and json.loads(state.read_text())["epoch"] >= 1:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait()


TINY_ENCODER = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


def _tokenizer(directory):
    """A small word-piece tokenizer trained on the example catalog, saved like a hub tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    texts = pd.read_csv(EXAMPLES / "train.csv")["catalog_content"].tolist()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(directory)
    return fast


def tiny_encoder(kind: str, directory, width: dict | None = None) -> str:
    """A randomly initialised 1-layer DeBERTa-v2 / RoBERTa / DistilRoBERTa with its tokenizer, saved to `directory`."""
    from transformers import AutoModel, DebertaV2Config, RobertaConfig

    tokenizer = _tokenizer(directory)
    shape = {**TINY_ENCODER, **(width or {})}
    if kind == "deberta":
        config = DebertaV2Config(vocab_size=len(tokenizer), max_position_embeddings=64, **shape)
    else:  # RoBERTa; DistilRoBERTa is the same architecture with fewer layers
        layers = {"num_hidden_layers": 1} if kind == "distilroberta" else {}
        config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=70, pad_token_id=0,
                               **{**shape, **layers})
    AutoModel.from_config(config).save_pretrained(directory)
    return str(directory)

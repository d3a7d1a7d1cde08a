"""Byte-level BPE trained on the training text (HF tokenizers), saved as tokenizer.json beside the model."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from sharedcore.errors import UserError

SPECIALS = ("<PAD>", "<UNK>", "<BOS>", "<EOS>")
PAD, UNK, BOS, EOS = range(4)


def train_tokenizer(lines: Iterable[str], vocab_size: int = 50_000, min_frequency: int = 2) -> Tokenizer:
    """BPE with a byte-level alphabet (no unknown characters) and a decoder that restores spaces.

    The vocabulary stops growing when no pair occurs `min_frequency` times, so a small corpus
    gets the vocabulary it supports rather than `vocab_size`.
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<UNK>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(lines, trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, directory: Path) -> None:
    tokenizer.save(str(directory / "tokenizer.json"))


def load_tokenizer(directory: Path) -> Tokenizer:
    path = directory / "tokenizer.json"
    if not path.exists():
        raise UserError(f"{directory}: no tokenizer.json; is this a directory written by 'mu train'?")
    return Tokenizer.from_file(str(path))

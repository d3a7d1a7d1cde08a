"""Text corpora -> token windows of seq+1 tokens with stride seq/2."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from sharedcore.errors import UserError

from .tokenizer import BOS, EOS


def read_lines(paths: Sequence[str | Path]) -> list[str]:
    """Non-blank lines of text files; `hf:wikitext-2-raw-v1:train` reads a split through `datasets` (online)."""
    lines: list[str] = []
    for path in paths:
        text = str(path)
        if text.startswith("hf:"):
            parts = text.split(":")
            if len(parts) != 3:
                raise UserError(f"{text}: a Hugging Face dataset is named hf:CONFIG:SPLIT, e.g. hf:wikitext-2-raw-v1:train")
            _, name, split = parts
            from datasets import load_dataset  # optional: only for users who are online

            lines.extend(r["text"] for r in load_dataset("wikitext", name, split=split) if r["text"].strip())
            continue
        path = Path(path)
        if not path.exists():
            raise UserError(f"{path}: text file not found")
        try:
            content = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
        except OSError as exc:  # a directory, no permission
            raise UserError(f"{path}: cannot read it: {exc.strerror or exc}") from None
        lines.extend(line for line in content.splitlines() if line.strip())
    if not lines:
        raise UserError(f"{', '.join(map(str, paths))}: no text")
    return lines


def encode_corpus(tokenizer, lines: Sequence[str]) -> torch.Tensor:
    """One long stream of token ids: each line is BOS ... EOS."""
    ids: list[int] = []
    for encoding in tokenizer.encode_batch(list(lines)):
        ids.append(BOS)
        ids.extend(encoding.ids)
        ids.append(EOS)
    return torch.tensor(ids, dtype=torch.long)


class TokenWindows(Dataset):
    """Windows of seq+1 tokens starting every `stride` tokens (default seq/2); input = window[:-1], target = window[1:]."""

    def __init__(self, ids: torch.Tensor, seq_len: int, stride: int | None = None) -> None:
        if ids.numel() < seq_len + 1:
            raise UserError(f"corpus has {ids.numel()} tokens, fewer than one window of {seq_len + 1}: "
                            "give more text or a smaller max_seq_len")
        self.ids, self.seq_len, self.stride = ids, seq_len, stride or max(1, seq_len // 2)
        self.starts = list(range(0, ids.numel() - seq_len, self.stride))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, index: int) -> torch.Tensor:
        start = self.starts[index]
        return self.ids[start:start + self.seq_len + 1]


def collate(windows: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(windows)  # (B, seq+1)

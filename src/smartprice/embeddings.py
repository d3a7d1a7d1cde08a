"""Frozen sentence embeddings of listings (all-MiniLM-L6-v2, offline, by default) for the CPU stack.

The encoder is never trained here: rows are embedded once (mean-pooled, L2-normalised), in batches
of similar length, and cached by text for the life of the process, so cross-validation folds and the
out-of-fold stacking inside a fit embed each listing only once. Needs the `nn` extra (torch).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np

from sharedcore.about import NN_INSTALL

from .errors import MissingExtraError

log = logging.getLogger(__name__)

_CACHE: dict[tuple[str, int, bytes], np.ndarray] = {}  # (encoder location, max_length, text digest) -> vector
_MODELS: dict[str, tuple[object, object]] = {}         # encoder location -> (tokenizer, model), loaded once


class SentenceEmbedder:
    """`transform(texts) -> (n, hidden)` float32, unit rows; see the module docstring."""

    def __init__(self, encoder: str = "minilm", max_length: int = 128, batch_size: int = 64) -> None:
        self.encoder, self.max_length, self.batch_size = encoder, max_length, batch_size

    def _model(self) -> tuple[str, object, object]:
        try:
            import torch  # noqa: F401
            from transformers import AutoModel
        except ImportError as exc:
            raise MissingExtraError(f"embedding features need the nn extra ({exc.name} is not installed): "
                               + NN_INSTALL) from None
        from .encoders import load_weights, open_encoder

        location, tokenizer, _ = open_encoder(self.encoder)
        if location not in _MODELS:
            model = load_weights(self.encoder, location, AutoModel.from_pretrained)
            _MODELS[location] = (tokenizer, model.eval())
        return location, *_MODELS[location]

    def transform(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of `texts`, cached rows reused; new rows embedded in length-sorted batches."""
        import torch

        location, tokenizer, model = self._model()
        keys = [(location, self.max_length, hashlib.sha1(t.encode("utf-8")).digest()) for t in texts]
        missing = sorted({i: k for i, k in enumerate(keys) if k not in _CACHE}.items(), key=lambda p: len(texts[p[0]]))
        if missing:
            log.info("embedding %d listings with %s (max_length %d)", len(missing), self.encoder, self.max_length)
        with torch.inference_mode():
            for start in range(0, len(missing), self.batch_size):
                batch = missing[start:start + self.batch_size]
                encoded = tokenizer([texts[i] for i, _ in batch], truncation=True, max_length=self.max_length,
                                    padding=True, return_tensors="pt")
                hidden = model(**encoded).last_hidden_state  # (B, T, H)
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (B, H)
                pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy().astype(np.float32)
                for (_, key), vector in zip(batch, pooled):
                    _CACHE[key] = vector
        return np.stack([_CACHE[k] for k in keys]) if keys else np.zeros((0, 0), dtype=np.float32)

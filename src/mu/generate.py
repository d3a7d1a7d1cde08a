"""Sampling with temperature, top-k, top-p and a repetition penalty; KV-cached by default."""

from __future__ import annotations

import torch

from .model import MU


def apply_repetition_penalty(logits: torch.Tensor, previous: torch.Tensor, penalty: float) -> torch.Tensor:
    """Lower the probability of already-seen tokens whatever their logit's sign.

    Positive logits are divided by `penalty`, negative ones multiplied (the reference multiplied
    every logit, which *raised* negative ones). logits: (V,), previous: (n,) token ids.
    """
    if penalty == 1.0 or previous.numel() == 0:
        return logits
    logits = logits.clone()
    seen = torch.unique(previous)
    values = logits[seen]
    logits[seen] = torch.where(values > 0, values / penalty, values * penalty)
    return logits


def sample_token(logits: torch.Tensor, top_k: int, top_p: float, generator: torch.Generator | None) -> int:
    """Sample from the top-k tokens, further cut to the smallest set whose probability reaches top_p.

    Works on the k candidates only (no sort of the whole vocabulary): a 50k sort per token would
    cost more than a cached forward step.
    """
    if 0 < top_k < logits.numel():
        values, indices = torch.topk(logits, top_k)  # sorted, descending
    else:
        values, indices = torch.sort(logits, descending=True)
    probs = values.softmax(-1)
    if 0.0 < top_p < 1.0:
        keep = (probs.cumsum(-1) - probs) < top_p  # always keeps the first; keeps the token that crosses top_p
        probs = probs * keep
    return int(indices[torch.multinomial(probs / probs.sum(), 1, generator=generator)])


@torch.inference_mode()
def generate(model: MU, prompt: list[int], max_new_tokens: int = 50, temperature: float = 0.8, top_k: int = 50,
             top_p: float = 0.9, repetition_penalty: float = 1.2, seed: int | None = None, use_cache: bool = True,
             stop_token: int | None = None) -> list[int]:
    """Continue `prompt` (token ids) by up to `max_new_tokens` tokens.

    With the cache, each step runs only the new token; when the context is full it falls back to
    re-running the last max_seq_len tokens (positions are learned, so they cannot slide).
    """
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    device = next(model.parameters()).device
    limit = model.config.max_seq_len
    tokens = list(prompt) or [2]  # BOS when empty
    caches: list[dict] | None = None
    for _ in range(max_new_tokens):
        if use_cache and len(tokens) <= limit:
            if caches is None:
                caches = [{} for _ in model.layers]
                hidden = model.hidden(torch.tensor([tokens], device=device), caches, start=0)
            else:
                hidden = model.hidden(torch.tensor([[tokens[-1]]], device=device), caches, start=len(tokens) - 1)
        else:
            window = tokens[-limit:]
            hidden = model.hidden(torch.tensor([window], device=device))
        logits = model.head(hidden[0, -1]).float().cpu()  # (V,)
        logits = apply_repetition_penalty(logits, torch.tensor(tokens), repetition_penalty)
        if temperature <= 0:
            next_token = int(logits.argmax())
        else:
            next_token = sample_token(logits / temperature, top_k, top_p, generator)
        tokens.append(next_token)
        if stop_token is not None and next_token == stop_token:
            break
    model.train(was_training)
    return tokens[len(prompt):]

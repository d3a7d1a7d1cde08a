"""Attention helpers shared by every MU and baseline layer: causal SDPA from a cache position, KV caches,
the choice of the CPU kernels (mu.kernels), and splitting and merging heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .kernels import available


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
    """Causal SDPA over (B, H, T, d) queries whose first one sits at position `past` of the keys.

    No attention dropout: the design has dropout in the FFN and gate only, and a (B, H, T, T)
    dropout mask was measured to cost more than all the attention arithmetic on CPU.
    """
    T, S = q.shape[2], k.shape[2]
    if past == 0:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if T == 1:  # one new token attends to the whole cache
        return F.scaled_dot_product_attention(q, k, v)
    allowed = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(past)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


def _extend_cache(cache: dict | None, name: str, k: torch.Tensor, v: torch.Tensor):
    """Append new keys/values (B, H, T, d) to a layer's KV cache; returns (k, v, past length).

    The cache keeps preallocated (B, H, capacity, d) buffers, doubled when full, and returns views
    of their first S positions: an append is two copies of the new entries. (`torch.cat` of the new,
    permuted keys onto the cache took the slow non-contiguous path: 30 us a call, a fifth of a
    cached generation step.)
    """
    if cache is None:
        return k, v, 0
    B, H, T, d = k.shape
    keys, values, past = cache.get(name, (None, None, 0))
    end = past + T
    if keys is None or keys.shape[2] < end:
        capacity = max(16, 2 * end)
        grown_k, grown_v = k.new_empty(B, H, capacity, d), v.new_empty(B, H, capacity, d)
        if keys is not None:
            grown_k[:, :, :past], grown_v[:, :, :past] = keys[:, :, :past], values[:, :, :past]
        keys, values = grown_k, grown_v
    keys[:, :, past:end], values[:, :, past:end] = k, v
    cache[name] = (keys, values, end)
    return keys[:, :, :end], values[:, :, :end], past


def _extend_rows(cache: dict | None, name: str, rows: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Append a QKV projection's rows (B, T, 192) to a cache (the kernels' form of a KV cache); all rows so far
    (B, S, 192) and the number there were before. Preallocated buffer, doubled when full, as `_extend_cache`."""
    if cache is None:
        return rows, 0
    past = cache.get(name, (None, 0))[1]
    end = past + rows.shape[1]
    buffer = reserve_rows(cache, name, end, rows)
    buffer[:, past:end] = rows
    return buffer[:, :end], past


def reserve_rows(cache: dict, name: str, end: int, like: torch.Tensor | None = None) -> torch.Tensor:
    """A cache's row buffer with room for `end` rows (grown to twice that when short, like `like` (B, T, width)
    where there is none yet), recorded as holding `end` rows; the caller writes the new ones."""
    buffer, past = cache.get(name, (None, 0))
    if buffer is None or buffer.shape[1] < end:
        source = buffer if buffer is not None else like
        grown = source.new_empty(source.shape[0], max(16, 2 * end), source.shape[2])
        if buffer is not None:
            grown[:, :past] = buffer[:, :past]
        buffer = grown
    cache[name] = (buffer, end)
    return buffer


def _kernel_form(wanted: bool, qkv: torch.Tensor, cache: dict | None, name: str) -> bool:
    """Whether an attention runs through mu.kernels: wanted, applicable here, and with a cache only where it
    started without autograd (the kernels' cached form has no backward); a cache keeps the form it started with."""
    if not wanted or not available(qkv):
        return False
    if cache is None:
        return True
    return cache.setdefault(f"{name} uses kernels", not (torch.is_grad_enabled() and qkv.requires_grad))


def _split_heads(qkv: torch.Tensor, heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, T, 3*W) laid out [q | k | v], each head-major -> q, k, v as (B, heads, T, W/heads) views."""
    B, T, three_w = qkv.shape
    return qkv.view(B, T, 3, heads, three_w // (3 * heads)).permute(2, 0, 3, 1, 4).unbind(0)


def _merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(B, H, T, d) -> (B, T, H*d)."""
    B, H, T, d = y.shape
    return y.transpose(1, 2).reshape(B, T, H * d)

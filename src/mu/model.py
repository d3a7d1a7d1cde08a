"""MU: block-wise semantic attention language model (causal).

Each token is a 64-vector seen as an 8x8 grid; its 16 semantic blocks are the 2x2 tiles
(tile rows in order: I S C1 C2 / R1 R2 T K / G M D F / P E A X). Hidden vectors are stored
*block-major*: entries 4b..4b+3 are tile b's values (tile rows, then columns). This is a fixed
permutation of the grid's row-major order, applied once at the embedding; since every weight
is learned, the model is the same family, and slicing a block is a view. `to_grid` undoes it.

A layer: 16 causal block attentions (4 wide, 2 heads each) -> concatenated (64) -> causal
cross-block attention (64 wide, 8 heads) -> LN(x + attn) -> FFN 64-256-64 -> LN(. + ffn) ->
sensitivity gate  x_new = x + s * (z - x), s = base_b * sigmoid(MLP([affinity[token], entropy])).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_NAMES = ("I", "S", "C1", "C2", "R1", "R2", "T", "K", "G", "M", "D", "F", "P", "E", "A", "X")
WIDTH = 64          # 8x8 grid per token
N_BLOCKS = 16       # 2x2 tiles of the grid
BLOCK = 4           # values per tile
BLOCK_HEADS = 2     # heads per block attention (head size 2)
CROSS_HEADS = 8     # heads of the cross-block attention (head size 8)
FFN = 256           # FFN hidden width (4x)


def tile_index() -> torch.Tensor:
    """(16, 4) grid positions (row-major 0..63) of each tile's values, tiles in reading order."""
    rows = []
    for tile_row in range(4):
        for tile_col in range(4):
            r, c = 2 * tile_row, 2 * tile_col
            rows.append([8 * r + c, 8 * r + c + 1, 8 * (r + 1) + c, 8 * (r + 1) + c + 1])
    return torch.tensor(rows)


@dataclass(frozen=True)
class MUConfig:
    """Model shape. The width (64 = 16 blocks x 4) is fixed by the design."""

    vocab_size: int = 50_000          # BPE vocabulary (capped by what the corpus supports)
    n_layers: int = 6                 # "test" preset: 6; "full": 24
    max_seq_len: int = 128            # learned positions; the context length
    dropout: float = 0.1              # FFN and gate-MLP dropout
    block_attention: str = "fused"    # "fused": one 32-head attention; "literal": 16 separate ones

    def __post_init__(self) -> None:
        if self.block_attention not in ("fused", "literal"):
            raise ValueError(f"block_attention must be 'fused' or 'literal', not {self.block_attention!r}")
        if self.vocab_size < 4 or self.n_layers < 1 or self.max_seq_len < 2:
            raise ValueError("vocab_size >= 4, n_layers >= 1 and max_seq_len >= 2 are required")


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
    """Append new keys/values (B, H, T, d) to a layer's KV cache; returns (k, v, past length)."""
    if cache is None:
        return k, v, 0
    past = 0
    if name in cache:
        past = cache[name][0].shape[2]
        k = torch.cat([cache[name][0], k], dim=2)
        v = torch.cat([cache[name][1], v], dim=2)
    cache[name] = (k, v)
    return k, v, past


class LiteralBlockAttention(nn.Module):
    """Reference formulation: 16 separate causal attentions, one per block (kept for testing)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.ModuleList(nn.Linear(BLOCK, 3 * BLOCK) for _ in range(N_BLOCKS))
        self.out = nn.ModuleList(nn.Linear(BLOCK, BLOCK) for _ in range(N_BLOCKS))

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        if cache is not None:
            raise NotImplementedError("generation uses the fused formulation")
        B, T, _ = x.shape
        outputs = []
        for b in range(N_BLOCKS):
            q, k, v = self.qkv[b](x[..., BLOCK * b:BLOCK * (b + 1)]).split(BLOCK, dim=-1)  # each (B, T, 4)
            q, k, v = (t.view(B, T, BLOCK_HEADS, BLOCK // BLOCK_HEADS).transpose(1, 2) for t in (q, k, v))
            y = _attend(q, k, v, 0)  # (B, 2, T, 2)
            outputs.append(self.out[b](y.transpose(1, 2).reshape(B, T, BLOCK)))
        return torch.cat(outputs, dim=-1)  # (B, T, 64)


class FusedBlockAttention(nn.Module):
    """The 16 block attentions as one attention with 32 heads of size 2 after a block-diagonal projection."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv_weight = nn.Parameter(torch.empty(N_BLOCKS, 3 * BLOCK, BLOCK))  # per block: Linear(4, 12)
        self.qkv_bias = nn.Parameter(torch.zeros(N_BLOCKS, 3 * BLOCK))
        self.out_weight = nn.Parameter(torch.empty(N_BLOCKS, BLOCK, BLOCK))      # per block: Linear(4, 4)
        self.out_bias = nn.Parameter(torch.zeros(N_BLOCKS, BLOCK))
        for weight in (self.qkv_weight, self.out_weight):  # nn.Linear's default init, per block
            bound = 1 / math.sqrt(BLOCK)
            nn.init.uniform_(weight, -bound, bound)

    @torch.no_grad()
    def copy_from(self, literal: LiteralBlockAttention) -> None:
        """Take the weights of a literal formulation (same function, stacked)."""
        self.qkv_weight.copy_(torch.stack([m.weight for m in literal.qkv]))
        self.qkv_bias.copy_(torch.stack([m.bias for m in literal.qkv]))
        self.out_weight.copy_(torch.stack([m.weight for m in literal.out]))
        self.out_bias.copy_(torch.stack([m.bias for m in literal.out]))

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        blocks = x.view(B, T, N_BLOCKS, BLOCK)
        qkv = torch.einsum("btnd,ned->btne", blocks, self.qkv_weight) + self.qkv_bias  # (B, T, 16, 12)
        q, k, v = qkv.split(BLOCK, dim=-1)  # each (B, T, 16, 4): block b's q for its 2 heads
        heads = N_BLOCKS * BLOCK_HEADS
        q, k, v = (t.reshape(B, T, heads, BLOCK // BLOCK_HEADS).transpose(1, 2) for t in (q, k, v))  # (B, 32, T, 2)
        k, v, past = _extend_cache(cache, "block", k, v)
        y = _attend(q, k, v, past)  # (B, 32, T, 2)
        y = y.transpose(1, 2).reshape(B, T, N_BLOCKS, BLOCK)
        return (torch.einsum("btnd,ned->btne", y, self.out_weight) + self.out_bias).reshape(B, T, WIDTH)


class CrossBlockAttention(nn.Module):
    """Causal 8-head attention across the 64-wide vector; also returns the entropy of its attention."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split(WIDTH, dim=-1)
        q, k, v = (t.view(B, T, CROSS_HEADS, WIDTH // CROSS_HEADS).transpose(1, 2) for t in (q, k, v))  # (B, 8, T, 8)
        k, v, past = _extend_cache(cache, "cross", k, v)
        S = k.shape[2]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(WIDTH // CROSS_HEADS)  # (B, 8, T, S)
        if T > 1:  # a single new query (cached generation) has no future keys to hide
            future = torch.ones(T, S, dtype=torch.bool, device=x.device).triu(past + 1)  # key j > query i + past
            scores = scores.masked_fill(future, float("-inf"))
        probs = scores.softmax(dim=-1)
        mean_probs = probs.mean(dim=1)  # (B, T, S): head-averaged, as the gate reads it
        entropy = -(mean_probs * torch.log(mean_probs + 1e-9)).sum(-1)  # (B, T)
        y = (probs @ v).transpose(1, 2).reshape(B, T, WIDTH)
        return self.out(y), entropy


class SensitivityGate(nn.Module):
    """s = base_b * sigmoid(MLP([affinity[token], entropy])), one value per block."""

    def __init__(self, vocab_size: int, dropout: float) -> None:
        super().__init__()
        self.affinity = nn.Embedding(vocab_size, N_BLOCKS)  # token -> per-block affinity
        nn.init.normal_(self.affinity.weight, std=0.1)
        self.base = nn.Parameter(torch.full((N_BLOCKS,), 0.5))
        self.mlp = nn.Sequential(nn.Linear(N_BLOCKS + 1, 2 * N_BLOCKS), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(2 * N_BLOCKS, N_BLOCKS))

    def forward(self, idx: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
        features = torch.cat([self.affinity(idx), entropy.unsqueeze(-1)], dim=-1)  # (B, T, 17)
        s = self.base * torch.sigmoid(self.mlp(features))  # (B, T, 16)
        return s.repeat_interleave(BLOCK, dim=-1)  # (B, T, 64): block b's s on its 4 block-major entries


class MULayer(nn.Module):
    def __init__(self, config: MUConfig) -> None:
        super().__init__()
        block_cls = FusedBlockAttention if config.block_attention == "fused" else LiteralBlockAttention
        self.blocks = block_cls()
        self.cross = CrossBlockAttention()
        self.ln1 = nn.LayerNorm(WIDTH)
        self.ffn = nn.Sequential(nn.Linear(WIDTH, FFN), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(FFN, WIDTH))
        self.ln2 = nn.LayerNorm(WIDTH)
        self.gate = SensitivityGate(config.vocab_size, config.dropout)

    def forward(self, x: torch.Tensor, idx: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        attn, entropy = self.cross(self.blocks(x, cache), cache)
        z = self.ln1(x + attn)
        z = self.ln2(z + self.ffn(z))
        return x + self.gate(idx, entropy) * (z - x)  # M_new = M + s * (Z - M)


class MU(nn.Module):
    """`MU(MUConfig(...))(idx)` -> logits (B, T, vocab_size); every attention is causal."""

    def __init__(self, config: MUConfig) -> None:
        super().__init__()
        self.config = config
        self.token = nn.Embedding(config.vocab_size, WIDTH)
        self.position = nn.Embedding(config.max_seq_len, WIDTH)
        self.layers = nn.ModuleList(MULayer(config) for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, config.vocab_size)
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)
        self.register_buffer("grid_order", tile_index().flatten(), persistent=False)  # block-major -> grid

    def hidden(self, idx: torch.Tensor, caches: list[dict] | None = None, start: int = 0) -> torch.Tensor:
        """Final normalised hidden states (B, T, 64) in block-major order."""
        T = idx.shape[1]
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len={self.config.max_seq_len}")
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.token(idx) + self.position(positions)  # (B, T, 64)
        for i, layer in enumerate(self.layers):
            x = layer(x, idx, caches[i] if caches is not None else None)
        return self.norm(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(idx))  # (B, T, V)

    def to_grid(self, hidden: torch.Tensor) -> torch.Tensor:
        """(…, 64) block-major vectors -> (…, 8, 8) grids in the design's row-major layout."""
        grid = torch.empty_like(hidden)
        grid[..., self.grid_order] = hidden
        return grid.view(*hidden.shape[:-1], 8, 8)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

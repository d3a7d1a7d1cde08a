"""MU: block-wise semantic attention language model (causal), its ablations, and a transformer baseline.

Each token is a 64-vector seen as an 8x8 grid; its 16 semantic blocks are the 2x2 tiles
(tile rows in order: I S C1 C2 / R1 R2 T K / G M D F / P E A X). Hidden vectors are stored
*block-major*: entries 4b..4b+3 are tile b's values (tile rows, then columns). This is a fixed
permutation of the grid's row-major order, applied once at the embedding; since every weight
is learned, the model is the same family, and slicing a block is a view. `to_grid` undoes it.

A layer: 16 causal block attentions (4 wide, 2 heads each) -> concatenated (64) -> causal
cross-block attention (64 wide, 8 heads) -> LN(x + attn) -> FFN 64-256-64 -> LN(. + ffn) ->
sensitivity gate  x_new = x + s * (z - x), s = base_b * sigmoid(MLP([affinity[token], entropy])).

To tell what MU's parts are worth, the same code path builds (`MUConfig` fields, `--set` in `mu`):
- `block_attention="off"`: no block attentions, the cross-block attention reads x directly;
- `gate="off"`: the plain residual update x_new = z (no affinity tables, no entropy);
- `arch="transformer"`: a standard pre-LN causal transformer (`Transformer`) with the same
  embeddings, untied output layer with bias, FFN dropout and initialisation as MU; `width=64`
  is MU's width and depth, `width=0` the width whose total parameter count is closest to MU's.
`build_model(config)` builds any of them; `parameter_counts` and `training_flops_per_token` size them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from sharedcore.errors import SettingError

from .attention import _attend, _extend_cache, _extend_rows, _kernel_form, _merge_heads, _split_heads
from .kernels import block_attention, cross_attention

BLOCK_NAMES = ("I", "S", "C1", "C2", "R1", "R2", "T", "K", "G", "M", "D", "F", "P", "E", "A", "X")
WIDTH = 64          # 8x8 grid per token
N_BLOCKS = 16       # 2x2 tiles of the grid
BLOCK = 4           # values per tile
BLOCK_HEADS = 2     # heads per block attention (head size 2)
CROSS_HEADS = 8     # heads of the cross-block attention (head size 8)
FFN = 256           # FFN hidden width (4x)
GATE_HIDDEN = 2 * N_BLOCKS  # gate MLP 17 -> 32 -> 16
ARCHS = ("mu", "transformer")


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
    """Model shape and variant. MU's width (64 = 16 blocks x 4) is fixed by the design."""

    vocab_size: int = 50_000          # BPE vocabulary (capped by what the corpus supports)
    n_layers: int = 6                 # "test" preset: 6; "full": 24
    max_seq_len: int = 128            # learned positions; the context length
    dropout: float = 0.1              # FFN and gate-MLP dropout
    block_attention: str = "fused"    # "fused": one 32-head attention; "literal": 16 separate ones; "off": ablation
    gate: str = "on"                  # "off": ablation, the plain residual update x_new = z
    arch: str = "mu"                  # "mu" or "transformer" (the baseline)
    width: int = 64                   # transformer width (MU: 64, fixed); 0 = match MU's total parameters
    n_heads: int = 8                  # transformer heads: 8 as MU's cross-block attention

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise SettingError(f"arch must be one of {', '.join(ARCHS)}, not {self.arch!r}")
        if self.block_attention not in ("fused", "literal", "off"):
            raise SettingError(f"block_attention must be 'fused', 'literal' or 'off', not {self.block_attention!r}")
        if self.gate not in ("on", "off"):
            raise SettingError(f"gate must be 'on' or 'off', not {self.gate!r}")
        if self.vocab_size < 4 or self.n_layers < 1 or self.max_seq_len < 2:
            raise SettingError("vocab_size >= 4, n_layers >= 1 and max_seq_len >= 2 are required")
        if self.arch == "mu" and self.width != WIDTH:
            raise SettingError(f"MU's width is fixed at {WIDTH} by its 8x8 grid; width is a transformer setting")
        if self.arch == "transformer":
            if self.gate != "on" or self.block_attention != "fused":
                raise SettingError("gate and block_attention are MU's parts; a transformer has neither "
                                 "(leave them at their defaults with arch=transformer)")
            if self.width < 0 or self.n_heads < 1 or self.width % self.n_heads:
                raise SettingError(f"transformer width {self.width} must be a multiple of n_heads={self.n_heads} "
                                 "(or 0 to match MU's parameter count)")


# --- MU's parts ---------------------------------------------------------------------------------

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
    """The 16 block attentions as one attention with 32 heads of size 2 after a block-diagonal projection.

    Parameters are stored per block (16 x Linear(4, 12), 16 x Linear(4, 4)); `forward` assembles
    them into one dense block-diagonal (192, 64) QKV matrix with its rows in [q | k | v] order, so
    the projection is one GEMM. The 32 heads then run as one call: `mu.kernels.block_attention`
    (a CPU kernel for head size 2 that reads the projection and writes merged heads, no copies;
    ~4x quicker than SDPA forward + backward; with a cache, of the projection's rows) where it is
    built, else SDPA over the heads as views.
    """

    def __init__(self) -> None:
        super().__init__()
        self.qkv_weight = nn.Parameter(torch.empty(N_BLOCKS, 3 * BLOCK, BLOCK))  # per block: Linear(4, 12)
        self.qkv_bias = nn.Parameter(torch.zeros(N_BLOCKS, 3 * BLOCK))
        self.out_weight = nn.Parameter(torch.empty(N_BLOCKS, BLOCK, BLOCK))      # per block: Linear(4, 4)
        self.out_bias = nn.Parameter(torch.zeros(N_BLOCKS, BLOCK))
        for weight in (self.qkv_weight, self.out_weight):  # nn.Linear's default init, per block
            bound = 1 / math.sqrt(BLOCK)
            nn.init.uniform_(weight, -bound, bound)
        self.register_buffer("eye", torch.eye(N_BLOCKS), persistent=False)
        self._inference_weights: tuple | None = None  # (key, dense weights): see `dense_weights`
        self.use_kernel = True  # False: SDPA even where mu.kernels is built (tests compare the two)

    @torch.no_grad()
    def copy_from(self, literal: LiteralBlockAttention) -> None:
        """Take the weights of a literal formulation (same function, stacked)."""
        self.qkv_weight.copy_(torch.stack([m.weight for m in literal.qkv]))
        self.qkv_bias.copy_(torch.stack([m.bias for m in literal.qkv]))
        self.out_weight.copy_(torch.stack([m.weight for m in literal.out]))
        self.out_bias.copy_(torch.stack([m.bias for m in literal.out]))

    def dense_qkv(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(192, 64) block-diagonal weight, rows (part q/k/v, block, 4), and its (192,) bias."""
        w = self.qkv_weight.view(N_BLOCKS, 3, BLOCK, BLOCK).transpose(0, 1).contiguous()  # (3, 16 blocks, 4 out, 4 in)
        dense = w.unsqueeze(3) * self.eye.view(1, N_BLOCKS, 1, N_BLOCKS, 1)  # (3, 16, 4, 16, 4): zero off-block
        bias = self.qkv_bias.view(N_BLOCKS, 3, BLOCK).transpose(0, 1)  # (3, 16, 4)
        return dense.view(3 * WIDTH, WIDTH), bias.reshape(3 * WIDTH)

    def dense_out(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(64, 64) block-diagonal output weight and its (64,) bias."""
        dense = self.out_weight.unsqueeze(2) * self.eye.view(N_BLOCKS, 1, N_BLOCKS, 1)  # (16, 4, 16, 4)
        return dense.view(WIDTH, WIDTH), self.out_bias.view(WIDTH)

    def dense_weights(self) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """(dense_qkv(), dense_out()); without autograd they are kept until a parameter changes.

        Assembling them costs ~60 us per layer, a sixth of a cached generation step; the key (each
        parameter's in-place version counter and storage) changes on any optimizer step or load.
        """
        if torch.is_grad_enabled():
            return self.dense_qkv(), self.dense_out()
        params = (self.qkv_weight, self.qkv_bias, self.out_weight, self.out_bias)
        key = tuple((p._version, p.data_ptr()) for p in params)
        if self._inference_weights is None or self._inference_weights[0] != key:
            self._inference_weights = (key, (self.dense_qkv(), self.dense_out()))
        return self._inference_weights[1]

    def forward(self, x: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        (qkv_w, qkv_b), (out_w, out_b) = self.dense_weights()
        qkv = F.linear(x, qkv_w, qkv_b)  # (B, T, 192): [q | k | v], 32 heads of 2 each
        if _kernel_form(self.use_kernel, qkv, cache, "block"):
            rows, past = _extend_rows(cache, "block rows", qkv)  # with a cache: every row so far
            y = block_attention(rows, N_BLOCKS * BLOCK_HEADS, past)
        else:  # another device or dtype, no kernel built here, or a cache under autograd: SDPA
            q, k, v = _split_heads(qkv, N_BLOCKS * BLOCK_HEADS)  # each (B, 32, T, 2)
            k, v, past = _extend_cache(cache, "block", k, v)
            y = _merge_heads(_attend(q, k, v, past))  # (B, T, 64): head 2b, 2b+1 = block b
        return F.linear(y, out_w, out_b)


class CrossBlockAttention(nn.Module):
    """Causal 8-head attention across the 64-wide vector; also returns the entropy of its attention.

    The entropy (of the head-averaged attention distribution, one value per query) is what the gate
    reads; it needs the probabilities, which SDPA does not return. `mu.kernels.cross_attention`
    computes both a query row at a time where it is built (with a cache: of the projection's rows);
    otherwise the explicit form: one `baddbmm` adds the scaled scores to the causal mask,
    softmax, one `bmm` with the values. Without the gate (`with_entropy=False`) SDPA is used.
    """

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(WIDTH, 3 * WIDTH)
        self.out = nn.Linear(WIDTH, WIDTH)
        self.use_kernel = True  # False: the explicit form below even where mu.kernels is built (tests compare them)

    def forward(self, x: torch.Tensor, cache: dict | None = None,
                with_entropy: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        qkv = self.qkv(x)
        if _kernel_form(with_entropy and self.use_kernel, qkv, cache, "cross"):
            rows, past = _extend_rows(cache, "cross rows", qkv)  # with a cache: every row so far
            y, entropy = cross_attention(rows, past)
            return self.out(y), entropy
        q, k, v = _split_heads(qkv, CROSS_HEADS)  # each (B, 8, T, 8)
        k, v, past = _extend_cache(cache, "cross", k, v)
        if not with_entropy:
            return self.out(_merge_heads(_attend(q, k, v, past))), None
        B, H, T, d = q.shape
        S = k.shape[2]
        q, k = q.reshape(B * H, T, d), k.reshape(B * H, S, d).transpose(1, 2)
        if T == 1:  # a single new query (cached generation) has no future keys to hide
            scores = torch.bmm(q, k) * (1 / math.sqrt(d))  # (B*8, 1, S)
        else:
            future = torch.ones(T, S, dtype=torch.bool, device=x.device).triu(past + 1)  # key j > query i + past
            mask = torch.zeros(T, S, device=x.device, dtype=q.dtype).masked_fill(future, float("-inf"))
            scores = torch.baddbmm(mask, q, k, alpha=1 / math.sqrt(d))  # (B*8, T, S): scaled, future keys at -inf
        probs = scores.softmax(dim=-1)
        mean_probs = probs.view(B, H, T, S).mean(dim=1)  # (B, T, S): head-averaged, as the gate reads it
        entropy = -(mean_probs * torch.log(mean_probs + 1e-9)).sum(-1)  # (B, T)
        y = torch.bmm(probs, v.reshape(B * H, S, d)).view(B, H, T, d)
        return self.out(_merge_heads(y)), entropy


class SensitivityGate(nn.Module):
    """s = base_b * sigmoid(MLP([affinity[token], entropy])), one value per block; applies x + s * (z - x)."""

    def __init__(self, vocab_size: int, dropout: float) -> None:
        super().__init__()
        self.affinity = nn.Embedding(vocab_size, N_BLOCKS)  # token -> per-block affinity
        nn.init.normal_(self.affinity.weight, std=0.1)
        self.base = nn.Parameter(torch.full((N_BLOCKS,), 0.5))
        self.mlp = nn.Sequential(nn.Linear(N_BLOCKS + 1, GATE_HIDDEN), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(GATE_HIDDEN, N_BLOCKS))

    def strength(self, idx: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
        """(B, T, 16) gate values s for tokens idx (B, T) and attention entropies (B, T)."""
        features = torch.cat([self.affinity(idx), entropy.unsqueeze(-1)], dim=-1)  # (B, T, 17)
        return self.base * torch.sigmoid(self.mlp(features))  # (B, T, 16)

    def forward(self, x: torch.Tensor, z: torch.Tensor, idx: torch.Tensor, entropy: torch.Tensor) -> torch.Tensor:
        """x + s * (z - x) per block: block b's s acts on its 4 block-major entries (one lerp, no copies of s)."""
        B, T, _ = x.shape
        s = self.strength(idx, entropy).unsqueeze(-1)  # (B, T, 16, 1)
        return torch.lerp(x.view(B, T, N_BLOCKS, BLOCK), z.view(B, T, N_BLOCKS, BLOCK), s).view(B, T, WIDTH)


class MULayer(nn.Module):
    """One MU layer; `block_attention="off"` and `gate="off"` remove those parts (ablations)."""

    def __init__(self, config: MUConfig) -> None:
        super().__init__()
        block_cls = {"fused": FusedBlockAttention, "literal": LiteralBlockAttention, "off": None}[config.block_attention]
        self.blocks = block_cls() if block_cls else None
        self.cross = CrossBlockAttention()
        self.ln1 = nn.LayerNorm(WIDTH)
        self.ffn = nn.Sequential(nn.Linear(WIDTH, FFN), nn.GELU(), nn.Dropout(config.dropout), nn.Linear(FFN, WIDTH))
        self.ln2 = nn.LayerNorm(WIDTH)
        self.gate = SensitivityGate(config.vocab_size, config.dropout) if config.gate == "on" else None

    def forward(self, x: torch.Tensor, idx: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        blocks = self.blocks(x, cache) if self.blocks is not None else x  # (B, T, 64)
        attn, entropy = self.cross(blocks, cache, with_entropy=self.gate is not None)
        z = self.ln1(x + attn)
        z = self.ln2(z + self.ffn(z))
        if self.gate is None:
            return z  # the plain residual update: x_new = z
        return self.gate(x, z, idx, entropy)  # M_new = M + s * (Z - M)


# --- the transformer baseline -------------------------------------------------------------------

class TransformerLayer(nn.Module):
    """Pre-LN causal transformer layer (GPT-2 / nanoGPT form): x + attn(LN(x)), then x + FFN(LN(x)).

    Pre-LN because it is the baseline a researcher would train today: it needs no careful warmup
    and trains stably at the learning rates MU uses. (MU with both ablations is the post-LN form.)
    """

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)  # fused QKV
        self.out = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, idx: torch.Tensor, cache: dict | None = None) -> torch.Tensor:
        q, k, v = _split_heads(self.qkv(self.ln1(x)), self.heads)  # each (B, H, T, d)
        k, v, past = _extend_cache(cache, "attn", k, v)
        x = x + self.out(_merge_heads(_attend(q, k, v, past)))
        return x + self.ffn(self.ln2(x))


# --- the language models ------------------------------------------------------------------------

class LanguageModel(nn.Module):
    """Token + learned position embeddings -> layers -> LayerNorm -> Linear(width, V) with bias.

    Subclasses build `self.layers`; each layer is called as layer(x, idx, cache).
    """

    config: MUConfig
    width: int

    def _embeddings(self, config: MUConfig, width: int) -> None:
        self.config, self.width = config, width
        self.token = nn.Embedding(config.vocab_size, width)
        self.position = nn.Embedding(config.max_seq_len, width)
        nn.init.normal_(self.token.weight, std=0.02)
        nn.init.normal_(self.position.weight, std=0.02)

    def _output(self) -> None:
        self.norm = nn.LayerNorm(self.width)
        self.head = nn.Linear(self.width, self.config.vocab_size)

    def hidden(self, idx: torch.Tensor, caches: list[dict] | None = None, start: int = 0) -> torch.Tensor:
        """Final normalised hidden states (B, T, width) of tokens idx (B, T) at positions start.."""
        T = idx.shape[1]
        if start + T > self.config.max_seq_len:
            raise ValueError(f"sequence of {start + T} tokens exceeds max_seq_len={self.config.max_seq_len}")
        positions = torch.arange(start, start + T, device=idx.device)
        x = self.token(idx) + self.position(positions)  # (B, T, width)
        for i, layer in enumerate(self.layers):
            x = layer(x, idx, caches[i] if caches is not None else None)
        return self.norm(x)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.hidden(idx))  # (B, T, V)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class MU(LanguageModel):
    """`MU(MUConfig(...))(idx)` -> logits (B, T, vocab_size); every attention is causal."""

    def __init__(self, config: MUConfig) -> None:
        super().__init__()
        if config.arch != "mu":
            raise ValueError(f"MU builds arch='mu', not {config.arch!r}; use build_model(config)")
        self._embeddings(config, WIDTH)
        self.layers = nn.ModuleList(MULayer(config) for _ in range(config.n_layers))
        self._output()
        self.register_buffer("grid_order", tile_index().flatten(), persistent=False)  # block-major -> grid

    def to_grid(self, hidden: torch.Tensor) -> torch.Tensor:
        """(…, 64) block-major vectors -> (…, 8, 8) grids in the design's row-major layout."""
        grid = torch.empty_like(hidden)
        grid[..., self.grid_order] = hidden
        return grid.view(*hidden.shape[:-1], 8, 8)


class Transformer(LanguageModel):
    """The baseline: `Transformer(MUConfig(arch="transformer", width=...))(idx)` -> logits (B, T, V)."""

    def __init__(self, config: MUConfig) -> None:
        super().__init__()
        if config.arch != "transformer" or config.width < 1:
            raise ValueError("Transformer needs arch='transformer' and a resolved width; use build_model(config)")
        self._embeddings(config, config.width)
        self.layers = nn.ModuleList(TransformerLayer(config.width, config.n_heads, config.dropout)
                                    for _ in range(config.n_layers))
        self._output()


# --- building and sizing ------------------------------------------------------------------------

def _transformer_parameters(vocab: int, seq: int, layers: int, width: int) -> int:
    """Total parameters of `Transformer` (pre-LN, biases, FFN 4x, untied head with bias)."""
    per_layer = 12 * width * width + 13 * width  # LN 2w, QKV 3w^2+3w, out w^2+w, LN 2w, FFN 8w^2+5w
    return vocab * width + seq * width + layers * per_layer + 2 * width + width * vocab + vocab


def resolve_width(config: MUConfig) -> MUConfig:
    """A transformer config with `width=0` gets the width (a multiple of n_heads) whose total parameter
    count is closest to MU's at the same vocabulary, depth and context; other configs pass unchanged."""
    if config.arch != "transformer" or config.width:
        return config
    target = parameter_counts(MU(dataclasses.replace(config, arch="mu", width=WIDTH)))["total"]
    widths = range(config.n_heads, 64 * WIDTH + 1, config.n_heads)
    best = min(widths, key=lambda w: abs(_transformer_parameters(config.vocab_size, config.max_seq_len,
                                                                 config.n_layers, w) - target))
    return dataclasses.replace(config, width=best)


def build_model(config: MUConfig) -> LanguageModel:
    """MU (with its ablations) or the transformer baseline, as `config.arch` says."""
    config = resolve_width(config)
    return MU(config) if config.arch == "mu" else Transformer(config)


def parameter_counts(model: LanguageModel) -> dict[str, int]:
    """Total parameters, split into lookup tables, output layer and the rest ("non-embedding").

    Lookup tables are the per-token and per-position tables (token and position embeddings and
    MU's gate affinities, 16 per token per layer); the output layer is Linear(width, V). What
    remains, the layers and the final norm, is the non-embedding count that scaling laws use.
    """
    total = model.num_parameters()
    tables = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    output = sum(p.numel() for p in model.head.parameters())
    return {"total": total, "embedding": tables, "output": output, "non_embedding": total - tables - output}


def training_flops_per_token(config: MUConfig) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) of one training token: 3x the forward (backward = 2x).

    Counts every weight matmul (the block attentions' block-diagonal projections by their blocks,
    not as the dense matrices the fused form multiplies), attention scores and values over the full
    context of max_seq_len (as computed; the causal half is not subtracted), and the output layer.
    Elementwise work (norms, softmax, GELU, the gate's lerp) is left out, as is usual.
    """
    config = resolve_width(config)
    T, V = config.max_seq_len, config.vocab_size
    if config.arch == "transformer":
        w = config.width
        layer = 2 * w * 3 * w + 2 * w * w + 2 * 2 * w * 4 * w + 2 * 2 * T * w  # QKV, out, FFN, scores + values
        return 3 * (config.n_layers * layer + 2 * w * V)
    cross = 2 * WIDTH * 3 * WIDTH + 2 * WIDTH * WIDTH + 2 * 2 * T * WIDTH  # QKV, out, scores + values
    blocks = N_BLOCKS * (2 * BLOCK * 3 * BLOCK + 2 * BLOCK * BLOCK) + 2 * 2 * T * WIDTH
    ffn = 2 * 2 * WIDTH * FFN
    gate = 2 * ((N_BLOCKS + 1) * GATE_HIDDEN + GATE_HIDDEN * N_BLOCKS)
    layer = cross + ffn + (blocks if config.block_attention != "off" else 0) + (gate if config.gate == "on" else 0)
    return 3 * (config.n_layers * layer + 2 * WIDTH * V)


def describe(model: LanguageModel) -> str:
    """One line: what was built, its parameters and its training FLOPs per token."""
    c = model.config
    if c.arch == "transformer":
        name = f"transformer (width {c.width}, {c.n_heads} heads, {c.n_layers} layers)"
    else:
        ablations = [f"{part}=off" for part, value in (("gate", c.gate), ("block_attention", c.block_attention))
                     if value == "off"]
        name = f"MU ({c.n_layers} layers{', ' + ', '.join(ablations) if ablations else ''})"
    counts = parameter_counts(model)
    return (f"{name}: {counts['total']:,} parameters ({counts['non_embedding']:,} non-embedding, "
            f"{counts['embedding']:,} in lookup tables, {counts['output']:,} in the output layer); "
            f"{training_flops_per_token(c) / 1e6:.2f} MFLOPs per training token")

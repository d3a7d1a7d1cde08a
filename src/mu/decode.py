"""Cached generation's one-token step through every MU layer in one kernel call (mu.kernels' `decode`).

At one token per step a layer is some twenty tiny operations, and from Python each costs more to
dispatch than to compute: the layers' own forward made a cached step about half as costly as an
uncached one over the whole context. `Decoder` runs the same operations in one C++ call reading
the projection-row caches the prompt's forward filled (`_extend_rows`), so the step costs little
more than its arithmetic. It applies to MU with the gate on and the fused (or no) block attention,
in eval mode, float32 on CPU, with the kernels built; otherwise `Decoder.build` returns None and
generation uses the layers' forward (tests hold the two to the same tokens).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import reserve_rows
from .kernels import available, load
from .model import MU, FusedBlockAttention, MULayer

NONE = torch.empty(0)  # where a layer has no block attention: the kernel reads an empty tensor as "off"


def _layer_weights(layer: MULayer) -> list[torch.Tensor]:
    """The 22 tensors the kernel's `decode` reads for one layer, in its order."""
    if layer.blocks is not None:
        (qkv_w, qkv_b), (out_w, out_b) = layer.blocks.dense_weights()
        blocks = [qkv_w, qkv_b, out_w, out_b]
    else:
        blocks = [NONE] * 4
    gate = layer.gate
    return [*blocks, layer.cross.qkv.weight, layer.cross.qkv.bias, layer.cross.out.weight, layer.cross.out.bias,
            layer.ln1.weight, layer.ln1.bias, layer.ffn[0].weight, layer.ffn[0].bias, layer.ffn[3].weight,
            layer.ffn[3].bias, layer.ln2.weight, layer.ln2.bias, gate.affinity.weight, gate.base,
            gate.mlp[0].weight, gate.mlp[0].bias, gate.mlp[3].weight, gate.mlp[3].bias]


class Decoder:
    """One-token steps of a cached generation of `model` (see the module docstring)."""

    def __init__(self, model: MU, module) -> None:
        self.model, self.module = model, module
        self.weights = [w for layer in model.layers for w in _layer_weights(layer)]
        self.blocks = model.layers[0].blocks is not None

    @classmethod
    def build(cls, model: torch.nn.Module) -> Decoder | None:
        """A decoder for `model`, or None where the one-call step does not apply (see the module docstring)."""
        if not isinstance(model, MU) or model.training or not available(model.token.weight):
            return None
        for layer in model.layers:
            if layer.gate is None or not (layer.blocks is None or isinstance(layer.blocks, FusedBlockAttention)) \
                    or (layer.blocks is not None and not layer.blocks.use_kernel) or not layer.cross.use_kernel:
                return None
        return cls(model, load())

    def hidden(self, token: torch.Tensor, caches: list[dict], position: int) -> torch.Tensor | None:
        """Final normalised hidden state (B, 1, 64) of tokens (B, 1) at `position`, the caches extended by it;
        None (nothing changed) where the caches were not filled in the kernels' form."""
        rows = []
        for cache in caches:
            if not cache.get("cross uses kernels") or (self.blocks and not cache.get("block uses kernels")):
                return None
            for name in (("block rows", "cross rows") if self.blocks else ("cross rows",)):
                if cache[name][1] != position:
                    return None
        for cache in caches:
            rows += [reserve_rows(cache, "block rows", position + 1) if self.blocks else NONE,
                     reserve_rows(cache, "cross rows", position + 1)]
        model = self.model
        x = model.token.weight[token[:, 0]] + model.position.weight[position]  # (B, 64)
        x = self.module.decode(x, token[:, 0], self.weights, rows, position)
        return F.layer_norm(x, (x.shape[-1],), model.norm.weight, model.norm.bias, model.norm.eps).unsqueeze(1)

"""CPU kernels for MU's two attentions, forward and backward (source: block_attention.cpp).

- `block_attention`: the 32 causal heads of size 2 of the 16 block attentions. At head size 2,
  `scaled_dot_product_attention`'s CPU kernel spends its time in tiny GEMM calls; the kernel keeps
  each query row's scores in registers and vectorises over keys (~4x quicker forward + backward).
- `cross_attention`: the cross-block attention with the entropy of its head-averaged attention (what
  the gate reads). SDPA cannot return probabilities, so the explicit form writes and reads several
  (B, 8, T, T) tensors; the kernel keeps one query row's probabilities at a time.
Both read the QKV projection as it comes and write merged heads. They are compiled once per machine
with torch's C++ extension builder (a C++ compiler and ninja) and cached; where that is not possible
they return None and the callers use the PyTorch forms, which the tests compare them against.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import platform
from pathlib import Path

import torch

log = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("block_attention.cpp")
_module = None
_tried = False


def _machine_tag() -> str:
    """A short hash of the CPU's instruction-set flags: the build uses -march=native."""
    flags = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags += line
                break
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def load():
    """The compiled kernel module, or None when it cannot be built here (logged once) or MU_KERNELS=0."""
    global _module, _tried
    if _tried:
        return _module
    _tried = True
    if os.environ.get("MU_KERNELS", "1") == "0":
        return None
    log.info("MU's attention kernels: loading them (the first time on a machine, building: about a minute)")
    try:
        from torch.utils.cpp_extension import load_inline

        _module = load_inline(name=f"mu_block_attention_{_machine_tag()}", cpp_sources=SOURCE.read_text(),
                              functions=["forward", "backward", "cross_forward", "cross_backward", "decode"], verbose=False,
                              extra_cflags=["-O3", "-ffast-math", "-fopenmp-simd", "-march=native"])
    except Exception as error:  # no compiler, no ninja, no headers: SDPA does the same arithmetic, slower
        log.warning("MU's attention kernels could not be built (%s); using the PyTorch forms (slower)",
                    str(error).splitlines()[0] if str(error) else type(error).__name__)
        _module = None
    return _module


class _BlockAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, heads: int, module) -> torch.Tensor:
        y, lse = module.forward(qkv, heads, 1 / math.sqrt(2), 0)
        ctx.module, ctx.heads = module, heads
        ctx.save_for_backward(qkv, y, lse)
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):
        qkv, y, lse = ctx.saved_tensors
        return ctx.module.backward(dy, qkv, y, lse, ctx.heads, 1 / math.sqrt(2)), None, None


def block_attention(qkv: torch.Tensor, heads: int, past: int = 0) -> torch.Tensor | None:
    """Causal attention of `heads` heads of size 2 straight from a (B, S, 6*heads) [q | k | v] projection.

    Returns (B, S - past, 2*heads) for the queries of rows past.. (past > 0: cached generation, no
    gradient), heads in order (what `_merge_heads` of SDPA's output gives), or None where the kernel
    is not available (not float32 on CPU, or not built here).
    """
    module = _usable(qkv, past)
    if module is None:
        return None
    if past:
        return module.forward(qkv, heads, 1 / math.sqrt(2), past)[0]
    return _BlockAttention.apply(qkv.contiguous(), heads, module)


def available(x: torch.Tensor) -> bool:
    """Whether the kernels apply to tensors like x here: float32 on CPU, and built (or buildable) on this machine."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and load() is not None


def _usable(qkv: torch.Tensor, past: int):
    """The kernel module if it applies to this projection (float32 on CPU; past > 0 only without autograd)."""
    if qkv.device.type != "cpu" or qkv.dtype != torch.float32:
        return None
    if past and torch.is_grad_enabled() and qkv.requires_grad:
        raise ValueError("the kernels' cached form (past > 0) is for generation: it has no backward")
    return load()


class _CrossAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, qkv: torch.Tensor, module) -> tuple[torch.Tensor, torch.Tensor]:
        y, entropy, lse = module.cross_forward(qkv, 1 / math.sqrt(8), 0)
        ctx.module = module
        ctx.save_for_backward(qkv, lse)
        return y, entropy

    @staticmethod
    def backward(ctx, dy: torch.Tensor, dentropy: torch.Tensor):
        qkv, lse = ctx.saved_tensors
        return ctx.module.cross_backward(dy, dentropy, qkv, lse, 1 / math.sqrt(8)), None


def cross_attention(qkv: torch.Tensor, past: int = 0) -> tuple[torch.Tensor, torch.Tensor] | None:
    """MU's cross-block attention (8 causal heads of size 8) and the entropy of its head-averaged attention.

    From a (B, S, 192) [q | k | v] projection: (B, S - past, 64) merged heads and (B, S - past)
    entropies of the queries of rows past.., as `CrossBlockAttention`'s explicit form computes them;
    None where the kernel is not available.
    """
    module = _usable(qkv, past) if qkv.shape[-1] == 192 else None
    if module is None:
        return None
    if past:
        y, entropy, _ = module.cross_forward(qkv, 1 / math.sqrt(8), past)
        return y, entropy
    return _CrossAttention.apply(qkv.contiguous(), module)

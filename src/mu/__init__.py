"""MU: the block-wise semantic attention language model (causal, fused block attention)."""

from .model import MU, MUConfig

__all__ = ["MU", "MUConfig"]

"""MU: the block-wise semantic attention language model (causal, fused block attention).

`MU` and `MUConfig` are loaded on first use (PEP 562): `mu --help`, `mu --version` and the
one-line "needs the nn extra" message work on an install without torch, because importing
`mu.cli` (what the console script and `python -m mu` do) no longer imports the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .model import MU, MUConfig

__all__ = ["MU", "MUConfig"]


def __getattr__(name: str) -> Any:
    """`mu.MU`, `from mu import MUConfig`: import the torch model only when one of them is asked for."""
    if name in __all__:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module 'mu' has no attribute {name!r}")

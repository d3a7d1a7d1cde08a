"""The one training loop (Hugging Face Accelerate) shared by smartprice's neural presets and MU.

Also home of what both packages share without torch (`trainloop.overrides`). The loop's names are
loaded on first use (PEP 562), so `from trainloop.overrides import parse_sets` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .loop import LoopConfig, TrainResult, train

__all__ = ["LoopConfig", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    """`trainloop.train` etc.: import the torch-backed loop only when one of its names is asked for."""
    if name in __all__:
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'trainloop' has no attribute {name!r}")

"""The one training loop (Hugging Face Accelerate) shared by smartprice's neural presets and MU.

`trainloop.loop` is the loop, `trainloop.config` its settings (`LoopConfig`, torch-free),
`trainloop.sampling` its batch order. What both packages share besides the loop (errors, `--set`,
preset descriptions, the version) is in `sharedcore`. The loop's names are loaded on first use
(PEP 562), so `from trainloop import LoopConfig` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import LoopConfig

if TYPE_CHECKING:
    from .loop import TrainResult, train

__all__ = ["LoopConfig", "TrainResult", "train"]


def __getattr__(name: str) -> Any:
    """`trainloop.train` etc.: import the torch-backed loop only when one of its names is asked for."""
    if name in ("TrainResult", "train"):
        from . import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'trainloop' has no attribute {name!r}")

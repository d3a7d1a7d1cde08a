"""The one training loop (Hugging Face Accelerate) shared by smartprice's neural presets and MU."""

from .loop import LoopConfig, TrainResult, train

__all__ = ["LoopConfig", "TrainResult", "train"]

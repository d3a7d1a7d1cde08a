"""Every preset, as one table of frozen dataclasses: values only, each explained on its line.

Override a field with `resolve_preset(name, {"key": value})` (the CLI's `--set key=value`);
unknown keys are an error, and string values are converted to the field's type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


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


PRESETS: dict[str, Any] = {
    "cpu": CpuPreset(),
    "cpu-fast": CpuPreset(folds=3, trees=400, learning_rate=0.06, neighbours=10),  # ~2x quicker fit
}
DEFAULT_PRESET = "cpu"


def _convert(value: Any, target: Any, key: str) -> Any:
    """Convert a `--set` string to the field's type (bools accept true/false/1/0/yes/no)."""
    if not isinstance(value, str) or target is str:
        return value
    try:
        if target is bool:
            lowered = value.strip().lower()
            if lowered not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(value)
            return lowered in ("true", "1", "yes")
        if target is int:
            return int(value)
        if target is float:
            return float(value)
    except ValueError:
        raise ValueError(f"--set {key}={value}: expected a {target.__name__}") from None
    return value


def apply_overrides(preset: Any, overrides: Mapping[str, Any] | None, label: str) -> Any:
    """`dataclasses.replace` with type conversion of strings; unknown keys raise ValueError."""
    overrides = dict(overrides or {})
    fields = {f.name for f in dataclasses.fields(preset)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown preset field(s) {', '.join(unknown)} for {label}; valid fields: {', '.join(sorted(fields))}")
    if "kind" in overrides:
        raise ValueError("'kind' is fixed by the preset; choose another preset instead")
    converted = {k: _convert(v, type(getattr(preset, k)), k) for k, v in overrides.items()}
    return dataclasses.replace(preset, **converted)


def resolve_preset(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """Return preset `name` with `overrides` applied; unknown names and keys raise ValueError."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return apply_overrides(PRESETS[name], overrides, f"preset {name!r}")


def preset_to_dict(preset: Any) -> dict[str, Any]:
    """Plain dict of a preset's fields, for the model's JSON config."""
    return dataclasses.asdict(preset)


def preset_from_dict(data: Mapping[str, Any]) -> Any:
    """Rebuild a preset saved with a model (its class is chosen by `kind`)."""
    kinds = {p.kind: type(p) for p in PRESETS.values()}
    cls = kinds.get(data.get("kind", ""))
    if cls is None:
        raise ValueError(f"unknown model kind {data.get('kind')!r} (known: {', '.join(sorted(kinds))})")
    return cls(**data)

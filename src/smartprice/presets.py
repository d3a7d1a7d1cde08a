"""Every preset, as one table of frozen dataclasses: values only, each explained on its line.

Override a field with `resolve_preset(name, {"key": value})` (the CLI's `--set key=value`);
unknown keys are an error, and string values are converted to the field's type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The loop's settings and `--set` overrides live in trainloop (torch-free), shared with mu.
from trainloop.config import LoopConfig
from trainloop.overrides import apply_overrides, get_field

from .errors import ModelDirError, SettingsError


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
    knn_views: tuple = ("name", "word")  # neighbour price statistics on: name / word (listing) / char (name) / emb
                                         # (smartprice cv on train.csv: + word -0.18 SMAPE; + char on top +0.1, dropped)
    neighbour_search: str = "auto"    # "exact" sparse top-k, "pruned" (strong terms find candidates, re-scored exactly),
                                      # or "auto": exact up to exact_max_rows training rows, pruned beyond
    exact_max_rows: int = 20_000      # beyond, exact search per listing costs more than the rest of the model (bench/cpu.py)
    neighbour_max_df: float = 0.02    # neighbour search ignores terms in > 2% of rows: 3x quicker, CV no worse (bench/cpu.py)
    neighbour_strong_terms: int = 48  # pruned: heaviest terms per listing that find candidates (76k rows: 3x quicker
                                      # than exact on the word view, 98% of the exact mean similarity)
    neighbour_candidates: int = 2     # pruned: neighbours x 2 candidates re-scored with the exact cosine per listing
    unit_ridge: bool = True           # a word ridge on log price per unit of quantity: -0.20 ± 0.09 SMAPE (smartprice cv)
    embed_encoder: str = "minilm"     # frozen sentence encoder of the "emb" view (offline all-MiniLM-L6-v2)
    embed_max_length: int = 128       # tokens embedded per listing: name and first bullets
    embed_ridge_alpha: float = 1.0    # L2 of the ridge on embeddings (384 dense columns)
    brand_smoothing: float = 5.0      # pseudo-count pulling a rare brand's mean price to the global mean
    trees: int = 900                  # LightGBM rounds at learning_rate below (CV plateau ~800-1000), over all
                                      # level2_splits fits together: what predict scores
    learning_rate: float = 0.03       # small steps, many trees: steadier than 0.1 on 7k rows
    num_leaves: int = 15              # 5-fold CV on train.csv: 15 leaves 53.6 vs 31 leaves 53.8 SMAPE
    min_child_samples: int = 20       # rows per leaf
    feature_fraction: float = 0.8     # column subsampling per tree
    bagging_fraction: float = 0.8     # row subsampling per tree (every iteration)
    objective: str = "huber"          # on log1p(price): robust like SMAPE, smooth near zero
    huber_delta: float = 0.5          # residual (log) where huber turns linear; 0.5 beat 1.0 in train.csv CV
    threads: int = 2                  # worker threads for LightGBM (the laptop has 2 cores)
    range_method: str = "adaptive"    # price ranges: "adaptive" (width from a difficulty model), "constant" width, or
                                      # "none"; adaptive is narrower at the same coverage (bench/ranges.py)
    range_trees: int = 150            # trees of each out-of-fold level 2 the ranges calibrate on (same trees x rate as
                                      # `trees`): ranges cost a fraction of a fit (bench/ranges.py)
    difficulty_trees: int = 50        # trees of the difficulty model (7 leaves) behind the adaptive ranges: 100 gave the
                                      # same coverage and width on train.csv folds (bench/ranges.py)
    # Level 2 averaged over stacking-fold splits (cpu/level2.py): one LightGBM per split of the training rows into
    # `folds`, each on its own out-of-fold level-1 features with trees / splits rounds at learning_rate x splits,
    # written as one model of `trees` trees: predict scores as many trees as one fit. smartprice cv on train.csv
    # (--seed 42, docs/accuracy.md): 3 splits, huber/l1/huber, -0.20 ± 0.10 SMAPE against 1 split.
    level2_splits: int = 3            # fold splits, one level-2 fit each (3 x 300 trees at rate 0.09)
    level2_objectives: tuple = ("huber", "l1", "huber")  # objective of each split's fit, in turn (empty: `objective`);
                                                         # an l1 fit among huber ones: -0.07 more on seed-0 folds


@dataclass(frozen=True)
class FusionPreset:
    """Transformer fusion: pooled encoder output + scaled engineered features -> MLP head.

    Model fields follow the four fusion presets' published table (the PRESETS entries below); loop fields go to trainloop.
    """

    kind: str = "fusion"                  # which model family fits this preset
    encoder: str = "distilroberta-base"   # hub name or local directory (AutoModel/AutoTokenizer)
    pooling: str = "auto"                 # "cls", "mean", or "auto": mean for sentence-transformers, else cls
    max_length: int = 256                 # tokens per listing; covers ~p90 of catalog text
    feature_set: int = 20                 # 15 / 20 / 22 / 25, see features.py
    head: tuple = (384, 192)              # hidden widths of the MLP head, input = hidden + features
    norm: str = "layer"                   # "layer" or "batch" normalisation in the head
    activation: str = "gelu"              # "gelu" or "relu"
    dropouts: tuple = (0.2, 0.15)         # one per hidden layer
    loss: str = "smape"                   # smape | focal_smape | l1 | huber (the last two on log1p(price))
    focal_gamma: float = 2.0              # focal SMAPE exponent: 2 down-weights rows already priced well
    huber_delta: float = 1.0              # huber threshold on log1p(price)
    loop: LoopConfig = LoopConfig(        # the training loop's settings: --set loop.FIELD=VALUE
        epochs=10,                        # passes over the training rows; the best epoch by validation SMAPE is kept
        batch_size=16,                    # listings per micro-batch (published value); x grad_accum = effective batch
        grad_accum=8,                     # effective batch 128
        lr=3e-4,                          # peak AdamW learning rate after warmup (published value), cosine decay after
        warmup=0.1,                       # the published 1 warmup epoch of 10, as a share of the run's optimizer steps
        num_workers=2,                    # DataLoader workers (persistent, prefetching)
    )
    eval_batch_size: int = 64             # no gradients kept: 4x the training micro-batch fits
    valid_fraction: float = 0.1           # held out of the training rows to keep the best epoch
    # GPU options, each measured on/off by bench/gpu.py; no GPU has run it here yet, so today's defaults stay.
    gradient_checkpointing: bool = True   # trade recompute for memory on the encoder (CUDA only); default unmeasured
    length_grouping: bool = True          # batches of similar length: less padding; on, as before (unmeasured on GPU)
    attention: str = "sdpa"               # "sdpa" or "eager" kernels; sdpa is transformers' own default (unmeasured);
                                          # DeBERTa-v2/v3 has eager only and falls back with a log line
    compile: bool = False                 # torch.compile the network before training: off as before (unmeasured);
                                          # compiling costs minutes, worth it only if the bench shows a gain
    seed: int = 0                         # seeds weights of the head, the validation split, shuffling and dropout


@dataclass(frozen=True)
class BlendPreset:
    """The CPU model and a fusion preset, blended in log space with a weight fitted on held-out rows."""

    kind: str = "blend"                   # which model family fits this preset
    cpu_preset: str = "cpu"               # the CPU stack
    fusion_preset: str = "minilm"         # the transformer
    inner: tuple = ()                     # the two presets' overrides, (("fusion.loop.epochs", 2), ...):
                                          # --set fusion.loop.epochs=2
    valid_fraction: float = 0.15          # rows of train held out to fit the weight (both models refit on all)
    seed: int = 0                         # seeds the held-out split of the weight


PRESETS: dict[str, Any] = {
    "cpu": CpuPreset(),
    "cpu-fast": CpuPreset(folds=3, trees=400, learning_rate=0.06, neighbours=10, level2_splits=1,
                          level2_objectives=()),  # ~2x quicker fit
    # The four published fusion presets (encoder, length, features, head, batch, epochs, lr), head input = 768 + features.
    "ultra": FusionPreset(encoder="microsoft/deberta-v3-base", max_length=384, feature_set=25,
                          head=(768, 768, 384, 192, 64), norm="batch", activation="relu",
                          dropouts=(0.1, 0.1, 0.1, 0.1, 0.1), loss="smape",
                          loop=LoopConfig(epochs=20, batch_size=8, grad_accum=4, lr=1e-4, num_workers=2,
                                          warmup=0.1)),  # the published 2 warmup epochs of 20
    "fast": FusionPreset(encoder="roberta-base", max_length=256, feature_set=15, head=(512, 256, 128),
                         norm="layer", activation="relu", dropouts=(0.1, 0.1, 0.1), loss="smape",
                         loop=LoopConfig(epochs=15, batch_size=16, grad_accum=4, lr=2e-4, num_workers=2,
                                         warmup=1 / 15)),  # the published 1 warmup epoch of 15
    "blazing": FusionPreset(),
    "optimized": FusionPreset(encoder="microsoft/deberta-v3-small", max_length=256, feature_set=22,
                              head=(384, 192, 96), dropouts=(0.3, 0.2, 0.1), loss="focal_smape", focal_gamma=2.0,
                              loop=LoopConfig(epochs=25, batch_size=16, grad_accum=8, lr=3e-5, num_workers=2,
                                              warmup=0.08)),  # the published 2 warmup epochs of 25
    # Offline, pretrained: all-MiniLM-L6-v2 (hidden 384, 6 layers), mean pooled; sized for a CPU.
    "minilm": FusionPreset(encoder="minilm", max_length=128, feature_set=25, head=(256, 64), dropouts=(0.1, 0.1),
                           loss="l1",  # bench/losses.py
                           loop=LoopConfig(epochs=3, batch_size=32, grad_accum=1, lr=1e-4, warmup=0.1),  # 0.3 of 3 epochs
                           gradient_checkpointing=False),
    "blend": BlendPreset(),
}
DEFAULT_PRESET = "cpu"
# What `smartprice presets` prints beside each preset: (purpose, rough cost). Values stay in PRESETS.
PRESET_SUMMARIES: dict[str, tuple[str, str]] = {
    "cpu": ("the default: TF-IDF ridge models + neighbour prices, stacked under LightGBM",
            "seconds to fit train.csv on 2 cores (bench/pricing.py)"),
    "cpu-fast": ("the CPU stack with fewer folds and trees", "less than cpu"),
    "ultra": ("the largest fusion model (DeBERTa-v3-base, deep batch-norm head)", "GPU; the heaviest"),
    "fast": ("seed fusion model on RoBERTa-base with the fewest engineered features", "GPU; heavy"),
    "blazing": ("seed fusion model on DistilRoBERTa: FusionPreset's defaults", "GPU; the lightest seed model"),
    "optimized": ("seed fusion model on DeBERTa-v3-small with focal SMAPE", "GPU; a small encoder, many epochs"),
    "minilm": ("fine-tunes all-MiniLM-L6-v2, shipped offline; the transformer sized for a CPU",
               "CPU-sized but far slower than cpu (bench/finetune.py)"),
    "blend": ("a CPU and a fusion preset averaged in log space, the weight fitted on held-out rows",
              "the fusion fit plus two CPU fits (bench/finetune.py)"),
}


def resolve_preset(name: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """Return preset `name` with `overrides` applied; unknown names and keys raise ValueError.

    A preset made of presets (the blend's `cpu_preset`, `fusion_preset`) also takes their fields as
    `PREFIX.FIELD` (`fusion.epochs`, `cpu.trees`): checked against that preset, kept in `inner`.
    """
    if name not in PRESETS:
        raise SettingsError(f"unknown preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    overrides = dict(overrides or {})
    dotted = {key: overrides.pop(key) for key in list(overrides) if "." in key}
    preset = apply_overrides(PRESETS[name], overrides, f"preset {name!r}")
    return _with_inner(preset, name, dotted) if dotted else preset


def _with_inner(preset: Any, name: str, dotted: Mapping[str, Any]) -> Any:
    """Check `PREFIX.FIELD` overrides against the preset they reach; store them, converted, in `inner`."""
    if not hasattr(preset, "inner"):  # no inner presets: the usual error, listing the valid fields
        return apply_overrides(preset, dotted, f"preset {name!r}")
    prefixes = [f.name[: -len("_preset")] for f in dataclasses.fields(preset) if f.name.endswith("_preset")]
    by_prefix: dict[str, dict[str, Any]] = {}
    for key, value in dotted.items():
        prefix, _, field = key.partition(".")
        by_prefix.setdefault(prefix, {})[field] = value
    unknown = sorted(key for key in dotted if key.partition(".")[0] not in prefixes)
    if unknown:
        raise SettingsError(f"unknown preset field(s) {', '.join(unknown)} for preset {name!r}; "
                         f"its inner presets take {', '.join(f'{p}.FIELD' for p in prefixes)}")
    pairs = dict(preset.inner)
    for prefix, fields in by_prefix.items():
        target = getattr(preset, f"{prefix}_preset")
        if target not in PRESETS:
            raise SettingsError(f"unknown {prefix}_preset {target!r}; choose one of {', '.join(sorted(PRESETS))}")
        label = f"preset {target!r} (--set {prefix}.FIELD=VALUE of preset {name!r})"
        resolved = apply_overrides(PRESETS[target], {**inner_overrides(preset, prefix), **fields}, label,
                                   prefix=f"{prefix}.")
        pairs.update({f"{prefix}.{field}": get_field(resolved, field) for field in fields})
    return dataclasses.replace(preset, inner=tuple(pairs.items()))


def inner_overrides(preset: Any, prefix: str) -> dict[str, Any]:
    """The overrides a preset holds for its inner preset `prefix`: {"epochs": 2} from ("fusion.epochs", 2)."""
    return {key.partition(".")[2]: value for key, value in getattr(preset, "inner", ())
            if key.partition(".")[0] == prefix}


def preset_to_dict(preset: Any) -> dict[str, Any]:
    """Plain dict of a preset's fields, for the model's JSON config."""
    return dataclasses.asdict(preset)


def preset_from_dict(data: Mapping[str, Any]) -> Any:
    """Rebuild a preset saved with a model (its class is chosen by `kind`); older layouts are migrated."""
    kinds = {p.kind: type(p) for p in PRESETS.values()}
    cls = kinds.get(data.get("kind", ""))
    if cls is None:
        raise ModelDirError(f"unknown model kind {data.get('kind')!r} (known: {', '.join(sorted(kinds))})")
    if data.get("fusion_sets"):  # written before `inner` existed: "epochs=2;max_length=96"
        pairs = (pair.split("=", 1) for pair in data["fusion_sets"].split(";") if "=" in pair)
        data = {**data, "inner": [[f"fusion.{k.strip()}", v.strip()] for k, v in pairs]}
    data = _nest_loop_fields(cls, data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in data.items():
        if key not in fields:
            continue
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            known = {f.name for f in dataclasses.fields(default)}
            value = dataclasses.replace(default, **{k: _tuples(v) for k, v in value.items() if k in known})
        values[key] = _tuples(value) if isinstance(default, tuple) else value
    return cls(**values)


def _nest_loop_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """Saved before the loop's settings were nested: flat `epochs`, `warmup` (in epochs), ... into `loop`.

    A blend's inner overrides (`fusion.epochs`) become `fusion.loop.epochs` the same way.
    """
    loop_fields = {f.name for f in dataclasses.fields(LoopConfig)}
    data = dict(data)
    if "loop" in {f.name for f in dataclasses.fields(cls)} and "loop" not in data:
        flat = {key: data.pop(key) for key in list(data) if key in loop_fields}
        if "warmup" in flat:
            flat["warmup"] = _warmup_share(flat["warmup"], flat.get("epochs", 1))
        data["loop"] = flat
    if data.get("inner"):
        moved = loop_fields - {f.name for f in dataclasses.fields(FusionPreset)}
        inner = {key: value for key, value in data["inner"]}
        target = PRESETS.get(data.get("fusion_preset", ""), FusionPreset())
        epochs = int(inner.get("fusion.epochs", getattr(getattr(target, "loop", None), "epochs", 1)))
        if "fusion.warmup" in inner:
            inner["fusion.warmup"] = _warmup_share(inner["fusion.warmup"], epochs)
        data["inner"] = [[f"fusion.loop.{key[len('fusion.'):]}" if key.startswith("fusion.")
                          and key[len("fusion."):] in moved else key, value] for key, value in inner.items()]
    return data


def _warmup_share(epochs_of_warmup: Any, epochs: Any) -> float:
    """Warmup saved as a number of epochs, as the share of the run's steps `loop.warmup` is now (< 1)."""
    return min(0.5, float(epochs_of_warmup) / max(1, int(epochs)))


def _tuples(value: Any) -> Any:
    """JSON lists back to the tuples a frozen preset holds, nested ones included."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value

"""Every preset, as one table of frozen dataclasses: values only, each field with its reason beside it.

A field is `setting(default, "why")`: a dataclass field whose metadata holds the reason, which
`smartprice presets NAME` prints. `PRESET_NOTES` says what each named preset is for, what it costs
and why it sets the values it sets. Override a field with `resolve_preset(name, {"key": value})`
(the CLI's `--set key=value`); unknown keys are an error, and string values are converted to the field's type.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sharedcore.describe import PresetNotes
from sharedcore.overrides import apply_overrides, get_field
from sharedcore.settings import setting
from trainloop.config import LoopConfig  # torch-free: the loop's settings, held by every neural preset

from .errors import ModelDirError, SettingsError

PUBLISHED = "the published fusion table's value"  # the four seed presets' own table (encoder ... warmup)


@dataclass(frozen=True)
class CpuPreset:
    """The default CPU model: TF-IDF ridge models + neighbour statistics + LightGBM on top."""

    kind: str = setting("cpu", "which model family fits this preset (kinds.py)")
    seed: int = setting(0, "seeds folds, LightGBM and every random choice: the same data gives the same model")
    folds: int = setting(5, "out-of-fold stacking folds: 5 keeps 80% of rows per level-1 model")
    hash_bits: int = setting(20, "2**20 hashed n-gram columns, far more than a catalog's distinct terms: few collide")
    word_ngrams: int = setting(2, "word 1..2-grams over the whole listing: pairs keep 'pack of' and brand + product")
    char_min: int = setting(2, "char_wb n-grams over the item name, shortest: brand and size fragments, robust to "
                               "spelling")
    char_max: int = setting(5, "char_wb n-grams over the item name, longest")
    ridge_alpha: float = setting(1.5, "L2 of the text ridge models, chosen by 5-fold CV on train.csv (smartprice cv)")
    neighbours: int = setting(20, "cosine neighbours whose prices give the neighbour statistics")
    knn_views: tuple = setting(("name", "word"), "neighbour price statistics on: name / word (listing) / char (name) / "
                               "emb; smartprice cv on train.csv: + word -0.18 SMAPE, + char on top +0.1 (left out)")
    neighbour_search: str = setting("auto", '"exact" sparse top-k; "pruned": strong terms find candidates, re-scored '
                                    'exactly; "auto": exact up to exact_max_rows training rows, pruned beyond')
    exact_max_rows: int = setting(20_000, "beyond, exact search per listing costs more than the rest of the model "
                                  "(bench/cpu.py, its profile)")
    neighbour_max_df: float = setting(0.02, "neighbour search ignores terms in > 2% of rows: 3x quicker, CV no worse "
                                      "(bench/cpu.py)")
    neighbour_strong_terms: int = setting(48, "pruned: heaviest terms per listing that find candidates; on the 76k-row "
                                          "catalog 3x quicker than exact on the word view, 98% of its mean "
                                          "similarity (bench/cpu.py)")
    neighbour_candidates: int = setting(2, "pruned: neighbours x 2 candidates re-scored with the exact cosine per listing")
    unit_ridge: bool = setting(True, "a word ridge on log price per unit of quantity: -0.20 ± 0.09 SMAPE "
                               "(smartprice cv on train.csv)")
    unit_ridge_dims: bool = setting(True, "also a unit-price word ridge per unit dimension (mass, volume, count), each "
                                    "row scored by its dimension's: -0.20 ± 0.09 CV SMAPE on one level-2 fit, with "
                                    "neighbour_spread -0.21 ± 0.12 (bench/level2.py --seed 42, docs/accuracy.md)")
    neighbour_spread: bool = setting(True, "also how far neighbour prices disagree per view (weighted std, "
                                     "interquartile range of their log prices): tells level 2 when to trust them")
    embed_encoder: str = setting("minilm", 'frozen sentence encoder of the "emb" view (all-MiniLM-L6-v2, shipped '
                                 "offline)")
    embed_max_length: int = setting(128, "tokens embedded per listing: the name and first bullets")
    embed_ridge_alpha: float = setting(1.0, "L2 of the ridge on embeddings (384 dense columns)")
    brand_smoothing: float = setting(5.0, "pseudo-count pulling a rare brand's mean price to the global mean")
    trees: int = setting(900, "LightGBM rounds at learning_rate below, over all level2_splits fits together (what "
                              "predict scores); CV plateaus at ~800-1000 (smartprice cv)")
    learning_rate: float = setting(0.03, "small steps, many trees: steadier than 0.1 (smartprice cv on train.csv)")
    num_leaves: int = setting(15, "5-fold CV on train.csv: 15 leaves 53.6 vs 31 leaves 53.8 SMAPE (smartprice cv)")
    min_child_samples: int = setting(20, "rows per leaf: LightGBM's own default")
    feature_fraction: float = setting(0.8, "column subsampling per tree: less alike trees")
    bagging_fraction: float = setting(0.8, "row subsampling per tree (every iteration): less alike trees")
    objective: str = setting("huber", "on log1p(price): robust like SMAPE, smooth near zero")
    huber_delta: float = setting(0.5, "residual (log) where huber turns linear; 0.5 beat 1.0 in 5-fold CV on train.csv "
                                 "(smartprice cv)")
    threads: int = setting(2, "LightGBM threads: a small machine's cores; more threads than cores only wait")
    range_method: str = setting("adaptive", 'price ranges: "adaptive" (width from a difficulty model), "constant" width, '
                                '"none"; adaptive is narrower at the same coverage (bench/ranges.py)')
    range_trees: int = setting(150, "trees of each out-of-fold level 2 the ranges calibrate on (same trees x rate as "
                               "`trees`): ranges cost a fraction of a fit (bench/ranges.py)")
    difficulty_trees: int = setting(50, "trees of the difficulty model (7 leaves) behind the adaptive ranges: 100 gave "
                                    "the same coverage and width on train.csv folds")
    level2_splits: int = setting(2, "level 2 averaged over this many stacking-fold splits (cpu/level2.py), each fit "
                                 "trees / splits rounds at learning_rate x splits, written as one model of `trees` trees "
                                 "(predict scores no more trees); with unit_ridge_dims and neighbour_spread, 2 splits "
                                 "(huber, l1) against one fit without them: -0.54 ± 0.13 CV SMAPE on seed-42 folds, "
                                 "-0.41 ± 0.13 on seed 0 (smartprice cv --compare); 3 splits gave the same for more "
                                 "fit (bench/level2.py, docs/accuracy.md)")
    level2_objectives: tuple = setting(("huber", "l1"), "objective of each split's fit, in turn (empty: `objective`): "
                                       "an l1 fit beside a huber one averages two kinds of error")

    # Fields that change what a saved model computes at predict time, with the value that reproduces a
    # model saved before the field existed (presets.saved_preset reads an absent field as this, not the default).
    SAVED_BEFORE = {"unit_ridge_dims": False, "neighbour_spread": False}


@dataclass(frozen=True)
class FusionPreset:
    """Transformer fusion: pooled encoder output + scaled engineered features -> MLP head.

    Model fields follow the four fusion presets' published table (the PRESETS entries below); loop fields go to trainloop.
    """

    kind: str = setting("fusion", "which model family fits this preset (kinds.py)")
    encoder: str = setting("distilroberta-base", "hub name or local directory (AutoModel/AutoTokenizer); " + PUBLISHED)
    pooling: str = setting("auto", '"cls", "mean", or "auto": mean for sentence-transformers (trained mean-pooled), '
                           "else cls")
    max_length: int = setting(256, "tokens per listing, the rest cut; " + PUBLISHED)
    feature_set: int = setting(20, "15 / 20 / 22 / 25 engineered features, see features.py; " + PUBLISHED)
    head: tuple = setting((384, 192), "hidden widths of the MLP head, input = hidden + features; " + PUBLISHED)
    norm: str = setting("layer", '"layer" or "batch" normalisation in the head; ' + PUBLISHED)
    activation: str = setting("gelu", '"gelu" or "relu"; ' + PUBLISHED)
    dropouts: tuple = setting((0.2, 0.15), "one per hidden layer; " + PUBLISHED)
    loss: str = setting("smape", "smape | focal_smape | l1 | huber (the last two on log1p(price)); SMAPE is the metric")
    focal_gamma: float = setting(2.0, "focal SMAPE exponent: 2 down-weights rows already priced well")
    huber_delta: float = setting(1.0, "huber threshold on log1p(price): a log residual of 1 is a factor of e")
    loop: LoopConfig = setting(
        LoopConfig(epochs=10, batch_size=16, grad_accum=8, lr=3e-4, warmup=0.1, num_workers=2),
        "the training loop's settings: --set loop.FIELD=VALUE",
        epochs="passes over the training rows; the best epoch by validation SMAPE is kept; " + PUBLISHED,
        batch_size="listings per micro-batch, x grad_accum = effective batch; " + PUBLISHED,
        grad_accum="effective batch 16 x 8 = 128; " + PUBLISHED,
        lr="peak AdamW learning rate after warmup, cosine decay after; " + PUBLISHED,
        warmup="the published 1 warmup epoch of 10, as a share of the run's optimizer steps",
        num_workers="DataLoader workers (persistent, prefetching): tokenising overlaps the training step",
    )
    eval_batch_size: int = setting(64, "no gradients kept: 4x the training micro-batch fits")
    valid_fraction: float = setting(0.1, "held out of the training rows to keep the best epoch")
    gradient_checkpointing: bool = setting(True, "recompute the encoder's activations instead of keeping them (CUDA "
                                           "only): the large encoders' batches fit; bench/gpu.py times it on and off")
    length_grouping: bool = setting(True, "batches of similar length: less padding; bench/gpu.py and bench/finetune.py "
                                    "time it on and off")
    attention: str = setting("sdpa", '"sdpa" or "eager" kernels; sdpa is transformers\' own default (bench/gpu.py '
                             "compares them); DeBERTa-v2/v3 has eager only and falls back with a log line")
    compile: bool = setting(False, "torch.compile the network before training: compiling costs minutes, worth it "
                            "where bench/gpu.py shows a gain")
    seed: int = setting(0, "seeds weights of the head, the validation split, shuffling and dropout")


@dataclass(frozen=True)
class BlendPreset:
    """The CPU model and a fusion preset, blended in log space with a weight fitted on held-out rows."""

    kind: str = setting("blend", "which model family fits this preset (kinds.py)")
    cpu_preset: str = setting("cpu", "the CPU stack")
    fusion_preset: str = setting("minilm", "the transformer: the fusion preset sized for a CPU")
    inner: tuple = setting((), 'the two presets\' overrides, (("fusion.loop.epochs", 2), ...): '
                           "--set fusion.loop.epochs=2")
    valid_fraction: float = setting(0.15, "rows of train held out to fit the weight (both models refit on all)")
    seed: int = setting(0, "seeds the held-out split of the weight")


PRESETS: dict[str, Any] = {
    "cpu": CpuPreset(),
    "cpu-fast": CpuPreset(folds=3, trees=400, learning_rate=0.06, neighbours=10, unit_ridge_dims=False,
                          neighbour_spread=False, level2_splits=1, level2_objectives=()),
    "ultra": FusionPreset(encoder="microsoft/deberta-v3-base", max_length=384, feature_set=25,
                          head=(768, 768, 384, 192, 64), norm="batch", activation="relu",
                          dropouts=(0.1, 0.1, 0.1, 0.1, 0.1), loss="smape",
                          loop=LoopConfig(epochs=20, batch_size=8, grad_accum=4, lr=1e-4, num_workers=2, warmup=0.1)),
    "fast": FusionPreset(encoder="roberta-base", max_length=256, feature_set=15, head=(512, 256, 128),
                         norm="layer", activation="relu", dropouts=(0.1, 0.1, 0.1), loss="smape",
                         loop=LoopConfig(epochs=15, batch_size=16, grad_accum=4, lr=2e-4, num_workers=2, warmup=1 / 15)),
    "blazing": FusionPreset(),
    "optimized": FusionPreset(encoder="microsoft/deberta-v3-small", max_length=256, feature_set=22,
                              head=(384, 192, 96), dropouts=(0.3, 0.2, 0.1), loss="focal_smape", focal_gamma=2.0,
                              loop=LoopConfig(epochs=25, batch_size=16, grad_accum=8, lr=3e-5, num_workers=2,
                                              warmup=0.08)),
    "minilm": FusionPreset(encoder="minilm", max_length=128, feature_set=25, head=(256, 64), dropouts=(0.1, 0.1),
                           loss="l1", loop=LoopConfig(epochs=3, batch_size=32, grad_accum=1, lr=1e-4, warmup=0.1),
                           gradient_checkpointing=False),
    "blend": BlendPreset(),
}
DEFAULT_PRESET = "cpu"
_SEED_FIELDS = ("encoder", "max_length", "feature_set", "head", "norm", "activation", "dropouts", "loss",
                "loop.epochs", "loop.batch_size", "loop.grad_accum", "loop.lr")  # what the published table sets
# What `smartprice presets` prints of each preset besides its values: purpose, rough cost, why it sets what it sets.
PRESET_NOTES: dict[str, PresetNotes] = {
    "cpu": PresetNotes("the default: TF-IDF ridge models + neighbour prices, stacked under LightGBM",
                       "seconds to fit train.csv (bench/pricing.py)"),
    "cpu-fast": PresetNotes("the CPU stack with fewer folds and trees", "less than cpu (bench/pricing.py --presets cpu-fast)",
                            {"folds": "3 folds: fewer level-1 fits", "trees": "fewer trees, each a larger step",
                             "learning_rate": "larger steps for fewer trees",
                             "neighbours": "fewer neighbours to search and summarise",
                             "unit_ridge_dims": "fewer ridges to fit", "neighbour_spread": "fewer columns per listing",
                             "level2_splits": "one level-2 fit: a third of the level-1 refits",
                             "level2_objectives": "one fit, the objective's"}),
    "ultra": PresetNotes("the largest fusion model (DeBERTa-v3-base, deep batch-norm head)", "GPU; the heaviest",
                         {**dict.fromkeys(_SEED_FIELDS, PUBLISHED), "loop.warmup": "the published 2 warmup epochs of 20"}),
    "fast": PresetNotes("seed fusion model on RoBERTa-base with the fewest engineered features", "GPU; heavy",
                        {**dict.fromkeys(_SEED_FIELDS, PUBLISHED), "loop.warmup": "the published 1 warmup epoch of 15"}),
    "blazing": PresetNotes("seed fusion model on DistilRoBERTa: FusionPreset's defaults", "GPU; the lightest seed model"),
    "optimized": PresetNotes("seed fusion model on DeBERTa-v3-small with focal SMAPE", "GPU; a small encoder, many epochs",
                             {**dict.fromkeys(_SEED_FIELDS, PUBLISHED), "focal_gamma": PUBLISHED,
                              "loop.warmup": "the published 2 warmup epochs of 25"}),
    "minilm": PresetNotes("fine-tunes all-MiniLM-L6-v2, shipped offline; the transformer sized for a CPU",
                          "CPU-sized but far slower than cpu (bench/finetune.py)",
                          {"encoder": "all-MiniLM-L6-v2 (hidden 384, 6 layers), shipped offline: no model hub",
                           "max_length": "128 tokens: the name and first bullets, a CPU-sized sequence",
                           "feature_set": "all 25 engineered features: the small encoder leans on them",
                           "head": "a small head for a 384-wide encoder", "loss": "the best loss in bench/losses.py",
                           "loop.epochs": "a few epochs: each is minutes on a CPU",
                           "loop.warmup": "0.3 of 3 epochs",
                           "gradient_checkpointing": "off: a small encoder fits in memory, recomputing only slows a "
                                                     "CPU"}),
    "blend": PresetNotes("a CPU and a fusion preset averaged in log space, the weight fitted on held-out rows",
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


def saved_preset(cls: type, data: Mapping[str, Any]) -> Any:
    """A preset of class `cls` from the dict a model saved (`kinds.preset_from_dict` picks the class).

    Older layouts are migrated; a field absent from `data` keeps its default (saved before it
    existed); a value of the wrong JSON type is a ModelDirError naming the field (`loop.epochs`).
    """
    if data.get("fusion_sets"):  # written before `inner` existed: "epochs=2;max_length=96"
        pairs = (pair.split("=", 1) for pair in data["fusion_sets"].split(";") if "=" in pair)
        data = {**data, "inner": [[f"fusion.{k.strip()}", v.strip()] for k, v in pairs]}
    data = {**getattr(cls, "SAVED_BEFORE", {}), **data}  # fields added later: absent means the behaviour before them
    return _from_values(cls(), _nest_loop_fields(cls, data), "")


def _from_values(defaults: Any, data: Mapping[str, Any], prefix: str) -> Any:
    """`defaults` with the saved values of its fields, each checked against its default's type."""
    values = {}
    for f in dataclasses.fields(defaults):
        if f.name not in data:
            continue
        default, value = getattr(defaults, f.name), data[f.name]
        if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
            known = {g.name for g in dataclasses.fields(default)}
            values[f.name] = _from_values(default, {k: v for k, v in value.items() if k in known}, f"{prefix}{f.name}.")
            continue
        if not _same_kind(value, default):
            raise ModelDirError(f"field 'config.{prefix}{f.name}' is {value!r}, expected {_kind_name(default)}")
        values[f.name] = _tuples(value) if isinstance(default, tuple) else value
    return dataclasses.replace(defaults, **values)


def _same_kind(value: Any, default: Any) -> bool:
    """Whether a saved JSON value fits a field whose default is `default` (an int fits a float field)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, tuple):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _kind_name(default: Any) -> str:
    """How a message names the kind of value a field holds."""
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "a string", tuple: "a list"}
    return names.get(type(default), "an object of its fields")


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

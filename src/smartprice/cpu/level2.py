"""Level 2 of the CPU model: LightGBM on the level-1 features, several fits averaged into one model.

The out-of-fold level-1 features depend on how the training rows are split into stacking folds,
and LightGBM on its seed: one fit carries both kinds of noise. Here each of `level2_splits` fold
splits gives its own out-of-fold features of the training rows, a LightGBM is fitted on each (own
seed; objective taken in turn from `level2_objectives`, or `objective`), and the fits are averaged in log price.

The average is written as ONE LightGBM model: every fit's trees, leaf values scaled by 1/fits.
Predicting scores that model, the same total trees as a single fit of `trees` rounds, so the
averaging costs nothing at predict time (one tokenisation, one neighbour search, one tree pass),
and everything that reads a LightGBM model (the C scorer, tree arrays, contributions) reads it
unchanged. Each fit has `trees / fits` rounds at `learning_rate x fits`: the same steps in all.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import SettingsError
from ..presets import CpuPreset
from .difficulty import out_of_fold_prices

log = logging.getLogger(__name__)

OBJECTIVES = ("huber", "l1", "l2", "fair")  # LightGBM regression objectives on log1p(price) a fit may take
_SCALED = re.compile(r"^(leaf_value|internal_value)=(.*)$", re.MULTILINE)  # per-tree lines that carry outputs


def check_level2_settings(preset: CpuPreset) -> None:
    """The preset's level-2 fields, or a SettingsError naming the one that does not fit."""
    if preset.level2_splits < 1:
        raise SettingsError(f"level2_splits must be at least 1; got {preset.level2_splits}")
    objectives = tuple(preset.level2_objectives)
    if set(objectives) - set(OBJECTIVES):
        raise SettingsError(f"level2_objectives must be names among {', '.join(OBJECTIVES)}; got {objectives!r}")
    if preset.trees < preset.level2_splits:
        raise SettingsError(f"trees ({preset.trees}) must be at least level2_splits ({preset.level2_splits})")


def fold_splits(rows: int, preset: CpuPreset) -> list[np.ndarray]:
    """Stacking fold of each training row, one array per split (the first is the single-split model's)."""
    return [np.random.default_rng(preset.seed + split).permutation(rows) % preset.folds
            for split in range(preset.level2_splits)]


def fit_params(params: dict[str, Any], preset: CpuPreset, split: int) -> tuple[dict[str, Any], int]:
    """LightGBM settings and rounds of the fit on split `split`: own seed and objective, trees / fits at rate x fits."""
    fits = preset.level2_splits
    objectives = tuple(preset.level2_objectives) or (preset.objective,)
    return ({**params, "seed": params["seed"] + split, "objective": objectives[split % len(objectives)],
             "learning_rate": params["learning_rate"] * fits}, max(1, round(preset.trees / fits)))


def fit(denses: Sequence[np.ndarray], y: np.ndarray, names: Sequence[str], params: dict[str, Any],
        preset: CpuPreset) -> Any:
    """One `lightgbm.Booster`: the average of a fit on each split's level-1 features (`denses`, one per split)."""
    import lightgbm as lgb

    texts = []
    for split, dense in enumerate(denses):
        split_params, rounds = fit_params(params, preset, split)
        log.info("cpu model: LightGBM %d/%d, %d trees (%s)", split + 1, len(denses), rounds, split_params["objective"])
        booster = lgb.train(split_params, lgb.Dataset(dense, y, feature_name=list(names), free_raw_data=True),
                            num_boost_round=rounds)
        texts.append(booster.model_to_string())
    return lgb.Booster(model_str=texts[0] if len(texts) == 1 else average_models(texts))


def out_of_fold(denses: Sequence[np.ndarray], y: np.ndarray, splits: Sequence[np.ndarray], params: dict[str, Any],
                preset: CpuPreset) -> np.ndarray:
    """log1p(price) of each training row from level 2 fitted without it: each split's fits averaged, as `fit` averages.

    What the price ranges calibrate on: the held-out prices of the model as it predicts. Each split's
    level 2 is refitted per stacking fold with `range_trees` rounds (same trees x rate as a fit).
    """
    held = np.zeros(len(y))
    for split, (dense, folds) in enumerate(zip(denses, splits)):
        split_params, rounds = fit_params(params, preset, split)
        held += out_of_fold_prices(dense, y, folds, split_params, preset.range_trees, rounds / preset.range_trees)
    return held / len(denses)


def average_models(texts: Sequence[str]) -> str:
    """LightGBM model text whose output is the mean of the models' outputs (same features, one output each).

    The first model's header (feature names and ranges, objective), then every model's trees,
    renumbered, with leaf (and internal) values divided by the number of models. The header's
    tree sizes are left out (LightGBM then reads trees one after another), and so are the
    per-model feature importances (LightGBM recomputes importance from the trees).
    """
    weight = 1.0 / len(texts)
    header = "\n".join(line for line in texts[0].split("\nTree=", 1)[0].split("\n") if not line.startswith("tree_sizes="))
    trees = []
    for text in texts:
        body = text.split("\nTree=", 1)[1].split("end of trees", 1)[0]
        for block in body.split("\nTree="):
            block = block.split("\n", 1)[1]  # drop the tree's own number
            trees.append(_SCALED.sub(lambda m: m.group(1) + "=" + " ".join(
                repr(float(v) * weight) for v in m.group(2).split()), block).rstrip("\n"))
    return header + "\n" + "".join(f"\nTree={i}\n{block}\n\n" for i, block in enumerate(trees)) + "\nend of trees\n"

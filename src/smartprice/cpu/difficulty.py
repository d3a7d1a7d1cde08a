"""What the CPU model's price ranges are calibrated on: out-of-fold prices of the whole stack, and how hard a listing is.

- `out_of_fold_prices`: level 2 refitted on each stacking fold's complement, over the level-1 features
  that are already out of fold, scoring the rows it left out. It uses fewer, larger boosting steps
  than the price model (same trees x learning rate), so that the ranges cost a fraction of a fit;
  its held-out errors stand in for the price model's own on new listings.
- `fit_difficulty`: a small LightGBM that predicts the size of that error from the same features
  (neighbour agreement and similarity, brand, ridge disagreement, parsed quantity). Each training
  row's estimate comes from the half of the rows it was not in, so the rows that calibrate the
  ranges are scored as new listings would be; the model used on new listings is fitted on all rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SIGMA_FLOOR_QUANTILE = 0.05  # difficulty never below the 5th percentile of the errors: no zero-width range


def _train(params: dict[str, Any], x: np.ndarray, y: np.ndarray, rounds: int) -> Any:
    import lightgbm as lgb

    return lgb.train(params, lgb.Dataset(x, y, free_raw_data=True), num_boost_round=rounds)


def out_of_fold_prices(dense: np.ndarray, y: np.ndarray, folds: np.ndarray, params: dict[str, Any],
                       rounds: int, step_scale: float) -> np.ndarray:
    """log1p(price) of each training row from a level 2 fitted without its fold (`rounds` trees, rate x step_scale)."""
    params = {**params, "learning_rate": params["learning_rate"] * step_scale}
    out = np.zeros(len(y))
    for fold in np.unique(folds):
        train, held = folds != fold, folds == fold
        out[held] = _train(params, dense[train], y[train], rounds).predict(dense[held], num_threads=params["num_threads"])
    return out


def difficulty_params(params: dict[str, Any]) -> dict[str, Any]:
    """The difficulty model's LightGBM settings: the price model's, on |error| with an L2 loss (its mean)."""
    return {**params, "objective": "l2", "learning_rate": 0.05, "num_leaves": 7, "min_child_samples":
            max(params["min_child_samples"], 40)}


def fit_difficulty(dense: np.ndarray, errors: np.ndarray, params: dict[str, Any], rounds: int,
                   seed: int) -> tuple[Any, np.ndarray, float]:
    """(booster for new listings, cross-fitted difficulty of each training row, floor) from |errors|."""
    size = np.abs(errors)
    params = difficulty_params(params)
    half = np.random.default_rng(seed + 1).permutation(len(size)) % 2 == 0
    crossed = np.zeros(len(size))
    for part in (half, ~half):
        crossed[~part] = _train(params, dense[part], size[part], rounds).predict(dense[~part])
    floor = max(float(np.quantile(size, SIGMA_FLOOR_QUANTILE)), 1e-3)
    return _train(params, dense, size, rounds), np.maximum(crossed, floor), floor

"""k-fold cross-validation through the same path as train/predict, and paired comparisons.

Every fitted part (TF-IDF, ridge models, stacking, LightGBM) is refitted inside each fold by
`PricePredictor.fit`, so a fold's held-out rows are never seen. Two configurations compared on
the *same* folds give per-row SMAPE differences: their mean and standard error tell whether a
change is real (a difference under about two standard errors is noise).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import KFold

from .catalog import PRICE_COLUMN
from .errors import CatalogError, SettingsError
from .metrics import row_smape, smape_report
from .predictor import PricePredictor

log = logging.getLogger(__name__)


def mean_and_se(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (sample std / sqrt(n))."""
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


@dataclass
class CvResult:
    """Out-of-fold predictions of one configuration and the figures derived from them."""

    preset: str
    overrides: dict[str, Any]
    predictions: np.ndarray
    actual: np.ndarray
    fold_of_row: np.ndarray
    fit_seconds: list[float] = field(default_factory=list)

    @property
    def row_smape(self) -> np.ndarray:
        return row_smape(self.predictions, self.actual)

    def summary(self) -> dict[str, Any]:
        """Pooled SMAPE with its standard error, by price band, per fold, and fit seconds."""
        terms = self.row_smape
        pooled, se = mean_and_se(terms)
        folds = [float(terms[self.fold_of_row == f].mean()) for f in range(int(self.fold_of_row.max()) + 1)]
        report = smape_report(self.predictions, self.actual)
        return {"preset": self.preset, "overrides": self.overrides, "rows": int(len(terms)), "smape": pooled,
                "se": se, "by_band": report["by_band"], "folds": folds, "fit_seconds": self.fit_seconds,
                "mean_fit_seconds": float(np.mean(self.fit_seconds))}


def fold_indices(rows: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, valid) row positions of each fold: shuffled, fixed by `seed`."""
    if folds < 2:
        raise SettingsError(f"--folds {folds}: need at least 2 folds")
    if rows < 2 * folds:
        raise CatalogError(f"{rows} rows is too few for {folds}-fold cross-validation")
    return list(KFold(folds, shuffle=True, random_state=seed).split(np.zeros(rows)))


def cross_validate(frame: pd.DataFrame, preset: str = "cpu", overrides: Mapping[str, Any] | None = None,
                   folds: int = 5, seed: int = 0,
                   on_fold: Callable[[int, int, float, float], None] | None = None) -> CvResult:
    """Fit `preset` on k-1 folds and predict the k-th, for every fold; `on_fold(i, k, smape, seconds)` reports progress."""
    overrides = dict(overrides or {})
    if PRICE_COLUMN not in frame.columns:
        raise CatalogError("cross-validation needs a labelled catalog (a price column)")
    actual = frame[PRICE_COLUMN].to_numpy(dtype=float)
    predictions = np.zeros(len(frame))
    fold_of_row = np.zeros(len(frame), dtype=int)
    seconds = []
    splits = fold_indices(len(frame), folds, seed)
    for number, (train, valid) in enumerate(splits):
        started = time.perf_counter()
        model = PricePredictor(preset, **overrides).fit(frame.iloc[train].reset_index(drop=True))
        seconds.append(time.perf_counter() - started)
        predictions[valid] = model.predict(frame.iloc[valid].reset_index(drop=True))
        fold_of_row[valid] = number
        score = float(row_smape(predictions[valid], actual[valid]).mean())
        log.info("cv %s: fold %d/%d SMAPE %.2f (fit %.1f s)", preset, number + 1, folds, score, seconds[-1])
        if on_fold is not None:
            on_fold(number + 1, folds, score, seconds[-1])
    return CvResult(preset, overrides, predictions, actual, fold_of_row, seconds)


def compare(first: CvResult, second: CvResult) -> dict[str, Any]:
    """Paired difference second - first of per-row SMAPE on the same rows (negative: second is better)."""
    if len(first.actual) != len(second.actual) or not np.array_equal(first.fold_of_row, second.fold_of_row):
        raise ValueError("compare: the two results were not cross-validated on the same folds")
    difference = second.row_smape - first.row_smape
    mean, se = mean_and_se(difference)
    return {"difference": mean, "se": se, "z": mean / se if se > 0 else 0.0,
            "first": first.summary()["smape"], "second": second.summary()["smape"]}

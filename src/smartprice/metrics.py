"""SMAPE, the challenge's metric, overall and by price band."""

from __future__ import annotations

import numpy as np

# Price bands (upper bounds, exclusive) for the per-band report; cover the training range.
PRICE_BANDS = (5.0, 10.0, 20.0, 50.0, 100.0, float("inf"))


def row_smape(predicted: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """Per-row SMAPE terms in percent, 200 |p - a| / (|a| + |p|) (0 where both are 0); their mean is the SMAPE."""
    predicted = np.asarray(predicted, dtype=float)
    actual = np.asarray(actual, dtype=float)
    denominator = np.abs(actual) + np.abs(predicted)
    return 200 * np.divide(np.abs(predicted - actual), denominator, out=np.zeros_like(denominator), where=denominator > 0)


def smape(predicted: np.ndarray, actual: np.ndarray) -> float:
    """SMAPE in percent: 100 * mean(2|p - a| / (|a| + |p|)), pooled over all rows."""
    return float(row_smape(predicted, actual).mean())


def smape_report(predicted: np.ndarray, actual: np.ndarray) -> dict:
    """Overall SMAPE, row count and SMAPE per band of the actual price."""
    actual = np.asarray(actual, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    bands = {}
    lower = 0.0
    for upper in PRICE_BANDS:
        mask = (actual >= lower) & (actual < upper)
        label = f"{lower:g}-{upper:g}" if np.isfinite(upper) else f">={lower:g}"
        if mask.any():
            bands[label] = {"smape": smape(predicted[mask], actual[mask]), "rows": int(mask.sum())}
        lower = upper
    return {"smape": smape(predicted, actual), "rows": int(actual.size), "by_band": bands}


def range_report(actual: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict:
    """How a set of price ranges did: share of prices inside (percent), median and mean width (high / low)."""
    actual, low, high = (np.asarray(a, dtype=float) for a in (actual, low, high))
    inside = (actual >= low) & (actual <= high)
    width = high / low
    return {"coverage": float(100 * inside.mean()) if actual.size else float("nan"),
            "median_width": float(np.median(width)) if actual.size else float("nan"),
            "mean_width": float(width.mean()) if actual.size else float("nan"), "rows": int(actual.size)}

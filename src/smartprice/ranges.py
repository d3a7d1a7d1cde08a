"""Calibrated price ranges: split conformal prediction on log1p(price), by crepes' ConformalRegressor.

Every model kind hands over rows it was not fitted on (out of fold, or its held-out validation rows):
their predicted and true log prices and, where it has one, a difficulty estimate `sigma` per row.
With sigmas the range is `pred ± q * sigma` (normalised conformal: narrow where the model knows the
product); without, `pred ± q`. Rows are calibrated apart by band of predicted price (Mondrian
conformal), so each price band gets its nominal coverage, not only the catalog as a whole.
The range is symmetric in log1p(price), so in prices it is wider above the price than below.
"""

from __future__ import annotations

import math
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelDirError, UserError

BANDS = 5             # Mondrian bands: quintiles of the calibration rows' predicted log price
MIN_BAND_ROWS = 100   # fewer calibration rows than BANDS * this: fewer bands (an 80% range needs ~10 rows a band)
RANGES_FILE = "ranges.npz"  # in the model directory: the calibration rows' scores and bands
RETRAIN_FOR_RANGES = "it was saved before smartprice had price ranges; retrain it to get them (its prices are unchanged)"


class CoverageError(UserError):
    """A coverage that is not a number strictly between 0 and 1."""


class NoRangesError(UserError):
    """A model that cannot give ranges (saved before ranges existed); the message says to retrain."""


def check_coverage(value: Any, name: str = "coverage") -> float:
    """`value` as a float strictly between 0 and 1, or a CoverageError that names `name` and what it must be."""
    if isinstance(value, bool):
        number = math.nan
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
    if not (math.isfinite(number) and 0.0 < number < 1.0):
        raise CoverageError(f"{name} must be a number strictly between 0 and 1, such as 0.8 for an 80% range; got {value!r}")
    return number


def check_coverages(values: Any, name: str = "coverage") -> list[float]:
    """Several coverages (a number, a comma-separated string or a list), each checked."""
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()] or [values]
    elif not isinstance(values, (list, tuple)):
        values = [values]
    return [check_coverage(v, name) for v in values]


def _band(edges: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The band of each predicted log price between inner band `edges`."""
    return np.searchsorted(edges, np.asarray(predicted, dtype=np.float64), side="right")


class PriceRanges:
    """Conformal ranges of one model, on log1p(price); `interval(pred, coverage, sigmas)` -> (low, high)."""

    def __init__(self, scores: np.ndarray, bands: np.ndarray, edges: np.ndarray, normalised: bool) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)   # |true - pred| (/ sigma) of the calibration rows
        self.bands = np.asarray(bands, dtype=np.int64)       # band of each calibration row
        self.edges = np.asarray(edges, dtype=np.float64)     # inner band edges on predicted log price
        self.normalised = bool(normalised)
        self._conformal: Any = None

    @property
    def conformal(self) -> Any:
        """crepes' ConformalRegressor on the calibration scores, built when a range is first asked for:
        importing crepes (and the scikit-learn it imports) takes ~1.1 s, which point prices need not pay."""
        if self._conformal is None:
            from crepes import ConformalRegressor

            self._conformal = ConformalRegressor().fit(self.scores, bins=self.bands)
        return self._conformal

    @classmethod
    def calibrate(cls, predicted: np.ndarray, actual: np.ndarray, sigmas: np.ndarray | None = None,
                  bands: int = BANDS) -> PriceRanges:
        """Calibrate on rows the model did not fit on: predicted and true log1p(price), difficulty (optional)."""
        predicted = np.asarray(predicted, dtype=np.float64)
        scores = np.abs(np.asarray(actual, dtype=np.float64) - predicted)
        if sigmas is not None:
            scores = scores / np.asarray(sigmas, dtype=np.float64)
        bands = max(1, min(bands, len(predicted) // MIN_BAND_ROWS))
        edges = np.quantile(predicted, np.linspace(0, 1, bands + 1)[1:-1]) if bands > 1 else np.zeros(0)
        return cls(scores, _band(edges, predicted), edges, sigmas is not None)

    def band(self, predicted: np.ndarray) -> np.ndarray:
        """The Mondrian band of each predicted log price."""
        return _band(self.edges, predicted)

    def interval(self, predicted: np.ndarray, coverage: float, sigmas: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) log1p(price) of a `coverage` range around each prediction (infinite where too few rows calibrate)."""
        predicted = np.asarray(predicted, dtype=np.float64)
        if self.normalised and sigmas is None:
            raise ValueError("these ranges are normalised: pass the rows' sigmas")
        with warnings.catch_warnings():  # too few calibration rows for the level: infinite, clipped by the caller
            warnings.simplefilter("ignore", UserWarning)
            half = self.conformal.predict_int(np.zeros(len(predicted)), bins=self.band(predicted), confidence=coverage)[:, 1]
        if self.normalised:
            half = half * np.asarray(sigmas, dtype=np.float64)
        return predicted - half, predicted + half

    # --- persistence: arrays for the model's npz, scalars for config.json --------------------
    def arrays(self, prefix: str = "ranges") -> dict[str, np.ndarray]:
        return {f"{prefix}_scores": self.scores, f"{prefix}_bands": self.bands.astype(np.int8),
                f"{prefix}_edges": self.edges}

    def state(self) -> dict[str, Any]:
        return {"normalised": self.normalised, "calibration_rows": int(len(self.scores)), "bands": int(len(self.edges) + 1)}

    @classmethod
    def from_arrays(cls, arrays: Any, state: dict[str, Any], prefix: str = "ranges") -> PriceRanges:
        try:
            return cls(arrays[f"{prefix}_scores"], arrays[f"{prefix}_bands"], arrays[f"{prefix}_edges"],
                       bool(state["normalised"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"missing or malformed field {exc}") from None

    @classmethod
    def load(cls, directory: Path, state: dict[str, Any]) -> PriceRanges:
        """Read RANGES_FILE of a model directory; a damaged one is a ModelDirError naming it."""
        path = Path(directory) / RANGES_FILE
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return cls.from_arrays(arrays, state)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ModelDirError(f"{path}: damaged price ranges ({exc}); retrain the model") from None

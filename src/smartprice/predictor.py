"""PricePredictor: the sklearn-like entry point (fit / predict / score / save / load)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sharedcore.about import __version__

from .catalog import ID_COLUMN, PRICE_COLUMN, TEXT_COLUMN
from .errors import CatalogError
from .kinds import model_class, preset_from_dict
from .metrics import smape, smape_report
from .modelio import CONFIG_NAME, FORMAT_VERSION, atomic_directory, read_config, write_config
from .presets import DEFAULT_PRESET, preset_to_dict, resolve_preset
from .ranges import RANGES_FILE, RETRAIN_FOR_RANGES, NoRangesError, PriceRanges, check_coverages

log = logging.getLogger(__name__)
Bounds = tuple[np.ndarray, np.ndarray]  # (low, high) prices of one coverage


def _texts(frame: pd.DataFrame) -> list[str]:
    """The catalog_content column as strings (blank text is fine: it still gets a price)."""
    if TEXT_COLUMN not in frame.columns:
        raise CatalogError(f"input frame: missing required column '{TEXT_COLUMN}'")
    return ["" if not isinstance(t, str) else t for t in frame[TEXT_COLUMN].tolist()]


class PricePredictor:
    """Predict product prices from catalog listings.

    >>> model = PricePredictor(preset="cpu", trees=300).fit(train_frame)
    >>> prices = model.predict(test_frame)   # positive, finite, one per row
    """

    def __init__(self, preset: str = DEFAULT_PRESET, **overrides: Any) -> None:
        self.preset = preset
        self.overrides = overrides

    def fit(self, frame: pd.DataFrame, valid: pd.DataFrame | None = None, *, work_dir: str | Path | None = None,
            resume: bool = False, progress: Callable[[str, int, int], Any] | None = None) -> PricePredictor:
        """Fit on rows with a positive `price`; `valid` (optional) is scored and logged only.

        Neural presets write epoch checkpoints to `work_dir` and, with `resume`, continue from them.
        `progress(stage, done, total)` is called as the CPU model's stages finish (a progress bar's hook).
        """
        config = resolve_preset(self.preset, self.overrides)
        if PRICE_COLUMN not in frame.columns:
            raise CatalogError(f"training frame: missing required column '{PRICE_COLUMN}'")
        price = pd.to_numeric(frame[PRICE_COLUMN], errors="coerce").to_numpy(dtype=float)
        if not (np.isfinite(price).all() and (price > 0).all()):
            raise CatalogError("training frame: prices must be finite numbers > 0; read files with read_catalog()")
        need = 2 * getattr(config, "folds", 5)
        if len(frame) < need:
            raise CatalogError(f"training frame: {len(frame)} rows is too few to fit (need at least {need})")
        y = np.log1p(price)
        self.config_ = config
        self.price_range_ = (float(price.min()) / 2, float(price.max()) * 2)  # predictions are clipped here
        started = time.perf_counter()
        self.model_ = model_class(config)(config).fit(_texts(frame), y, work_dir=work_dir, resume=resume,
                                                                   progress=progress)
        calibration = self.model_.calibration()
        self.ranges_ = PriceRanges.calibrate(*calibration) if calibration is not None else None
        validation = self.model_.validation()
        if validation is None and calibration is not None:  # the rows the ranges calibrate on were held out
            validation = {"held_out_smape": round(smape(np.expm1(calibration[0]), np.expm1(calibration[1])), 3),
                          "rows": int(len(calibration[0]))}
        self.fit_info_ = {"training_rows": int(len(frame)), "fit_seconds": round(time.perf_counter() - started, 2),
                          "fit_date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "validation": validation}
        if valid is not None:
            log.info("validation: %s", self.score(valid)["smape"])
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise RuntimeError("this PricePredictor is not fitted yet; call fit() or PricePredictor.load() first")

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Prices for every row, in order; always finite and > 0."""
        self._check_fitted()
        if len(frame) == 0:
            return np.zeros(0)
        return self._prices(self.model_.predict(_texts(frame)))

    def predict_interval(self, frame: pd.DataFrame, coverage: float = 0.8) -> pd.DataFrame:
        """`price` (as `predict`) and a calibrated range `price_low`..`price_high` holding `coverage` of such listings' prices.

        The range comes from conformal prediction on rows the model was not fitted on (see ranges.py).
        """
        level = check_coverages(coverage)[0]
        prices, ranges = self.predict_ranges(frame, [level])
        low, high = ranges[level]
        return pd.DataFrame({"price": prices, "price_low": low, "price_high": high}, index=frame.index)

    def predict_ranges(self, frame: pd.DataFrame, coverages: list[float]) -> tuple[np.ndarray, dict[float, Bounds]]:
        """Prices and, per coverage, (low, high) prices of every row; one pass over the listings for all coverages."""
        self._check_fitted()
        coverages = check_coverages(coverages) if coverages else []
        if getattr(self, "ranges_", None) is None:
            raise NoRangesError(f"this model has no price ranges: {RETRAIN_FOR_RANGES}")
        if len(frame) == 0:
            return np.zeros(0), {c: (np.zeros(0), np.zeros(0)) for c in coverages}
        log_price, difficulty = self.model_.predict_difficulty(_texts(frame))
        ranges = {}
        for coverage in coverages:
            low, high = self.ranges_.interval(log_price, coverage, difficulty)
            ranges[coverage] = (self._prices(low), self._prices(high))
        return self._prices(log_price), ranges

    @property
    def has_ranges(self) -> bool:
        """Whether this model gives price ranges (models saved before they existed do not)."""
        return getattr(self, "ranges_", None) is not None

    def expect_rows(self, rows: int) -> None:
        """A hint before a large predict: the model may start worker processes while the caller reads its input."""
        self._check_fitted()
        self.model_.expect_rows(rows)

    def _prices(self, log_price: np.ndarray) -> np.ndarray:
        """The model's log1p(price) -> prices clipped to the training range (never NaN)."""
        log_price = np.asarray(log_price, dtype=float)
        low, high = self.price_range_
        log_price = np.nan_to_num(log_price, nan=float(np.log1p(np.sqrt(low * high))))  # never NaN out
        return np.clip(np.expm1(np.clip(log_price, np.log1p(low), np.log1p(high))), low, high)

    def explain(self, frame: pd.DataFrame, k: int = 5, coverage: float = 0.8) -> list[dict[str, Any]]:
        """Per listing: price, its `coverage` range (models with ranges), parsed fields, k nearest training listings,
        per-feature log contributions."""
        self._check_fitted()
        from .explain import explain_listings

        coverage = check_coverages(coverage)[0]
        ids = frame[ID_COLUMN].astype(str).tolist() if ID_COLUMN in frame.columns else None
        entries = explain_listings(self.model_, _texts(frame), self._prices, k=k, ids=ids)
        if self.has_ranges and entries:
            _, ranges = self.predict_ranges(frame, [coverage])
            low, high = ranges[coverage]
            for entry, a, b in zip(entries, low, high):
                entry["range"] = {"coverage": coverage, "low": float(a), "high": float(b)}
        return entries

    def describe(self) -> dict[str, Any]:
        """Preset, kind, training rows, fit seconds and date, held-out figures, versions, ranges (None where not recorded)."""
        self._check_fitted()
        info = getattr(self, "fit_info_", {})
        return {"preset": self.preset, "kind": self.config_.kind, "training_rows": info.get("training_rows"),
                "fit_seconds": info.get("fit_seconds"), "fit_date": info.get("fit_date"),
                "validation": info.get("validation") or self.model_.validation(),
                "format_version": getattr(self, "format_version_", FORMAT_VERSION),
                "smartprice_version": getattr(self, "smartprice_version_", __version__), "ranges": self.has_ranges}

    def score(self, frame: pd.DataFrame) -> dict:
        """SMAPE (percent) overall and per price band on labelled rows."""
        if PRICE_COLUMN not in frame.columns:
            raise CatalogError(f"scoring frame: missing required column '{PRICE_COLUMN}'")
        return smape_report(self.predict(frame), frame[PRICE_COLUMN].to_numpy(dtype=float))

    def save(self, directory: str | Path) -> Path:
        """Write the model directory atomically (config.json + npz/JSON/LightGBM text artefacts)."""
        self._check_fitted()
        directory = Path(directory)
        with atomic_directory(directory) as staging:
            state = self.model_.save(staging)
            ranges = getattr(self, "ranges_", None)
            if ranges is not None:
                np.savez(staging / RANGES_FILE, **ranges.arrays())
            write_config(staging, {"preset": self.preset, "config": preset_to_dict(self.config_),
                                   "price_range": list(self.price_range_), "model_state": state,
                                   "fit_info": getattr(self, "fit_info_", {}),
                                   "ranges": ranges.state() if ranges is not None else None})
        log.info("saved model to %s", directory)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> PricePredictor:
        """Load a directory written by `save`; clear errors for missing, truncated or foreign ones."""
        directory = Path(directory)
        saved = read_config(directory)
        config = preset_from_dict(saved["config"])
        predictor = cls(saved["preset"])
        predictor.config_ = config
        predictor.price_range_ = tuple(saved["price_range"])
        predictor.fit_info_ = saved.get("fit_info", {})  # absent in models saved before it was recorded
        predictor.format_version_ = saved["format_version"]
        predictor.smartprice_version_ = saved.get("smartprice_version")
        if not predictor.fit_info_.get("fit_date"):  # saved before it was recorded: config.json is written right after fit
            mtime = (directory / CONFIG_NAME).stat().st_mtime
            predictor.fit_info_ = {**predictor.fit_info_,
                                   "fit_date": datetime.fromtimestamp(mtime, tz=timezone.utc).isoformat(timespec="seconds")}
        predictor.model_ = model_class(config).load(config, directory, saved["model_state"])
        predictor.ranges_ = PriceRanges.load(directory, saved["ranges"]) if saved.get("ranges") else None
        return predictor

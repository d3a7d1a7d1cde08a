"""scikit-learn estimator over PricePredictor, so pipelines, cross_val_score and GridSearchCV work.

    >>> from smartprice.sklearn import PriceRegressor, smape_scorer
    >>> model = PriceRegressor(preset="cpu", trees=300).fit(texts, prices)   # texts: listing strings
    >>> cross_val_score(PriceRegressor(trees=300), texts, prices, scoring=smape_scorer)   # -SMAPE per fold
    >>> GridSearchCV(PriceRegressor(), {"trees": [300, 600]}, scoring=smape_scorer).fit(texts, prices)

The parameters are `preset` and every field of that preset (`get_params` lists them with their
current values); `set_params` checks keys against the preset's fields. A neural preset's training
loop is one parameter, `loop`, whose fields are reached the scikit-learn way: `loop__epochs=2`
(`GridSearchCV(PriceRegressor("minilm"), {"loop__lr": [1e-4, 3e-4]})`). Predictions are the ones
`PricePredictor` gives with the same preset and overrides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.exceptions import NotFittedError
from sklearn.metrics import make_scorer

from sharedcore.overrides import nested_settings, setting_names

from .catalog import PRICE_COLUMN, TEXT_COLUMN
from .metrics import smape
from .predictor import PricePredictor
from .presets import DEFAULT_PRESET, PRESETS
from .ranges import check_coverages


def listing_texts(X: Any) -> list[str]:
    """Listing texts from a Series, list, 1-d array or one-column frame (blank or missing text is "")."""
    if isinstance(X, pd.DataFrame):
        if TEXT_COLUMN in X.columns:
            X = X[TEXT_COLUMN]
        elif X.shape[1] == 1:
            X = X.iloc[:, 0]
        else:
            raise ValueError(f"X: a frame needs a '{TEXT_COLUMN}' column or exactly one column; "
                             f"got columns {list(X.columns)}")
    values = np.asarray(X, dtype=object)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"X: expected one listing text per row (1-d), got an array of shape {values.shape}")
    return [text if isinstance(text, str) else "" for text in values.tolist()]


def _smape(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """SMAPE in percent with sklearn's argument order (y_true, y_pred)."""
    return smape(y_pred, y_true)


# For cross_val_score / GridSearchCV: sklearn maximises scores, so it reports -SMAPE (closer to 0 is better).
smape_scorer = make_scorer(_smape, greater_is_better=False)


def _preset_fields(preset: str) -> dict[str, Any]:
    """Field -> value of the named preset; an unknown name is a ValueError listing the presets."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(sorted(PRESETS))}")
    return {f.name: getattr(PRESETS[preset], f.name) for f in dataclasses.fields(PRESETS[preset])}


class PriceRegressor(RegressorMixin, BaseEstimator):
    """A scikit-learn regressor of prices from listing texts; a thin layer over PricePredictor.

    `fit(X, y)` takes listing texts (`catalog_content`) and positive prices; `score` is R² (RegressorMixin);
    use `smape_scorer` for SMAPE. Fitted attributes: `predictor_` (the PricePredictor), `n_features_in_`.
    """

    def __init__(self, preset: str = DEFAULT_PRESET, **fields: Any) -> None:
        self.preset = preset
        # The preset fields given, stored as given (clone checks identity); `loop__epochs=2` folded into `loop`.
        self._fields = _fold_nested(preset, fields) if any("__" in key for key in fields) else fields

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """`preset` and every field of that preset with its current value (given, else the preset's).

        With `deep`, the fields of nested settings too, as `loop__epochs`.
        """
        params = {"preset": self.preset, **{k: self._fields.get(k, v) for k, v in _preset_fields(self.preset).items()}}
        if deep:
            for key in nested_settings(PRESETS[self.preset]):
                params.update({f"{key}__{name}": value for name, value in vars(params[key]).items()})
        return params

    def set_params(self, **params: Any) -> PriceRegressor:
        """Set `preset` and/or preset fields; a key that is not a field of the preset is a ValueError.

        On a change of preset, fields still at the old preset's values follow the new preset.
        """
        if "preset" in params and params["preset"] != self.preset:
            new, old = _preset_fields(params["preset"]), _preset_fields(self.preset)
            self._fields = {k: v for k, v in self._fields.items() if k in new and not _same(v, old.get(k))}
            self.preset = params["preset"]
        params.pop("preset", None)
        valid = _preset_fields(self.preset)
        if any("__" in key for key in params):
            params = _fold_nested(self.preset, params, self._fields)
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise ValueError(f"PriceRegressor: unknown parameter(s) {', '.join(unknown)} for preset {self.preset!r}; "
                             f"valid: preset, {', '.join(valid)}")
        self._fields = {**self._fields, **params}
        return self

    def _overrides(self) -> dict[str, Any]:
        """The fields that differ from the preset's own values: what PricePredictor is given."""
        defaults = _preset_fields(self.preset)
        return {k: v for k, v in self._fields.items() if k not in defaults or not _same(v, defaults[k])}

    def fit(self, X: Any, y: Any) -> PriceRegressor:
        """Fit on listing texts X and prices y (finite, > 0); returns self."""
        texts = listing_texts(X)
        prices = np.asarray(y, dtype=float).ravel()
        if len(prices) != len(texts):
            raise ValueError(f"X has {len(texts)} listings but y has {len(prices)} prices")
        bad = np.flatnonzero(~(np.isfinite(prices) & (prices > 0)))
        if len(bad):
            raise ValueError(f"y: prices must be finite numbers > 0; row {bad[0]} is {prices[bad[0]]!r}")
        frame = pd.DataFrame({TEXT_COLUMN: texts, PRICE_COLUMN: prices})
        self.predictor_ = PricePredictor(self.preset, **self._overrides()).fit(frame)
        self.n_features_in_ = 1  # one text column
        return self

    def predict(self, X: Any, interval: float | Sequence[float] | None = None) -> Any:
        """Prices for every listing text in X, in order; finite and > 0.

        With `interval` (a coverage such as 0.8, or several), returns `(prices, ranges)` as MAPIE's
        regressors do: `ranges` has shape (n, 2, levels), [:, 0, j] the low and [:, 1, j] the high price
        of the range holding `interval[j]` of such listings' prices.
        """
        if not hasattr(self, "predictor_"):
            raise NotFittedError("this PriceRegressor is not fitted yet; call fit(X, y) first")
        frame = pd.DataFrame({TEXT_COLUMN: listing_texts(X)})
        if interval is None:
            return self.predictor_.predict(frame)
        levels = check_coverages(list(interval) if isinstance(interval, (list, tuple, np.ndarray)) else interval,
                                 "interval")
        prices, ranges = self.predictor_.predict_ranges(frame, levels)
        bounds = np.stack([np.stack(ranges[level]) for level in levels], axis=-1)  # (2, n, levels)
        return prices, bounds.transpose(1, 0, 2)

    def __repr__(self, N_CHAR_MAX: int = 700) -> str:  # noqa: N803 (BaseEstimator's signature)
        """`PriceRegressor(preset='cpu', trees=300)`: the preset and the fields that differ from it."""
        shown = [f"preset={self.preset!r}", *(f"{k}={v!r}" for k, v in self._overrides().items())]
        text = f"{type(self).__name__}({', '.join(shown)})"
        return text if len(text) <= N_CHAR_MAX else text[: N_CHAR_MAX - 4] + "...)"

    def __sklearn_tags__(self) -> Any:
        """Inputs are strings, not a numeric matrix; targets are positive prices."""
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.two_d_array = False
        return tags


def _fold_nested(preset: str, fields: dict[str, Any], current: dict[str, Any] | None = None) -> dict[str, Any]:
    """`loop__epochs=2` -> `loop` with epochs 2 (from the given `loop`, else `current`'s, else the preset's)."""
    defaults, current = _preset_fields(preset), current or {}
    nested = [key.replace(".", "__") for key in setting_names(PRESETS[preset]) if "." in key]  # loop__epochs, ...
    folded = {k: v for k, v in fields.items() if "__" not in k}
    for key, value in fields.items():
        head, _, name = key.partition("__")
        if not name:
            continue
        if key not in nested:
            raise ValueError(f"PriceRegressor: unknown parameter {key} for preset {preset!r}; "
                             f"nested parameters are {', '.join(nested) or 'none'}")
        base = folded.get(head, current.get(head, defaults[head]))
        folded[head] = dataclasses.replace(base, **{name: value})
    return folded


def _same(a: Any, b: Any) -> bool:
    """Equal values, tuples and lists alike ((1, 2) == [1, 2]), for comparing fields with a preset's."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return bool(a == b)
    except Exception:  # an array compared elementwise: not a plain field value
        return False


"""Scoring LightGBM's fitted trees from their text (what `Booster.model_to_string` writes), one way and one fallback.

- `NativeTrees`: LightGBM's own C library (the `lib_lightgbm` that the installed package ships),
  called through its C API with ctypes: no `import lightgbm` (~0.9 s, with scikit-learn) to predict.
- `BoosterTrees`: the `lightgbm` package's Booster, where the library cannot be opened that way.

`open_trees(text)` gives the first that works. Both equal `Booster.predict` (tests check it).
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

C_API_DTYPE_FLOAT64, C_API_PREDICT_RAW_SCORE = 1, 1  # LightGBM's c_api.h


@lru_cache(maxsize=1)
def native_library() -> ctypes.CDLL | None:
    """The installed lightgbm package's C library, opened without importing the package; None if absent."""
    try:
        spec = importlib.util.find_spec("lightgbm")
    except (ImportError, ValueError):
        return None
    for root in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted([*Path(root).glob("lib/lib_lightgbm.*"), *Path(root).glob("bin/lib_lightgbm.*")]):
            try:
                library = ctypes.cdll.LoadLibrary(str(path))
            except OSError as exc:
                log.debug("cannot open %s: %s", path, exc)
                continue
            library.LGBM_GetLastError.restype = ctypes.c_char_p
            return library
    return None


class NativeTrees:
    """A model's trees in LightGBM's C library (see the module docstring); `predict` is safe from any thread."""

    def __init__(self, library: ctypes.CDLL, handle: ctypes.c_void_p, features: int, model: str) -> None:
        self.library, self.handle, self.features, self.model = library, handle, features, model

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as the model text (a C handle cannot be); None where the library cannot be opened."""
        return NativeTrees.from_model_string, (self.model,)

    @classmethod
    def from_model_string(cls, model: str) -> NativeTrees | None:
        """Load a model saved by `Booster.save_model` / `model_to_string`; None without the library."""
        library = native_library()
        if library is None:
            return None
        handle, iterations = ctypes.c_void_p(), ctypes.c_int(0)
        _check(library, library.LGBM_BoosterLoadModelFromString(model.encode("utf-8"), ctypes.byref(iterations),
                                                                 ctypes.byref(handle)))
        features = ctypes.c_int(0)
        _check(library, library.LGBM_BoosterGetNumFeature(handle, ctypes.byref(features)))
        return cls(library, handle, features.value, model)

    def predict(self, features: np.ndarray, threads: int = 1) -> np.ndarray:
        """Raw scores (n,) of rows of `features` (n, columns), float64."""
        data = np.ascontiguousarray(features, dtype=np.float64)
        rows, columns = data.shape
        if columns != self.features:
            raise ValueError(f"the trees read {self.features} features, got {columns}")
        out = np.empty(rows, dtype=np.float64)
        if rows == 0:
            return out
        written = ctypes.c_int64(0)
        _check(self.library, self.library.LGBM_BoosterPredictForMat(
            self.handle, data.ctypes.data_as(ctypes.c_void_p), ctypes.c_int(C_API_DTYPE_FLOAT64),
            ctypes.c_int32(rows), ctypes.c_int32(columns), ctypes.c_int(1), ctypes.c_int(C_API_PREDICT_RAW_SCORE),
            ctypes.c_int(0), ctypes.c_int(-1), f"num_threads={max(1, threads)}".encode(),
            ctypes.byref(written), out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))))
        if written.value != rows:
            raise RuntimeError(f"LightGBM wrote {written.value} scores for {rows} rows")
        return out

    def __del__(self) -> None:
        if getattr(self, "handle", None):
            self.library.LGBM_BoosterFree(self.handle)
            self.handle = None


class TreesError(RuntimeError):
    """LightGBM refused a call: its own message (unreadable model text, a wrong number of features ...)."""


def _check(library: ctypes.CDLL, status: int) -> None:
    """LightGBM's C API returns 0 on success; anything else is its last error, raised."""
    if status != 0:
        raise TreesError(f"LightGBM: {library.LGBM_GetLastError().decode('utf-8', 'replace')}")


class BoosterTrees:
    """The fallback scorer: `lightgbm.Booster` read from the model text."""

    def __init__(self, model: str) -> None:
        import lightgbm as lgb

        self.model = model
        try:
            self.booster = lgb.Booster(model_str=model)
        except lgb.basic.LightGBMError as exc:
            raise TreesError(f"LightGBM: {exc}") from None

    def predict(self, features: np.ndarray, threads: int = 1) -> np.ndarray:
        """Raw scores (n,) of rows of `features` (n, columns), float64."""
        return np.asarray(self.booster.predict(features, raw_score=True, num_threads=max(1, threads)), dtype=np.float64)


def open_trees(model: str) -> NativeTrees | BoosterTrees:
    """A scorer for LightGBM trees saved as text: the C library where it opens, else the lightgbm package."""
    native = NativeTrees.from_model_string(model)
    if native is not None:
        return native
    log.warning("LightGBM's C library could not be opened directly; scoring trees with the lightgbm package")
    return BoosterTrees(model)

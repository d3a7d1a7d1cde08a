"""The CPU model as it runs: the tree scorer, worker processes for large inputs, explanations.

`CpuStack` is the `cpu` kind of the registry (kinds.py). It wraps a fitted `CpuModel` (model.py:
arrays only) with what running it needs: LightGBM's trees opened for scoring (trees.py), and, for
a model loaded from a directory, worker processes that share large inputs (parallel.py).
Small inputs are scored here, each piece to the end where it was parsed; from BATCH_ROWS rows the
trees score all rows at once on the preset's threads.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..modelio import CONFIG_NAME, ModelDirError
from ..presets import CpuPreset, preset_to_dict
from .model import CpuModel, Progress
from .parallel import MIN_ROWS, WARM_MIN_ROWS, Pool, process_count, running_pool, shared_pool
from .trees import BoosterTrees, NativeTrees, TreesError, open_trees

log = logging.getLogger(__name__)

BATCH_ROWS = 10_000  # from here the trees score on `threads` threads, all rows at once (below: per piece, one thread)


class CpuStack:
    """Fit/predict the stacked CPU model on log1p(price), keeping the `PriceModel` contract of kinds.py."""

    def __init__(self, preset: CpuPreset) -> None:
        self.preset = preset
        self.model: CpuModel | None = None
        self.directory: Path | None = None  # where the model was loaded from: what worker processes load

    def _opened(self, model: CpuModel, directory: Path | None) -> CpuStack:
        self.model, self.directory = model, directory
        self.trees = open_trees(model.trees_text_)
        self.difficulty = open_trees(model.difficulty_.text) if model.difficulty_ is not None else None
        return self

    def fit(self, texts: Sequence[str], y: np.ndarray, work_dir: Path | None = None, resume: bool = False,
            progress: Progress | None = None) -> CpuStack:
        """Fit on listing texts and their log1p(price) (seconds to minutes: no checkpoints, work_dir/resume unused)."""
        return self._opened(CpuModel(self.preset).fit(texts, y, progress=progress), None)

    # --- predicting -------------------------------------------------------------------------
    def score(self, texts: list[str]) -> np.ndarray:
        """log1p(price) of `texts`, computed here on one thread (what one piece of a predict does)."""
        return self.trees.predict(self.model.dense(texts))

    def _pool(self, rows: int) -> Pool | None:
        """The worker processes a predict of `rows` listings shares its work with, or None (all here)."""
        workers = process_count(self.preset.threads) - 1
        if self.directory is None or self.model.uses_torch or workers < 1 or rows < WARM_MIN_ROWS:
            return None  # a model fitted here has no directory to load; torch (the "emb" view) uses every core itself
        config = self.directory / CONFIG_NAME
        key = (str(self.directory), config.stat().st_mtime_ns if config.exists() else 0, workers)
        if rows < MIN_ROWS:
            return running_pool(key)  # not worth starting workers for, but worth sharing with running ones
        spec = (str(self.directory), preset_to_dict(self.preset), self.state)
        return shared_pool(key, spec, workers)

    def _dense(self, texts: list[str]) -> np.ndarray:
        pool = self._pool(len(texts))
        return pool.run(texts, False, self.model.dense) if pool is not None else self.model.dense(texts)

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted log1p(price) for listing texts (large inputs of a loaded model shared with worker processes)."""
        texts = list(texts)
        if len(texts) < BATCH_ROWS:  # each piece scored to the end where it was parsed
            pool = self._pool(len(texts))
            return pool.run(texts, True, self.score) if pool is not None else self.score(texts)
        return self.trees.predict(self._dense(texts), threads=self.preset.threads)  # the trees once, on all rows

    def predict_difficulty(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Predicted log1p(price) (as `predict`) and each listing's difficulty (None without the adaptive ranges)."""
        texts = list(texts)
        if self.difficulty is None:
            return self.predict(texts), None
        dense = self._dense(texts)
        threads = self.preset.threads if len(texts) >= BATCH_ROWS else 1  # no thread team started for a few rows
        return (self.trees.predict(dense, threads=threads),
                np.maximum(self.difficulty.predict(dense, threads=threads), self.model.difficulty_.floor))

    def calibration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """Out-of-fold log prices, true log prices and difficulties of the training rows (just after fit), or None."""
        return self.model.calibration()

    def expect_rows(self, rows: int) -> None:
        """A hint that about `rows` listings will be predicted: start worker processes now if they will be used."""
        self._pool(rows)

    def validation(self) -> None:
        return None

    # --- explanations -----------------------------------------------------------------------
    def explainer(self) -> CpuStack:
        """Itself: neighbours, contributions and importance all come from this model."""
        return self

    def training_listings(self) -> tuple[list[str], np.ndarray] | None:
        return self.model.training_listings()

    def neighbours(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.model.neighbours(texts, k)

    def _booster(self) -> Any:
        """The `lightgbm` package's Booster (contributions and gains need it), read from the trees' text on first use."""
        if not isinstance(getattr(self, "booster_trees", None), BoosterTrees):
            self.booster_trees = self.trees if isinstance(self.trees, BoosterTrees) else BoosterTrees(self.model.trees_text_)
        return self.booster_trees.booster

    def contributions(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Predicted log1p(price) (n,) and LightGBM's per-feature contributions (n, features + 1, bias last), with names."""
        booster = self._booster()
        dense = self.model.dense(texts)
        values = np.asarray(booster.predict(dense, pred_contrib=True, num_threads=1), dtype=np.float64)
        return self.trees.predict(dense), values, [*booster.feature_name(), "bias"]

    def feature_importance(self) -> dict[str, float]:
        """Total LightGBM gain per feature, largest first."""
        booster = self._booster()
        gains = booster.feature_importance(importance_type="gain")
        return dict(sorted(zip(booster.feature_name(), map(float, gains)), key=lambda item: -item[1]))

    # --- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Write artefacts into `directory`; return the JSON-ready state that goes in config.json."""
        return self.model.save(directory)

    @classmethod
    def load(cls, preset: CpuPreset, directory: Path, state: dict[str, Any]) -> CpuStack:
        """Read a directory written by `save`; an older layout is a ModelDirError that says to retrain."""
        stack = cls(preset)
        stack.state = state  # what worker processes are given to load the same model
        model = CpuModel.load(preset, Path(directory), state)
        try:
            return stack._opened(model, Path(directory))
        except TreesError as exc:  # the checksums matched, yet LightGBM cannot read the trees: a damaged directory
            raise ModelDirError(f"{directory}: LightGBM cannot read the saved trees ({exc}); retrain the model") from None


__all__ = ["BATCH_ROWS", "CpuStack", "NativeTrees"]

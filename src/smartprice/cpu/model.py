"""The default CPU model as a plain fitted object: level-1 text ridges and neighbour statistics stacked under LightGBM.

    texts -> parse + views (level1.parse) -> Level1 features -> LightGBM trees (level2.py: fits on several
    stacking-fold splits, averaged into one model) -> log1p(price)

`CpuModel` holds arrays and text only: it fits, saves, loads (everything read at once) and turns
texts into LightGBM's input (`dense`). Scoring the trees, worker processes and the other things
that are about running it live in runtime.py, which imports this module (never the reverse).
Everything saved is arrays (npz), JSON or LightGBM's own text format: nothing executes on load.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ModelDirError, SettingsError
from ..presets import CpuPreset
from . import level2
from .difficulty import fit_difficulty
from .level1 import DENSE_FEATURES, Level1, Listings, check_knn_views, parse, view_spec
from .views import TextViews

log = logging.getLogger(__name__)

LAYOUT = 3  # version of this directory layout: 3 = trees in lightgbm.txt only; 2 (trees also as arrays) still reads
READABLE_LAYOUTS = (2, 3)
ARRAYS_FILE = "cpu_model.npz"
TREES_FILE = "lightgbm.txt"
LISTINGS_FILE = "train_listings.npz"  # training item names (UTF-8 bytes + offsets) and prices, for explanations
RETRAIN = "it was saved by an older smartprice whose CPU model layout this version cannot read; retrain it"
RANGE_METHODS = ("adaptive", "constant", "none")
SMALL_ROWS = 20_000  # below, the ranges' small LightGBM fits run on one thread: a second only adds start-up and waiting

Progress = Callable[[str, int, int], Any]  # (stage, done, total): what fit reports, for a progress bar


def check_range_settings(preset: CpuPreset) -> None:
    """The preset's range fields, or a SettingsError naming the one that does not fit."""
    if preset.range_method not in RANGE_METHODS:
        raise SettingsError(f"range_method must be one of {', '.join(RANGE_METHODS)}; got {preset.range_method!r}")
    for name in ("range_trees", "difficulty_trees"):
        if getattr(preset, name) < 1:
            raise SettingsError(f"{name} must be at least 1; got {getattr(preset, name)}")


def fit_stages(preset: CpuPreset) -> int:
    """How many stages `CpuModel.fit` reports: parse, level 1, one per neighbour view, one per fold of each split,
    trees, ranges."""
    return 4 + len(preset.knn_views) + preset.folds * preset.level2_splits


@dataclass
class TrainingListings:
    """Item names (one UTF-8 blob and offsets, decoded when asked) and prices of the training rows."""

    blob: bytes
    offsets: np.ndarray
    prices: np.ndarray

    @classmethod
    def of(cls, names: Sequence[str], prices: np.ndarray) -> TrainingListings:
        encoded = [name.encode("utf-8") for name in names]
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
        return cls(b"".join(encoded), offsets, np.asarray(prices, dtype=np.float64))

    def names(self) -> list[str]:
        return [self.blob[a:b].decode("utf-8") for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def save(self, path: Path) -> None:
        np.savez_compressed(path, names_utf8=np.frombuffer(self.blob, dtype=np.uint8), names_offsets=self.offsets,
                            prices=self.prices)

    @classmethod
    def load(cls, path: Path) -> TrainingListings | None:
        """What `save` wrote; None where the directory has none (models saved without them)."""
        if not path.exists():
            return None
        try:
            with np.load(path, allow_pickle=False) as arrays:
                return cls(arrays["names_utf8"].tobytes(), arrays["names_offsets"], arrays["prices"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ModelDirError(f"{path}: damaged training listings ({exc}); retrain the model") from None


@dataclass
class DifficultyTrees:
    """The adaptive ranges' difficulty model: LightGBM text, and the floor its estimates never go below."""

    text: str
    floor: float


class CpuModel:
    """The fitted CPU model; see the module docstring."""

    def __init__(self, preset: CpuPreset) -> None:
        self.preset = preset

    # --- fitting ----------------------------------------------------------------------------
    @property
    def uses_torch(self) -> bool:
        """Whether parsing embeds listings with a transformer (the "emb" view): torch then uses every core itself."""
        return "emb" in self.preset.knn_views

    def embedder(self) -> Any:
        if not self.uses_torch:
            return None
        from ..embeddings import SentenceEmbedder

        return SentenceEmbedder(self.preset.embed_encoder, self.preset.embed_max_length)

    def lgb_params(self, rows: int) -> dict[str, Any]:
        """LightGBM's settings for `rows` training rows."""
        p = self.preset
        leaf_rows = min(p.min_child_samples, max(2, rows // 20))  # tiny catalogs still get splits
        return {"objective": p.objective, "alpha": p.huber_delta, "learning_rate": p.learning_rate,
                "num_leaves": p.num_leaves, "min_child_samples": leaf_rows,
                "feature_fraction": p.feature_fraction, "bagging_fraction": p.bagging_fraction,
                "bagging_freq": 1, "seed": p.seed, "num_threads": p.threads, "verbose": -1,
                "deterministic": True, "force_row_wise": True}

    def fit(self, texts: Sequence[str], y: np.ndarray, progress: Progress | None = None) -> CpuModel:
        """Fit on listing texts and their log1p(price); `progress(stage, done, total)` is called as stages finish."""
        p = self.preset
        check_knn_views(p.knn_views)  # before any parsing or embedding work
        check_range_settings(p)
        level2.check_level2_settings(p)
        total, done = fit_stages(p), 0

        def stage(name: str) -> None:
            nonlocal done
            done += 1
            log.info("cpu model: %s", name)
            if progress is not None:
                progress(name, done, total)

        self.views_ = TextViews(view_spec(p))
        listings = parse(texts, self.views_, fit=True, embedder=self.embedder())
        self.listings_ = TrainingListings.of(listings.names, np.expm1(y))
        stage(f"parsed and vectorised {len(texts)} listings")
        self.level1_ = Level1(p).fit(listings, y, threads=p.threads, on_index=lambda view: stage(f"neighbour index: {view}"))
        stage("level 1 fitted on all rows")
        splits = level2.fold_splits(len(y), p)  # one level-2 fit per stacking-fold split, averaged (level2.py)
        denses = [np.hstack([stack, listings.raw]) for stack in self.level1_.out_of_fold_splits(
            listings, y, splits, threads=p.threads, on_fold=lambda fold: stage(f"out-of-fold level 1, fold {fold + 1}"))]
        names = list(self.level1_.features + DENSE_FEATURES)
        self.trees_text_ = level2.fit(denses, y, names, self.lgb_params(len(y)), p).model_to_string()
        stage(f"LightGBM, {p.trees} trees")
        self._fit_ranges(denses, y, splits)
        stage("price ranges")
        return self

    def _fit_ranges(self, denses: list[np.ndarray], y: np.ndarray, splits: list[np.ndarray]) -> None:
        """What the price ranges calibrate on: out-of-fold prices of the whole stack and, adaptive, each row's difficulty."""
        p = self.preset
        self.calibration_, self.difficulty_ = None, None
        if p.range_method == "none":
            return
        params = {**self.lgb_params(len(y)), "num_threads": 1 if len(y) < SMALL_ROWS else p.threads}
        held_out = level2.out_of_fold(denses, y, splits, params, p)
        sigmas = None
        if p.range_method == "adaptive":
            booster, sigmas, floor = fit_difficulty(denses[0], y - held_out, params, p.difficulty_trees, p.seed)
            self.difficulty_ = DifficultyTrees(booster.model_to_string(), floor)
        self.calibration_ = (held_out, y, sigmas)

    # --- features of given texts ------------------------------------------------------------
    def parse(self, texts: Sequence[str]) -> Listings:
        """Parse and vectorise listings with the fitted views."""
        return parse(texts, self.views_, embedder=self.embedder())

    def dense(self, texts: Sequence[str], threads: int = 1) -> np.ndarray:
        """LightGBM's input (n, features): level-1 features, then parsed features."""
        listings = self.parse(texts)
        return np.hstack([self.level1_.transform(listings, threads=threads), listings.raw])

    def calibration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """Out-of-fold log prices, true log prices and difficulties of the training rows (just after fit), or None."""
        return getattr(self, "calibration_", None)

    def training_listings(self) -> tuple[list[str], np.ndarray] | None:
        """Item names and prices of the training rows (None where the directory did not keep them)."""
        listings = self.listings_
        return None if listings is None else (listings.names(), listings.prices)

    def neighbours(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (n, k) of the most similar training listings and their cosine similarities, best first.

        The search the neighbour price features use, on the item-name view (or the first neighbour view
        when the name view is not among them). Rows with fewer matches end in -1 (similarity 0).
        """
        view = "name" if "name" in self.level1_.indices_ else self.level1_.knn_views[0]
        index = self.level1_.indices_[view]
        k = max(1, min(k, index.size))
        return index.search(self.parse(texts).views[view], k)

    # --- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Write artefacts into `directory`; return the JSON-ready state that goes in config.json."""
        arrays = {f"idf_{view}": idf for view, idf in self.views_.idf_.items()}
        arrays.update(self.level1_.arrays())
        state: dict[str, Any] = {"layout": LAYOUT, "level1": self.level1_.state()}
        if self.difficulty_ is not None:
            arrays["difficulty_model_text"] = np.frombuffer(self.difficulty_.text.encode("utf-8"), dtype=np.uint8)
            state["difficulty_floor"] = self.difficulty_.floor
        np.savez(directory / ARRAYS_FILE, **arrays)  # uncompressed: loads by memory copy, ~4x quicker
        (directory / TREES_FILE).write_text(self.trees_text_, encoding="utf-8")
        if self.listings_ is not None:
            self.listings_.save(directory / LISTINGS_FILE)
        return state

    @classmethod
    def load(cls, preset: CpuPreset, directory: Path, state: dict[str, Any]) -> CpuModel:
        """Read a directory written by `save`, all of it now; an older layout is a ModelDirError that says to retrain."""
        if not isinstance(state, dict) or state.get("layout") not in READABLE_LAYOUTS:
            raise ModelDirError(f"{directory}: {RETRAIN}")
        model = cls(preset)
        model.views_ = TextViews(view_spec(preset))
        model.calibration_ = None  # what calibrated the ranges is kept by the predictor, not re-read
        try:
            with np.load(directory / ARRAYS_FILE, allow_pickle=False) as arrays:
                model.views_.idf_ = {view: arrays[f"idf_{view}"] for view in ("word", "name", "char")}
                model.level1_ = Level1.restore(preset, arrays, state["level1"])
                model.difficulty_ = DifficultyTrees(arrays["difficulty_model_text"].tobytes().decode("utf-8"),
                                                    float(state["difficulty_floor"])) \
                    if "difficulty_floor" in state else None  # absent: no adaptive ranges, or saved before them
            model.trees_text_ = (directory / TREES_FILE).read_text(encoding="utf-8")
        except (OSError, KeyError, TypeError, ValueError, RuntimeError, zipfile.BadZipFile) as exc:
            raise ModelDirError(f"{directory}: damaged CPU model arrays ({exc}); retrain the model") from None
        model.listings_ = TrainingListings.load(directory / LISTINGS_FILE)
        return model

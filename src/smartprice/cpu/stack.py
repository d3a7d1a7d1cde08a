"""The default CPU model: level-1 text ridges and neighbour statistics stacked under LightGBM.

    texts -> parse + views (level1.parse) -> Level1 features -> LightGBM (level2.py: fits on several stacking-fold
    splits, averaged into one model; trees.TreeArrays) -> log1p(price)

Everything saved is arrays (npz), JSON or LightGBM's own text format:
nothing executes on load. Large inputs are scored by level 1 in a process pool (parse and
tokenise are pure Python); see `parallel.py`.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import SettingsError
from ..modelio import ModelDirError
from ..presets import CpuPreset
from . import level2
from .difficulty import fit_difficulty
from .level1 import DENSE_FEATURES, Level1, Listings, check_knn_views, parse, view_spec
from .trees import NativeTrees, TreeArrays
from .views import TextViews

log = logging.getLogger(__name__)

LAYOUT = 2  # version of this directory layout; 1 = the single-file neighbour search of smartprice <= 0.1 models
ARRAYS_FILE = "cpu_model.npz"
LISTINGS_FILE = "train_listings.npz"  # training item names (UTF-8 bytes + offsets) and prices, for explanations
BATCH_ROWS = 10_000  # from here the trees score on `threads` threads, all rows at once (below: per piece, one thread)
RETRAIN = "it was saved by an older smartprice whose CPU model layout this version cannot read; retrain it"


RANGE_METHODS = ("adaptive", "constant", "none")


def check_range_settings(preset: CpuPreset) -> None:
    """The preset's range fields, or a SettingsError naming the one that does not fit."""
    if preset.range_method not in RANGE_METHODS:
        raise SettingsError(f"range_method must be one of {', '.join(RANGE_METHODS)}; got {preset.range_method!r}")
    for name in ("range_trees", "difficulty_trees"):
        if getattr(preset, name) < 1:
            raise SettingsError(f"{name} must be at least 1; got {getattr(preset, name)}")


class Difficulty:
    """The difficulty model of the adaptive price ranges: expected |error| of log1p(price) from LightGBM's input."""

    PREFIX = "difficulty"

    def __init__(self, model_text: str, arrays: TreeArrays, floor: float) -> None:
        self.model_text, self.arrays_, self.floor = model_text, arrays, float(floor)
        self.trees = NativeTrees.from_model_string(model_text) or arrays

    def predict(self, dense: np.ndarray) -> np.ndarray:
        """Difficulty (n,) of rows of LightGBM's input, never below the floor."""
        return np.maximum(self.trees.predict(dense), self.floor)

    def arrays(self) -> dict[str, np.ndarray]:
        return {**self.arrays_.to_arrays(self.PREFIX),
                f"{self.PREFIX}_model_text": np.frombuffer(self.model_text.encode("utf-8"), dtype=np.uint8)}

    @classmethod
    def from_arrays(cls, arrays: Any, floor: float) -> Difficulty:
        text = arrays[f"{cls.PREFIX}_model_text"].tobytes().decode("utf-8")
        return cls(text, TreeArrays.from_arrays(arrays, cls.PREFIX), floor)


class CpuStack:
    """Fit/predict the stacked CPU model on log1p(price); see the module docstring."""

    def __init__(self, preset: CpuPreset) -> None:
        self.preset = preset

    # --- fitting ----------------------------------------------------------------------------
    def _embedder(self) -> Any:
        if "emb" not in self.preset.knn_views:
            return None
        from ..embeddings import SentenceEmbedder

        return SentenceEmbedder(self.preset.embed_encoder, self.preset.embed_max_length)

    def _lgb_params(self, rows: int) -> dict[str, Any]:
        p = self.preset
        leaf_rows = min(p.min_child_samples, max(2, rows // 20))  # tiny catalogs still get splits
        return {"objective": p.objective, "alpha": p.huber_delta, "learning_rate": p.learning_rate,
                "num_leaves": p.num_leaves, "min_child_samples": leaf_rows,
                "feature_fraction": p.feature_fraction, "bagging_fraction": p.bagging_fraction,
                "bagging_freq": 1, "seed": p.seed, "num_threads": p.threads, "verbose": -1,
                "deterministic": True, "force_row_wise": True}

    def fit(self, texts: Sequence[str], y: np.ndarray, work_dir: Path | None = None, resume: bool = False) -> CpuStack:
        """Fit on listing texts and their log1p(price) (seconds to minutes: no checkpoints, work_dir/resume unused)."""
        p = self.preset
        check_knn_views(p.knn_views)  # before any parsing or embedding work
        check_range_settings(p)
        level2.check_level2_settings(p)
        log.info("cpu model: parsing and vectorising %d listings", len(texts))
        self.views_ = TextViews(view_spec(p))
        listings = parse(texts, self.views_, fit=True, embedder=self._embedder())
        self.train_names_, self.train_prices_ = listings.names, np.expm1(y)
        log.info("cpu model: level 1 (ridges, neighbour indices) on all rows")
        self.level1_ = Level1(p).fit(listings, y, threads=p.threads)
        splits = level2.fold_splits(len(y), p)  # one level-2 fit per stacking-fold split, averaged (level2.py)
        denses = [np.hstack([stack, listings.raw])
                  for stack in self.level1_.out_of_fold_splits(listings, y, splits, threads=p.threads)]
        names = list(self.level1_.features + DENSE_FEATURES)
        self.booster_ = level2.fit(denses, y, names, self._lgb_params(len(y)), p)
        self.trees_ = TreeArrays.from_booster(self.booster_)
        self.native_ = NativeTrees.from_model_string(self.booster_.model_to_string())
        self._fit_ranges(denses, y, splits)
        return self

    def _fit_ranges(self, denses: list[np.ndarray], y: np.ndarray, splits: list[np.ndarray]) -> None:
        """What the price ranges calibrate on: out-of-fold prices of the whole stack and, adaptive, each row's difficulty."""
        p = self.preset
        self.calibration_, self.difficulty_ = None, None
        if p.range_method == "none":
            return
        log.info("cpu model: price ranges (out-of-fold level 2, %d trees a fold)", p.range_trees)
        params = self._lgb_params(len(y))
        held_out = level2.out_of_fold(denses, y, splits, params, p)
        sigmas = None
        if p.range_method == "adaptive":
            booster, sigmas, floor = fit_difficulty(denses[0], y - held_out, params, p.difficulty_trees, p.seed)
            self.difficulty_ = Difficulty(booster.model_to_string(), TreeArrays.from_booster(booster), floor)
        self.calibration_ = (held_out, y, sigmas)

    # --- predicting -------------------------------------------------------------------------
    def parse(self, texts: Sequence[str]) -> Listings:
        """Parse and vectorise listings with the fitted views."""
        return parse(texts, self.views_, embedder=self._embedder())

    def dense(self, texts: Sequence[str], threads: int = 1) -> np.ndarray:
        """LightGBM's input (n, features): level-1 features, then parsed features."""
        listings = self.parse(texts)
        return np.hstack([self.level1_.transform(listings, threads=threads), listings.raw])

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted log1p(price) for listing texts.

        Large inputs of a model loaded from a directory are split with a pool of worker processes
        (parallel.py); small ones run here with no pool, threads or pandas in the way.
        """
        from .parallel import in_pool

        texts = list(texts)
        if len(texts) < BATCH_ROWS:  # each piece scored to the end where it was parsed
            log_price = in_pool(self, texts, final=True)
            return log_price if log_price is not None else self.score(texts)
        dense = in_pool(self, texts, final=False)  # the trees once, on all rows, in this process
        dense = dense if dense is not None else self.dense(texts)
        trees = self.trees()
        if isinstance(trees, NativeTrees):
            return trees.predict(dense, threads=self.preset.threads)
        return np.asarray(self._booster().predict(dense, num_threads=self.preset.threads), dtype=np.float64)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted log1p(price) computed here, on one thread (what one piece of a predict does)."""
        return self.trees().predict(self.dense(texts))

    def trees(self) -> NativeTrees | TreeArrays:
        """What scores the trees: LightGBM's C library (trees.NativeTrees) where it opens, else the tree arrays."""
        native = getattr(self, "native_", False)
        if native is False:  # a loaded model: read the saved booster on first use (~5 ms)
            try:
                native = NativeTrees.from_model_string((self.directory_ / "lightgbm.txt").read_text(encoding="utf-8"))
            except (OSError, RuntimeError, UnicodeDecodeError) as exc:  # modelio checked the file: not expected
                log.warning("LightGBM's C library cannot read %s (%s); scoring with the tree arrays",
                            self.directory_ / "lightgbm.txt", exc)
                native = None
            self.native_ = native
        return native or self.trees_

    def calibration(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
        """Out-of-fold log prices, true log prices and difficulties of the training rows (just after fit), or None."""
        return getattr(self, "calibration_", None)

    def predict_difficulty(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Predicted log1p(price) (as `predict`) and each listing's difficulty (None without the adaptive ranges)."""
        texts = list(texts)
        if getattr(self, "difficulty_", None) is None:
            return self.predict(texts), None
        from .parallel import in_pool

        dense = in_pool(self, texts, final=False)
        dense = dense if dense is not None else self.dense(texts)
        return self.trees().predict(dense, threads=self.preset.threads), self.difficulty_.predict(dense)

    def expect_rows(self, rows: int) -> None:
        """A hint that about `rows` listings will be predicted: start worker processes now if they will be used."""
        from .parallel import start_pool

        start_pool(self, rows)

    def validation(self) -> None:
        return None

    # --- explanations -----------------------------------------------------------------------
    def explainer(self) -> CpuStack:
        """Itself: neighbours, contributions and importance all come from this model."""
        return self

    def training_listings(self) -> tuple[list[str], np.ndarray] | None:
        """Item names and prices of the training rows (read from the directory on first use)."""
        if not hasattr(self, "train_names_"):
            path = getattr(self, "listings_path_", None)
            if path is None or not path.exists():
                return None
            try:
                with np.load(path, allow_pickle=False) as arrays:
                    blob, offsets, prices = arrays["names_utf8"].tobytes(), arrays["names_offsets"], arrays["prices"]
                names = [blob[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
                raise ModelDirError(f"{path}: damaged training listings ({exc}); retrain the model") from None
            self.train_names_, self.train_prices_ = names, prices
        return self.train_names_, self.train_prices_

    def neighbours(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (n, k) of the most similar training listings and their cosine similarities, best first.

        The search the neighbour price features use, on the item-name view (or the first neighbour view
        when the name view is not among them). Rows with fewer matches end in -1 (similarity 0).
        """
        view = "name" if "name" in self.level1_.indices_ else self.level1_.knn_views[0]
        index = self.level1_.indices_[view]
        k = max(1, min(k, index.size))
        return index.search(self.parse(texts).views[view], k)

    def contributions(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Predicted log1p(price) (n,) and LightGBM's per-feature contributions (n, features + 1, bias last), with names."""
        booster = self._booster()
        dense = self.dense(texts)
        values = np.asarray(booster.predict(dense, pred_contrib=True, num_threads=1), dtype=np.float64)
        return self.trees().predict(dense), values, [*booster.feature_name(), "bias"]

    def feature_importance(self) -> dict[str, float]:
        """Total LightGBM gain per feature, largest first."""
        booster = self._booster()
        gains = booster.feature_importance(importance_type="gain")
        return dict(sorted(zip(booster.feature_name(), map(float, gains)), key=lambda item: -item[1]))

    def _booster(self) -> Any:
        """The `lightgbm` package's booster (explanations; batches where the C library cannot be opened), read on first use."""
        if not hasattr(self, "booster_"):
            import lightgbm as lgb

            self.booster_ = lgb.Booster(model_file=str(self.directory_ / "lightgbm.txt"))
        return self.booster_

    # --- persistence ------------------------------------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Write artefacts into `directory`; return the JSON-ready state that goes in config.json."""
        arrays = {f"idf_{view}": idf for view, idf in self.views_.idf_.items()}
        arrays.update(self.level1_.arrays())
        arrays.update(self.trees_.to_arrays())
        if getattr(self, "difficulty_", None) is not None:
            arrays.update(self.difficulty_.arrays())
        np.savez(directory / ARRAYS_FILE, **arrays)  # uncompressed: loads by memory copy, ~4x quicker
        self._booster().save_model(str(directory / "lightgbm.txt"))
        self._save_listings(directory / LISTINGS_FILE)
        state: dict[str, Any] = {"layout": LAYOUT, "level1": self.level1_.state()}
        if getattr(self, "difficulty_", None) is not None:
            state["difficulty_floor"] = self.difficulty_.floor
        return state

    def _save_listings(self, path: Path) -> None:
        """Names as one UTF-8 byte array plus offsets: compact, and np.load needs no pickle to read it."""
        listings = self.training_listings()
        if listings is None:
            return
        encoded = [name.encode("utf-8") for name in listings[0]]
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
        np.savez_compressed(path, names_utf8=np.frombuffer(b"".join(encoded), dtype=np.uint8),
                            names_offsets=offsets, prices=np.asarray(listings[1], dtype=np.float64))

    @classmethod
    def load(cls, preset: CpuPreset, directory: Path, state: dict[str, Any]) -> CpuStack:
        """Read a directory written by `save`; an older layout is a ModelDirError that says to retrain."""
        if not isinstance(state, dict) or state.get("layout") != LAYOUT:
            raise ModelDirError(f"{directory}: {RETRAIN}")
        model = cls(preset)
        model.directory_, model.state_ = Path(directory), state  # the pool's workers load the same (parallel.py)
        model.views_ = TextViews(view_spec(preset))
        try:
            with np.load(directory / ARRAYS_FILE, allow_pickle=False) as arrays:
                model.views_.idf_ = {view: arrays[f"idf_{view}"] for view in ("word", "name", "char")}
                model.level1_ = Level1.restore(preset, arrays, state["level1"])
                model.trees_ = TreeArrays.from_arrays(arrays)
                model.difficulty_ = Difficulty.from_arrays(arrays, state["difficulty_floor"]) \
                    if "difficulty_floor" in state else None  # absent: no adaptive ranges, or saved before them
        except (OSError, KeyError, TypeError, ValueError, RuntimeError, zipfile.BadZipFile) as exc:
            raise ModelDirError(f"{directory}: damaged CPU model arrays ({exc}); retrain the model") from None
        model.listings_path_ = directory / LISTINGS_FILE  # read by training_listings() on first use
        return model

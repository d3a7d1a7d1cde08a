"""The default CPU model: text ridge models and neighbour statistics stacked under LightGBM.

Level 1 (all on log1p(price), out-of-fold on training rows so level 2 never sees leaked fits):
  word TF-IDF ridge over the whole listing, char TF-IDF ridge over the item name, cosine
  nearest-neighbour price statistics, and a smoothed brand mean price.
Level 2: LightGBM on those predictions plus the parsed quantity/unit features.
Everything saved is arrays (npz), JSON or LightGBM's own text format: nothing executes on load.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import Ridge
from sklearn.model_selection import KFold

from .catalog import CatalogFields, split_catalog_content
from .features import EXTRA_FEATURES, FEATURES_25, guess_brand, parse_listings
from .modelio import ModelDirError
from .presets import CpuPreset

log = logging.getLogger(__name__)

PARALLEL_MIN_ROWS = 1000  # below this, forking a worker costs more than it saves
_FORKED_MODEL: GbmStack | None = None  # the model forked predict workers read

DENSE_FEATURES = tuple(n for n in FEATURES_25 if n not in ("brand", "category")) + EXTRA_FEATURES
LISTINGS_FILE = "train_listings.npz"  # training item names (UTF-8 bytes + offsets) and prices, for explanations
KNN_STATS = ("mean", "median", "top1", "top1_sim", "sim_mean", "unit_price")  # per neighbour view, see KnnStats
# Matrices neighbour statistics can be computed on: item-name words, whole-listing words, item-name chars,
# and frozen sentence embeddings of the listing ("emb", needs the nn extra; it also gets a ridge of its own).
KNN_VIEWS = ("name", "word", "char", "emb")


def stack_features(knn_views: Sequence[str], unit_ridge: bool = False) -> tuple[str, ...]:
    """Names of the level-1 features, in column order: ridges, neighbour statistics per view, brand."""
    knn = tuple(f"knn_{stat}" if view == "name" else f"knn_{view}_{stat}" for view in knn_views for stat in KNN_STATS)
    ridges = ("ridge_word", "ridge_char") + (("ridge_word_unit",) if unit_ridge else ()) + \
        (("ridge_emb",) if "emb" in knn_views else ())
    return (*ridges, *knn, "brand_mean", "brand_count")


STACK_FEATURES = stack_features(("name",))  # the stack of models saved before knn_views existed


def listing_text(fields: CatalogFields) -> str:
    """Text for the word model: name, bullets and description (the name has its own models too)."""
    return " ".join((fields.item_name, *fields.bullets, fields.description))


class TextVectorizer:
    """Hashed n-gram counts -> sublinear TF-IDF -> L2 rows; stateless hashing, fitted IDF only."""

    def __init__(self, analyzer: str, ngram_range: tuple[int, int], hash_bits: int) -> None:
        self.hasher = HashingVectorizer(analyzer=analyzer, ngram_range=ngram_range,
                                        n_features=2**hash_bits, alternate_sign=False, norm=None,
                                        lowercase=True, dtype=np.float32)
        self.tfidf = TfidfTransformer(sublinear_tf=True)

    def fit_transform(self, texts: list[str]) -> sp.csr_matrix:
        counts = self.hasher.transform(texts)
        return self.tfidf.fit_transform(counts).astype(np.float32).tocsr()

    def transform(self, texts: list[str]) -> sp.csr_matrix:
        return self.tfidf.transform(self.hasher.transform(texts)).astype(np.float32).tocsr()

    def set_idf(self, idf: np.ndarray) -> None:
        """Restore a saved IDF vector (the only fitted state)."""
        self.tfidf.idf_ = idf.astype(np.float64)


class KnnStats:
    """Cosine nearest-neighbour price statistics over L2-normalised TF-IDF rows."""

    def __init__(self, k: int) -> None:
        self.k = k

    def fit(self, matrix: sp.csr_matrix, y: np.ndarray, log_qty: np.ndarray) -> KnnStats:
        self.matrix_ = matrix.tocsc() if sp.issparse(matrix) else matrix  # CSC: matrix_.T is CSR, no conversion per product
        self.y_ = y.astype(np.float64)
        self.unit_y_ = (y - log_qty).astype(np.float64)  # log price per unit of quantity
        return self

    def transform(self, matrix: sp.csr_matrix, log_qty: np.ndarray,
                  chunk: int = 256) -> np.ndarray:
        """(n, 6) statistics: weighted mean, median, top-1 price, top-1 similarity, mean similarity, unit-price estimate.

        Rows go `chunk` at a time: a (chunk, n_train) similarity block that stays in cache is ~2x faster.
        """
        out = np.zeros((matrix.shape[0], 6), dtype=np.float64)
        k = min(self.k, self.matrix_.shape[0])
        for start in range(0, matrix.shape[0], chunk):
            sims = matrix[start:start + chunk] @ self.matrix_.T  # (b, n_train)
            sims = sims.toarray() if sp.issparse(sims) else np.asarray(sims)
            top = np.argpartition(-sims, k - 1, axis=1)[:, :k]  # (b, k) unordered
            top_sims = np.take_along_axis(sims, top, axis=1)
            order = np.argsort(-top_sims, axis=1)
            top = np.take_along_axis(top, order, axis=1)
            top_sims = np.take_along_axis(top_sims, order, axis=1)
            weights = np.clip(top_sims, 1e-3, None) ** 2
            prices = self.y_[top]
            block = out[start:start + sims.shape[0]]
            block[:, 0] = (weights * prices).sum(1) / weights.sum(1)
            block[:, 1] = np.median(prices, axis=1)
            block[:, 2] = prices[:, 0]
            block[:, 3] = top_sims[:, 0]
            block[:, 4] = top_sims.mean(1)
            block[:, 5] = (weights * self.unit_y_[top]).sum(1) / weights.sum(1) + log_qty[start:start + sims.shape[0]]
        return out


def brand_table(brands: pd.Series, y: np.ndarray, smoothing: float) -> dict[str, tuple[float, int]]:
    """Smoothed mean log price and row count per brand."""
    prior = float(y.mean())
    grouped = pd.DataFrame({"b": brands.to_numpy(), "y": y}).groupby("b")["y"].agg(["sum", "count"])
    return {b: ((s + smoothing * prior) / (n + smoothing), int(n))
            for b, s, n in zip(grouped.index, grouped["sum"], grouped["count"]) if b}


def brand_lookup(brands: pd.Series, table: dict[str, tuple[float, int]], prior: float) -> np.ndarray:
    return np.array([table.get(b, (prior, 0)) for b in brands], dtype=np.float64)


class GbmStack:
    """Fit/predict the stacked CPU model on log1p(price); see the module docstring."""

    def __init__(self, preset: CpuPreset) -> None:
        self.preset = preset

    def _vectorizers(self) -> tuple[TextVectorizer, TextVectorizer, TextVectorizer]:
        p = self.preset
        return (TextVectorizer("word", (1, p.word_ngrams), p.hash_bits),      # whole listing
                TextVectorizer("char_wb", (p.char_min, p.char_max), p.hash_bits),  # item name
                TextVectorizer("word", (1, 2), p.hash_bits))                  # item name, for neighbours

    def _lgb_params(self, rows: int) -> dict[str, Any]:
        p = self.preset
        leaf_rows = min(p.min_child_samples, max(2, rows // 20))  # tiny catalogs still get splits
        return {"objective": p.objective, "alpha": p.huber_delta, "learning_rate": p.learning_rate,
                "num_leaves": p.num_leaves, "min_child_samples": leaf_rows,
                "feature_fraction": p.feature_fraction, "bagging_fraction": p.bagging_fraction,
                "bagging_freq": 1, "seed": p.seed, "num_threads": p.threads, "verbose": -1,
                "deterministic": True, "force_row_wise": True}

    def _views(self, texts: Sequence[str], fit: bool = False) -> dict[str, Any]:
        """Parse listings once: sparse text matrices, raw features, brands, log quantity."""
        fields, raw = parse_listings(texts)
        names = [f.item_name for f in fields]
        method = "fit_transform" if fit else "transform"
        return {
            "word": getattr(self.word_, method)([listing_text(f) for f in fields]),
            "char": getattr(self.char_, method)(names),
            "name": getattr(self.name_, method)(names),
            "raw": raw,
            "brand": pd.Series([guess_brand(n) for n in names]),
            "names": pd.Series(names, dtype=object),  # kept at fit time: explain shows nearest training listings
            "log_qty": raw["log_quantity"].to_numpy(dtype=np.float64),
            **({"emb": self._embedder().transform([listing_text(f) for f in fields])} if "emb" in self.knn_views_ else {}),
        }

    def _embedder(self) -> Any:
        from .embeddings import SentenceEmbedder

        return SentenceEmbedder(self.preset.embed_encoder, self.preset.embed_max_length)

    def fit(self, texts: Sequence[str], y: np.ndarray, work_dir: Path | None = None, resume: bool = False) -> GbmStack:
        """Fit on listing texts and their log1p(price) (seconds: no checkpoints, so work_dir/resume are unused)."""
        import lightgbm as lgb

        p = self.preset
        self.word_, self.char_, self.name_ = self._vectorizers()
        self.knn_views_ = tuple(p.knn_views)  # checked before any parsing or embedding work
        unknown = sorted(set(self.knn_views_) - set(KNN_VIEWS))
        if unknown or "name" not in self.knn_views_:
            raise ValueError(f"knn_views must include 'name' and be among {', '.join(KNN_VIEWS)}; got {', '.join(p.knn_views)}")
        self.unit_ridge_ = p.unit_ridge
        log.info("cpu model: parsing and vectorising %d listings", len(texts))
        views = self._views(texts, fit=True)
        self.y_mean_ = float(y.mean())
        self.train_names_, self.train_prices_ = views["names"].tolist(), np.expm1(y)

        features = stack_features(self.knn_views_, self.unit_ridge_)
        stack = np.zeros((len(y), len(features)))
        folds = KFold(p.folds, shuffle=True, random_state=p.seed)
        for number, (train, valid) in enumerate(folds.split(stack), start=1):
            log.info("cpu model: out-of-fold level 1, fold %d/%d", number, p.folds)
            level1 = self._fit_level1({k: _rows(v, train) for k, v in views.items()}, y[train])
            level1.knn_views_, level1.unit_ridge_ = self.knn_views_, self.unit_ridge_
            stack[valid] = level1._level1({k: _rows(v, valid) for k, v in views.items()})
        log.info("cpu model: level 1 on all rows")
        self._fit_level1(views, y, into=self)

        log.info("cpu model: LightGBM, %d trees", p.trees)
        dense = np.hstack([stack, views["raw"][list(DENSE_FEATURES)].to_numpy(dtype=np.float64)])
        data = lgb.Dataset(dense, y, feature_name=list(features + DENSE_FEATURES), free_raw_data=True)
        self.booster_ = lgb.train(self._lgb_params(len(y)), data, num_boost_round=p.trees)
        return self

    def _fit_level1(self, views: dict[str, Any], y: np.ndarray, into: GbmStack | None = None) -> GbmStack:
        """Fit the level-1 models on `views` (into a fresh holder unless `into` is given)."""
        p = self.preset
        target = into or GbmStack(p)
        target.ridge_word_ = Ridge(alpha=p.ridge_alpha).fit(views["word"], y)
        target.ridge_char_ = Ridge(alpha=p.ridge_alpha).fit(views["char"], y)
        if p.unit_ridge:  # log price per unit of quantity: comparable across pack sizes; log quantity added back
            target.ridge_unit_ = Ridge(alpha=p.ridge_alpha).fit(views["word"], y - views["log_qty"])
        if "emb" in p.knn_views:
            target.ridge_emb_ = Ridge(alpha=p.embed_ridge_alpha).fit(views["emb"], y)
        target.knn_ = KnnStats(p.neighbours).fit(views["name"], y, views["log_qty"])
        target.knn_extra_ = {view: KnnStats(p.neighbours).fit(views[view], y, views["log_qty"])
                             for view in p.knn_views if view != "name"}
        target.brands_ = brand_table(views["brand"], y, p.brand_smoothing)
        target.y_mean_ = float(y.mean())
        return target

    def _level1(self, views: dict[str, Any]) -> np.ndarray:
        """Level-1 features (n, len(stack_features(knn_views_))) from fitted level-1 models."""
        knn = [(self.knn_ if view == "name" else self.knn_extra_[view]).transform(views[view], views["log_qty"])
               for view in self.knn_views_]
        unit = [(self.ridge_unit_.predict(views["word"]) + views["log_qty"])[:, None]] if self.unit_ridge_ else []
        if "emb" in self.knn_views_:
            unit.append(self.ridge_emb_.predict(views["emb"])[:, None])
        return np.hstack([self.ridge_word_.predict(views["word"])[:, None], self.ridge_char_.predict(views["char"])[:, None],
                          *unit, *knn, brand_lookup(views["brand"], self.brands_, self.y_mean_)])

    def _dense(self, texts: Sequence[str]) -> np.ndarray:
        """LightGBM's input for some listings: level-1 features + parsed features."""
        views = self._views(texts)
        return np.hstack([self._level1(views), views["raw"][list(DENSE_FEATURES)].to_numpy(dtype=np.float64)])

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Predicted log1p(price) for listing texts.

        Large inputs are parsed and scored by level 1 in `threads` forked processes (the work is
        pure Python, so threads would not help); LightGBM then runs once in this process.
        """
        workers = min(self.preset.threads, max(1, len(texts) // PARALLEL_MIN_ROWS))
        if "emb" in self.knn_views_:
            workers = 1  # torch does not survive fork() once its thread pool runs; it uses both cores itself
        if workers > 1 and "fork" in mp.get_all_start_methods():
            global _FORKED_MODEL
            _FORKED_MODEL = self  # inherited by the forked workers, never pickled
            bounds = np.linspace(0, len(texts), workers + 1).astype(int)
            chunks = [list(texts[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
            try:
                with mp.get_context("fork").Pool(workers - 1) as pool:
                    others = pool.map_async(_forked_dense, chunks[1:])  # this process takes chunk 0 ...
                    booster = self._booster()  # ... after loading LightGBM while the workers run
                    dense = np.vstack([self._dense(chunks[0]), *others.get()])
            finally:
                _FORKED_MODEL = None
        else:
            booster, dense = self._booster(), self._dense(texts)
        return booster.predict(dense, num_threads=self.preset.threads)

    def _booster(self) -> Any:
        """The LightGBM model; a loaded model reads it on first use (importing LightGBM is slow)."""
        if not hasattr(self, "booster_"):
            import lightgbm as lgb

            self.booster_ = lgb.Booster(model_file=str(self.booster_path_))
        return self.booster_

    # --- explanations: nearest training listings, per-feature contributions, importance ----------
    def training_listings(self) -> tuple[list[str], np.ndarray] | None:
        """Item names and prices of the training rows (None for models saved before they were kept)."""
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

    def _save_listings(self, path: Path) -> None:
        """Names as one UTF-8 byte array plus offsets: compact, and np.load needs no pickle to read it."""
        listings = self.training_listings()
        if listings is None:
            return
        encoded = [name.encode("utf-8") for name in listings[0]]
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype(np.int64)
        np.savez_compressed(path, names_utf8=np.frombuffer(b"".join(encoded), dtype=np.uint8),
                            names_offsets=offsets, prices=np.asarray(listings[1], dtype=np.float64))

    def neighbours(self, texts: Sequence[str], k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (n, k) of the most similar training listings and their cosine similarities, best first.

        Similarity is over the item-name word n-grams the neighbour price features use.
        """
        names = [split_catalog_content(t or "").item_name for t in texts]
        query = self.name_.transform(names)
        k = max(1, min(k, self.knn_.matrix_.shape[0]))
        index = np.zeros((len(names), k), dtype=np.int64)
        sims = np.zeros((len(names), k))
        for start in range(0, len(names), chunk):
            block = query[start:start + chunk] @ self.knn_.matrix_.T  # (b, n_train)
            block = block.toarray() if sp.issparse(block) else np.asarray(block)
            top = np.argpartition(-block, k - 1, axis=1)[:, :k]  # (b, k) unordered
            top = np.take_along_axis(top, np.argsort(-np.take_along_axis(block, top, axis=1), axis=1), axis=1)
            index[start:start + chunk] = top
            sims[start:start + chunk] = np.take_along_axis(block, top, axis=1)
        return index, sims

    def contributions(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Predicted log1p(price) (n,) and LightGBM's per-feature contributions to it (n, features + 1), with names.

        The last column is the bias; each row sums to the prediction. Both come from one parse of the
        texts. Names are read from the booster, so they follow whatever features it was trained on.
        """
        booster = self._booster()
        dense = self._dense(texts)
        log_price = booster.predict(dense, num_threads=self.preset.threads)
        values = booster.predict(dense, pred_contrib=True, num_threads=self.preset.threads)
        return np.asarray(log_price, dtype=np.float64), np.asarray(values, dtype=np.float64), [*booster.feature_name(), "bias"]

    def feature_importance(self) -> dict[str, float]:
        """Total LightGBM gain per feature, largest first."""
        booster = self._booster()
        gains = booster.feature_importance(importance_type="gain")
        return dict(sorted(zip(booster.feature_name(), map(float, gains)), key=lambda item: -item[1]))

    # --- persistence: npz + JSON + LightGBM text ---------------------------------------------
    def save(self, directory: Path) -> dict[str, Any]:
        """Write artefacts into `directory`; return the JSON-ready state that goes in config.json."""
        knn = self.knn_.matrix_.tocsr()
        np.savez_compressed(
            directory / "cpu_arrays.npz",
            word_idf=self.word_.tfidf.idf_.astype(np.float32), char_idf=self.char_.tfidf.idf_.astype(np.float32),
            name_idf=self.name_.tfidf.idf_.astype(np.float32),
            ridge_word_coef=self.ridge_word_.coef_.astype(np.float32),
            ridge_char_coef=self.ridge_char_.coef_.astype(np.float32),
            **({"ridge_unit_coef": self.ridge_unit_.coef_.astype(np.float32)} if self.unit_ridge_ else {}),
            **({"emb_ridge_coef": self.ridge_emb_.coef_.astype(np.float32)} if "emb" in self.knn_views_ else {}),
            knn_data=knn.data, knn_indices=knn.indices, knn_indptr=knn.indptr,
            knn_y=self.knn_.y_, knn_unit_y=self.knn_.unit_y_,
        )  # the extra neighbour views share y and unit_y; only their matrices are new
        for view, stats in self.knn_extra_.items():
            if sp.issparse(stats.matrix_):
                sp.save_npz(directory / f"knn_{view}.npz", stats.matrix_.tocsr(), compressed=True)
            else:  # dense embeddings
                np.savez_compressed(directory / f"knn_{view}.npz", matrix=stats.matrix_)
        self._booster().save_model(str(directory / "lightgbm.txt"))
        self._save_listings(directory / LISTINGS_FILE)
        return {"ridge_word_intercept": float(self.ridge_word_.intercept_),
                "ridge_char_intercept": float(self.ridge_char_.intercept_),
                "knn_shape": list(knn.shape), "y_mean": self.y_mean_, "knn_views": list(self.knn_views_),
                "unit_ridge": self.unit_ridge_,
                **({"ridge_unit_intercept": float(self.ridge_unit_.intercept_)} if self.unit_ridge_ else {}),
                **({"ridge_emb_intercept": float(self.ridge_emb_.intercept_)} if "emb" in self.knn_views_ else {}),
                "brands": {b: list(v) for b, v in self.brands_.items()}}

    @classmethod
    def load(cls, preset: CpuPreset, directory: Path, state: dict[str, Any]) -> GbmStack:
        model = cls(preset)
        model.word_, model.char_, model.name_ = model._vectorizers()
        with np.load(directory / "cpu_arrays.npz", allow_pickle=False) as arrays:
            model.word_.set_idf(arrays["word_idf"])
            model.char_.set_idf(arrays["char_idf"])
            model.name_.set_idf(arrays["name_idf"])
            model.ridge_word_ = _linear(arrays["ridge_word_coef"], state["ridge_word_intercept"])
            model.ridge_char_ = _linear(arrays["ridge_char_coef"], state["ridge_char_intercept"])
            model.unit_ridge_ = bool(state.get("unit_ridge", False))  # older models: no unit-price ridge
            if model.unit_ridge_:
                model.ridge_unit_ = _linear(arrays["ridge_unit_coef"], state["ridge_unit_intercept"])
            if "emb_ridge_coef" in arrays:
                model.ridge_emb_ = _linear(arrays["emb_ridge_coef"], state["ridge_emb_intercept"])
            matrix = sp.csr_matrix((arrays["knn_data"], arrays["knn_indices"], arrays["knn_indptr"]),
                                   shape=tuple(state["knn_shape"]))
            model.knn_ = KnnStats(preset.neighbours)
            model.knn_.matrix_, model.knn_.y_, model.knn_.unit_y_ = matrix.tocsc(), arrays["knn_y"], arrays["knn_unit_y"]
        model.knn_views_ = tuple(state.get("knn_views", ("name",)))  # older models: the name view alone
        model.knn_extra_ = {}
        for view in model.knn_views_[1:]:
            stats = model.knn_extra_[view] = KnnStats(preset.neighbours)
            path = directory / f"knn_{view}.npz"
            if view == "emb":
                with np.load(path, allow_pickle=False) as arrays:
                    stats.matrix_ = arrays["matrix"]
            else:
                stats.matrix_ = sp.load_npz(path).tocsc()  # sparse arrays only: no pickle
            stats.y_, stats.unit_y_ = model.knn_.y_, model.knn_.unit_y_
        model.y_mean_ = state["y_mean"]
        model.brands_ = {b: (float(v[0]), int(v[1])) for b, v in state["brands"].items()}
        model.booster_path_ = directory / "lightgbm.txt"  # loaded by _booster() on first use
        model.listings_path_ = directory / LISTINGS_FILE  # read by training_listings() on first use; older models lack it
        return model


def _rows(view: Any, index: np.ndarray) -> Any:
    """Select rows of a sparse matrix, array, Series or frame by position."""
    if isinstance(view, (pd.Series, pd.DataFrame)):
        return view.iloc[index].reset_index(drop=True)
    return view[index]


def _forked_dense(texts: list[str]) -> np.ndarray:
    assert _FORKED_MODEL is not None
    return _FORKED_MODEL._dense(texts)


def _linear(coef: np.ndarray, intercept: float) -> Ridge:
    """A Ridge with restored coefficients (predict only needs coef_ and intercept_)."""
    ridge = Ridge()
    ridge.coef_ = coef.astype(np.float64)
    ridge.intercept_ = float(intercept)
    ridge.n_features_in_ = coef.shape[0]
    return ridge

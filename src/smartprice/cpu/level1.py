"""Level 1 of the CPU model: text ridges, neighbour price statistics and brand prices, all on log1p(price).

`Level1.fit` fits every model on all training rows; `out_of_fold` gives LightGBM its training
features with each row scored by models that never saw it (ridges and brand means refitted per
fold; neighbours from the one index, skipping rows of the query's own fold).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..catalog import CatalogFields, split_catalog_content
from ..errors import SettingsError
from ..features import EXTRA_FEATURES, FEATURES_25, listing_row
from ..presets import CpuPreset
from .neighbours import SPREAD, STATS, NeighbourIndex, NeighbourStats, SearchSpec
from .views import TextViews, ViewSpec

log = logging.getLogger(__name__)

DENSE_FEATURES = tuple(n for n in FEATURES_25 if n not in ("brand", "category")) + EXTRA_FEATURES
# Neighbour statistics can use: item-name words, whole-listing words, item-name chars, and frozen
# sentence embeddings of the listing ("emb", needs the nn extra; it also gets a ridge of its own).
KNN_VIEWS = ("name", "word", "char", "emb")


UNIT_DIMENSIONS = ("mass", "volume", "count")  # one unit-price ridge each with unit_ridge_dims (dim_* columns)
# The ridges' conjugate-gradient tolerance: 1e-3 fits a quarter quicker than scikit-learn's 1e-4, and moves
# held-out log prices by 0.0003 on average (train.csv), far below what the model gets wrong.
RIDGE_TOL = 1e-3
MIN_DIMENSION_ROWS = 20  # fewer training rows of a dimension: no ridge of its own (its rows get 0, as rows without a unit)


def stack_features(knn_views: Sequence[str], unit_ridge: bool = False, unit_dims: bool = False,
                   spread: bool = False) -> tuple[str, ...]:
    """Names of the level-1 features, in column order: ridges, neighbour statistics per view, their spread
    per view, brand."""
    def knn(stats: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(f"knn_{stat}" if view == "name" else f"knn_{view}_{stat}" for view in knn_views for stat in stats)

    ridges = ("ridge_word", "ridge_char") + (("ridge_word_unit",) if unit_ridge else ()) + \
        (("ridge_unit_dimension",) if unit_dims else ()) + (("ridge_emb",) if "emb" in knn_views else ())
    return (*ridges, *knn(STATS), *(knn(SPREAD) if spread else ()), "brand_mean", "brand_count")


def check_knn_views(views: Sequence[str]) -> tuple[str, ...]:
    """The preset's knn_views as a tuple, or a ValueError naming the allowed views."""
    views = tuple(views)
    unknown = sorted(set(views) - set(KNN_VIEWS))
    if unknown or not views or len(set(views)) != len(views):
        raise SettingsError(f"knn_views must be distinct names among {', '.join(KNN_VIEWS)}; got {', '.join(views) or 'none'}")
    return views


@dataclass
class Listings:
    """Listings parsed once: every view's rows, the parsed numbers, brand guesses and item names."""

    views: dict[str, Any]
    raw: np.ndarray           # (n, len(DENSE_FEATURES)) parsed quantity/unit/text features
    brands: list[str]
    names: list[str]
    log_qty: np.ndarray       # (n,) log1p(total quantity in base units)

    def __len__(self) -> int:
        return len(self.names)

    def rows(self, index: np.ndarray) -> Listings:
        """The listings at positions `index`."""
        return Listings({k: v[index] for k, v in self.views.items()}, self.raw[index],
                        [self.brands[i] for i in index], [self.names[i] for i in index], self.log_qty[index])


PARSE_ROWS = 8_192  # listings parsed and tokenised at a time: their term lists are the peak of a large fit's memory


def parse(texts: Sequence[str], text_views: TextViews, fit: bool = False, embedder: Any = None) -> Listings:
    """Split, parse and vectorise listings (fit=True fits the views' IDF on them), PARSE_ROWS at a time."""
    counts: dict[str, list[Any]] = {}
    raw, brands, names, log_qty, texts_emb = [], [], [], [], []
    for start in range(0, len(texts), PARSE_ROWS):
        part = [t or "" for t in texts[start:start + PARSE_ROWS]]
        fields: list[CatalogFields] = [split_catalog_content(t) for t in part]
        rows = [listing_row(t, f) for t, f in zip(part, fields)]
        part_names = [f.item_name for f in fields]
        rests = [" ".join((*f.bullets, f.description)) for f in fields]
        for view, matrix in text_views.counts(part_names, rests).items():
            counts.setdefault(view, []).append(matrix)
        raw.append(np.array([[row[c] for c in DENSE_FEATURES] for row in rows], dtype=np.float64).reshape(len(rows), -1))
        brands += [row["brand"] for row in rows]
        log_qty.append(np.array([row["log_quantity"] for row in rows], dtype=np.float64))
        names += part_names
        if embedder is not None:
            texts_emb += [" ".join((n, r)) for n, r in zip(part_names, rests)]
    if not texts:
        empty = text_views.counts([], [])
        counts = {view: [matrix] for view, matrix in empty.items()}
        raw, log_qty = [np.zeros((0, len(DENSE_FEATURES)))], [np.zeros(0)]
    joined = {view: sp.vstack(parts, format="csr") if len(parts) > 1 else parts[0] for view, parts in counts.items()}
    views = text_views.fit_idf(joined) if fit else text_views.weigh(joined)
    if embedder is not None:
        views["emb"] = embedder.transform(texts_emb)
    return Listings(views, np.vstack(raw), brands, names, np.concatenate(log_qty))


def dimension_rows(raw: np.ndarray) -> dict[str, np.ndarray]:
    """Row positions of the listings whose unit is of each dimension (mass, volume, count), from the parsed columns."""
    return {name: np.flatnonzero(raw[:, DENSE_FEATURES.index(f"dim_{name}")] > 0) for name in UNIT_DIMENSIONS}


def brand_table(brands: Sequence[str], y: np.ndarray, smoothing: float) -> dict[str, tuple[float, int]]:
    """Smoothed mean log price and row count per brand guess ("" = no brand, left out)."""
    prior = float(y.mean())
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for brand, value in zip(brands, y.tolist()):
        if brand:
            sums[brand] = sums.get(brand, 0.0) + value
            counts[brand] = counts.get(brand, 0) + 1
    return {b: ((sums[b] + smoothing * prior) / (n + smoothing), n) for b, n in counts.items()}


def brand_lookup(brands: Sequence[str], table: dict[str, tuple[float, int]], prior: float) -> np.ndarray:
    """(n, 2): smoothed brand mean log price and training rows of the brand (prior, 0 when unseen)."""
    return np.array([table.get(b, (prior, 0)) for b in brands], dtype=np.float64).reshape(len(brands), 2)


@dataclass
class Linear:
    """A fitted ridge: predict = X @ coef + intercept (scikit-learn only at fit time)."""

    coef: np.ndarray
    intercept: float

    @classmethod
    def fit(cls, x: Any, y: np.ndarray, alpha: float) -> Linear:
        from sklearn.linear_model import Ridge

        ridge = Ridge(alpha=alpha, tol=RIDGE_TOL).fit(x, y)
        return cls(ridge.coef_.astype(np.float32), float(ridge.intercept_))

    @classmethod
    def fit_targets(cls, x: Any, targets: Sequence[np.ndarray], alpha: float) -> list[Linear]:
        """One ridge per target on the same rows, fitted together (the column statistics are computed once)."""
        if len(targets) == 1:
            return [cls.fit(x, targets[0], alpha)]
        from sklearn.linear_model import Ridge

        ridge = Ridge(alpha=alpha, tol=RIDGE_TOL).fit(x, np.column_stack(targets))
        return [cls(coef.astype(np.float32), float(b)) for coef, b in zip(ridge.coef_, ridge.intercept_)]

    def predict(self, x: Any) -> np.ndarray:
        return np.asarray(x @ self.coef, dtype=np.float64).ravel() + self.intercept


class Level1:
    """The level-1 models of one CPU model; see the module docstring."""

    def __init__(self, preset: CpuPreset) -> None:
        self.preset = preset
        self.knn_views = check_knn_views(preset.knn_views)
        self.search = SearchSpec(preset.neighbour_search, preset.exact_max_rows, preset.neighbour_max_df,
                                 preset.neighbour_strong_terms, preset.neighbour_candidates)

    @property
    def features(self) -> tuple[str, ...]:
        p = self.preset
        return stack_features(self.knn_views, p.unit_ridge, p.unit_ridge_dims, p.neighbour_spread)

    def _ridges(self, listings: Listings, y: np.ndarray) -> dict[str, Linear]:
        p = self.preset
        # log price per unit of quantity: comparable across pack sizes (log quantity added back); one fit with the word ridge
        targets = [y, y - listings.log_qty] if p.unit_ridge else [y]
        ridges = dict(zip(("word", "unit"), Linear.fit_targets(listings.views["word"], targets, p.ridge_alpha)))
        ridges["char"] = Linear.fit(listings.views["char"], y, p.ridge_alpha)
        if p.unit_ridge_dims:  # the same per unit dimension: a gram and a millilitre are priced apart
            for name, rows in dimension_rows(listings.raw).items():
                if len(rows) >= MIN_DIMENSION_ROWS:
                    ridges[f"unit_{name}"] = Linear.fit(listings.views["word"][rows], y[rows] - listings.log_qty[rows],
                                                        p.ridge_alpha)
        if "emb" in self.knn_views:
            ridges["emb"] = Linear.fit(listings.views["emb"], y, p.embed_ridge_alpha)
        return ridges

    def fit(self, listings: Listings, y: np.ndarray, threads: int = 1,
            on_index: Callable[[str], Any] | None = None) -> Level1:
        """Fit ridges, neighbour indices and brand prices on all training rows; `on_index(view)` after each index."""
        self.ridges_ = self._ridges(listings, y)
        self.indices_ = {}
        for view in self.knn_views:
            self.indices_[view] = NeighbourIndex(self.search).fit(listings.views[view], threads)
            if on_index is not None:
                on_index(view)
        self.stats_ = NeighbourStats(self.preset.neighbours).fit(y, y - listings.log_qty)
        self.y_mean_ = float(y.mean())
        self.brands_ = brand_table(listings.brands, y, self.preset.brand_smoothing)
        return self

    def out_of_fold_splits(self, listings: Listings, y: np.ndarray, splits: Sequence[np.ndarray],
                           threads: int = 1, on_fold: Callable[[int], Any] | None = None) -> list[np.ndarray]:
        """`out_of_fold` for each fold split (one fold per row each), the neighbour search done once for all splits.

        Each view is searched once for 2k + 1 neighbours over all rows; a split keeps each row's first k
        of other folds (the order a search without its fold gives). Rows left with fewer than k while
        more rows matched are searched again without their fold.
        """
        if len(splits) == 1:
            return [self.out_of_fold(listings, y, splits[0], threads, on_fold=on_fold)]
        k = self.preset.neighbours
        wide = {view: self.indices_[view].search(listings.views[view], 2 * k + 1, threads=threads)
                for view in self.knn_views}
        out = []
        for folds in splits:
            found = {}
            for view, (index, sims) in wide.items():
                other = (index >= 0) & (folds[np.maximum(index, 0)] != folds[:, None])
                order = np.argsort(~other, axis=1, kind="stable")[:, :k]  # kept neighbours first, in search order
                kept = np.take_along_axis(other, order, axis=1)
                found_index = np.where(kept, np.take_along_axis(index, order, axis=1), -1)
                found_sims = np.where(kept, np.take_along_axis(sims, order, axis=1), 0.0)
                short = np.flatnonzero(~kept.all(axis=1) & (index[:, -1] >= 0))  # more rows matched than were kept
                if len(short):
                    found_index[short], found_sims[short] = self.indices_[view].search(
                        listings.views[view][short], k, groups=folds, query_groups=folds[short], threads=threads)
                found[view] = (found_index, found_sims)
            out.append(self.out_of_fold(listings, y, folds, threads, found, on_fold=on_fold))
        return out

    def out_of_fold(self, listings: Listings, y: np.ndarray, folds: np.ndarray, threads: int = 1,
                    neighbours: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                    on_fold: Callable[[int], Any] | None = None) -> np.ndarray:
        """Level-1 features of the training rows, each from models fitted without its fold (`folds`: fold per row).

        `neighbours`: each view's (index, similarity) of each row's neighbours of other folds, if already searched;
        `on_fold(fold)` is called as each fold is done.
        """
        out = np.zeros((len(listings), len(self.features)))
        if neighbours is None:
            neighbours = {view: self.indices_[view].search(listings.views[view], self.preset.neighbours, groups=folds,
                                                            query_groups=folds, threads=threads)
                          for view in self.knn_views}
        for fold in np.unique(folds):
            train, valid = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
            part = Level1(self.preset)
            part.ridges_ = self._ridges(listings.rows(train), y[train])
            part.stats_, part.indices_ = self.stats_, self.indices_
            part.y_mean_ = float(y[train].mean())
            part.brands_ = brand_table([listings.brands[i] for i in train], y[train], self.preset.brand_smoothing)
            found = {view: (index[valid], sims[valid]) for view, (index, sims) in neighbours.items()}
            out[valid] = part._features(listings.rows(valid), found)
            if on_fold is not None:
                on_fold(int(fold))
        return out

    def transform(self, listings: Listings, threads: int = 1) -> np.ndarray:
        """Level-1 features (n, len(features)) of new listings."""
        found = {view: self.indices_[view].search(listings.views[view], self.preset.neighbours, threads=threads)
                 for view in self.knn_views}
        return self._features(listings, found)

    def _features(self, listings: Listings, found: dict[str, tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        ridges = [self.ridges_["word"].predict(listings.views["word"]), self.ridges_["char"].predict(listings.views["char"])]
        if "unit" in self.ridges_:
            ridges.append(self.ridges_["unit"].predict(listings.views["word"]) + listings.log_qty)
        if self.preset.unit_ridge_dims:  # each row scored by its dimension's ridge (all rows at once: no row slicing)
            per_unit = np.zeros(len(listings))
            for name, rows in dimension_rows(listings.raw).items():
                if f"unit_{name}" in self.ridges_ and len(rows):
                    scores = self.ridges_[f"unit_{name}"].predict(listings.views["word"]) + listings.log_qty
                    per_unit[rows] = scores[rows]
            ridges.append(per_unit)
        if "emb" in self.ridges_:
            ridges.append(self.ridges_["emb"].predict(listings.views["emb"]))
        stats = [self.stats_.transform(*found[view], listings.log_qty, self.preset.neighbour_spread)
                 for view in self.knn_views]
        knn = [s[:, :len(STATS)] for s in stats] + [s[:, len(STATS):] for s in stats if s.shape[1] > len(STATS)]
        return np.hstack([np.column_stack(ridges), *knn, brand_lookup(listings.brands, self.brands_, self.y_mean_)])

    # --- persistence ------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        """Every fitted array, by name (ridge coefficients, neighbour rows, training prices)."""
        out = {f"ridge_{name}_coef": r.coef for name, r in self.ridges_.items()}
        out.update({"train_y": self.stats_.y_, "train_unit_y": self.stats_.unit_y_})
        for view, index in self.indices_.items():
            out.update(index.arrays(f"knn_{view}"))
        return out

    def state(self) -> dict[str, Any]:
        """JSON-ready scalars: intercepts, search method per view, brand table."""
        return {"ridge_intercepts": {name: r.intercept for name, r in self.ridges_.items()},
                "knn_methods": {view: index.method_ for view, index in self.indices_.items()},
                "y_mean": self.y_mean_, "brands": {b: list(v) for b, v in self.brands_.items()}}

    @classmethod
    def restore(cls, preset: CpuPreset, arrays: Any, state: dict[str, Any]) -> Level1:
        """Rebuild from `arrays()` and `state()`."""
        level1 = cls(preset)
        level1.ridges_ = {name: Linear(arrays[f"ridge_{name}_coef"], float(b)) for name, b in state["ridge_intercepts"].items()}
        level1.indices_ = {view: NeighbourIndex.from_arrays(level1.search, state["knn_methods"][view], arrays,
                                                            f"knn_{view}")
                           for view in level1.knn_views}
        y = arrays["train_y"]
        level1.stats_ = NeighbourStats(preset.neighbours).fit(y, arrays["train_unit_y"])
        level1.y_mean_ = float(state["y_mean"])
        level1.brands_ = {b: (float(v[0]), int(v[1])) for b, v in state["brands"].items()}
        return level1


def view_spec(preset: CpuPreset) -> ViewSpec:
    """The text views a preset asks for."""
    return ViewSpec(preset.hash_bits, preset.word_ngrams, preset.char_min, preset.char_max)


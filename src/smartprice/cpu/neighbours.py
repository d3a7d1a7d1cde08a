"""Top-k cosine neighbour search, and the price statistics the CPU model reads from the neighbours.

One search serves the level-1 features (`NeighbourStats`), out-of-fold stacking and `explain`:
- "exact": a sparse top-k product (sparse_dot_topn, C++, no dense similarity block);
- "pruned": candidates from the same product over each row's `strong_terms` heaviest terms (index
  and query), then re-scored with the exact cosine: ~3x cheaper per query on long listings, and the
  similarities it returns are exact; only a neighbour the strong terms miss is lost (bench/cpu.py
  prints the share found against exact search).
Rows are L2-normalised TF-IDF (or dense embeddings, searched exactly). Terms in more than `max_df`
of the indexed rows are dropped from both sides and rows renormalised: frequent words ("ounce",
"pack") say little about which listings are alike, and their long posting lists are most of a sparse
product's cost. Ties are cut by the lower row, the same way on every path.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from ..errors import SettingsError

log = logging.getLogger(__name__)

STATS = ("mean", "median", "top1", "top1_sim", "sim_mean", "unit_price")  # columns of NeighbourStats.transform
SPREAD = ("spread", "iqr")  # and its two more with spread=True
BATCH = 512            # queries per call: bounds the memory of candidate re-scoring
SMALL_BATCH = 32       # fewer queries than this: one plain sparse product (no per-call copies of the index)
MIN_DROP_ROWS = 100    # a term is frequent only beyond this many rows too: small catalogs keep every term
POSTINGS = 1_000       # pruned: rows kept per term (its heaviest): a query touches <= strong_terms x 1,000 rows
TIE_MARGIN = 8         # extra candidates kept so that equal similarities are cut by row, the same on every path


@dataclass(frozen=True)
class SearchSpec:
    """How neighbours are searched (from the preset)."""

    method: str = "auto"         # "exact", "pruned", or "auto": exact up to exact_max_rows indexed rows
    exact_max_rows: int = 20_000  # above, exact search costs more per query than the rest of the model
    max_df: float = 0.02         # terms in more than this share of indexed rows are ignored
    strong_terms: int = 48       # pruned: the heaviest terms of each row that find candidates
    candidates: int = 2          # pruned: k * candidates rows re-scored exactly per query


def _normalise_rows(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to unit L2 norm in place (empty rows stay empty)."""
    lengths = np.diff(matrix.indptr)
    norms = np.ones(matrix.shape[0], dtype=matrix.dtype)
    full = lengths > 0
    if matrix.nnz:
        norms[full] = np.sqrt(np.add.reduceat(matrix.data.astype(np.float64)**2, matrix.indptr[:-1][full]))
    norms[norms == 0] = 1
    matrix.data /= np.repeat(norms, lengths)
    return matrix


class NeighbourIndex:
    """Top-k cosine search over the rows of one matrix; see the module docstring."""

    def __init__(self, spec: SearchSpec) -> None:
        self.spec = spec

    # --- building ---------------------------------------------------------------------------
    def fit(self, matrix: sp.csr_matrix | np.ndarray, threads: int = 1) -> NeighbourIndex:
        """Index the rows of `matrix` (sparse TF-IDF or dense embeddings, rows L2-normalised)."""
        rows = matrix.shape[0]
        self.method_ = self.spec.method if self.spec.method != "auto" else (
            "exact" if rows <= self.spec.exact_max_rows else "pruned")
        if self.method_ not in ("exact", "pruned"):
            raise SettingsError(f"neighbour_search must be exact, pruned or auto; got {self.spec.method!r}")
        if sp.issparse(matrix):
            matrix = sp.csr_matrix(matrix)
            df = np.bincount(matrix.indices, minlength=matrix.shape[1])
            self.width_ = matrix.shape[1]
            limit = max(MIN_DROP_ROWS, self.spec.max_df * rows)
            self.dropped_ = np.flatnonzero(df > limit).astype(np.int64)
            self.columns_ = np.flatnonzero((df > 0) & (df <= limit)).astype(np.int64)
            self._map_columns()
            self.rows_ = self.prepare(matrix)
            self._transpose()
        else:
            self.method_ = "exact"  # dense embeddings: one block product
            self.rows_ = np.ascontiguousarray(matrix, dtype=np.float32)
        return self

    def _transpose(self, strong: sp.csr_matrix | None = None) -> None:
        """(terms, rows) right-hand sides of the top-k product: all terms, and for "pruned" the strong ones."""
        self.rows_t_ = self.rows_.T.tocsr()
        if self.method_ == "pruned":  # each row's strong terms; each term's heaviest rows, so a query's cost is bounded
            self.strong_t_ = strong if strong is not None else \
                _strongest(_strongest(self.rows_, self.spec.strong_terms).T.tocsr(), POSTINGS)

    def _map_columns(self) -> None:
        """Original column -> compact column of the index (-1: a frequent term, or one no indexed row has)."""
        self.column_map_ = np.full(self.width_, -1, dtype=np.int32)
        self.column_map_[self.columns_] = np.arange(len(self.columns_), dtype=np.int32)
        self.frequent_ = np.zeros(self.width_, dtype=bool)
        self.frequent_[self.dropped_] = True

    def prepare(self, queries: Any) -> Any:
        """Rows in the index's space: frequent terms dropped, rows renormalised, compact columns (float32)."""
        if not sp.issparse(queries):
            return np.asarray(queries, dtype=np.float32)
        queries = sp.csr_matrix(queries, dtype=np.float32, copy=True)
        queries.data[self.frequent_[queries.indices]] = 0
        queries.eliminate_zeros()
        queries = _normalise_rows(queries)
        columns = self.column_map_[queries.indices]  # a term no indexed row has adds nothing to any similarity
        compact = sp.csr_matrix((np.where(columns >= 0, queries.data, 0), np.maximum(columns, 0), queries.indptr),
                                shape=(queries.shape[0], len(self.columns_)))
        compact.eliminate_zeros()
        return compact

    def exact(self) -> NeighbourIndex:
        """This index searched exactly (same rows and columns): what a pruned search is measured against."""
        twin = copy.copy(self)
        twin.method_ = "exact"
        return twin

    # --- searching --------------------------------------------------------------------------
    @property
    def size(self) -> int:
        """Indexed rows."""
        return self.rows_.shape[0]

    def search(self, queries: Any, k: int, groups: np.ndarray | None = None, query_groups: np.ndarray | None = None,
               threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(index (n, k) int64, cosine (n, k)) of the k most similar indexed rows, best first, ties by lower row.

        With `groups` (one label per indexed row) and `query_groups` (one per query), a query never
        gets an indexed row of its own group: out-of-fold neighbours from one index. Where fewer
        than k rows match at all, the rest are -1 with similarity 0.
        """
        queries = self.prepare(queries)
        if groups is None:
            return self._search(queries, k, threads)
        index = np.full((queries.shape[0], k), -1, dtype=np.int64)
        sims = np.zeros((queries.shape[0], k))
        for group in np.unique(query_groups):
            mine = np.flatnonzero(query_groups == group)
            if self.method_ == "pruned":  # the one index, the group's own rows left out of the candidates
                index[mine], sims[mine] = self._search(queries[mine], k, threads, exclude=groups == group)
                continue
            others = np.flatnonzero(groups != group)  # exact: the rows of other groups
            found, found_sims = self._subset(others)._search(queries[mine], k, threads)
            index[mine] = np.where(found >= 0, others[np.maximum(found, 0)], -1)
            sims[mine] = found_sims
        return index, sims

    def _subset(self, rows: np.ndarray) -> NeighbourIndex:
        """An index of the same kind over some of this index's rows (same columns)."""
        part = NeighbourIndex(self.spec)
        part.method_ = self.method_
        part.rows_ = self.rows_[rows]
        if sp.issparse(part.rows_):
            part._transpose()
        return part

    def _search(self, queries: Any, k: int, threads: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Prepared queries, BATCH at a time."""
        n = queries.shape[0]
        index = np.full((n, k), -1, dtype=np.int64)
        sims = np.zeros((n, k))
        if self.size == 0:
            return index, sims
        for start in range(0, n, BATCH):
            block = slice(start, min(n, start + BATCH))
            if self.method_ == "exact":
                index[block], sims[block] = self._top(queries[block], k, threads)
            else:
                index[block], sims[block] = self._pruned(queries[block], k, threads, exclude)
        return index, sims

    def _top(self, queries: Any, k: int, threads: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k of each query over all indexed rows.

        A few queries take one small product and a dense top-k; batches take the C++ top-k product,
        which never builds the (queries, rows) block. Both keep k + TIE_MARGIN candidates and cut
        them with the same order (similarity, then lower row), so they agree exactly.
        """
        n, wanted = queries.shape[0], min(self.size, k + TIE_MARGIN)
        if n < SMALL_BATCH or not sp.issparse(self.rows_) or exclude is not None:
            return self._block_top(queries, k, wanted, exclude)
        from sparse_dot_topn import sp_matmul_topn

        product = sp_matmul_topn(queries, self.rows_t_, top_n=wanted, n_threads=threads if threads > 1 else None)
        candidates, sims = _product_arrays(product, wanted)
        index, best = _best(candidates, sims, k)
        # More rows tied with the k-th than the candidates hold: the product cut the tie arbitrarily; cut it by row.
        last = np.where(candidates >= 0, sims, np.inf).min(axis=1)
        tied = np.flatnonzero((candidates[:, -1] >= 0) & (index[:, -1] >= 0) & (last >= best[:, -1]))
        if len(tied):
            index[tied], best[tied] = self._block_top(queries[tied], k, wanted, None)
        return index, best

    def _block_top(self, queries: Any, k: int, wanted: int, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k from the whole (queries, rows) similarity block: a few queries, or ties to cut by row."""
        block = queries @ (self.rows_t_ if sp.issparse(self.rows_) else self.rows_.T)  # (n, rows)
        block = block.toarray() if sp.issparse(block) else np.asarray(block)
        if exclude is not None:
            block[:, exclude] = 0
        top = np.argpartition(-block, wanted - 1, axis=1)[:, :wanted]
        top_sims = np.take_along_axis(block, top, axis=1)
        kth = top_sims.min(axis=1)
        for row in np.flatnonzero((kth > 0) & ((block >= kth[:, None]).sum(axis=1) > wanted)):
            above = np.flatnonzero(block[row] > kth[row])  # more rows tie at the cut than fit: the lowest rows of the tie
            top[row] = np.concatenate([above, np.flatnonzero(block[row] == kth[row])[:wanted - len(above)]])
            top_sims[row] = block[row, top[row]]
        if sp.issparse(self.rows_):
            top[top_sims == 0] = -1  # no shared term: not a neighbour (the top-k product keeps no zeros either)
        return _best(top, top_sims, k)

    def _pruned(self, queries: Any, k: int, threads: int, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Candidates from the strong terms' top-k product, re-scored with the exact cosine.

        `exclude` (a mask of indexed rows) removes rows from the candidates; more are asked for so
        that k usually remain. A query left with fewer than k is searched exactly instead.
        """
        from sparse_dot_topn import sp_matmul_topn

        n = queries.shape[0]
        wanted = min(self.size, (k * self.spec.candidates + TIE_MARGIN) * (2 if exclude is not None else 1))
        product = sp_matmul_topn(_strongest(queries, self.spec.strong_terms), self.strong_t_, top_n=wanted,
                                 n_threads=threads if threads > 1 and n >= SMALL_BATCH else None)
        candidates, _ = _product_arrays(product, wanted)
        if exclude is not None:
            candidates[exclude[np.maximum(candidates, 0)]] = -1
        exact = _pair_cosines(queries, self.rows_, candidates)
        index, sims = _best(candidates, exact, k)
        few = np.flatnonzero((index < 0).any(axis=1))  # strong terms found too few rows: search these exactly
        if len(few):
            index[few], sims[few] = self._top(queries[few], k, threads, exclude)
        return index, sims

    # --- persistence ------------------------------------------------------------------------
    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """Named arrays that restore this index."""
        if not sp.issparse(self.rows_):
            return {f"{prefix}_dense": self.rows_}
        out = {f"{prefix}_dropped": self.dropped_, f"{prefix}_columns": self.columns_,
               f"{prefix}_width": np.asarray([self.width_], dtype=np.int64), f"{prefix}_data": self.rows_.data,
               f"{prefix}_indices": self.rows_.indices, f"{prefix}_indptr": self.rows_.indptr}
        if self.method_ == "pruned":  # saved, not recomputed: choosing each row's strong terms is a sort of every entry
            out.update({f"{prefix}_strong_data": self.strong_t_.data, f"{prefix}_strong_indices": self.strong_t_.indices,
                        f"{prefix}_strong_indptr": self.strong_t_.indptr})
        return out

    @classmethod
    def from_arrays(cls, spec: SearchSpec, method: str, arrays: Any, prefix: str) -> NeighbourIndex:
        """Restore an index saved with `arrays`."""
        index = cls(spec)
        index.method_ = method
        if f"{prefix}_dense" in arrays:
            index.rows_ = np.ascontiguousarray(arrays[f"{prefix}_dense"], dtype=np.float32)
        else:
            index.dropped_, index.columns_ = arrays[f"{prefix}_dropped"], arrays[f"{prefix}_columns"]
            index.width_ = int(arrays[f"{prefix}_width"][0])
            index._map_columns()
            indptr = arrays[f"{prefix}_indptr"]
            index.rows_ = sp.csr_matrix((arrays[f"{prefix}_data"], arrays[f"{prefix}_indices"], indptr),
                                        shape=(len(indptr) - 1, len(index.columns_)))
            strong = None
            if method == "pruned":
                strong = sp.csr_matrix((arrays[f"{prefix}_strong_data"], arrays[f"{prefix}_strong_indices"],
                                        arrays[f"{prefix}_strong_indptr"]), shape=index.rows_.shape[::-1])
            index._transpose(strong)
        return index


def _strongest(matrix: sp.csr_matrix, terms: int) -> sp.csr_matrix:
    """Each row's `terms` largest entries (ties by column), the rest dropped."""
    lengths = np.diff(matrix.indptr)
    if not matrix.nnz or lengths.max() <= terms:
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), lengths)
    order = np.lexsort((matrix.indices, -matrix.data, rows))  # by row, heaviest first
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - np.repeat(matrix.indptr[:-1], lengths)
    keep = rank < terms
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=matrix.shape[0]))])
    return sp.csr_matrix((matrix.data[keep], matrix.indices[keep], indptr), shape=matrix.shape)


def _product_arrays(product: sp.csr_matrix, width: int) -> tuple[np.ndarray, np.ndarray]:
    """A top-k product's rows as padded (n, width) candidate and similarity arrays (-1 / 0 where none)."""
    n = product.shape[0]
    lengths = np.diff(product.indptr)
    rows = np.repeat(np.arange(n), lengths)
    slot = np.arange(product.nnz) - np.repeat(product.indptr[:-1], lengths)
    candidates = np.full((n, width), -1, dtype=np.int64)
    sims = np.zeros((n, width), dtype=np.float32)
    candidates[rows, slot], sims[rows, slot] = product.indices, product.data
    return candidates, sims


def _best(candidates: np.ndarray, sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best candidates per row (-1 = none), by similarity then lower row; padded with -1 / 0."""
    sims = np.where(candidates >= 0, sims, -np.inf).astype(np.float64)
    order = np.lexsort((np.where(candidates >= 0, candidates, np.iinfo(np.int64).max), -sims), axis=1)[:, :k]
    index = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    best = np.take_along_axis(sims, order, axis=1)
    index[~np.isfinite(best)] = -1
    best[~np.isfinite(best)] = 0.0
    if index.shape[1] < k:
        index = np.pad(index, ((0, 0), (0, k - index.shape[1])), constant_values=-1)
        best = np.pad(best, ((0, 0), (0, k - best.shape[1])))
    return index, best


def _pair_cosines(queries: Any, rows: Any, labels: np.ndarray) -> np.ndarray:
    """Cosine of query i with indexed row labels[i, j], (n, m): row-wise sparse dot products."""
    n, m = labels.shape
    if not sp.issparse(rows):
        return np.einsum("nd,nmd->nm", np.asarray(queries, dtype=np.float32), rows[labels]).astype(np.float64)
    left = queries[np.repeat(np.arange(n), m)]
    right = rows[labels.ravel()]
    return np.asarray(left.multiply(right).sum(axis=1), dtype=np.float64).reshape(n, m)


class NeighbourStats:
    """Price statistics of each listing's k nearest training listings in one view (see STATS)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def fit(self, y: np.ndarray, unit_y: np.ndarray) -> NeighbourStats:
        """Prices (log1p) of the indexed rows, and their log price per unit of quantity (y - log quantity)."""
        self.y_ = np.asarray(y, dtype=np.float64)
        self.unit_y_ = np.asarray(unit_y, dtype=np.float64)
        self.prior_ = float(self.y_.mean()) if len(self.y_) else 0.0
        self.unit_prior_ = float(self.unit_y_.mean()) if len(self.y_) else 0.0
        return self

    def transform(self, index: np.ndarray, sims: np.ndarray, log_qty: np.ndarray, spread: bool = False) -> np.ndarray:
        """(n, 6): similarity-weighted mean price, median, top-1 price and similarity, mean similarity, unit-price
        estimate; with `spread`, (n, 8): then how far the neighbours' prices disagree, their similarity-weighted
        standard deviation and interquartile range (where they agree, their mean is worth more)."""
        missing = index < 0
        safe = np.maximum(index, 0)
        prices = np.where(missing, self.prior_, self.y_[safe])
        unit = np.where(missing, self.unit_prior_, self.unit_y_[safe])
        weights = np.where(missing, 0.0, np.clip(sims, 1e-3, None) ** 2) + 1e-12
        total = weights.sum(1)
        out = np.empty((len(index), len(STATS) + (len(SPREAD) if spread else 0)))
        out[:, 0] = (weights * prices).sum(1) / total
        out[:, 1] = np.median(prices, axis=1)
        out[:, 2] = prices[:, 0]
        out[:, 3] = sims[:, 0]
        out[:, 4] = sims.mean(1)
        out[:, 5] = (weights * unit).sum(1) / total + log_qty
        if spread:
            out[:, 6] = np.sqrt((weights * (prices - out[:, :1]) ** 2).sum(1) / total)
            ordered = np.sort(prices, axis=1)  # quartiles by linear interpolation (np.quantile's default), one sort
            out[:, 7] = _sorted_quantile(ordered, 0.75) - _sorted_quantile(ordered, 0.25)
        return out


def _sorted_quantile(ordered: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile of each row of an (n, k) array sorted along its rows, interpolated linearly between
    ranks (np.quantile's default method, without its per-call overhead: this runs for every listing)."""
    position = q * (ordered.shape[1] - 1)
    low = int(np.floor(position))
    high, t = min(low + 1, ordered.shape[1] - 1), position - low
    a, b = ordered[:, low], ordered[:, high]
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t  # np.quantile's own rounding, value for value

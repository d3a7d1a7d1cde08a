"""Text -> sparse TF-IDF rows, tokenised once: the three views the CPU model reads.

- word: word 1..N-grams of the whole listing (name, bullets, description)
- name: word 1-2-grams of the item name (the neighbour search's main view)
- char: char 2-5-grams inside the item name's words (brand and size fragments, robust to spelling)

Terms are hashed (pandas' vectorised SipHash, stable across processes and machines) into 2**bits
columns, so nothing but the IDF vectors is fitted, and predicting needs no scikit-learn.
Rows are sublinear TF (1 + log count) x IDF, L2-normalised: cosine similarity is a dot product.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

# Words of 2+ word characters, as scikit-learn's default r"(?u)\b\w\w+\b": a greedy run can only start
# and end at a word boundary, so findall gives the same words without checking them (25% quicker).
TOKEN_RE = re.compile(r"\w\w+")
VIEWS = ("word", "name", "char")


def word_ngrams(tokens: list[str], longest: int) -> list[str]:
    """["green", "taco", "sauce"], 2 -> ["green", "taco", "sauce", "green taco", "taco sauce"]."""
    terms = list(tokens)
    if longest >= 2:
        terms += [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]  # the quickest way Python joins pairs
    for n in range(3, longest + 1):
        terms += [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return terms


def char_wb_ngrams(word: str, shortest: int, longest: int) -> list[str]:
    """Char n-grams of one lower-cased word padded with spaces: "taco" -> " t", "ta", ..., " taco ".

    A word shorter than n counts once, whole (as scikit-learn's char_wb analyzer does).
    """
    padded = f" {word} "
    size = len(padded)
    terms: list[str] = []
    for n in range(shortest, longest + 1):
        if size <= n:
            terms.append(padded)
            break
        terms += [padded[i:i + n] for i in range(size - n + 1)]
    return terms


def hash_terms(terms: list[str], bits: int) -> np.ndarray:
    """Column of each term in a 2**bits hashed space (int32); the same on every machine and process."""
    if not terms:
        return np.zeros(0, dtype=np.int32)
    strings = np.fromiter(terms, dtype=object, count=len(terms))  # 2x quicker than np.asarray for a list of str
    return (pd.util.hash_array(strings, categorize=False) & np.uint64(2**bits - 1)).astype(np.int32)


class CharColumns:
    """Hashed char n-gram columns per word, cached: item names reuse a small vocabulary of words."""

    MAX_WORDS = 200_000  # ~100 MB at most; the cache starts over when full

    def __init__(self, shortest: int, longest: int, bits: int) -> None:
        self.shortest, self.longest, self.bits = shortest, longest, bits
        self.cache: dict[str, list[int]] = {}

    def columns(self, words: list[list[str]]) -> tuple[list[int], list[int]]:
        """(flat column list, count per row) for rows of lower-cased words."""
        cache = self.cache
        new = {w for row in words for w in row if w not in cache}
        if new:
            if len(cache) + len(new) > self.MAX_WORDS:
                cache.clear()
                new = {w for row in words for w in row}
            new_words = list(new)
            grams = [char_wb_ngrams(w, self.shortest, self.longest) for w in new_words]
            hashed = hash_terms([g for gs in grams for g in gs], self.bits).tolist()
            start = 0
            for word, gs in zip(new_words, grams):
                cache[word] = hashed[start:start + len(gs)]
                start += len(gs)
        flat: list[int] = []
        lengths = []
        for row in words:
            before = len(flat)
            for w in row:
                flat += cache[w]
            lengths.append(len(flat) - before)
        return flat, lengths


@dataclass(frozen=True)
class ViewSpec:
    """How the views are built: hashed width and n-gram ranges (from the preset)."""

    hash_bits: int = 20
    word_ngrams: int = 2
    char_min: int = 2
    char_max: int = 5


def _counts(row_lengths: list[int], columns: np.ndarray, bits: int) -> sp.csr_matrix:
    """Hashed term counts (rows, 2**bits) from each row's columns, duplicates summed, float32."""
    lengths = np.asarray(row_lengths, dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    matrix = sp.csr_matrix((np.ones(len(columns), dtype=np.float32), columns, indptr),
                           shape=(len(lengths), 2**bits))
    matrix.sum_duplicates()  # also sorts each row's columns
    return matrix


class TextViews:
    """The three TF-IDF views of listings; fitted state is one IDF vector per view."""

    def __init__(self, spec: ViewSpec) -> None:
        self.spec = spec
        self.chars = CharColumns(spec.char_min, spec.char_max, spec.hash_bits)

    def counts(self, names: Sequence[str], rests: Sequence[str]) -> dict[str, sp.csr_matrix]:
        """Hashed term counts per view; each listing is tokenised once (the name's words lead the listing's)."""
        spec, bits = self.spec, self.spec.hash_bits
        word_terms: list[str] = []
        name_terms: list[str] = []
        word_len, name_len, char_words = [], [], []
        for name, rest in zip(names, rests):
            lower = name.lower()
            name_tokens = TOKEN_RE.findall(lower)
            terms = word_ngrams(name_tokens + TOKEN_RE.findall(rest.lower()), spec.word_ngrams)
            word_terms += terms
            word_len.append(len(terms))
            terms = word_ngrams(name_tokens, 2)
            name_terms += terms
            name_len.append(len(terms))
            char_words.append(lower.split())
        hashed = hash_terms(word_terms + name_terms, bits)
        char_flat, char_len = self.chars.columns(char_words)
        return {"word": _counts(word_len, hashed[:len(word_terms)], bits),
                "name": _counts(name_len, hashed[len(word_terms):], bits),
                "char": _counts(char_len, np.asarray(char_flat, dtype=np.int32), bits)}

    def fit_idf(self, counts: dict[str, sp.csr_matrix]) -> dict[str, sp.csr_matrix]:
        """Fit each view's IDF on these term counts and return their TF-IDF rows."""
        self.idf_ = {view: fit_idf(matrix) for view, matrix in counts.items()}
        return self.weigh(counts)

    def weigh(self, counts: dict[str, sp.csr_matrix]) -> dict[str, sp.csr_matrix]:
        """TF-IDF rows of term counts, with the fitted IDF."""
        return {view: tfidf(matrix, self.idf_[view]) for view, matrix in counts.items()}

    def transform(self, names: Sequence[str], rests: Sequence[str]) -> dict[str, sp.csr_matrix]:
        """TF-IDF rows of every view with the fitted IDF."""
        return self.weigh(self.counts(names, rests))


def fit_idf(counts: sp.csr_matrix) -> np.ndarray:
    """Smoothed IDF per column, ln((1 + n) / (1 + df)) + 1, float32 (as scikit-learn's TfidfTransformer)."""
    df = np.bincount(counts.indices, minlength=counts.shape[1])
    return (np.log((1 + counts.shape[0]) / (1 + df)) + 1).astype(np.float32)


def tfidf(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Sublinear TF x IDF, rows scaled to unit L2 norm (empty rows stay empty)."""
    matrix = counts.copy()
    matrix.data = (1 + np.log(matrix.data)) * idf[matrix.indices]
    lengths = np.diff(matrix.indptr)
    norms = np.ones(matrix.shape[0], dtype=np.float32)
    full = lengths > 0
    if matrix.nnz:
        norms[full] = np.sqrt(np.add.reduceat(matrix.data**2, matrix.indptr[:-1][full]))
    matrix.data /= np.repeat(norms, lengths)
    return matrix

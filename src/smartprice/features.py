"""Engineered features from catalog fields, and the four named feature sets (15/20/22/25).

`parse_listings` turns texts into one row of raw values per listing; `FeatureEncoder`
label-encodes brand/category and scales the numbers with statistics fitted on training rows
only, and round-trips through JSON so it is saved with every model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .catalog import CatalogFields, split_catalog_content
from .errors import SettingsError
from .units import DIMENSIONS, UNKNOWN, normalise_unit, parse_pack_count, parse_size

# --- the named feature sets: defined here and nowhere else ----------------------------------
FEATURES_15 = (
    "value",             # the Value: field, in the listing's own unit (0 when absent)
    "pack_size",         # items in the listing: "Pack of 6" -> 6, default 1
    "total_quantity",    # Value converted to the base unit of its dimension (g, ml, items, cm)
    "text_length",       # characters in catalog_content
    "has_value",         # 1 when a Value: field was parsed
    "brand",             # label code of the guessed brand (0 = unknown / rare)
    "category",          # label code of the keyword-guessed category (0 = other)
    "word_count",        # words in catalog_content
    "has_numbers",       # 1 when the item name contains a digit
    "has_capitals",      # 1 when the item name has an all-caps word of 3+ letters
    "log_quantity",      # log1p(total_quantity)
    "value_per_unit",    # total_quantity / pack_size: the size of one item
    "is_pack",           # 1 when pack_size > 1
    "bullet_points",     # number of bullet points
    "quantity_category", # total_quantity bucket 0..5 on a log10 scale, within its dimension
)
FEATURES_20 = FEATURES_15 + (
    "has_description",   # 1 when a Product Description: is present
    "num_sentences",     # sentence-ending marks in the text
    "avg_word_length",   # mean characters per word
    "price_keywords",    # count of premium / value words (organic, gourmet, bulk, ...)
    "unit_type",         # dimension code: 0 unknown, 1 mass, 2 volume, 3 count, 4 length, 5 area
)
FEATURES_22 = FEATURES_20 + (
    "vocab_richness",    # distinct words / words
    "bulk_indicators",   # count of bulk words (case, bulk, wholesale, family size, ...)
)
FEATURES_25 = FEATURES_22 + (
    "comma_count",       # commas in the item name
    "is_large_pack",     # 1 when pack_size >= 12
    "has_fraction",      # 1 when the item name holds a fraction or decimal ("1/2", "11.25")
)
FEATURE_SETS: dict[int, tuple[str, ...]] = {15: FEATURES_15, 20: FEATURES_20, 22: FEATURES_22, 25: FEATURES_25}
CATEGORICAL = ("brand", "category")
MAX_QUANTITY = 1e9  # base units; caps absurd values ("Value: 1e308") so every feature stays finite  # label-encoded, never scaled

# Extra numeric columns the CPU model uses beside the 25 (trees need no scaling).
EXTRA_FEATURES = (
    "name_size",         # first size stated in the item name, in base units (0 if none)
    "name_length",       # characters in the item name
    "dim_mass", "dim_volume", "dim_count",  # one-hot of the unit dimension
)

# --- keyword tables --------------------------------------------------------------------------
# Counted over the listing's lower-cased words (set lookups: far quicker than alternation regexes).
PRICE_WORDS = frozenset("premium organic gourmet luxury artisan imported handmade natural gift deluxe professional "
                        "authentic certified kosher non-gmo gluten vegan keto".split())
BULK_WORDS = frozenset("bulk case wholesale family value variety multipack multi-pack party club pack count "
                       "servings".split())
WORD_RE = re.compile(r"[A-Za-z0-9'-]+")
SENTENCE_END_RE = re.compile(r"[.!?](?:\s|$)")
DIGIT_RE = re.compile(r"\d")
CAPS_WORD_RE = re.compile(r"\b[A-Z]{3,}\b")
FRACTION_RE = re.compile(r"\d+/\d+|\d+\.\d+")

# First matching entry wins; order from specific to general.
CATEGORY_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("coffee", ("coffee", "espresso", "k-cup", "kcup", "keurig")),
    ("tea", ("tea", "matcha", "chai")),
    ("beverage", ("juice", "soda", "water", "drink", "beverage", "lemonade", "energy")),
    ("sauce", ("sauce", "salsa", "ketchup", "mustard", "dressing", "marinade", "vinegar", "mayo")),
    ("spice", ("spice", "seasoning", "pepper", "salt", "cinnamon", "herb", "rub")),
    ("oil", ("oil", "ghee", "butter")),
    ("candy", ("candy", "chocolate", "gum", "gummies", "gummy", "lollipop", "caramel", "mints")),
    ("snack", ("chips", "snack", "cracker", "crackers", "popcorn", "pretzel", "jerky", "nuts", "almonds", "bar", "bars")),
    ("baking", ("flour", "sugar", "baking", "yeast", "cake", "cookie", "cookies", "mix", "frosting", "syrup", "honey")),
    ("grain", ("rice", "pasta", "noodle", "noodles", "oats", "oatmeal", "cereal", "quinoa", "grain", "bread")),
    ("canned", ("canned", "soup", "beans", "broth", "tuna", "stock")),
    ("dairy", ("milk", "cheese", "yogurt", "cream", "creamer")),
    ("supplement", ("vitamin", "supplement", "protein", "capsules", "probiotic", "collagen")),
    ("pet", ("dog", "cat", "pet", "puppy", "kitten")),
    ("baby", ("baby", "infant", "toddler")),
    ("household", ("detergent", "cleaner", "paper", "towel", "trash", "soap", "wipes")),
)
_CATEGORY_RANK = {word: rank for rank, (_, words) in enumerate(CATEGORY_KEYWORDS) for word in words}
_CATEGORY_RE = re.compile(r"\b(" + "|".join(map(re.escape, sorted(_CATEGORY_RANK, key=len, reverse=True))) + r")\b")
# A brand is the item name's leading words before a separator: "Goya Foods Sazonador, 30 Ounce" -> "goya foods"
BRAND_SPLIT_RE = re.compile(r"[,\-–—|(:]|\b\d")


def guess_brand(item_name: str) -> str:
    """Lower-cased first two words of the item name: "La Victoria Green Taco Sauce" -> "la victoria"."""
    head = BRAND_SPLIT_RE.split(item_name or "", maxsplit=1)[0]
    words = WORD_RE.findall(head.lower())
    return " ".join(words[:2])


def guess_category(text: str) -> str:
    """Keyword category of an item name: "Green Taco Sauce Mild" -> "sauce"; no match -> "other"."""
    ranks = [_CATEGORY_RANK[w] for w in _CATEGORY_RE.findall((text or "").lower())]
    return CATEGORY_KEYWORDS[min(ranks)][0] if ranks else "other"


def _quantity_bucket(quantity: float) -> int:
    """0 for none, then log10 buckets 1..5 (<10, <100, <1000, <10000, larger)."""
    if quantity <= 0:
        return 0
    return int(min(5, 1 + max(0.0, math.floor(math.log10(max(quantity, 1.0))))))


def _occurrences(keywords: frozenset[str], words: list[str]) -> int:
    """How many of `words` are keywords; most listings have none, which one set intersection finds."""
    found = keywords.intersection(words)
    return sum(map(words.count, found)) if found else 0


def listing_row(text: str, fields: CatalogFields | None = None) -> dict[str, Any]:
    """All raw feature values of one listing (brand/category as strings, before encoding)."""
    fields = fields or split_catalog_content(text)
    name = fields.item_name
    lower = text.lower()
    words = WORD_RE.findall(lower)
    unit = normalise_unit(fields.unit)
    pack = parse_pack_count(name)
    size = parse_size(name)
    value = fields.value if fields.value is not None and fields.value > 0 else 0.0
    if unit is UNKNOWN and value > 0 and size is not None:  # "Unit: None": use the unit stated in the name
        unit = size[1]
    total = min(value * unit.factor, MAX_QUANTITY)
    name_size = min(size[0] * size[1].factor, MAX_QUANTITY) if size else 0.0
    dimension = unit.dimension
    return {
        "value": value,
        "pack_size": float(pack),
        "total_quantity": total,
        "text_length": float(len(text)),
        "has_value": float(fields.value is not None),
        "brand": guess_brand(name),
        "category": guess_category(name),
        "word_count": float(len(words)),
        "has_numbers": float(bool(DIGIT_RE.search(name))),
        "has_capitals": float(bool(CAPS_WORD_RE.search(name))),
        "log_quantity": math.log1p(total),
        "value_per_unit": total / pack,
        "is_pack": float(pack > 1),
        "bullet_points": float(len(fields.bullets)),
        "quantity_category": float(_quantity_bucket(total)),
        "has_description": float(bool(fields.description)),
        "num_sentences": float(len(SENTENCE_END_RE.findall(text))),
        "avg_word_length": len("".join(words)) / len(words) if words else 0.0,
        "price_keywords": float(_occurrences(PRICE_WORDS, words)),
        "unit_type": float(DIMENSIONS.index(dimension)),
        "vocab_richness": len(set(words)) / len(words) if words else 0.0,
        "bulk_indicators": float(_occurrences(BULK_WORDS, words)),
        "comma_count": float(name.count(",")),
        "is_large_pack": float(pack >= 12),
        "has_fraction": float(bool(FRACTION_RE.search(name))),
        "name_size": name_size,
        "name_length": float(len(name)),
        "dim_mass": float(dimension == "mass"),
        "dim_volume": float(dimension == "volume"),
        "dim_count": float(dimension == "count"),
    }


def parse_listings(texts: Sequence[str]) -> tuple[list[CatalogFields], pd.DataFrame]:
    """Fields and raw features of many listings, one row each, in input order."""
    fields = [split_catalog_content(t or "") for t in texts]
    raw = pd.DataFrame([listing_row(f_text or "", f) for f_text, f in zip(texts, fields)])
    return fields, raw


class FeatureEncoder:
    """Label-encode brand/category, log-compress counts and standardise; fitted on training rows only.

    Codes: 0 is reserved for unknown or rare values, so unseen brands at predict time are safe.
    """

    def __init__(self, feature_set: int = 25, min_brand_count: int = 2) -> None:
        self.feature_set = feature_set
        self.min_brand_count = min_brand_count

    @property
    def names(self) -> tuple[str, ...]:
        if self.feature_set not in FEATURE_SETS:
            raise SettingsError(f"unknown feature set {self.feature_set}; choose one of {sorted(FEATURE_SETS)}")
        return FEATURE_SETS[self.feature_set]

    def fit(self, raw: pd.DataFrame) -> FeatureEncoder:
        """Learn category codes and scaling statistics from training rows' raw features."""
        counts = raw["brand"].value_counts()
        brands = sorted(b for b, n in counts.items() if n >= self.min_brand_count and b)
        self.codes_ = {
            "brand": {b: i + 1 for i, b in enumerate(brands)},
            "category": {c: i + 1 for i, c in enumerate(sorted(raw["category"].unique()))},
        }
        numeric = self._encode(raw)
        self.mean_ = numeric.mean(axis=0)
        self.scale_ = numeric.std(axis=0)
        self.scale_[self.scale_ < 1e-9] = 1.0
        return self

    def _encode(self, raw: pd.DataFrame) -> np.ndarray:
        columns = []
        for name in self.names:
            if name in CATEGORICAL:
                columns.append(raw[name].map(self.codes_[name]).fillna(0).to_numpy(dtype=float))
            else:
                values = raw[name].to_numpy(dtype=float)
                columns.append(np.log1p(np.clip(values, 0, None)))  # heavy tails -> log scale
        return np.stack(columns, axis=1)

    def transform(self, raw: pd.DataFrame) -> np.ndarray:
        """Standardised matrix (n, len(names)), float32; brand/category codes are standardised too."""
        if not hasattr(self, "codes_"):
            raise RuntimeError("FeatureEncoder is not fitted; call fit() on training rows first")
        return ((self._encode(raw) - self.mean_) / self.scale_).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (saved beside every model)."""
        return {"feature_set": self.feature_set, "min_brand_count": self.min_brand_count,
                "codes": self.codes_, "mean": self.mean_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> FeatureEncoder:
        encoder = cls(state["feature_set"], state["min_brand_count"])
        encoder.codes_ = state["codes"]
        encoder.mean_ = np.asarray(state["mean"], dtype=float)
        encoder.scale_ = np.asarray(state["scale"], dtype=float)
        return encoder

"""One listing's answer in words a non-programmer follows: the explanation grouped, as percentages of the price.

The CPU model's contributions are additive on log1p(price): the bias is where every listing starts
(about the typical training price) and each feature moves it. exp(contribution) is the factor it
applies to 1 + price, so a group's effect reads as "+42%" or "-29%".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

# Feature groups a reader recognises, first match wins; names are the CPU stack's (cpu/level1.py, features.py).
SIZE_FEATURES = frozenset({"value", "pack_size", "total_quantity", "has_value", "log_quantity", "value_per_unit", "is_pack",
                           "quantity_category", "unit_type", "is_large_pack", "name_size", "dim_mass", "dim_volume",
                           "dim_count"})
WORD_FEATURES = frozenset({"price_keywords", "bulk_indicators"})
GROUPS = (
    ("Prices of similar training listings", lambda name: name.startswith("knn_")),
    ("The words of the listing", lambda name: name.startswith("ridge_")),
    ("The brand", lambda name: name.startswith("brand")),
    ("Size, quantity and pack", lambda name: name in SIZE_FEATURES),
    ("Premium or bulk words (organic, gourmet, bulk, case ...)", lambda name: name in WORD_FEATURES),
    ("How the listing is written (length, bullet points ...)", lambda name: True),
)
# Plain names for the signals a reader sees most; any other keeps its feature name.
PLAIN = {
    "ridge_word": "words of the listing", "ridge_char": "spelling of the item name", "ridge_word_unit": "words, per unit",
    "ridge_emb": "meaning of the listing", "knn_mean": "average price of similar names",
    "knn_median": "median price of similar names",
    "knn_top1": "price of the most similar name", "knn_top1_sim": "how close the most similar name is",
    "knn_sim_mean": "how close similar names are", "knn_unit_price": "unit price of similar names",
    "brand_mean": "average price of the brand", "brand_count": "how often the brand was seen",
    "value": "the Value field", "pack_size": "pack count", "total_quantity": "total quantity", "log_quantity": "total quantity",
    "value_per_unit": "size of one item", "name_size": "size stated in the name", "text_length": "length of the text",
}
TOP_SIGNALS = 8  # individual signals listed under the groups
SHOWN = 0.005    # smaller effects (under 0.5%, which would read "0%") are left out


@dataclass(frozen=True)
class Effect:
    """One group's or signal's effect: label, log1p contribution and the percentage it moves 1 + price by."""

    label: str
    log_change: float
    percent: float

    @property
    def direction(self) -> str:
        return "raised" if self.log_change > 0 else "lowered" if self.log_change < 0 else "did not move"


def _effect(label: str, log_change: float) -> Effect:
    return Effect(label, log_change, (math.exp(log_change) - 1) * 100)


def plain_name(feature: str) -> str:
    """'knn_word_mean' -> 'average price of similar names (word view)' where known, else the name with spaces."""
    if feature in PLAIN:
        return PLAIN[feature]
    for view in ("word", "char", "emb"):
        prefix = f"knn_{view}_"
        if feature.startswith(prefix) and f"knn_{feature[len(prefix):]}" in PLAIN:
            where = {"word": "whole listings", "char": "spelling", "emb": "meaning"}[view]
            return PLAIN[f"knn_{feature[len(prefix):]}"].replace("similar names", f"similar listings ({where})")
    return feature.replace("_", " ")


def effects(contributions: dict[str, float]) -> tuple[float, list[Effect], list[Effect]]:
    """(starting price, group effects largest first, the TOP_SIGNALS largest single signals) of one explanation."""
    bias = contributions.get("bias", 0.0)
    totals = {label: 0.0 for label, _ in GROUPS}
    for name, value in contributions.items():
        if name != "bias":
            totals[next(label for label, test in GROUPS if test(name))] += value
    groups = sorted((_effect(label, value) for label, value in totals.items() if abs(value) >= SHOWN),
                    key=lambda e: -abs(e.log_change))
    singles = sorted(((name, value) for name, value in contributions.items() if name != "bias"), key=lambda kv: -abs(kv[1]))
    signals = [_effect(plain_name(name), value) for name, value in singles[:TOP_SIGNALS] if abs(value) >= SHOWN]
    return math.expm1(bias), groups, signals


def quantity_line(parsed: dict[str, Any]) -> str:
    """'72 Fl Oz (volume), 2129.29 ml in all' from explain's parsed fields (the pack count is shown on its own)."""
    value = f"{parsed['value']:g} {parsed['unit']}".strip() if parsed["value"] is not None else "no Value field"
    dimension = f" ({parsed['dimension']})" if parsed["dimension"] in ("mass", "volume", "length", "area") else ""
    total, unit = parsed["total_quantity"], parsed["base_unit"]
    in_all = f", {total:.6g} {unit} in all" if total and unit and (unit != "items" or total != parsed["value"]) else ""
    return f"{value}{dimension}{in_all}"


def pack_line(count: int) -> str:
    """6 -> '6 items', 1 -> '1 item (not a multi-pack)'."""
    return f"{count} items" if count != 1 else "1 item (not a multi-pack)"

"""Per-listing explanations: what was parsed, the nearest training listings, per-feature contributions.

Any fitted model family is accepted. The CPU stack gives everything; a blend gives neighbours from
its CPU part; a transformer gives price and parsed fields. What does not apply is named in `notes`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .catalog import split_catalog_content
from .features import listing_row
from .kinds import Explainer, PriceModel, kind_of
from .units import BASE_UNITS, DIMENSIONS

NO_CONTRIBUTIONS_BLEND = ("contributions unavailable: a blend averages the CPU model with a transformer, "
                          "whose output has no per-feature split (neighbours come from the blend's CPU part)")
NO_CPU_PART = ("neighbours and contributions unavailable: a transformer model keeps no training listings "
               "and its output has no per-feature split")
NO_LISTINGS = "neighbours unavailable: this model was saved without its training listings; retrain it to get them"


def parsed_fields(text: str) -> dict[str, Any]:
    """What the parsers read from one listing: name, Value/Unit, dimension, pack count, total quantity, brand."""
    fields = split_catalog_content(text)
    row = listing_row(text, fields)
    dimension = DIMENSIONS[int(row["unit_type"])]
    return {"item_name": fields.item_name, "value": fields.value, "unit": fields.unit, "dimension": dimension,
            "pack_count": int(row["pack_size"]), "total_quantity": float(row["total_quantity"]),
            "base_unit": BASE_UNITS[dimension], "brand": row["brand"], "category": row["category"]}


def cpu_part(model: PriceModel) -> tuple[Explainer | None, list[str]]:
    """The part that explains a model (the CPU stack: itself, a blend's CPU part, or None) and notes on what cannot."""
    kind, explainer = kind_of(model.preset), model.explainer()
    if kind.explains_prices:
        return explainer, []
    return explainer, [NO_CONTRIBUTIONS_BLEND if explainer is not None else NO_CPU_PART]


def nearest_listings(cpu: Explainer, texts: Sequence[str], k: int) -> list[list[dict[str, Any]]] | None:
    """For each text, the k nearest training listings of a CPU stack (name, price, similarity); None if not kept."""
    listings = cpu.training_listings()
    if listings is None:
        return None
    names, prices = listings
    index, sims = cpu.neighbours(texts, k)
    return [[{"name": names[j], "price": float(prices[j]), "similarity": float(s)} for j, s in zip(row, row_sims) if j >= 0]
            for row, row_sims in zip(index, sims)]  # -1: fewer training listings share a word with this one


def explain_listings(model: PriceModel, texts: Sequence[str], to_price: Callable[[np.ndarray], np.ndarray], *, k: int = 5,
                     ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One explanation per text; `to_price` turns the model's log1p(price) into the price predict() returns."""
    texts = list(texts)
    if not texts:
        return []
    cpu, notes = cpu_part(model)
    contributions, names = None, []
    if cpu is not None and kind_of(model.preset).explains_prices:  # prediction and contributions from one parse
        log_price, contributions, names = cpu.contributions(texts)
    else:
        log_price = np.asarray(model.predict(texts), dtype=float)
    prices = to_price(log_price)
    neighbours = nearest_listings(cpu, texts, k) if cpu is not None else None
    if cpu is not None and neighbours is None:
        notes.append(NO_LISTINGS)
    out = []
    for i, text in enumerate(texts):
        entry: dict[str, Any] = {
            "sample_id": ids[i] if ids is not None else str(i),
            "price": float(prices[i]),
            "log_price": float(log_price[i]),  # the model's log1p(price), before clipping to the training range
            "clipped": bool(abs(np.log1p(prices[i]) - log_price[i]) > 1e-9),
            "parsed": parsed_fields(text),
            "neighbours": neighbours[i] if neighbours is not None else None,
            "contributions": None,
            "notes": notes,
        }
        if contributions is not None:
            row = contributions[i]
            order = sorted(range(len(names) - 1), key=lambda j: -abs(row[j]))
            entry["contributions"] = {"bias": float(row[-1]), **{names[j]: float(row[j]) for j in order}}
        out.append(entry)
    return out


def _quantity(parsed: dict[str, Any]) -> str:
    """ "72 Fl Oz (volume), pack of 6, total 2129.3 ml" from parsed fields."""
    value = f"{parsed['value']:g} {parsed['unit']}".strip() if parsed["value"] is not None else "no Value"
    total = f", total {parsed['total_quantity']:.6g} {parsed['base_unit']}".rstrip() if parsed["total_quantity"] else ""
    return f"{value} ({parsed['dimension']}), pack of {parsed['pack_count']}{total}"


def _range_line(span: dict[str, Any]) -> str:
    """ "  80% range: 9.50 to 17.80 (80% of listings like this one are priced inside it)"."""
    share = f"{span['coverage']:.0%}"
    return f"  {share} range: {span['low']:.2f} to {span['high']:.2f} ({share} of listings like this one are priced inside it)"


def format_explanation(entry: dict[str, Any], top: int = 8) -> str:
    """One explanation as plain text: price, parsed fields, neighbours and the largest contributions."""
    parsed = entry["parsed"]
    clipped = " (clipped to the training price range)" if entry["clipped"] else ""
    lines = [f"{entry['sample_id']}: predicted price {entry['price']:.2f}{clipped}  [log1p {entry['log_price']:.4f}]",
             *([_range_line(entry["range"])] if entry.get("range") else []),
             f"  item: {parsed['item_name'][:100]}",
             f"  parsed: {_quantity(parsed)}; brand {parsed['brand'] or '?'!r}, category {parsed['category']}"]
    if entry["neighbours"]:
        lines.append("  nearest training listings (similarity, price, name):")
        lines += [f"    {n['similarity']:.2f}  {n['price']:9.2f}  {n['name'][:80]}" for n in entry["neighbours"]]
    if entry["contributions"]:
        parts = list(entry["contributions"].items())
        lines.append(f"  contributions to log1p(price) (sum {sum(v for _, v in parts):.4f}): bias {parts[0][1]:+.4f}")
        lines += [f"    {value:+.4f}  {name}" for name, value in parts[1:top + 1]]
        if len(parts) > top + 1:
            lines.append(f"    {sum(v for _, v in parts[top + 1:]):+.4f}  {len(parts) - top - 1} other features")
    lines += [f"  note: {note}" for note in entry["notes"]]
    return "\n".join(lines)

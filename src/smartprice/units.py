"""Unit spellings and pack quantities: small pure parsers, `str -> value`.

Units are normalised to a canonical dimension and base unit (mass in grams, volume in
millilitres, count in items, length in centimetres, area in square feet) so that total
quantities compare across rows that spell the same unit differently.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Unit(NamedTuple):
    """A canonical unit: its dimension and how many base units one of it holds."""

    dimension: str  # "mass" | "volume" | "count" | "length" | "area" | "unknown"
    factor: float  # base units (g, ml, item, cm, sq ft) per one of this unit


UNKNOWN = Unit("unknown", 1.0)
DIMENSIONS = ("unknown", "mass", "volume", "count", "length", "area")  # index = unit_type code
BASE_UNITS = {"unknown": "", "mass": "g", "volume": "ml", "count": "items", "length": "cm", "area": "sq ft"}

# Spellings seen in catalogs, lower-cased with dots and extra spaces removed.
_UNIT_TABLE: dict[str, Unit] = {}
for _names, _unit in [
    (("oz", "ounce", "ounces", "onz", "0z", "wt oz", "net wt oz"), Unit("mass", 28.3495)),
    (("fl oz", "floz", "fluid ounce", "fluid ounces", "fl ounce", "fl ounces", "fl oz bottle"), Unit("volume", 29.5735)),
    (("g", "gr", "gram", "grams", "gramm", "gramme", "grammes", "gm", "gms"), Unit("mass", 1.0)),
    (("kg", "kgs", "kilogram", "kilograms", "kilo", "kilos"), Unit("mass", 1000.0)),
    (("mg", "milligram", "milligrams"), Unit("mass", 0.001)),
    (("lb", "lbs", "pound", "pounds"), Unit("mass", 453.592)),
    (("ml", "milliliter", "milliliters", "millilitre", "millilitres", "mls"), Unit("volume", 1.0)),
    (("cl", "centiliter", "centilitre"), Unit("volume", 10.0)),
    (("l", "liter", "liters", "litre", "litres", "ltr"), Unit("volume", 1000.0)),
    (("gallon", "gallons", "gal"), Unit("volume", 3785.41)),
    (("quart", "quarts", "qt"), Unit("volume", 946.353)),
    (("pint", "pints", "pt"), Unit("volume", 473.176)),
    (("cup", "cups"), Unit("volume", 236.588)),
    (("count", "counts", "ct", "cnt", "each", "ea", "piece", "pieces", "pc", "pcs", "unit", "units",
      "pack", "packs", "pk", "can", "cans", "jar", "jars", "bottle", "bottles", "bag", "bags",
      "box", "boxes", "tea bags", "capsule", "capsules", "pod", "pods", "k-cup", "k-cups",
      "sachet", "sachets", "stick", "sticks", "bar", "bars", "packet", "packets", "carton",
      "cartons", "tablet", "tablets", "serving", "servings", "pouch", "pouches", "dozen"), Unit("count", 1.0)),
    (("in", "inch", "inches"), Unit("length", 2.54)),
    (("cm", "centimeter", "centimeters", "centimetre"), Unit("length", 1.0)),
    (("ft", "foot", "feet"), Unit("length", 30.48)),
    (("m", "meter", "meters", "metre", "metres"), Unit("length", 100.0)),
    (("sq ft", "square foot", "square feet", "sqft"), Unit("area", 1.0)),
]:
    for _name in _names:
        _UNIT_TABLE[_name] = _unit
_UNIT_TABLE["dozen"] = Unit("count", 12.0)

_UNIT_CLEAN_RE = re.compile(r"[.\s_]+")
# "20 oz." as a whole unit field: a number in front of the unit name
_LEADING_NUMBER_RE = re.compile(r"^\s*\d+(?:\.\d+)?\s*")


def normalise_unit(raw: str) -> Unit:
    """Map a unit spelling to its canonical unit.

    "Ounce", "oz", "OZ" -> mass 28.35 g; "Fl Oz", "fl. oz", "Fluid Ounces" -> volume 29.57 ml;
    "Kg" -> mass 1000 g; "Count", "ct", "Each" -> count 1; "" or "None" -> unknown.
    """
    key = _LEADING_NUMBER_RE.sub("", raw or "").lower()
    key = _UNIT_CLEAN_RE.sub(" ", key).strip()
    if key in _UNIT_TABLE:
        return _UNIT_TABLE[key]
    compact = key.replace(" ", "")
    if compact in _UNIT_TABLE:
        return _UNIT_TABLE[compact]
    if key.endswith("s") and key[:-1] in _UNIT_TABLE:
        return _UNIT_TABLE[key[:-1]]
    return UNKNOWN


# --- pack quantity ---------------------------------------------------------------------------
_NUM = r"(\d{1,4})"
PACK_PATTERNS = [
    # "Pack of 6", "(Pack of 12)", "Case of 24", "Set of 3", "Box of 12", "Bundle of 2"
    re.compile(r"\b(?:pack|case|set|box|bundle|carton|lot|bag)\s+of\s+" + _NUM + r"\b", re.IGNORECASE),
    # "6-Pack", "12 Pack", "6pk", "4 pk"
    re.compile(r"\b" + _NUM + r"\s*-?\s*(?:pack|pk|packs)\b", re.IGNORECASE),
    # "2 x 500 ml", "6x12 oz"
    re.compile(r"\b" + _NUM + r"\s*[x×]\s*\d", re.IGNORECASE),
    # "12 Count", "24 ct", "20 ea", "100 pcs", "36 K-Cups"
    re.compile(r"\b" + _NUM + r"\s*-?\s*(?:count|ct|ea|each|pcs|pieces|pods|k-cups|capsules|bags|sachets|packets)\b",
               re.IGNORECASE),
]


def parse_pack_count(text: str) -> int:
    """Number of items in a listing, 1 when none is stated.

    "Pack of 6" -> 6; "(Pack of 12)" -> 12; "6-Pack" -> 6; "12 Count" -> 12; "2 x 500 ml" -> 2;
    "20 ea" -> 20; "Case of 24" -> 24; "Mild Salsa" -> 1.
    """
    for pattern in PACK_PATTERNS:
        match = pattern.search(text or "")
        if match:
            count = int(match.group(1))
            if 1 <= count <= 10000:
                return count
    return 1


# "12 Ounce", "11.25 oz", "500ml", "1.5 L", "2 lb" in free text
SIZE_RE = re.compile(
    r"(\d+(?:[.,]\d+)?)\s*-?\s*(fl\.?\s*oz|fluid\s+ounces?|ounces?|oz|grams?|g|kg|kilograms?|lbs?|pounds?|ml|"
    r"milliliters?|millilitres?|liters?|litres?|l|gallons?|gal|quarts?|qt)\b",
    re.IGNORECASE,
)


def parse_size(text: str) -> tuple[float, Unit] | None:
    """First size stated in free text with its unit: "Sauce, 12 Ounce (Pack of 6)" -> (12.0, ounce)."""
    match = SIZE_RE.search(text or "")
    if not match:
        return None
    unit = normalise_unit(match.group(2))
    if unit is UNKNOWN:
        return None
    return float(match.group(1).replace(",", ".")), unit

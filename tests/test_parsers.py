"""Parsers on real-looking strings: fields, units, pack counts, sizes, brand and category."""

from __future__ import annotations

import pytest

from smartprice.catalog import split_catalog_content
from smartprice.features import FEATURE_SETS, guess_brand, guess_category, listing_row
from smartprice.units import normalise_unit, parse_pack_count, parse_size

LISTING = (
    "Item Name: Salerno Cookies, The Original Butter Cookies, 8 Ounce (Pack of 4)\n"
    "Bullet Point 1: Original Butter Cookies: Classic butter cookies made with real butter\n"
    "Bullet Point 2: Variety Pack: Includes 4 boxes with 32 cookies total\n"
    "Product Description: Delicious cookies since 1925.\n"
    "Value: 32.0\n"
    "Unit: Ounce\n"
)


def test_split_fields():
    fields = split_catalog_content(LISTING)
    assert fields.item_name == "Salerno Cookies, The Original Butter Cookies, 8 Ounce (Pack of 4)"
    assert len(fields.bullets) == 2 and fields.bullets[1].startswith("Variety Pack")
    assert fields.description == "Delicious cookies since 1925."
    assert fields.value == 32.0 and fields.unit == "Ounce"


@pytest.mark.parametrize("text", ["", "   ", "just some words", "Value: abc\nUnit:"])
def test_split_fields_messy(text):
    fields = split_catalog_content(text)
    assert fields.value is None
    row = listing_row(text, fields)
    assert all(v == v for v in row.values())  # no NaN anywhere


@pytest.mark.parametrize(
    "raw, dimension, factor",
    [
        ("Ounce", "mass", 28.3495), ("oz", "mass", 28.3495), ("OZ", "mass", 28.3495), ("Ounces", "mass", 28.3495),
        ("Fl Oz", "volume", 29.5735), ("fl. oz", "volume", 29.5735), ("Fluid Ounces", "volume", 29.5735),
        ("FL Oz", "volume", 29.5735), ("Fl. Oz", "volume", 29.5735),
        ("gram", "mass", 1.0), ("g", "mass", 1.0), ("gramm", "mass", 1.0), ("Kg", "mass", 1000.0),
        ("lb", "mass", 453.592), ("Pound", "mass", 453.592), ("pounds", "mass", 453.592),
        ("ml", "volume", 1.0), ("millilitre", "volume", 1.0), ("Liter", "volume", 1000.0), ("Liters", "volume", 1000.0),
        ("Count", "count", 1.0), ("COUNT", "count", 1.0), ("ct", "count", 1.0), ("Each", "count", 1.0),
        ("Tea Bags", "count", 1.0), ("20 oz.", "mass", 28.3495), ("inches", "length", 2.54),
        ("None", "unknown", 1.0), ("", "unknown", 1.0), ("furlongs", "unknown", 1.0),
    ],
)
def test_normalise_unit(raw, dimension, factor):
    unit = normalise_unit(raw)
    assert unit.dimension == dimension
    assert unit.factor == pytest.approx(factor)


@pytest.mark.parametrize(
    "title, count",
    [
        ("La Victoria Green Taco Sauce Mild, 12 Ounce (Pack of 6)", 6),
        ("Barilla Pasta (Pack of 12)", 12),
        ("Coca-Cola Mini Cans 6-Pack", 6),
        ("Folgers K-Cup Pods, 12 Count", 12),
        ("Evian Water 2 x 500 ml", 2),
        ("Paper Plates 20 ea", 20),
        ("Case of 24 Bottles of Water", 24),
        ("Twinings Tea 4 pk", 4),
        ("Green Taco Sauce Mild, 12 Ounce", 1),
        ("", 1),
    ],
)
def test_parse_pack_count(title, count):
    assert parse_pack_count(title) == count


@pytest.mark.parametrize(
    "text, amount, dimension",
    [
        ("Judee's Blue Cheese Powder 11.25 oz - Gluten-Free", 11.25, "mass"),
        ("Taco Sauce Mild, 12 Ounce (Pack of 6)", 12.0, "mass"),
        ("Olive Oil 500ml", 500.0, "volume"),
        ("Juice 1.5 L bottle", 1.5, "volume"),
        ("Tomato Juice, 46 Fl Oz", 46.0, "volume"),
    ],
)
def test_parse_size(text, amount, dimension):
    size = parse_size(text)
    assert size is not None and size[0] == pytest.approx(amount) and size[1].dimension == dimension


def test_parse_size_none():
    assert parse_size("Assorted Candy Variety") is None


def test_total_quantity_is_comparable_across_spellings():
    a = listing_row("Item Name: A\nValue: 16.0\nUnit: oz\n")
    b = listing_row("Item Name: B\nValue: 1.0\nUnit: Pound\n")
    assert a["total_quantity"] == pytest.approx(b["total_quantity"], rel=1e-3)


@pytest.mark.parametrize(
    "title, brand",
    [("La Victoria Green Taco Sauce Mild, 12 Ounce", "la victoria"), ("Goya, Adobo", "goya"),
     ("Judee’s Blue Cheese Powder 11.25 oz", "judee s"), ("", "")],
)
def test_guess_brand(title, brand):
    assert guess_brand(title) == brand


@pytest.mark.parametrize(
    "title, category",
    [("Green Taco Sauce Mild", "sauce"), ("Folgers Medium Roast Coffee K-Cup", "coffee"),
     ("Twinings Earl Grey Tea", "tea"), ("Mystery Item", "other")],
)
def test_guess_category(title, category):
    assert guess_category(title) == category


def test_feature_sets_nest_and_have_documented_sizes():
    assert {k: len(v) for k, v in FEATURE_SETS.items()} == {15: 15, 20: 20, 22: 22, 25: 25}
    assert FEATURE_SETS[25][:22] == FEATURE_SETS[22] and FEATURE_SETS[22][:20] == FEATURE_SETS[20]
    assert FEATURE_SETS[20][:15] == FEATURE_SETS[15]
    row = listing_row(LISTING)
    assert set(FEATURE_SETS[25]) <= set(row)
    assert row["pack_size"] == 4 and row["is_pack"] == 1 and row["bullet_points"] == 2
    assert row["total_quantity"] == pytest.approx(32 * 28.3495)
    assert row["value_per_unit"] == pytest.approx(8 * 28.3495)

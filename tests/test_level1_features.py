"""The default's level-1 additions: unit-price ridges per unit dimension and the spread of neighbour prices.

Older models (saved before the two fields) keep computing what they computed; new ones round-trip.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import make_catalog
from smartprice import PricePredictor
from smartprice.cpu.level1 import MIN_DIMENSION_ROWS, dimension_rows
from smartprice.cpu.neighbours import NeighbourStats


def test_spread_is_the_weighted_std_and_the_interquartile_range_of_neighbour_prices():
    stats = NeighbourStats(4).fit(np.log1p([10.0, 10.0, 10.0, 10.0, 90.0]), np.zeros(5))
    index = np.array([[0, 1, 2, 3], [0, 1, 4, 4], [0, 1, -1, -1]])
    sims = np.array([[0.9, 0.8, 0.7, 0.6], [1.0, 1.0, 1.0, 1.0], [0.5, 0.5, 0.0, 0.0]])
    spread = stats.transform(index, sims, np.zeros(3), spread=True)[:, 6:]
    np.testing.assert_allclose(spread[:, 1], np.subtract(*np.quantile(stats.y_[np.maximum(index, 0)] * (index >= 0)
                               + stats.prior_ * (index < 0), (0.75, 0.25), axis=1)), rtol=1e-12)
    assert spread[0] == pytest.approx([0.0, 0.0], abs=1e-12)  # neighbours agree
    gap = np.log1p(90.0) - np.log1p(10.0)
    assert spread[1, 0] == pytest.approx(gap / 2)  # equal weights, half at each price: std is half the gap
    assert spread[1, 1] == pytest.approx(gap)  # [a, a, b, b]: the lower quartile is a, the upper b
    assert spread[2, 0] == pytest.approx(0.0, abs=1e-6)  # missing neighbours carry no weight


@pytest.fixture(scope="module")
def default_model() -> PricePredictor:
    return PricePredictor("cpu", trees=60).fit(make_catalog(150))


def test_the_default_has_both_additions_and_round_trips(default_model, tmp_path):
    names = default_model.model_.model.level1_.features
    assert "ridge_unit_dimension" in names
    assert {"knn_spread", "knn_iqr", "knn_word_spread", "knn_word_iqr"} <= set(names)
    ridges = default_model.model_.model.level1_.ridges_
    assert {"unit_mass", "unit_volume", "unit_count"} <= set(ridges)
    frame = make_catalog(150)
    prices = default_model.predict(frame)
    default_model.save(tmp_path / "m")
    np.testing.assert_array_equal(PricePredictor.load(tmp_path / "m").predict(frame), prices)
    assert np.isfinite(prices).all() and (prices > 0).all()


def test_a_dimension_with_few_rows_gets_no_ridge_and_its_rows_still_price():
    frame = make_catalog(60)  # 36 mass rows, 12 volume, 12 count
    model = PricePredictor("cpu", trees=40).fit(frame)
    level1 = model.model_.model.level1_
    rows = dimension_rows(model.model_.model.parse(frame.catalog_content.tolist()).raw)
    assert len(rows["mass"]) >= MIN_DIMENSION_ROWS > max(len(rows["volume"]), len(rows["count"]))
    assert "unit_mass" in level1.ridges_ and "unit_volume" not in level1.ridges_ and "unit_count" not in level1.ridges_
    dense = model.model_.model.dense(frame.catalog_content.tolist())
    column = dense[:, level1.features.index("ridge_unit_dimension")]
    assert (column[rows["volume"]] == 0).all() and (column[rows["mass"]] != 0).all()
    prices = model.predict(frame)
    assert np.isfinite(prices).all() and (prices > 0).all()


def test_a_model_saved_before_the_additions_loads_and_predicts_as_it_did(tmp_path):
    frame = make_catalog(80)
    old = PricePredictor("cpu", trees=40, unit_ridge_dims=False, neighbour_spread=False).fit(frame)
    prices = old.predict(frame)
    old.save(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    config = json.loads(path.read_text())
    for field in ("unit_ridge_dims", "neighbour_spread"):  # what a directory written before the fields holds
        del config["config"][field]
    path.write_text(json.dumps(config))
    loaded = PricePredictor.load(tmp_path / "m")
    preset = loaded.model_.model.preset
    assert not preset.unit_ridge_dims and not preset.neighbour_spread
    np.testing.assert_array_equal(loaded.predict(frame), prices)

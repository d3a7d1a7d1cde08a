"""Level 2 averaged over stacking-fold splits: the averaged model equals the mean of its fits, and round-trips."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import make_catalog
from smartprice import PricePredictor
from smartprice.cpu import level2
from smartprice.cpu.trees import BoosterTrees, NativeTrees
from smartprice.errors import SettingsError
from smartprice.presets import CpuPreset


def _fits(x: np.ndarray, y: np.ndarray) -> list:
    import lightgbm as lgb

    return [lgb.train({"objective": objective, "num_leaves": leaves, "learning_rate": 0.2, "seed": seed,
                       "verbose": -1, "bagging_fraction": 0.8, "bagging_freq": 1}, lgb.Dataset(x, y), num_boost_round=rounds)
            for seed, (objective, leaves, rounds) in enumerate([("huber", 7, 12), ("l1", 4, 9), ("l2", 15, 1)])]


def test_averaged_model_is_the_mean_of_its_fits():
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4))
    x[rng.random(x.shape) < 0.05] = np.nan
    y = np.nan_to_num(x[:, 0]) * 2 + np.sin(np.nan_to_num(x[:, 1])) + rng.normal(scale=0.3, size=300)
    boosters = _fits(x, y)
    merged = lgb.Booster(model_str=level2.average_models([b.model_to_string() for b in boosters]))
    expected = np.mean([b.predict(x) for b in boosters], axis=0)
    assert merged.num_trees() == sum(b.num_trees() for b in boosters)
    np.testing.assert_allclose(merged.predict(x), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(BoosterTrees(merged.model_to_string()).predict(x), expected, rtol=0, atol=1e-12)
    native = NativeTrees.from_model_string(merged.model_to_string())
    np.testing.assert_allclose(native.predict(x), expected, rtol=0, atol=1e-12)
    contributions = merged.predict(x, pred_contrib=True)
    np.testing.assert_allclose(contributions.sum(axis=1), expected, rtol=0, atol=1e-9)


def test_fit_params_split_the_trees_and_cycle_objectives():
    preset = CpuPreset(trees=900, learning_rate=0.03, level2_splits=3, level2_objectives=("huber", "l1"))
    params = {"seed": 4, "objective": "huber", "learning_rate": 0.03}
    settings = [level2.fit_params(params, preset, split) for split in range(3)]
    assert [s["objective"] for s, _ in settings] == ["huber", "l1", "huber"]
    assert [s["seed"] for s, _ in settings] == [4, 5, 6]
    assert all(rounds == 300 and s["learning_rate"] == pytest.approx(0.09) for s, rounds in settings)
    single, rounds = level2.fit_params(params, CpuPreset(trees=900, learning_rate=0.03, level2_splits=1, level2_objectives=()), 0)
    assert single == params and rounds == 900  # one split: the plain single fit


@pytest.mark.parametrize("overrides, message", [({"level2_splits": 0}, "level2_splits"),
                                                ({"level2_objectives": ("huber", "smape")}, "level2_objectives"),
                                                ({"level2_splits": 4, "trees": 3}, "trees")])
def test_bad_level2_settings_are_refused(overrides, message):
    with pytest.raises(SettingsError, match=message):
        PricePredictor("cpu", **overrides).fit(make_catalog(40))


@pytest.fixture(scope="module")
def averaged() -> PricePredictor:
    return PricePredictor("cpu", trees=60, level2_splits=3, level2_objectives=("huber", "l1")).fit(make_catalog(150))


def test_averaged_model_round_trip_and_calibration(averaged, tmp_path):
    import lightgbm as lgb

    model = averaged.model_.model
    assert lgb.Booster(model_str=model.trees_text_).num_trees() == 60  # 3 fits x 20 trees: as many as one fit of 60
    frame = make_catalog(150)
    prices = averaged.predict(frame)
    averaged.save(tmp_path / "m")
    loaded = PricePredictor.load(tmp_path / "m")
    np.testing.assert_array_equal(loaded.predict(frame), prices)
    held_out, y, sigmas = model.calibration()
    assert held_out.shape == y.shape == sigmas.shape == (150,) and np.isfinite(held_out).all()
    again = PricePredictor("cpu", trees=60, level2_splits=3, level2_objectives=("huber", "l1")).fit(frame)
    np.testing.assert_array_equal(again.predict(frame), prices)  # point prices: a deterministic function of the fit


def test_averaged_model_prices_blank_and_extreme_listings(averaged):
    frame = pd.DataFrame({"sample_id": list("abcdef"),
                          "catalog_content": ["", "Item Name: ounce ounce pack", "Value: 1e308\nUnit: Ounce", "???",
                                              "Item Name: Pack of 10000\nValue: 0\nUnit: Count",
                                              "Item Name: " + "caviar gold " * 400 + "\nValue: 1e-9\nUnit: Fl Oz"]})
    prices = averaged.predict(frame)
    assert np.isfinite(prices).all() and (prices > 0).all()


def _varied_catalog(rows: int) -> pd.DataFrame:
    """Listings of random words: similarities rarely tie, so every way of searching must agree row for row."""
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(120)]
    texts = [f"Item Name: {' '.join(rng.choice(words, 4))}\nBullet Point 1: {' '.join(rng.choice(words, 8))}\n"
             f"Value: {rng.integers(1, 50)}\nUnit: Ounce\n" for _ in range(rows)]
    return pd.DataFrame({"sample_id": [str(i) for i in range(rows)], "catalog_content": texts,
                         "price": np.round(rng.lognormal(2.5, 1.0, rows), 2)})


@pytest.mark.parametrize("neighbours", [3, 20])
def test_one_search_for_every_split_equals_a_search_per_split(neighbours):
    """Exact search: the wide search filtered per split gives each split's own out-of-fold features."""
    frame = _varied_catalog(150)
    fitted = PricePredictor("cpu", trees=30, neighbours=neighbours, level2_splits=3, range_method="none").fit(frame).model_.model
    listings = fitted.parse(frame.catalog_content.tolist())
    y = np.log1p(frame.price.to_numpy())
    splits = level2.fold_splits(len(y), fitted.preset)
    shared = fitted.level1_.out_of_fold_splits(listings, y, splits)
    for folds, features in zip(splits, shared):
        np.testing.assert_allclose(features, fitted.level1_.out_of_fold(listings, y, folds), rtol=0, atol=1e-9)
